"""`hfpipe ablate SUITE`: the command line, and the loop over variants x seeds.

    hfpipe ablate positions                        # 5 variants x 3 seeds, 300 steps each, embedded corpus
    hfpipe ablate norms --seeds 5 --steps 600
    hfpipe ablate mixer --variants attention uniform --minutes 2
    hfpipe ablate norm-position --corpus wikitext-2 --steps 200

    from hfpipe.teach.ablate.command import ablate
    result = ablate("mixer", seeds=2, steps=20)    # the results.json dict

Writes OUT/table.md, OUT/curves.png and OUT/results.json (OUT: --output-dir, default runs/ablate/SUITE,
or runs/ablate/SUITE-CORPUS for another corpus), and every cell under OUT/runs/VARIANT/seed-S/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .suites import SUITES, AblationError, describe_suites, select_variants

DEFAULT_SEEDS = 3


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ablate",
        help="train one small model per variant x seed and report mean ± std (the tutorial's questions)",
        description="Train one bert-tiny per variant and seed on the same data, tokenizer, masks and budget "
        "(recipes/ablations/base.yaml), then report validation MLM loss and downstream accuracy as mean ± std "
        "over seeds -- saying where the seeds do not resolve a difference -- in a markdown table, a PNG of "
        "the loss curves with seed bands and results.json.",
        epilog=describe_suites(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("suite", choices=list(SUITES), help="which question to answer")
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="only these variants (default: all)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help=f"seeds per variant, 1..N (default: {DEFAULT_SEEDS}); a seed sets init, data order, "
                        "training masks and dropout")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimizer steps per cell (default: the recipe's 300)")
    budget.add_argument("--minutes", type=float, help="minutes of training per cell instead of steps")
    parser.add_argument("--corpus", default="embedded",
                        help="embedded (default: Python's docs, offline), wikitext-2 (../shared/data/wikitext-2), "
                        "or a path: a folder with train.txt and valid.txt, or one text file")
    parser.add_argument("--downstream", choices=["auto", "pydocs", "sst2", "none"], default="auto",
                        help="fine-tuning task: auto = pydocs for the embedded corpus, sst2 for the others "
                        "when ../shared/data/sst2 is there (default: auto)")
    parser.add_argument("--finetune-steps", type=int,
                        help="fine-tuning steps (default: 10 epochs of pydocs, 1 epoch of sst2)")
    parser.add_argument("--max-documents", type=int, help="pretrain on at most N documents (quick checks)")
    parser.add_argument("--eval-batches", type=int,
                        help="score at most N validation batches of 64 rows per length (default: all)")
    parser.add_argument("--output-dir", help="default: runs/ablate/SUITE (runs/ablate/SUITE-CORPUS for "
                        "another corpus)")
    parser.add_argument("--fresh", action="store_true", help="retrain cells that finished before")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        ablate(args.suite, variants=args.variants, seeds=args.seeds, steps=args.steps, minutes=args.minutes,
               corpus=args.corpus, downstream=args.downstream, finetune_steps=args.finetune_steps,
               max_documents=args.max_documents, eval_batches=args.eval_batches, output_dir=args.output_dir,
               fresh=args.fresh)
    except AblationError as err:
        print(f"hfpipe ablate: error: {err}", file=sys.stderr)
        return 2
    return 0


def command_line(suite: str, variants, seeds: int, steps, minutes, corpus: str, downstream: str,
                 finetune_steps, max_documents, eval_batches) -> str:
    """The command that reproduces a result, as the table quotes it."""
    words = ["hfpipe ablate", suite]
    words += ["--variants", *variants] if variants else []
    words += [f"--seeds {seeds}"]
    words += [f"--steps {steps}"] if steps is not None else [f"--minutes {minutes}"] if minutes is not None else []
    words += [f"--corpus {corpus}"] if corpus != "embedded" else []
    words += [f"--downstream {downstream}"] if downstream != "auto" else []
    for flag, value in (("--finetune-steps", finetune_steps), ("--max-documents", max_documents),
                        ("--eval-batches", eval_batches)):
        words += [f"{flag} {value}"] if value is not None else []
    return " ".join(words)


def ablate(suite_name: str, *, variants: list[str] | None = None, seeds: int = DEFAULT_SEEDS,
           steps: int | None = None, minutes: float | None = None, corpus: str = "embedded",
           downstream: str = "auto", finetune_steps: int | None = None, max_documents: int | None = None,
           eval_batches: int | None = None, output_dir: str | Path | None = None, fresh: bool = False) -> dict:
    """Run every (variant, seed) cell of the suite and write the table, the curves and results.json."""
    if suite_name not in SUITES:
        raise AblationError(f"unknown suite {suite_name!r}; valid suites: {', '.join(SUITES)}")
    suite = SUITES[suite_name]
    chosen = select_variants(suite, variants)
    for name, n in (("--seeds", seeds), ("--steps", steps), ("--finetune-steps", finetune_steps)):
        if n is not None and n < 1:
            raise AblationError(f"{name} must be >= 1, got {n}")
    if minutes is not None and minutes <= 0:
        raise AblationError(f"--minutes must be > 0, got {minutes}")
    slug = "" if corpus == "embedded" else "-" + Path(corpus).name
    out = Path(output_dir or f"runs/ablate/{suite.name}{slug}")
    command = command_line(suite.name, variants, seeds, steps, minutes, corpus, downstream, finetune_steps,
                           max_documents, eval_batches)

    from .report import format_table, plot_curves, summarize
    from .runs import prepare, run_cell

    start = time.perf_counter()
    setup = prepare(suite, out, corpus=corpus, steps=steps, minutes=minutes, downstream=downstream,
                    finetune_steps=finetune_steps, max_documents=max_documents, eval_batches=eval_batches,
                    fresh=fresh)
    cells = {v.name: [run_cell(setup, v, seed) for seed in range(1, seeds + 1)] for v in chosen}
    wall = time.perf_counter() - start

    T, task = setup.trained_length, (setup.downstream or {}).get("task")
    summary = summarize(suite, cells, T, task)
    recipe = setup.recipe
    budget = (f"{recipe.train.max_steps} steps" if recipe.train.max_steps else f"{recipe.train.max_minutes} min")
    header = [
        f"## {suite.name}: {suite.question}",
        "",
        f"`{command}`",
        "",
        f"Budget: {budget} of {recipe.model.preset} per cell at T={T}, batch {recipe.train.batch_size}, "
        f"lr {recipe.train.lr:g} ({recipe.train.schedule}); corpus: {corpus}; "
        f"downstream: {_downstream_text(setup.downstream, finetune_steps)}. Seeds {', '.join(map(str, range(1, seeds + 1)))}: a seed changes init, "
        "data order, training masks and dropout; the data, tokenizer and evaluation masks are the same for "
        f"every cell. Mean ± std over seeds. {_timing(cells, wall)}",
        "",
    ]
    table = "\n".join(header) + "\n" + format_table(suite, cells, summary, T, task) + "\n"
    print("\n" + table)
    png = plot_curves(cells, out / "curves.png", f"hfpipe ablate {suite.name} ({corpus}): mean ± std over "
                      f"{seeds} seed{'s' * (seeds > 1)}")
    (out / "table.md").write_text(table)
    result = {"suite": suite.name, "question": suite.question, "command": command, "corpus": corpus,
              "budget": budget, "seeds": list(range(1, seeds + 1)), "wall_seconds": round(wall, 1),
              "downstream": setup.downstream, "summary": summary, "cells": cells,
              "table": str(out / "table.md"), "curves": str(png)}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"written: {out / 'table.md'}, {png}, {out / 'results.json'}")
    return result


def _downstream_text(downstream: dict | None, finetune_steps: int | None) -> str:
    from .runs import FINETUNE_EPOCHS

    if downstream is None:
        return "none"
    task = downstream["task"]
    budget = f"{finetune_steps} steps" if finetune_steps else f"{FINETUNE_EPOCHS[task]} epochs"
    return f"{task} (recipes/{downstream['recipe']}, {budget}, best epoch's accuracy)"


def _timing(cells: dict[str, list[dict]], wall: float) -> str:
    """Wall time of this invocation, and the compute time of the cells (some may be from an earlier run)."""
    every = [c for runs in cells.values() for c in runs]
    reused = sum(bool(c.get("reused")) for c in every)
    compute = _duration(sum(c["seconds"] for c in every))
    if not reused:
        return f"Wall time {_duration(wall)}, of which the {len(every)} cells took {compute}."
    return (f"The {len(every)} cells took {compute} ({reused} of them in an earlier run, read back); "
            f"this invocation took {_duration(wall)}.")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
