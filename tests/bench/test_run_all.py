"""`make bench`'s plan and the results files it writes (bench/run_all.py, bench/bench_step.py).

python -m pytest -q tests/bench/test_run_all.py
"""

import importlib
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

run_all = importlib.import_module("run_all")
bench_step = importlib.import_module("bench_step")

# The figures: step (with MFU and memory), the loop vs the step, input preparation, parity,
# fine-tuning vs Trainer (another engineer's script; absent until it lands).
PUBLISHED = {"step", "loop", "input", "parity", "finetune"}


def test_quick_plan_covers_every_benchmark_with_quick_and_dirty():
    planned = run_all.plan(list(run_all.BENCHMARKS), quick=True, dirty=True)
    assert {name for name, _ in planned} == PUBLISHED
    for name, cmd in planned:
        script = BENCH / run_all.BENCHMARKS[name][0]
        if name != "finetune":
            assert cmd is not None, f"{script} is missing"
        if cmd is None:
            continue
        assert cmd[1] == str(script) and "--quick" in cmd and "--dirty" in cmd
        source = script.read_text()  # the script must accept what the plan passes it
        assert '"--quick"' in source and '"--dirty"' in source, script
    full = dict(run_all.plan(["step"], quick=False, dirty=False))
    assert "--quick" not in full["step"] and "--dirty" not in full["step"]


def test_run_all_refuses_a_dirty_tree_without_dirty(monkeypatch, capsys):
    monkeypatch.setattr(
        run_all,
        "provenance",
        lambda dirty_ok: (_ for _ in ()).throw(
            run_all.DirtyTreeError("uncommitted changes in x.py: commit first")
        ),
    )
    assert run_all.main(["--only", "step"]) == 2
    assert "bench/run_all.py: error: uncommitted changes in x.py" in capsys.readouterr().err


def test_step_results_file_has_provenance_measures_and_tables(tmp_path):
    out = tmp_path / "step.json"
    bench_step.main(
        [
            "--dirty",
            "--quick",
            "--vocab-size",
            "200",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--steps",
            "2",
            "--block",
            "1",
            "--warmup",
            "1",
            "--precisions",
            "fp32",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    prov = saved["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"]) and prov["load_after"] is not None
    assert "bench/bench_step.py" in prov["command"] and "--dirty" in prov["command"]
    assert saved["measures"] and all((REPO / p).exists() for p in saved["measures"])
    assert set(saved["tables"]) == {"step", "mfu", "memory"}
    for table in saved["tables"].values():
        assert table["rows"] and all(len(r) == len(table["columns"]) for r in table["rows"])
        assert all(isinstance(c, str) for r in table["rows"] for c in r) and table["note"]
    raw = saved["raw"]["precisions"]["fp32"]
    assert raw["tokens_per_s"]["hfpipe"] > 0 and raw["tokens_per_s"]["bert"] > 0
    # BERT computes the head at every position, hfpipe at the masked ones: more FLOPs counted for BERT,
    # the same useful FLOPs for both.
    flops = saved["raw"]["flops_per_token"]
    assert flops["bert"] > flops["hfpipe"]
    mfu = raw["mfu"]["bert"]
    assert mfu["computed"] / mfu["useful"] == pytest.approx(flops["bert"] / flops["hfpipe"], rel=1e-9)
    assert raw["memory"]["bert"]["peak_rss_mb"] > raw["memory"]["bert"]["rss_before_mb"] > 0


def test_step_hfpipe_side_predicts_sparsely_from_bert_weights():
    args = bench_step.parse_args(["--vocab-size", "200", "--seq-len", "16"])
    hfpipe, bert, _ = bench_step.build_models(args)
    assert hfpipe.sparse_prediction  # as hfpipe pretrain runs it; BERT computes every position
    assert hfpipe.model.embeddings.word_embeddings.weight.equal(bert.bert.embeddings.word_embeddings.weight)
