"""The GLUE suite: fine-tune one model on several tasks x seeds, then print the table papers print.

    hfpipe glue runs/pretrain/final \
        cola:data.train_file=../shared/data/cola/train.tsv cola:data.validation_file=../shared/data/cola/dev.tsv \
        sst2:data.train_file=../shared/data/sst2/train.tsv sst2:data.validation_file=../shared/data/sst2/dev.tsv \
        --tasks cola sst2 --seeds 1 2 3
    hfpipe glue MODEL --tasks mnli rte mrpc stsb --from-mnli    # RTE, MRPC, STS-B start from MNLI
    hfpipe glue MODEL sst2:data.train_file=... sst2:data.validation_file=... (same for cola, conll2003) \
        --tasks sst2 cola conll2003 --lr-grid 1e-3 3e-4 1e-4 --select-on 0.1 --seeds 1 2 3

Overrides go right after MODEL: --tasks and --seeds take every word after them.

Each run is `finetune` on `recipes/finetune/glue/<task>.yaml` with `model.name_or_path=MODEL`,
`seed=S`, `output_dir=OUT/<task>/seed<S>` and `train.resume=none`, then the user's overrides: a plain
`key=value` applies to every task, `task:key=value` to that task only (and wins over a plain one),
since one data file cannot fit every task. `seed` and `output_dir` belong to the suite (--seeds,
--output-dir) and are refused as overrides.

A run that fails (its data is not reachable offline, a bad file, ...) is recorded with its error and
the others go on; its task shows as `failed: <reason>` and the exit code is 1. (Under `accelerate
launch` every process runs every task; a failure must then happen on all processes alike, as a
missing file or an unreachable dataset does.)

--from-mnli (BERT, RoBERTa and ModernBERT do this for the small tasks): MNLI runs first, for each
seed, and RTE / MRPC / STS-B of that seed start from its best MNLI model. Only the encoder transfers:
MNLI's head has 3 outputs, theirs 2 or 1, and transformers' `from_pretrained` refuses a head of
another shape. So the suite saves the MNLI encoder (`HfpipeModel`: embeddings, layers, pooler) and
tokenizer to `OUT/mnli/seed<S>/backbone`, with generic labels, and the task starts from that
folder; its new head is initialized as usual.

The comparison protocol (--lr-grid; issue 21): for each task, in this order,
1. a fixed fraction (--select-on, default 0.1) of the TRAINING rows, drawn with --select-seed, is held
   out as a selection split; both parts are written to `OUT/<task>/select/{fit,held_out}.jsonl`;
2. one fine-tuning run per lr of the grid on `fit`, scored on `held_out` (seed --select-seed);
3. the lr with the best score is chosen (ties -> the smaller lr; a failed run never wins);
4. only then, one run per --seeds with that lr on ALL the training rows, scored on dev.
The dev file is not read before step 4 (tests/train/test_suite.py asserts which files are read, in
order). Under the protocol every run evaluates once, at its end (no best epoch is picked on any
split, so neither the grid nor the dev score is a maximum over checkpoints), with no early stopping;
the budget is the recipe's (4 epochs, as Google's, is `train.num_epochs=4`). Selection needs local
training files (`task:data.train_file=...`): a Hub dataset would bring its dev split along.
Choice of grid: Google's miniatures (Turc et al. 2019) searched lr {3e-4, 1e-4, 5e-5, 3e-5} x batch
{8..128}, 4 epochs. The grid is the user's; bench/quality.py uses {1e-3, 3e-4, 1e-4}: the top of
Google's grid, where their 2-4 layer models did best, plus 1e-3 because its models are smaller and far
less pretrained (and the random-init control starts from nothing); the batch is the recipe's (one
axis keeps the grid at 3 runs a task). The grid scores and the chosen lr are in `selection`.

Outputs: `OUT/suite_results.json` (every run's metrics, the per-task scores, the GLUE average and
the table) and `OUT/suite_results.md` (the table). How the table is computed:
- values are dev-set scores x 100, shown as mean ± sample standard deviation (n - 1) over seeds;
  with one seed, just the value;
- MRPC and QQP show F1 / accuracy, STS-B Pearson / Spearman, MNLI matched / mismatched accuracy;
- a task's score is the mean of its numbers (as the GLUE leaderboard scores a task with two
  metrics; for MNLI, the mean of m and mm), and "GLUE avg" is the mean of the task scores, over
  the tasks that ran without failure (the note under the table lists them). WNLI counts when it is
  run (the leaderboard counts it; BERT's paper leaves it out: run without it to match BERT).
  CoNLL-2003 (entity F1) may be run too: it gets a column but is not part of the GLUE average.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import FinetuneRecipe, RecipeError, load_recipe
from ..config.recipes_index import shipped_recipe
from ..tasks.spec import get_task

COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cola": ("CoLA (MCC)", ("matthews_correlation",)),
    "sst2": ("SST-2 (acc)", ("accuracy",)),
    "mrpc": ("MRPC (F1/acc)", ("f1", "accuracy")),
    "stsb": ("STS-B (P/S)", ("pearson", "spearmanr")),
    "qqp": ("QQP (F1/acc)", ("f1", "accuracy")),
    "mnli": ("MNLI (m/mm)", ("accuracy", "accuracy_mismatched")),
    "qnli": ("QNLI (acc)", ("accuracy",)),
    "rte": ("RTE (acc)", ("accuracy",)),
    "wnli": ("WNLI (acc)", ("accuracy",)),
    "conll2003": ("CoNLL-2003 (F1)", ("f1",)),
}
"""Suite tasks in the benchmark's order -> (table header, metric keys shown and averaged)."""

GLUE = tuple(t for t in COLUMNS if t != "conll2003")
"""The tasks the GLUE average counts."""

AT_END_ONLY = ["train.eval_every_steps=1000000000", "train.early_stopping_patience=null"]
"""Under the protocol a run is evaluated once, at its end (finetune evaluates at the end of the budget
whatever the cadence), so its score is the last model's, never the best of several checkpoints."""

FROM_MNLI = ("rte", "mrpc", "stsb")
"""Tasks that start from the MNLI model with --from-mnli."""

RESERVED = ("seed", "output_dir", "task")
"""Recipe keys the suite sets itself; an override of them is an error."""

_NOT_METRICS = {"task", "main_metric", "best_step", "final_train_loss", "steps", "history",
                "trainable_parameters", "total_parameters", "tokens", "train_seconds", "train_tokens_per_sec",
                "train_mfu", "run"}
"""Keys of finetune()'s result that are not evaluation metrics."""


# ----------------------------------------------------------------------------------------------
# Tasks and overrides
# ----------------------------------------------------------------------------------------------


def glue_tasks(names: Iterable[str]) -> list[str]:
    """Canonical task names (`SST-2` -> `sst2`), duplicates dropped; only suite tasks are accepted."""
    out: list[str] = []
    for name in names:
        task = get_task(name).name
        if task not in COLUMNS:
            raise RecipeError(f"{name!r} is not a suite task; suite tasks: {', '.join(COLUMNS)}", key="--tasks")
        if task not in out:
            out.append(task)
    return out


def split_overrides(items: Iterable[str], tasks: Sequence[str]) -> dict[str, list[str]]:
    """Each task's overrides: the plain ones (all tasks) first, then its own `task:key=value` ones.

    `sst2:data.train_file=a.tsv` applies to sst2 only; the task prefix may be written like any task
    name (`SST-2:...`). A prefix naming a task that is not run is an error (a likely typo)."""
    common: list[str] = []
    own: dict[str, list[str]] = {task: [] for task in tasks}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise RecipeError(
                f"bad override {item!r}: write key=value or task:key=value, e.g. sst2:train.lr=3e-5"
            )
        prefix, colon, key = key.rpartition(":")
        key = key.strip()
        if key in RESERVED:
            flag = {"seed": " (use --seeds)", "output_dir": " (use --output-dir)"}.get(key, "")
            raise RecipeError(f"override {item!r}: {key} is set by the suite for each run{flag}")
        if not colon:
            common.append(f"{key}={value}")
            continue
        task = get_task(prefix).name
        if task not in own:
            raise RecipeError(
                f"override {item!r} is for task {task}, which is not run (tasks: {', '.join(tasks)})"
            )
        own[task].append(f"{key}={value}")
    return {task: common + own[task] for task in tasks}


def build_recipe(
    task: str, seed: int, model: str, output_dir: str | Path, overrides: Sequence[str], run: str | None = None
) -> FinetuneRecipe:
    """The recipe of one run: the task's recipe, the suite's keys, then the user's overrides.

    The run's folder is `output_dir/task/run` (default `seed<seed>`)."""
    suite_keys = [
        f"model.name_or_path={model}",
        f"seed={seed}",
        f"output_dir={Path(output_dir) / task / (run or f'seed{seed}')}",
        "train.resume=none",
    ]
    name = f"glue/{task}" if task in GLUE else task
    path = shipped_recipe(name, "finetune")  # in the wheel, or recipes/ of a checkout
    return load_recipe(path, FinetuneRecipe, suite_keys + list(overrides))


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


def save_backbone(model_dir: str | Path, out: str | Path) -> Path:
    """Save the encoder of a fine-tuned classifier (without its head) and its tokenizer to `out`.

    The saved config gets transformers' default two generic labels and no problem_type, as a
    pretrained encoder has, so a head of any size (and regression) can be put on it."""
    from transformers import AutoTokenizer

    from ..model.modeling_hfpipe import HfpipeForSequenceClassification

    classifier = HfpipeForSequenceClassification.from_pretrained(model_dir)
    encoder = classifier.model  # HfpipeModel with its pooler
    encoder.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    encoder.config.label2id = {"LABEL_0": 0, "LABEL_1": 1}
    encoder.config.problem_type = None
    encoder.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return Path(out)


def run_one(recipe: FinetuneRecipe, init_from: str) -> dict[str, Any]:
    """Fine-tune one (task, seed); the record keeps the metrics, or the error if it failed."""
    from .finetune import finetune

    record: dict[str, Any] = {
        "task": recipe.task,
        "seed": recipe.seed,
        "output_dir": recipe.output_dir,
        "init_from": init_from,
    }
    from ..tasks.files import HubUnreachableError

    start = time.perf_counter()
    try:
        result = finetune(recipe)
    except HubUnreachableError:  # every Hub task would fail the same way: one line now, not a table later
        raise
    except Exception as err:  # one failed run must not stop the suite; the error is kept
        record["error"] = f"{type(err).__name__}: {err}"
        Path(recipe.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(recipe.output_dir) / "error.txt").write_text(traceback.format_exc())
        print(f"suite: {recipe.task} seed {recipe.seed} failed: {record['error']}", file=sys.stderr)
        return record
    record.update(
        main_metric=result["main_metric"],
        main=result[result["main_metric"]],
        metrics={k: v for k, v in result.items() if k not in _NOT_METRICS},
        best_step=result["best_step"],
        steps=result["steps"],
        seconds=round(time.perf_counter() - start, 1),
    )
    return record


# ----------------------------------------------------------------------------------------------
# The protocol: the lr chosen on a split of the training data, then seeds on dev
# ----------------------------------------------------------------------------------------------


def selection_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit, held_out): row indices of `n` training rows, `fraction` of them (rounded, at least one,
    and at least one left to fit on) held out, drawn with `seed`; both sorted (file order kept)."""
    if not 0.0 < fraction < 1.0:
        raise RecipeError(f"--select-on {fraction:g}: give the held-out fraction of the training data, in (0, 1)")
    if n < 2:
        raise RecipeError(f"{n} training row(s): the selection split needs at least 2")
    k = min(max(round(fraction * n), 1), n - 1)
    order = random.Random(seed).sample(range(n), n)
    return sorted(order[k:]), sorted(order[:k])


def choose_lr(scores: Mapping[float, float | None]) -> float | None:
    """The lr with the best score (higher is better); ties -> the smaller lr. A failed run (None) or a
    NaN never wins; None when every run failed."""
    valid = {lr: s for lr, s in scores.items() if s is not None and math.isfinite(s)}
    return min(valid, key=lambda lr: (-valid[lr], lr)) if valid else None


def write_jsonl(rows, path: Path) -> None:
    """A `datasets.Dataset` as JSON lines in the Hub's columns (read back by the task's JSON reader)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def select_lr(task: str, model: str, out: Path, overrides: Sequence[str], lr_grid: Sequence[float],
              fraction: float, seed: int) -> dict[str, Any]:  # fmt: skip
    """Steps 1-3 of the protocol for one task: split the training rows, one run per lr on `fit` scored
    on `held_out`, the chosen lr. Reads only `data.train_file` (never the dev file)."""
    from accelerate import PartialState

    from ..tasks.files import read_task_file

    base = build_recipe(task, seed, model, out, overrides, run="select")
    if not base.data.train_file:
        raise RecipeError(f"--lr-grid: task {task} needs a local training file for the selection split: "
                          f"{task}:data.train_file=...", key="data.train_file")  # fmt: skip
    rows = read_task_file(get_task(task), base.data.train_file, base.data, key="data.train_file")
    fit, held = selection_split(len(rows), fraction, seed)
    folder = Path(base.output_dir)
    state = PartialState()
    if state.is_main_process:
        write_jsonl(rows.select(fit), folder / "fit.jsonl")
        write_jsonl(rows.select(held), folder / "held_out.jsonl")
    state.wait_for_everyone()
    split_keys = [f"data.train_file={folder / 'fit.jsonl'}", f"data.validation_file={folder / 'held_out.jsonl'}",
                  "data.validation_mismatched_file=null", "data.text_columns=null", "data.label_column=null"]
    grid = []
    for lr in lr_grid:
        recipe = build_recipe(task, seed, model, out, [*overrides, *split_keys, f"train.lr={lr}"],
                              run=f"select/lr{lr:g}")
        record = run_one(recipe, model)
        grid.append({"lr": lr, "score": record.get("main"), **({"error": record["error"]} if "error" in record else {})})
    chosen = choose_lr({g["lr"]: g["score"] for g in grid})
    print(f"suite: {task}: lr grid " + ", ".join(f"{g['lr']:g} -> {g['score']}" for g in grid) + f"; chosen {chosen}")
    return {"fraction": fraction, "seed": seed, "train_rows": len(rows), "fit_rows": len(fit),
            "held_out_rows": len(held), "metric": get_task(task).main_metric, "grid": grid, "chosen_lr": chosen}


def run_task(task: str, model: str, out: Path, overrides: Sequence[str], seeds: Sequence[int],
             lr_grid: Sequence[float] | None = None, fraction: float = 0.1,
             select_seed: int = 0) -> tuple[list[dict], dict | None]:  # fmt: skip
    """One task: with `lr_grid`, the protocol (select the lr, then every seed with it on all the training
    data); without, every seed with the recipe's lr. Returns (run records, selection or None)."""
    if not lr_grid:
        return [run_one(build_recipe(task, seed, model, out, overrides), model) for seed in seeds], None
    overrides = [*overrides, *AT_END_ONLY]
    try:
        selection = select_lr(task, model, out, overrides, lr_grid, fraction, select_seed)
    except RecipeError:
        raise
    except Exception as err:  # a bad training file fails this task, not the suite
        selection = {"error": f"{type(err).__name__}: {err}", "chosen_lr": None}
        print(f"suite: {task}: lr selection failed: {selection['error']}", file=sys.stderr)
    lr = selection["chosen_lr"]
    if lr is None:
        reason = selection.get("error") or "every lr of the grid failed"
        return [{"task": task, "seed": seed, "init_from": model, "error": f"lr selection failed ({reason})"}
                for seed in seeds], selection  # fmt: skip
    return [run_one(build_recipe(task, seed, model, out, [*overrides, f"train.lr={lr}"]), model)
            for seed in seeds], selection  # fmt: skip


def check_protocol_args(lr_grid: Sequence[float] | None, fraction: float, overrides: Mapping[str, Sequence[str]],
                        from_mnli: bool) -> None:  # fmt: skip
    """Refuse what the protocol cannot honour, before any training."""
    if not lr_grid:
        return
    if any(lr <= 0 or not math.isfinite(lr) for lr in lr_grid):
        raise RecipeError(f"--lr-grid {' '.join(map(str, lr_grid))}: every lr must be a positive number")
    selection_split(2, fraction, 0)  # checks the fraction
    if from_mnli:
        raise RecipeError("--lr-grid with --from-mnli is not supported: run the transfer tasks without --lr-grid")
    for task, items in overrides.items():
        if any(item.split("=", 1)[0].strip() == "train.lr" for item in items):
            raise RecipeError(f"override train.lr for {task}: with --lr-grid the lr is chosen from the grid")


def run_suite(args) -> int:
    """`hfpipe glue`: every task x seed, then the table. Returns 0, or 1 if any run failed.

    `args` has `model`, `tasks`, `seeds`, `output_dir`, `from_mnli` and `overrides`, and optionally
    `lr_grid`, `select_on` and `select_seed` (cli.py)."""
    from accelerate import PartialState

    lr_grid = list(dict.fromkeys(getattr(args, "lr_grid", None) or []))
    fraction, select_seed = getattr(args, "select_on", 0.1), getattr(args, "select_seed", 0)
    tasks = glue_tasks(args.tasks)
    transfer = [t for t in tasks if t in FROM_MNLI] if args.from_mnli else []
    if transfer:
        tasks = ["mnli"] + [t for t in tasks if t != "mnli"]  # MNLI first: the others start from it
        if "mnli" not in glue_tasks(args.tasks):
            print(f"suite: --from-mnli: running mnli first, for {', '.join(transfer)}")
    seeds = list(dict.fromkeys(args.seeds))
    out = Path(args.output_dir)
    overrides = split_overrides(args.overrides, tasks)
    check_protocol_args(lr_grid, fraction, overrides, args.from_mnli)

    # Every recipe is built (and validated) before any training: a typo fails now, not hours later.
    mnli_backbone = {seed: out / "mnli" / f"seed{seed}" / "backbone" for seed in seeds}
    for task in tasks:
        for seed in seeds:
            init = str(mnli_backbone[seed]) if task in transfer else args.model
            extra = [*AT_END_ONLY, f"train.lr={lr_grid[0]}"] if lr_grid else []
            build_recipe(task, seed, init, out, [*overrides[task], *extra])

    state = PartialState()
    results: dict[str, list[dict]] = {}
    selection: dict[str, dict] = {}
    for task in tasks:
        if task in transfer:
            results[task] = [run_transfer(task, seed, mnli_backbone[seed], results["mnli"], out, overrides[task])
                             for seed in seeds]  # fmt: skip
            continue
        results[task], chosen = run_task(task, args.model, out, overrides[task], seeds, lr_grid, fraction, select_seed)
        if chosen is not None:
            selection[task] = chosen
        if task == "mnli" and transfer:
            for record in results[task]:
                if "error" not in record and state.is_main_process:
                    save_backbone(Path(record["output_dir"]) / "final", mnli_backbone[record["seed"]])
            state.wait_for_everyone()

    table = format_table(results, model=args.model)
    if state.is_main_process:
        summary = {
            "model": args.model,
            "tasks": tasks,
            "seeds": seeds,
            "from_mnli": bool(args.from_mnli),
            "protocol": ({"lr_grid": lr_grid, "select_on": fraction, "select_seed": select_seed,
                          "evaluated": "once, at the end of each run"} if lr_grid else None),  # fmt: skip
            "selection": selection,
            "std": "sample standard deviation (n - 1) over seeds",
            "scores": task_scores(results),
            "glue_average": glue_score(results),
            "table": table,
            "runs": results,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "suite_results.json").write_text(json.dumps(summary, indent=2))
        (out / "suite_results.md").write_text(table + "\n")
        print(table)
    return 1 if any("error" in r for runs in results.values() for r in runs) else 0


def run_transfer(task: str, seed: int, backbone: Path, mnli_runs: Sequence[dict], out: Path,
                 overrides: Sequence[str]) -> dict:  # fmt: skip
    """A --from-mnli task of one seed: from that seed's MNLI encoder, or failed with it."""
    mnli = next(r for r in mnli_runs if r["seed"] == seed)
    if "error" in mnli:
        return {"task": task, "seed": seed, "output_dir": str(out / task / f"seed{seed}"),
                "init_from": str(backbone), "error": f"MNLI seed {seed} failed ({mnli['error']})"}  # fmt: skip
    return run_one(build_recipe(task, seed, str(backbone), out, overrides), str(backbone))


# ----------------------------------------------------------------------------------------------
# The table (pure functions of the run records)
# ----------------------------------------------------------------------------------------------


def _glue_order(results: Mapping[str, Any]) -> list[str]:
    """The tasks of `results` in GLUE's order (the papers' column order)."""
    unknown = [t for t in results if t not in COLUMNS]
    if unknown:
        raise ValueError(f"not GLUE tasks: {', '.join(unknown)}; GLUE tasks: {', '.join(COLUMNS)}")
    return [t for t in COLUMNS if t in results]


def _failure(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The first error among a task's runs (None if all succeeded); a task with no runs failed too."""
    if not runs:
        return "no runs"
    return next((str(r["error"]) for r in runs if "error" in r), None)


def _values(runs: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """Metric `key` x 100 of every run that reports it."""
    return [100.0 * float(r["metrics"][key]) for r in runs if key in r.get("metrics", {})]


def task_scores(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, float]:
    """Each successful task's score x 100: the mean over seeds of the mean of its numbers
    (F1 and accuracy for MRPC/QQP, Pearson and Spearman for STS-B, m and mm for MNLI)."""
    scores = {}
    for task in _glue_order(results):
        runs = results[task]
        if _failure(runs) is not None:
            continue
        means = [statistics.fmean(v) for key in COLUMNS[task][1] if (v := _values(runs, key))]
        if means:
            scores[task] = statistics.fmean(means)
    return scores


def glue_score(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> float | None:
    """The GLUE average x 100: the mean of the task scores (`task_scores`) of the GLUE tasks that did
    not fail (CoNLL-2003 is not counted); None when none succeeded."""
    scores = {t: v for t, v in task_scores(results).items() if t in GLUE}
    return statistics.fmean(scores.values()) if scores else None


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    """'mean ± std' of seed scores for a table cell; the value alone for one seed, a dash for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _short(reason: str, limit: int = 80) -> str:
    text = reason.strip().splitlines()[0] if reason.strip() else "unknown error"
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_table(results: Mapping[str, Sequence[Mapping[str, Any]]], model: str = "model") -> str:
    """A markdown table like the BERT / ModernBERT papers': one row for the model, one column per
    task (GLUE order) and the GLUE average, then a note saying how the numbers were computed.

    `results` maps a task to its run records: `{"seed": 1, "metrics": {"accuracy": 0.91, ...}}`, or
    `{"seed": 1, "error": "..."}` for a failed run (the task then shows `failed: <reason>`)."""
    tasks = _glue_order(results)
    cells = []
    for task in tasks:
        runs, error = results[task], _failure(results[task])
        if error is not None:
            cells.append(f"failed: {_short(error)}")
        else:
            cells.append(" / ".join(mean_std(_values(runs, key)) for key in COLUMNS[task][1]))
    average = glue_score(results)
    header = ["Model", *(COLUMNS[t][0] for t in tasks), "GLUE avg"]
    row = [model, *cells, "–" if average is None else f"{average:.1f}"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        "| " + " | ".join(row) + " |",
    ]

    seeds = sorted({r["seed"] for runs in results.values() for r in runs if "seed" in r})
    spread = "mean ± sample std (n-1) over" if len(seeds) > 1 else "one run,"
    counted = [t for t in task_scores(results) if t in GLUE]
    note = (
        f"Dev-set scores x100, {spread} seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}. "
        f"GLUE avg: mean of the task scores of {', '.join(counted) or 'no task'}; a task with two numbers "
        "scores their mean."
    )
    return "\n".join(lines) + "\n\n" + note
