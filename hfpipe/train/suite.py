"""The GLUE suite: fine-tune one model on several tasks x seeds, then print the table papers print.

    hfpipe glue runs/pretrain/final \
        cola:data.train_file=../shared/data/cola/train.tsv cola:data.validation_file=../shared/data/cola/dev.tsv \
        sst2:data.train_file=../shared/data/sst2/train.tsv sst2:data.validation_file=../shared/data/sst2/dev.tsv \
        --tasks cola sst2 --seeds 1 2 3
    hfpipe glue MODEL --tasks mnli rte mrpc stsb --from-mnli    # RTE, MRPC, STS-B start from MNLI

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

Outputs: `OUT/suite_results.json` (every run's metrics, the per-task scores, the GLUE average and
the table) and `OUT/suite_results.md` (the table). How the table is computed:
- values are dev-set scores x 100, shown as mean ± sample standard deviation (n - 1) over seeds;
  with one seed, just the value;
- MRPC and QQP show F1 / accuracy, STS-B Pearson / Spearman, MNLI matched / mismatched accuracy;
- a task's score is the mean of its numbers (as the GLUE leaderboard scores a task with two
  metrics; for MNLI, the mean of m and mm), and "GLUE avg" is the mean of the task scores, over
  the tasks that ran without failure (the note under the table lists them). WNLI counts when it is
  run (the leaderboard counts it; BERT's paper leaves it out: run without it to match BERT).
"""

from __future__ import annotations

import json
import statistics
import sys
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
}
"""GLUE tasks in the benchmark's order -> (table header, metric keys shown and averaged)."""

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
    """Canonical task names (`SST-2` -> `sst2`), duplicates dropped; only GLUE tasks are accepted."""
    out: list[str] = []
    for name in names:
        task = get_task(name).name
        if task not in COLUMNS:
            raise RecipeError(f"{name!r} is not a GLUE task; GLUE tasks: {', '.join(COLUMNS)}", key="--tasks")
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
    task: str, seed: int, model: str, output_dir: str | Path, overrides: Sequence[str]
) -> FinetuneRecipe:
    """The recipe of one run: the task's recipe, the suite's keys, then the user's overrides."""
    suite_keys = [
        f"model.name_or_path={model}",
        f"seed={seed}",
        f"output_dir={Path(output_dir) / task / f'seed{seed}'}",
        "train.resume=none",
    ]
    path = shipped_recipe(f"glue/{task}", "finetune")  # in the wheel, or recipes/ of a checkout
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
    )
    return record


def run_suite(args) -> int:
    """`hfpipe glue`: every task x seed, then the table. Returns 0, or 1 if any run failed.

    `args` has `model`, `tasks`, `seeds`, `output_dir`, `from_mnli` and `overrides` (cli.py)."""
    from accelerate import PartialState

    tasks = glue_tasks(args.tasks)
    transfer = [t for t in tasks if t in FROM_MNLI] if args.from_mnli else []
    if transfer:
        tasks = ["mnli"] + [t for t in tasks if t != "mnli"]  # MNLI first: the others start from it
        if "mnli" not in glue_tasks(args.tasks):
            print(f"suite: --from-mnli: running mnli first, for {', '.join(transfer)}")
    seeds = list(dict.fromkeys(args.seeds))
    out = Path(args.output_dir)
    overrides = split_overrides(args.overrides, tasks)

    # Every recipe is built (and validated) before any training: a typo fails now, not hours later.
    mnli_backbone = {seed: out / "mnli" / f"seed{seed}" / "backbone" for seed in seeds}
    plan = []
    for task in tasks:
        for seed in seeds:
            init = str(mnli_backbone[seed]) if task in transfer else args.model
            plan.append((build_recipe(task, seed, init, out, overrides[task]), init))

    state = PartialState()
    results: dict[str, list[dict]] = {task: [] for task in tasks}
    mnli_failed: dict[int, str] = {}
    for recipe, init in plan:
        if recipe.task in transfer and recipe.seed in mnli_failed:
            record = {
                "task": recipe.task,
                "seed": recipe.seed,
                "output_dir": recipe.output_dir,
                "init_from": init,
                "error": f"MNLI seed {recipe.seed} failed ({mnli_failed[recipe.seed]})",
            }
        else:
            record = run_one(recipe, init)
        results[recipe.task].append(record)
        if recipe.task == "mnli" and transfer:
            if "error" in record:
                mnli_failed[recipe.seed] = record["error"]
            elif state.is_main_process:
                save_backbone(Path(recipe.output_dir) / "final", mnli_backbone[recipe.seed])
            state.wait_for_everyone()

    table = format_table(results, model=args.model)
    if state.is_main_process:
        summary = {
            "model": args.model,
            "tasks": tasks,
            "seeds": seeds,
            "from_mnli": bool(args.from_mnli),
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
    """The GLUE average x 100: the mean of the task scores (`task_scores`) of the tasks that did not
    fail; None when none succeeded."""
    scores = task_scores(results)
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
    counted = list(task_scores(results))
    note = (
        f"Dev-set scores x100, {spread} seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}. "
        f"GLUE avg: mean of the task scores of {', '.join(counted) or 'no task'}; a task with two numbers "
        "scores their mean."
    )
    return "\n".join(lines) + "\n\n" + note
