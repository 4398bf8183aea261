"""bench/finetune_trainer.py: both sides get the same hyperparameters; no shared data, a clear skip.

    python -m pytest -q tests/bench/test_finetune_trainer.py
"""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import finetune_trainer as bench  # noqa: E402


def _args(tmp_path, precision, task="sst2"):
    return argparse.Namespace(task=task, precision=precision, train_examples=64, epochs=2.0, lr=3e-5,
                              runs=str(tmp_path / "runs"), dev_examples=16)


@pytest.fixture
def sst2_files(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    rows = "sentence\tlabel\n" + "".join(f"a {'good' if i % 2 else 'bad'} film {i}\t{i % 2}\n" for i in range(8))
    for name in ("train.tsv", "dev.tsv"):
        (data / "sst2" / name).write_text(rows)
    monkeypatch.setattr(bench, "DATA", data)
    return data


@pytest.mark.parametrize("precision, hfpipe_precision, trainer_bf16", [("fp32", "no", False), ("bf16", "bf16", True)])
def test_trainer_gets_the_hfpipe_recipes_hyperparameters(sst2_files, tmp_path, precision, hfpipe_precision,
                                                         trainer_bf16):
    args = _args(tmp_path, precision)
    recipe = bench.recipe_for(args, tmp_path / "model")
    targs = bench.trainer_arguments(recipe, args)
    train = recipe.train
    assert (train.lr, train.batch_size, train.num_epochs, train.mixed_precision) == (3e-5, 32, 2.0, hfpipe_precision)
    assert train.group_by_length and targs.train_sampling_strategy == "group_by_length"
    assert (targs.learning_rate, targs.per_device_train_batch_size, targs.num_train_epochs) == (3e-5, 32, 2.0)
    assert (targs.warmup_steps, targs.weight_decay, targs.max_grad_norm, targs.seed) == (
        train.warmup_fraction, train.weight_decay, train.max_grad_norm, recipe.seed) == (0.1, 0.01, 1.0, 42)
    assert (targs.adam_beta1, targs.adam_beta2, targs.adam_epsilon) == (*train.adam_betas, train.adam_eps)
    assert targs.bf16 is trainer_bf16
    assert (recipe.data.max_train_examples, recipe.data.max_eval_examples) == (64, 16)
    assert Path(recipe.data.train_file) == sst2_files / "sst2" / "train.tsv"


def test_without_shared_data_it_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "finetune_trainer.py"), "--quick",
                           "--data", str(tmp_path / "absent"), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"skipped: {tmp_path / 'absent'} not found")
    assert not out.exists()
