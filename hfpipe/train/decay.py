"""`hfpipe decay`: finish a warmup-stable-decay run from any stable-phase checkpoint.

    hfpipe decay RUN_DIR --minutes 5              # the newest stable-phase checkpoint -> RUN_DIR/decay-<step>/
    hfpipe decay RUN_DIR --steps 200 --checkpoint RUN_DIR/checkpoints/step-00001000 --out runs/finished

A WSD run holds its learning rate at the peak for most of the budget, so every checkpoint of that
stable phase is a model that only lacks its decay (Hägele et al. 2024; the "cooldown" of MiniCPM and
ModernBERT). This command resumes the checkpoint (model, optimizer, RNG, data position) through the
pretraining loop's own `setup`, `fit` and `finish`, with one change: the budget starts at the
checkpoint and the learning rate falls linearly from the stable value to train.min_lr_ratio x lr over
the new budget -- the decay phase `schedule.lr_factor("wsd", ...)` would have run. It writes a
finished run (final/, results.json, metrics.jsonl, its own checkpoints) into a new folder and never
writes into RUN_DIR.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import PretrainRecipe, load_recipe
from .budget import Budget
from .checkpoint import RECIPE_FILE, STATE_FILE, in_stable_phase, list_checkpoints, resolve_resume
from .logs import read_metrics
from .schedule import lr_factor
from .step import TrainingError


class DecayBudget(Budget):
    """A budget that starts at the checkpoint: progress counts only the steps, tokens and seconds since
    then, and the lr is the WSD decay phase (linear from lr to min_lr_ratio x lr) over that progress."""

    def __init__(self, train, start_step: int, start_tokens: int, start_seconds: float):
        super().__init__(train)
        self.start = (start_step, start_tokens, start_seconds)

    def progress(self, step: int, tokens: int, seconds: float) -> float:
        s0, t0, e0 = self.start
        return super().progress(step - s0, tokens - t0, seconds - e0)

    def lr(self, step: int, tokens: int, seconds: float) -> float:
        t = self.train
        p = self.progress(step, tokens, seconds)
        return t.lr * lr_factor("wsd", p, 0.0, decay_fraction=1.0, min_ratio=t.min_lr_ratio)


def decay(
    run_dir: str | Path,
    *,
    minutes: float | None = None,
    steps: int | None = None,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
) -> dict:
    """Run the decay phase from `checkpoint` (default: RUN_DIR's newest stable-phase one) for `minutes` or `steps`;
    returns the results (also in OUT/results.json, with `decay_from` and `decay_start_step`)."""
    from .pretrain import finish, fit, setup

    run_dir = Path(run_dir)
    if (minutes is None) == (steps is None):
        raise TrainingError("give the decay budget as exactly one of --minutes or --steps")
    path = pick_checkpoint(run_dir, checkpoint)
    state = json.loads((path / STATE_FILE).read_text())
    out = Path(out) if out is not None else run_dir / f"decay-{state['step']}"
    if out.resolve() == run_dir.resolve():
        raise TrainingError(f"--out {out} is the run's own folder; the decay writes a new one")
    recipe = decay_recipe(run_dir, path, out, minutes=minutes, steps=steps)
    run = setup(recipe)
    run.budget = DecayBudget(recipe.train, state["step"], state.get("tokens", 0), state.get("elapsed", 0.0))
    fit(run)
    results = finish(run)
    results.update(
        decay_from=str(path), decay_start_step=state["step"], decay_steps=results["step"] - state["step"]
    )
    if run.accelerator.is_main_process:
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def pick_checkpoint(run_dir: Path, checkpoint: str | Path | None) -> Path:
    """The chosen checkpoint (a path, or a step number), or else the run's newest complete one of the stable
    phase; verified whole, and checked to be of the stable phase (errors say why not)."""
    if checkpoint is not None:
        if str(checkpoint).isdigit():
            checkpoint = run_dir / "checkpoints" / f"step-{int(checkpoint):08d}"
        try:
            path = resolve_resume(str(checkpoint), run_dir)
        except FileNotFoundError as e:
            raise TrainingError(str(e)) from None
        check_stable_phase(path, run_dir)
        return path
    found = list_checkpoints(run_dir)
    if not found:
        raise TrainingError(
            f"{run_dir} has no complete checkpoint in {run_dir / 'checkpoints'}: "
            "is it a pretraining output_dir? (train.save_every_steps saves them)"
        )
    for path in reversed(found):  # the newest stable-phase one
        try:
            check_stable_phase(path, run_dir)
        except TrainingError:
            continue
        return resolve_resume(str(path), run_dir)
    check_stable_phase(found[-1], run_dir)  # raises: why the newest is not usable
    raise AssertionError("unreachable")


def original_recipe(run_dir: Path, checkpoint: Path) -> PretrainRecipe:
    """The recipe that trained the checkpoint (its own copy; the run's for older checkpoints)."""
    path = checkpoint / RECIPE_FILE if (checkpoint / RECIPE_FILE).is_file() else run_dir / RECIPE_FILE
    if not path.is_file():
        raise TrainingError(
            f"neither {checkpoint} nor {run_dir} holds {RECIPE_FILE}: not an hfpipe pretraining run"
        )
    return load_recipe(path, PretrainRecipe)


def check_stable_phase(checkpoint: Path, run_dir: Path) -> None:
    """Raise unless the checkpoint was saved by a WSD run after its warmup and before its decay."""
    train = original_recipe(run_dir, checkpoint).train
    state = json.loads((checkpoint / STATE_FILE).read_text())
    if train.schedule != "wsd":
        raise TrainingError(
            f"{run_dir} was trained with train.schedule={train.schedule!r}, not 'wsd': only a warmup-stable-decay "
            "run has a stable phase to decay from (its learning rate already follows its own schedule)"
        )
    budget = Budget(train)
    step, tokens, elapsed = state["step"], state.get("tokens", 0), state.get("elapsed", 0.0)
    progress = budget.progress(step, tokens, elapsed)
    start = 1.0 - train.decay_fraction
    if progress > start + 1e-9:
        began = decay_start_step(budget, start, run_dir, step)
        raise TrainingError(
            f"{checkpoint.name} (step {step}) is already in the decay phase: the run's decay began at step "
            f"{began} ({start:.0%} of its budget; train.decay_fraction={train.decay_fraction}). Choose a checkpoint "
            f"saved before step {began} with --checkpoint ({usable_hint(run_dir)})"
        )
    if budget.lr(step, tokens, elapsed) < train.lr * (1 - 1e-6):
        raise TrainingError(
            f"{checkpoint.name} (step {step}) is still in the warmup (lr {budget.lr(step, tokens, elapsed):.3g} of "
            f"{train.lr:g}): choose a checkpoint of the stable phase with --checkpoint ({usable_hint(run_dir)})"
        )


def usable_hint(run_dir: Path) -> str:
    """The checkpoints of RUN_DIR that `decay` can start from, named for an error message."""
    usable = []
    for path in list_checkpoints(run_dir):
        try:
            train = original_recipe(run_dir, path).train
            if in_stable_phase(train, json.loads((path / STATE_FILE).read_text())):
                usable.append(path.name)
        except (OSError, ValueError, TrainingError):
            continue
    if usable:
        return "stable-phase ones: " + ", ".join(usable)
    return ("none of its checkpoints is of the stable phase: save more often (train.save_every_steps) or rerun; "
            "since this change train.keep_last keeps the newest stable-phase checkpoint of a WSD run")


def decay_start_step(budget: Budget, start: float, run_dir: Path, checkpoint_step: int) -> int:
    """The first step whose progress is past `start`: exact for a step budget, else the first logged step."""
    if budget.max_steps and not budget.max_tokens and not budget.max_seconds:
        return math.floor(start * budget.max_steps) + 1
    metrics = run_dir / "metrics.jsonl"
    for record in read_metrics(metrics) if metrics.is_file() else []:
        if (
            "elapsed_sec" in record
            and budget.progress(record["step"], record["tokens"], record["elapsed_sec"]) > start
        ):
            return record["step"]
    return checkpoint_step


def decay_recipe(
    run_dir: Path, checkpoint: Path, out: Path, *, minutes: float | None, steps: int | None
) -> PretrainRecipe:
    """The original recipe, resumed from `checkpoint` into `out`, with the decay's budget and schedule:
    linear from lr to min_lr_ratio x lr, no warmup (what resolved_recipe.yaml in `out` records)."""
    path = checkpoint / RECIPE_FILE if (checkpoint / RECIPE_FILE).is_file() else run_dir / RECIPE_FILE
    original = load_recipe(path, PretrainRecipe)
    overrides = [
        f"output_dir={out}", f"train.resume={checkpoint}", "train.schedule=linear", "train.warmup_fraction=0",
        "train.warmup_steps=null", "train.max_tokens=null", "train.num_epochs=null",
        f"train.max_minutes={minutes if minutes is not None else 'null'}",
        f"train.max_steps={steps if steps is not None else 'null'}",
    ]  # fmt: skip
    if original.tokenizer.name_or_path is None:  # the tokenizer the run trained: loaded, not trained again
        if not (run_dir / "tokenizer" / "tokenizer.json").is_file():
            raise TrainingError(f"{run_dir / 'tokenizer'} is missing: the run's trained tokenizer is needed")
        overrides.append(f"tokenizer.name_or_path={run_dir / 'tokenizer'}")
    return load_recipe(path, PretrainRecipe, overrides)


def run_decay(args) -> int:
    """`hfpipe decay` (cli.py parses the arguments)."""
    results = decay(
        args.run_dir, minutes=args.minutes, steps=args.steps, checkpoint=args.checkpoint, out=args.out
    )
    print(
        f"decayed from step {results['decay_start_step']} over {results['decay_steps']} steps: "
        f"eval loss {results['eval_loss']:.4f}, accuracy {results['eval_accuracy']:.4f}"
    )
    return 0
