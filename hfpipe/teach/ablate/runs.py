"""Running an ablation: the setup every cell shares, and one cell (a variant at a seed).

    from hfpipe.teach.ablate.runs import prepare, run_cell
    setup = prepare(SUITES["positions"], Path("runs/ablate/positions"), corpus="embedded", steps=300)
    cell = run_cell(setup, SUITES["positions"].variant("rope"), seed=1)

What is shared, so that variants differ only by their architecture (and seeds only by what a seed draws):
  * the corpus: the embedded one minus the docstrings held out by the `pydocs` task (as `hfpipe demo`
    does: the downstream scores are on text pretraining never read), WikiText-2, or your files;
  * one tokenizer, trained once into OUT/tokenizer;
  * the recipe recipes/ablations/base.yaml and the budget;
  * the evaluation rows and their masks (fixed seed EVAL_SEED, at every evaluation length).
What a seed changes: weight init, data order, training masks and dropout -- the recipe's `seed`.

A cell is `hfpipe pretrain ablations/base <overrides>` (its exact command is in OUT/runs/VARIANT/seed-S/
cell.json), then the probes on the final model, then fine-tuning on the downstream task. A finished
cell whose overrides are unchanged is read back instead of trained again, so an interrupted ablation
continues where it stopped; when only the downstream task or its budget changed, only the fine-tuning
runs again (`--fresh` retrains everything).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .suites import AblationError, Suite, Variant

BASE_RECIPE = "ablations/base"
EVAL_SEED = 0  # the evaluation masks: one draw for every variant and seed
EXTRAPOLATION_LENGTHS = (128, 256)  # the positions suite also scores rows this long (trained at the base length)
PROBE_ROWS = 256  # rows scored one at a time by the batch-statistics probe
REPO = Path(__file__).resolve().parents[3]
WIKITEXT_CANDIDATES = (Path("../shared/data/wikitext-2"), REPO.parent / "shared" / "data" / "wikitext-2")
SST2_CANDIDATES = (Path("../shared/data/sst2"), REPO.parent / "shared" / "data" / "sst2")
FINETUNE_EPOCHS = {"pydocs": 10, "sst2": 1}
"""Fine-tuning epochs per downstream task. pydocs gets twice the demo recipe's 5: after 300 pretraining
steps, 5 epochs leave the accuracy still rising and its spread over seeds at up to 14 points (measured:
attention 67.9 ± 8.3% at 5 epochs, 80.3 ± 1.5% at 10)."""


@dataclass
class Setup:
    """What every cell of one ablation shares."""

    suite: Suite
    out: Path
    base_path: Path  # recipes/ablations/base.yaml
    shared_overrides: list[str]  # corpus, tokenizer and budget: the same for every cell
    recipe: object  # the base recipe with shared_overrides (PretrainRecipe)
    eval_sets: dict[int, list[dict]]  # row length -> fixed-mask validation batches
    downstream: dict | None  # {"task": "pydocs" | "sst2", "overrides": [...]}, None to skip fine-tuning
    fresh: bool = False

    @property
    def trained_length(self) -> int:
        return self.recipe.data.block_size


# ----------------------------------------------------------------------------------------------
# Setup: corpus, tokenizer, evaluation rows, downstream task
# ----------------------------------------------------------------------------------------------


def corpus_overrides(corpus: str, out: Path) -> list[str]:
    """Recipe keys that point the data at `corpus`: "embedded", "wikitext-2", or a path (a folder holding
    train.txt and valid.txt as WikiText does, or one file whose validation part is carved off by hash)."""
    if corpus == "embedded":
        from ...demo import write_pretraining_data

        write_pretraining_data(out / "data")  # the corpus minus pydocs' held-out docstrings
        return [f"data.source={out / 'data' / 'pretrain.jsonl'}",
                f"data.validation_source={out / 'data' / 'validation.jsonl'}"]
    if corpus == "wikitext-2":
        folder = next((p for p in WIKITEXT_CANDIDATES if (p / "train.txt").is_file()), None)
        if folder is None:
            raise AblationError("--corpus wikitext-2: no train.txt in "
                                + " or ".join(str(p.resolve()) for p in WIKITEXT_CANDIDATES)
                                + "; put WikiText-2 there or give its folder as --corpus PATH")
        return _folder_overrides(folder)
    path = Path(corpus)
    if path.is_dir():
        if not (path / "train.txt").is_file():
            raise AblationError(f"--corpus {corpus}: the folder has no train.txt (and valid.txt) of one "
                                "document per line")
        return _folder_overrides(path)
    if not path.is_file():
        raise AblationError(f"--corpus {corpus}: no such file or folder ({path.resolve()}); use 'embedded', "
                            "'wikitext-2' or a path")
    return [f"data.source={path.resolve()}"]


def _folder_overrides(folder: Path) -> list[str]:
    valid = folder / "valid.txt"
    return [f"data.source={(folder / 'train.txt').resolve()}",
            *([f"data.validation_source={valid.resolve()}"] if valid.is_file() else [])]


def budget_overrides(steps: int | None, minutes: float | None) -> list[str]:
    """The training budget: steps (evaluating 6 times along the way) or minutes of training per cell."""
    if minutes is not None:
        return ["train.max_steps=null", f"train.max_minutes={minutes}"]
    if steps is None:
        return []  # the base recipe's
    return [f"train.max_steps={steps}", f"train.eval_every_steps={max(steps // 6, 1)}",
            f"train.log_every_steps={max(1, min(10, steps // 10))}"]


def downstream_settings(task: str, corpus: str, finetune_steps: int | None) -> dict | None:
    """The fine-tuning task: `auto` is pydocs (in domain) for the embedded corpus, SST-2 for the others
    when ../shared/data/sst2 is there (else pydocs); `none` skips fine-tuning."""
    sst2 = next((p for p in SST2_CANDIDATES if (p / "train.tsv").is_file()), None)
    if task == "auto":
        task = "sst2" if corpus != "embedded" and sst2 is not None else "pydocs"
    if task == "none":
        return None
    overrides = ["data.max_length=64", "train.resume=none", "tracking.plot=false"]  # 64: the trained length
    if task == "sst2":
        if sst2 is None:
            raise AblationError("--downstream sst2: no train.tsv in "
                                + " or ".join(str(p.resolve()) for p in SST2_CANDIDATES))
        overrides += [f"data.train_file={(sst2 / 'train.tsv').resolve()}",
                      f"data.validation_file={(sst2 / 'dev.tsv').resolve()}"]
    if finetune_steps is not None:
        overrides += [f"train.max_steps={finetune_steps}", "train.num_epochs=null", "train.eval_every_steps=null"]
    else:
        overrides += [f"train.num_epochs={FINETUNE_EPOCHS[task]}"]
    return {"task": task, "recipe": f"demo/{task}.yaml", "overrides": overrides}


def prepare(suite: Suite, out: Path, *, corpus: str = "embedded", steps: int | None = None,
            minutes: float | None = None, downstream: str = "auto", finetune_steps: int | None = None,
            max_documents: int | None = None, eval_batches: int | None = None, fresh: bool = False) -> Setup:
    """Data, tokenizer and evaluation rows for `suite`, in `out`."""
    from ...config import PretrainRecipe, load_recipe
    from ...config.recipes_index import shipped_recipe
    from ...data.sources import iter_texts, load_text_datasets
    from ...data.tokenizer import get_tokenizer

    out = Path(out)
    shared = corpus_overrides(corpus, out) + budget_overrides(steps, minutes)  # a missing corpus stops here
    out.mkdir(parents=True, exist_ok=True)
    if max_documents is not None:
        shared.append(f"data.max_documents={max_documents}")
    if eval_batches is not None:  # the in-loop evaluations too
        shared.append(f"eval.max_batches={min(eval_batches, 8)}")
    base_path = shipped_recipe(BASE_RECIPE, "pretrain")
    recipe = load_recipe(base_path, PretrainRecipe, shared)
    # One tokenizer for every cell, retrained when the data it was trained on changed.
    record, settings = out / "setup.json", {"data": dataclasses.asdict(recipe.data)}
    retrain = fresh or not record.is_file() or json.loads(record.read_text()) != settings
    train_texts, _ = load_text_datasets(recipe.data, seed=recipe.seed)
    tokenizer = get_tokenizer(recipe.tokenizer, lambda: iter_texts(train_texts), out, retrain=retrain)
    record.write_text(json.dumps(settings, indent=2))
    shared.append(f"tokenizer.name_or_path={out / 'tokenizer'}")
    recipe = load_recipe(base_path, PretrainRecipe, shared)
    lengths = [recipe.data.block_size]
    if suite.probe == "extrapolation":
        lengths += [n for n in EXTRAPOLATION_LENGTHS if n > recipe.data.block_size]
    eval_sets = {n: fixed_eval_rows(recipe, tokenizer, n, eval_batches) for n in lengths}
    return Setup(suite, out, base_path, shared, recipe, eval_sets,
                 downstream_settings(downstream, corpus, finetune_steps), fresh)


def fixed_eval_rows(recipe, tokenizer, length: int, max_batches: int | None) -> list[dict]:
    """The validation documents packed into rows of `length` tokens and masked once with EVAL_SEED."""
    from ...data.loader import fixed_eval_batches
    from ...data.masking import default_mlm_probability
    from ...data.sources import load_text_datasets, tokenize_dataset

    data = dataclasses.replace(recipe.data, block_size=length)
    _, val_texts = load_text_datasets(data, seed=recipe.seed)
    rows = tokenize_dataset(val_texts, tokenizer, data, whole_word=recipe.masking.whole_word)
    probability = recipe.masking.mlm_probability or default_mlm_probability(recipe.model.preset)
    return fixed_eval_batches(rows, tokenizer, masking=recipe.masking, mlm_probability=probability,
                              seed=EVAL_SEED, batch_size=recipe.eval.batch_size, max_batches=max_batches)


# ----------------------------------------------------------------------------------------------
# One cell: pretrain -> probes -> downstream
# ----------------------------------------------------------------------------------------------


def variant_overrides(setup: Setup, variant: Variant) -> list[str]:
    """The recipe keys that make `variant` out of the base recipe."""
    config = dict(variant.config)
    if variant.equal_parameters:
        config["intermediate_size"] = matched_intermediate_size(setup.recipe, variant)
    overrides = [f"model.config_overrides.{key}={_yaml(value)}" for key, value in config.items()]
    if variant.lr_scale != 1.0:
        overrides.append(f"train.lr={setup.recipe.train.lr * variant.lr_scale:g}")
    return overrides + list(setup.suite.train_overrides)


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def matched_intermediate_size(recipe, variant: Variant) -> int:
    """The MLP width that gives a parameter-free token mixer attention's parameter count: attention has
    4 C x C weights (Q, K, V, output) and 4 C biases per layer; each unit of MLP width costs 2 C + 1
    (up and down weights, the up bias), or 3 C + 2 for a gated MLP."""
    from ...model.configuration_hfpipe import HfpipeConfig

    config = HfpipeConfig.from_preset(recipe.model.preset, **{**recipe.model.config_overrides, **variant.config})
    C, bias = config.hidden_size, int(config.use_bias)
    attention = 4 * C * C + 4 * C * bias
    per_unit = (3 * C + 2 * bias) if config.hidden_act in ("geglu", "swiglu") else (2 * C + bias)
    return config.intermediate_size + round(attention / per_unit)


def cell_dir(setup: Setup, variant: Variant, seed: int) -> Path:
    return setup.out / "runs" / variant.name / f"seed-{seed}"


def run_cell(setup: Setup, variant: Variant, seed: int) -> dict:
    """Train `variant` at `seed`, measure it and fine-tune it; the cell's numbers (also in its cell.json)."""
    from ...config import PretrainRecipe, load_recipe
    from ...train.logs import read_metrics
    from ...train.pretrain import pretrain

    out = cell_dir(setup, variant, seed)
    overrides = [*setup.shared_overrides, *variant_overrides(setup, variant), f"seed={seed}",
                 f"output_dir={out}", "train.resume=none", "tracking.plot=false", "train.save_every_steps=null"]
    saved = out / "cell.json"
    earlier = json.loads(saved.read_text()) if saved.is_file() and not setup.fresh else {}
    if earlier.get("overrides") == overrides and (out / "final").is_dir():
        if earlier.get("downstream_settings") != setup.downstream:  # pretraining stands: fine-tune again
            print(f"\n== {setup.suite.name}: {variant.name}, seed {seed}: new downstream task ==", flush=True)
            pretrained = earlier["seconds"] - earlier.get("downstream_seconds", 0.0)
            earlier.update(with_downstream(setup, out, seed, earlier["finite"]))
            earlier["seconds"] = round(pretrained + earlier["downstream_seconds"], 1)
            saved.write_text(json.dumps(earlier, indent=1))
        print(f"== {variant.name}, seed {seed}: trained before, read from {saved}", flush=True)
        return {**earlier, "reused": True}
    print(f"\n== {setup.suite.name}: {variant.name}, seed {seed} ==", flush=True)
    start = time.perf_counter()
    results = pretrain(load_recipe(setup.base_path, PretrainRecipe, overrides))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # final/ holds the weights; nothing resumes a cell
    records = read_metrics(out / "metrics.jsonl")
    cell = {"variant": variant.name, "seed": seed, "overrides": overrides,
            "command": " ".join(["hfpipe pretrain", BASE_RECIPE, *map(shlex.quote, overrides)]),
            "steps": results["step"], "train_seconds": results["train_seconds"],
            "curves": curves(records), **measure(setup, out / "final", records, results["step"])}
    cell.update(with_downstream(setup, out, seed, cell["finite"]))
    cell["seconds"] = round(time.perf_counter() - start, 1)
    saved.write_text(json.dumps(cell, indent=1))
    return cell


def with_downstream(setup: Setup, out: Path, seed: int, finite: bool) -> dict:
    """The cell's downstream accuracy (None without a task, or when pretraining diverged), and its cost."""
    start = time.perf_counter()
    accuracy = downstream(setup, out, seed) if finite and setup.downstream else None
    return {"downstream": accuracy, "downstream_settings": setup.downstream,
            "downstream_seconds": round(time.perf_counter() - start, 1)}


def curves(records: list[dict]) -> dict[str, list]:
    """[[step, value]] of the training loss and the in-loop validation loss, from metrics.jsonl."""
    return {"train": [[r["step"], r["loss"]] for r in records if "loss" in r],
            "eval": [[r["step"], r["eval_loss"]] for r in records if "eval_loss" in r]}


def measure(setup: Setup, final: Path, records: list[dict], last_step: int) -> dict:
    """The cell's metrics on the fixed evaluation rows, and the suite's probe."""
    from ...model.modeling_hfpipe import HfpipeForMaskedLM
    from . import probes

    model = HfpipeForMaskedLM.from_pretrained(final).eval()
    model.sparse_prediction = True  # logits only at the masked positions, as pretraining computes them
    T = setup.trained_length
    main = probes.mlm_metrics(model, setup.eval_sets[T])
    metrics = {"mlm_loss": main["loss"], "mlm_accuracy": main["accuracy"], "eval_tokens": main["tokens"]}
    found = {"parameters": sum(p.numel() for p in model.parameters()), "metrics": metrics,
             "finite": math.isfinite(main["loss"])}
    if setup.suite.probe == "extrapolation":
        for length, result in probes.extrapolation(model, setup.eval_sets, T).items():
            metrics[f"loss_{length}"] = result.get("loss")
            metrics[f"loss_{length}_beyond"] = result.get("loss_beyond")
            metrics[f"share_{length}_beyond"] = result.get("share_beyond")
            found.setdefault("refused", {})[str(length)] = result.get("refused")
    elif setup.suite.probe == "batch_statistics":
        rows = setup.eval_sets[T][: max(1, PROBE_ROWS // setup.recipe.eval.batch_size)]
        for how, loss in probes.batch_statistics(model, rows).items():
            metrics[f"loss_{how}"] = loss
    elif setup.suite.probe == "divergence":  # the divergence step itself comes from the curve (report.py)
        metrics["final_train_loss"] = next((r["loss"] for r in reversed(records) if "loss" in r), None)
    return found


def downstream(setup: Setup, out: Path, seed: int) -> float:
    """Fine-tune the cell's final/ model on the downstream task (same seed); its validation accuracy.
    Only the numbers are kept: the fine-tuned weights are deleted."""
    from ...config import FinetuneRecipe, load_recipe
    from ...demo import recipe_path
    from ...train.finetune import finetune

    where = out / "downstream"
    overrides = [f"output_dir={where}", f"model.name_or_path={out / 'final'}", f"seed={seed}",
                 *setup.downstream["overrides"]]
    results = finetune(load_recipe(recipe_path(setup.downstream["recipe"]), FinetuneRecipe, overrides))
    for folder in ("best", "final", "checkpoints"):
        shutil.rmtree(where / folder, ignore_errors=True)
    return float(results["accuracy"])
