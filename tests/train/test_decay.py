"""`hfpipe decay`: the decay phase run from a stable-phase checkpoint of a WSD run, and its refusals.

    .venv/bin/pytest tests/train/test_decay.py -q

One tiny WSD run (bert-tiny, 8 steps, decay over the last half, a checkpoint every 2 steps) serves
every test. Decaying its step-4 checkpoint for 4 steps is exactly what the run itself did over steps
5-8 (same lr factors, data, masks and dropout RNG), so the two must agree to the last digit.
"""

import json
import random
from pathlib import Path

import pytest

from hfpipe.config import PretrainRecipe, from_dict
from hfpipe.train.step import TrainingError

WORDS = "the cat sat on a mat while the dog ran past the old red barn and birds sang in tall trees".split()
LR, MIN_RATIO = 3e-3, 0.1


def run_recipe(tmp: Path, out: str, **train) -> PretrainRecipe:
    corpus = tmp / "corpus.txt"
    if not corpus.exists():
        rng = random.Random(0)
        corpus.write_text(
            "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(200))
            + "\n"
        )
    return from_dict(PretrainRecipe, {
        "output_dir": str(tmp / out), "model": {"preset": "bert-tiny"},
        "tokenizer": {"vocab_size": 64, "min_frequency": 1},  # trained by the run, into OUT/tokenizer
        "data": {"source": str(corpus), "block_size": 32, "validation_fraction": 0.1, "cache_dir": str(tmp / "cache")},
        "train": {"max_steps": 8, "batch_size": 4, "lr": LR, "mixed_precision": "no", "log_every_steps": 1,
                  "eval_every_steps": None, "save_every_steps": 2, "keep_last": 10, "min_lr_ratio": MIN_RATIO, **train},
        "eval": {"batch_size": 8, "max_batches": 2}, "tracking": {"plot": False},
    })  # fmt: skip


@pytest.fixture(scope="module")
def wsd_run(tmp_path_factory) -> Path:
    from hfpipe.train.pretrain import pretrain

    tmp = tmp_path_factory.mktemp("wsd")
    recipe = run_recipe(tmp, "run", schedule="wsd", warmup_fraction=0.25, decay_fraction=0.5)
    pretrain(recipe)
    return Path(recipe.output_dir)


def records(out: Path) -> dict[int, dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if "loss" in r}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_decay_from_a_stable_checkpoint_finishes_the_run_exactly(wsd_run, tmp_path):
    from hfpipe.model.modeling_hfpipe import HfpipeForMaskedLM
    from hfpipe.train.decay import decay

    before = snapshot(wsd_run)
    results = decay(wsd_run, steps=4, checkpoint=4, out=tmp_path / "finished")
    out = tmp_path / "finished"
    assert snapshot(wsd_run) == before  # the original run is not touched

    decayed, original = records(out), records(wsd_run)
    assert sorted(decayed) == [5, 6, 7, 8]
    lrs = [decayed[s]["lr"] for s in (5, 6, 7, 8)]
    # linear from the stable lr towards min_lr_ratio x lr: factor 1 - (1 - min) k / 4 before update k+1
    assert lrs == pytest.approx([LR * (1 - (1 - MIN_RATIO) * k / 4) for k in range(4)], rel=1e-12)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    for s in (5, 6, 7, 8):  # the run's own decay phase, reproduced
        assert decayed[s]["lr"] == pytest.approx(original[s]["lr"], rel=1e-12)
        assert decayed[s]["loss"] == original[s]["loss"]
    assert results["decay_start_step"] == 4 and results["step"] == 8 and results["decay_steps"] == 4
    assert results["eval_loss"] == json.loads((wsd_run / "results.json").read_text())["eval_loss"]
    assert json.loads((out / "results.json").read_text())["decay_from"].endswith("step-00000004")

    model = HfpipeForMaskedLM.from_pretrained(out / "final")  # a finished, loadable model
    assert model.config.num_hidden_layers == 2


def test_decay_lr_reaches_the_minimum_at_the_end_of_its_budget(tmp_path):
    from hfpipe.train.decay import DecayBudget

    train = run_recipe(tmp_path, "x", schedule="linear", max_steps=10).train
    budget = DecayBudget(train, start_step=100, start_tokens=5000, start_seconds=60.0)
    assert budget.lr(100, 5000, 60.0) == pytest.approx(LR)
    assert budget.lr(105, 9999, 99.0) == pytest.approx(LR * (1 - (1 - MIN_RATIO) * 0.5))
    assert budget.lr(110, 0, 0.0) == pytest.approx(LR * MIN_RATIO)
    assert budget.progress(110, 0, 0.0) == 1.0


def test_by_default_the_newest_stable_phase_checkpoint_is_taken(wsd_run):
    from hfpipe.train.decay import pick_checkpoint

    # checkpoints at steps 2, 4, 6, 8; the decay began at step 5, so step 4 is the newest stable one
    names = sorted(p.name for p in (wsd_run / "checkpoints").iterdir())
    assert names == [f"step-0000000{s}" for s in (2, 4, 6, 8)]
    assert pick_checkpoint(wsd_run, None).name == "step-00000004"


def test_decay_refuses_a_checkpoint_already_in_decay(wsd_run, tmp_path):
    from hfpipe.train.decay import decay

    with pytest.raises(
        TrainingError,
        match=r"step-00000006 \(step 6\) is already in the decay phase: the run's "
        r"decay began at step 5 .*step-00000004",
    ):
        decay(wsd_run, steps=2, checkpoint=6, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_decay_refuses_a_run_that_is_not_wsd(tmp_path):
    from hfpipe.train.decay import decay
    from hfpipe.train.pretrain import pretrain

    recipe = run_recipe(tmp_path, "linear", schedule="linear", max_steps=2)
    pretrain(recipe)
    with pytest.raises(TrainingError, match=r"train.schedule='linear', not 'wsd'"):
        decay(recipe.output_dir, minutes=1)


def test_decay_cli_reports_bad_input_in_one_line(wsd_run, tmp_path, capsys):
    from hfpipe.cli import main

    assert (
        main(["decay", str(wsd_run), "--steps", "2", "--checkpoint", "8", "--out", str(tmp_path / "y")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("hfpipe decay: error: step-00000008 (step 8) is already in the decay phase")
    assert main(["decay", str(tmp_path / "nothing"), "--minutes", "1"]) == 2
    assert "has no complete checkpoint" in capsys.readouterr().err


def test_keep_last_keeps_the_newest_stable_checkpoint_and_the_hint_names_only_usable_ones(tmp_path, capsys):
    """keep_last=1 would delete every stable-phase checkpoint of an 8-step run (decay from step 5); the
    newest stable one (step 4) stays, decay starts from it, and the refusal names only what it can use."""
    from hfpipe.cli import main
    from hfpipe.train.decay import pick_checkpoint
    from hfpipe.train.pretrain import pretrain

    recipe = run_recipe(tmp_path, "run", schedule="wsd", warmup_fraction=0.25, decay_fraction=0.5, keep_last=1)
    pretrain(recipe)
    capsys.readouterr()  # the run's progress bars
    run = Path(recipe.output_dir)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000008"]
    assert pick_checkpoint(run, None).name == "step-00000004"
    assert main(["decay", str(run), "--steps", "1", "--checkpoint", "8", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("with --checkpoint (stable-phase ones: step-00000004)")
