"""bench/publish.py: blocks rendered from results files, --check on differences and staleness.

    pytest tests/bench/test_publish.py
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import publish  # noqa: E402

DOC = "# Doc\n\n<!-- bench:step/step -->\n<!-- /bench:step/step -->\n\ntail\n"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def results(commit: str, dirty=False, table="step") -> dict:
    return {"provenance": {"commit": commit, "dirty": dirty, "date": "2026-12-08T03:00:00+00:00",
                           "machine": {"model": "Test CPU", "flags": ["avx512_bf16"], "usable_cores": 2},
                           "load_before": [0.5, 0.5, 0.5], "load_after": [1.5, 1.0, 0.5],
                           "command": "python bench/run_all.py"},
            "measures": ["hfpipe/step.py"],
            "tables": {table: {"columns": ["what", "tokens/s"], "rows": [["hfpipe", "1,185"]], "note": "median"}}}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repo with README.md carrying one marker and a measured file, committed."""
    git(tmp_path, "init", "-q")
    (tmp_path / "README.md").write_text(DOC)
    (tmp_path / "hfpipe").mkdir()
    (tmp_path / "hfpipe" / "step.py").write_text("x = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "code")
    return tmp_path


def put(repo: Path, data: dict) -> None:
    (repo / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (repo / "bench" / "results" / "step.json").write_text(json.dumps(data))


def test_missing_results_file_renders_not_measured_and_fails_only_strict(repo):
    assert publish.main(["--root", str(repo)]) == 0
    assert publish.NOT_MEASURED in (repo / "README.md").read_text()
    assert publish.check(repo) == []
    assert [p for p in publish.check(repo, strict=True) if "bench:step/step" in p and "not measured" in p]


def test_rendered_block_is_current_and_names_its_provenance(repo):
    put(repo, results(git(repo, "rev-parse", "HEAD")))
    assert publish.check(repo) == ["README.md: bench:step/step differs from bench/results/step.json: "
                                   "run `python bench/publish.py`"]
    assert publish.main(["--root", str(repo)]) == 0
    text = (repo / "README.md").read_text()
    assert "| hfpipe | 1,185 |" in text and "median" in text and text.endswith("tail\n")
    line = publish.provenance_line(results("abcdef1234567")["provenance"])
    assert "abcdef123" in line and "Test CPU" in line and "avx512_bf16" in line and "2 cores" in line
    assert "[0.5, 0.5, 0.5] → [1.5, 1.0, 0.5]" in line and "`python bench/run_all.py`" in line
    assert publish.check(repo) == [] and publish.check(repo, strict=True) == []
    assert publish.main(["--root", str(repo), "--check"]) == 0


def test_hand_edited_block_fails_check(repo):
    put(repo, results(git(repo, "rev-parse", "HEAD")))
    publish.main(["--root", str(repo)])
    readme = repo / "README.md"
    readme.write_text(readme.read_text().replace("1,185", "2,000"))
    assert publish.main(["--root", str(repo), "--check"]) == 1
    assert readme.read_text().count("2,000") == 1  # --check changes nothing


def test_missing_table_fails(repo):
    put(repo, results(git(repo, "rev-parse", "HEAD"), table="other"))
    problems = publish.check(repo)
    assert any("has no table 'step' (it has other)" in p for p in problems)


def test_results_older_than_the_code_they_measure_are_stale(repo):
    measured = git(repo, "rev-parse", "HEAD")
    put(repo, results(measured))
    publish.main(["--root", str(repo)])
    assert publish.stale(repo, "step") is None
    (repo / "docs.txt").write_text("unrelated\n")  # a commit that touches no measured path: still current
    git(repo, "add", "docs.txt")
    git(repo, "commit", "-qm", "unrelated")
    assert publish.stale(repo, "step") is None
    (repo / "hfpipe" / "step.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "change the step")
    reason = publish.stale(repo, "step")
    assert reason and f"measured at {measured[:9]}" in reason and "hfpipe/step.py" in reason
    assert reason in publish.check(repo)


def test_dirty_or_commitless_or_unmeasured_provenance_never_passes(repo):
    head = git(repo, "rev-parse", "HEAD")
    put(repo, results(head, dirty=["hfpipe/step.py"]))
    assert "dirty tree" in publish.stale(repo, "step")
    put(repo, results(None))
    assert "names no commit" in publish.stale(repo, "step")
    put(repo, results("0" * 40))
    assert "does not have" in publish.stale(repo, "step")
    put(repo, {**results(head), "measures": []})
    assert "no \"measures\"" in publish.stale(repo, "step")


def test_the_repository_itself_passes_check():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "publish.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_quality_calls_a_difference_resolved_only_where_intervals_do_not_overlap():
    quality = pytest.importorskip("quality")
    hfpipe, bert, scratch = [79.93, 80.50, 80.96], [79.3, 79.7, 80.1], [79.36, 79.36, 79.82]  # SST-2, the hour
    assert quality.compare(hfpipe, bert, "hfpipe", "BERT") == "not resolved (hfpipe 0.76 ahead, intervals overlap)"
    assert quality.compare(hfpipe, scratch, "hfpipe", "random init") == \
        "hfpipe ahead by 0.95 (intervals do not overlap)"
    assert quality.compare([80.0], [70.0], "hfpipe", "BERT") == "one seed: not resolved"
