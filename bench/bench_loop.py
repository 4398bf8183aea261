"""The whole `hfpipe pretrain` loop vs the training step alone, on the same batches: the share of time
spent outside the step (batches, learning rate, logging, evaluation, checkpoints).

    python bench/bench_loop.py [--quick] [--dirty] [--steps 300] [--rounds 2]

One `setup` of the shipped recipe (recipes/pretrain/bert-mini-wikitext.yaml; on builtin:python-docs
when its data is absent), then rounds of: the loop (`fit` for --steps steps, the recipe's logging,
evaluation and save cadence; in --quick, eval and save every steps/2 so both happen) and the step alone
(`train_step` over the same steps' batches, already in memory), each round from the same starting
weights and optimizer state, interleaved loop, step, loop, step. Setup is not timed.

Writes bench/results/loop.json (bench/results/quick/loop.json with --quick).
"""

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from provenance import cpu_info, load_average, provenance, write_results  # noqa: E402

RECIPE = REPO / "recipes" / "pretrain" / "bert-mini-wikitext.yaml"
MEASURES = [
    "hfpipe/train/pretrain.py",
    "hfpipe/train/step.py",
    "hfpipe/train/logs.py",
    "hfpipe/data",
    "hfpipe/model/modeling_hfpipe.py",
    "recipes/pretrain/bert-mini-wikitext.yaml",
    "bench/bench_loop.py",
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="few steps, for CI-size checks (bench/results/quick/)"
    )
    p.add_argument(
        "--dirty", action="store_true", help="allow an uncommitted tree (the results file says so)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="steps per round (default 100: one evaluation and one save, scaled; quick 6)"
    )
    p.add_argument("--rounds", type=int, default=2, help="loop/step pairs, interleaved")
    p.add_argument("--recipe", type=Path, default=RECIPE)
    p.add_argument("--override", nargs="*", default=[], metavar="key=value", help="extra recipe overrides")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.steps = args.steps or (6 if args.quick else 100)
    if args.out is None:
        args.out = BENCH / "results" / ("quick" if args.quick else "") / "loop.json"
    return args


def load(args, out_dir: Path):
    from hfpipe.config import RECIPE_CLASSES, load_recipe

    overrides = [f"output_dir={out_dir}", f"train.max_steps={args.steps}", "tracking.plot=false"]
    source = load_recipe(args.recipe, RECIPE_CLASSES["pretrain"]).data.source
    if "://" not in source and not source.startswith("builtin:") and not Path(source).exists():
        print(f"{source} not found: the loop runs on builtin:python-docs")
        overrides += ["data.source=builtin:python-docs", "data.validation_source=null"]
    shipped = load_recipe(args.recipe, RECIPE_CLASSES["pretrain"])
    if not args.quick and shipped.train.eval_every_steps and args.steps < shipped.train.eval_every_steps:
        # A round shorter than the recipe's evaluation period: one evaluation per round, on the share of
        # validation batches that keeps the recipe's evaluation cost per training step (20 batches per
        # 500 steps -> 4 per 100), and one save per round (more often than the recipe: overstates saving).
        batches = max(1, round(shipped.eval.max_batches * args.steps / shipped.train.eval_every_steps))
        overrides += [f"train.eval_every_steps={args.steps}", f"eval.max_batches={batches}",
                      f"train.save_every_steps={args.steps}"]
    if args.quick:
        half = max(1, args.steps // 2)
        overrides += [
            f"train.eval_every_steps={half}",
            f"train.save_every_steps={half}",
            "train.batch_size=8",
            "eval.max_batches=2",
        ]
    return load_recipe(args.recipe, RECIPE_CLASSES["pretrain"], [*overrides, *args.override]), overrides


def main(argv=None) -> dict:
    args = parse_args(argv)
    provenance(dirty_ok=args.dirty)  # refuse a dirty tree before the run, not after it
    load_before = load_average()
    import torch

    from hfpipe.train import pretrain as pt
    from hfpipe.train.step import LoopState, train_step

    work = Path(tempfile.mkdtemp(prefix="hfpipe-bench-loop-"))
    recipe, overrides = load(args, work / "run")
    run = pt.setup(recipe)
    model0 = copy.deepcopy(run.accelerator.unwrap_model(run.model).state_dict())
    optim0 = copy.deepcopy(run.optimizer.state_dict())
    loader = pt.train_batches(run)
    batches = [next(loader) for _ in range(args.steps)]  # the loop's own first steps' micro-batches
    loader.close()

    def restore():
        run.accelerator.unwrap_model(run.model).load_state_dict(model0)
        run.optimizer.load_state_dict(optim0)
        run.state = LoopState()
        run.model.train()

    loop_s, step_s, tokens = [], [], []
    for _ in range(args.rounds):
        restore()
        start = time.perf_counter()
        pt.fit(run)
        loop_s.append(time.perf_counter() - start)
        tokens.append(run.state.tokens)
        restore()
        lr = run.budget.lr(0, 0, 0.0)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        for micro_batches in batches:
            train_step(
                run.model,
                run.optimizer,
                run.accelerator,
                micro_batches,
                run.state,
                max_grad_norm=recipe.train.max_grad_norm,
                on_nan=recipe.train.on_nan,
                checkpoints=work / "unused",
            )
        step_s.append(time.perf_counter() - start)
        if run.state.tokens != tokens[-1]:
            raise RuntimeError(
                f"the step alone saw {run.state.tokens} tokens, the loop {tokens[-1]}: not the same batches"
            )
        print(
            f"round: loop {tokens[-1] / loop_s[-1]:,.0f} tokens/s, step alone {tokens[-1] / step_s[-1]:,.0f}",
            flush=True,
        )

    loop_rate, step_rate = sum(tokens) / sum(loop_s), sum(tokens) / sum(step_s)
    outside = 1 - sum(step_s) / sum(loop_s)
    t = recipe.train
    cadence = (
        f"log every {t.log_every_steps}, eval every {t.eval_every_steps}, save every {t.save_every_steps}"
    )
    precision = str(run.accelerator.mixed_precision)
    cpu = cpu_info()
    note = (
        f"{cpu['model']}, {torch.get_num_threads()} thread(s), load {load_before} -> {load_average()}; "
        f"{args.recipe.relative_to(REPO) if args.recipe.is_relative_to(REPO) else args.recipe}, "
        f"{args.steps} steps x {args.rounds} rounds, {cadence}, {precision}; "
        f"python bench/bench_loop.py{' --quick' if args.quick else ''}"
    )
    tables = {
        "loop": {
            "columns": ["what", "tokens/s", "seconds", "share of time outside the step"],
            "rows": [
                ["hfpipe pretrain loop (fit)", f"{loop_rate:,.0f}", f"{sum(loop_s):,.1f}", f"{outside:.1%}"],
                ["train_step alone, same batches", f"{step_rate:,.0f}", f"{sum(step_s):,.1f}", "-"],
            ],
            "note": note,
        }
    }
    raw = {
        "steps": args.steps,
        "rounds": args.rounds,
        "overrides": overrides,
        "loop_seconds": loop_s,
        "step_seconds": step_s,
        "tokens": tokens,
        "loop_tokens_per_s": loop_rate,
        "step_tokens_per_s": step_rate,
        "outside_share": outside,
        "mixed_precision": precision,
        "cadence": cadence,
    }
    out = write_results(
        args.out,
        {"measures": MEASURES, "tables": tables, "raw": raw},
        argv=[__file__, *(sys.argv[1:] if argv is None else argv)],
        dirty_ok=args.dirty,
        load_before=load_before,
    )
    print(tables["loop"]["columns"], *tables["loop"]["rows"], sep="\n  ")
    return out


if __name__ == "__main__":
    main()
