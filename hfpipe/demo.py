"""`make demo` / `hfpipe demo [--quick]`: the main job end to end, offline, on CPU, with a control.

    hfpipe demo                         # ~5-8 minutes on 2 CPU cores; writes runs/demo/summary.json
    hfpipe demo --quick                 # a few steps per stage (the test: tests/test_demo.py)

Nothing is downloaded: every stage runs on data that every Python installation carries.

    1. data        the embedded corpus `builtin:python-docs` (the interpreter's own documentation),
                   minus the docstrings held out by the fine-tuning task (so the pretrained model
                   never reads an evaluation text), written to OUT/data/pretrain.jsonl;
    2. tokenizer   a WordPiece tokenizer trained on that text (recipes/demo/pretrain.yaml);
    3. pretrain    a small BERT, masked-language modelling (recipes/demo/pretrain.yaml);
    4. fine-tune   on `pydocs`: which standard-library package does a docstring come from (six
                   classes, package names masked, 25% held out; hfpipe/tasks/builtin.py)
                   (recipes/demo/pydocs.yaml), from the pretrained model, and, as the control,
                   from the same architecture with random weights (same tokenizer, same recipe);
                   with ../shared/data/sst2 present, the same pair on a slice of GLUE SST-2
                   (recipes/demo/sst2.yaml);
    5. reload      the exported final/ folders in a fresh Python where hfpipe cannot be imported,
                   with AutoModelForMaskedLM / AutoModelForSequenceClassification and
                   trust_remote_code=True, as any transformers user would; fill in a masked word and
                   classify a held-out docstring.

OUT/summary.json holds `finetune.pretrained` and `finetune.from_scratch` (pydocs accuracy, 0-1),
the SST-2 pair under `sst2` when it ran, the reload's outputs and the wall time of every stage.

Measured (2 CPU cores shared with other work, load 1-2; Python 3.11): 6 min 21 s in all, 5 min 10 s
of it pretraining (bert-tiny, 1,500 steps, 6.1 M tokens); pydocs accuracy 0.897 pretrained vs 0.760
from scratch (majority class 0.258); SST-2 (8,000 training sentences) 0.734 vs 0.719: the pretraining
text is Python documentation, not movie reviews.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILL_MASK_TEXT = "Return the {mask} of the list."
SST2_CANDIDATES = (Path("../shared/data/sst2"), REPO.parent / "shared" / "data" / "sst2")
# --quick: a few steps per stage, so the whole pipeline is exercised in well under a minute.
QUICK = {
    "pretrain": ["train.max_steps=6", "train.eval_every_steps=null", "train.save_every_steps=null",
                 "train.log_every_steps=2", "eval.max_batches=2", "tokenizer.vocab_size=1000",
                 "data.max_documents=400", "data.max_validation_documents=32"],
    "finetune": ["train.max_steps=4", "train.num_epochs=null", "train.log_every_steps=2",
                 "data.max_train_examples=64", "data.max_eval_examples=64"],
}  # fmt: skip


def recipe_path(name: str) -> Path:
    """A shipped recipe by its path under recipes/ (`demo/pydocs.yaml`), in a checkout or a wheel install."""
    from .config.recipes_index import recipes_dir

    path = recipes_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"recipe {name} not found in {recipes_dir()}: reinstall hfpipe")
    return path


def run_demo(args) -> int:
    """The CLI entry point: `args.output_dir`, and `args.quick` for a few steps per stage."""
    summary = demo(Path(args.output_dir), quick=getattr(args, "quick", False))
    print_summary(summary)
    return 0


def demo(out: Path, *, quick: bool = False, sst2_dir: Path | None = None) -> dict:
    """Run every stage into `out` and return the summary it writes to out/summary.json.

    Every stage starts afresh (train.resume=none, the tokenizer retrained), so a rerun into the same
    folder replaces what the demo wrote there and touches nothing else."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(out)
    sst2_dir = sst2_dir or next((p for p in SST2_CANDIDATES if (p / "train.tsv").is_file()), None)
    seconds: dict[str, float] = {}  # wall time per stage
    summary: dict = {"quick": quick, "seconds": seconds}
    start = time.perf_counter()

    @contextmanager
    def stage(name: str, title: str):
        print(f"\n== {len(seconds) + 1}. {title} ==", flush=True)
        begin = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - begin, 1)

    with stage("data", "data: the embedded corpus, minus the fine-tuning task's held-out docstrings"):
        summary["pretraining_data"] = write_pretraining_data(out / "data")
    with stage("tokenizer", "tokenizer: WordPiece on the pretraining text"):
        pretrain_recipe = load_pretrain_recipe(out, quick)
        summary["tokenizer"] = train_demo_tokenizer(pretrain_recipe)
    with stage("pretrain", f"pretraining a {pretrain_recipe.model.preset} (masked language modelling)"):
        from .train.pretrain import pretrain

        results = pretrain(pretrain_recipe)
        summary["pretrain"] = {k: results[k] for k in ("step", "tokens", "eval_loss", "eval_accuracy")}
    pretrained = out / "pretrain" / "final"
    save_random_init(pretrained, out / "random-init", seed=pretrain_recipe.seed)

    summary["finetune"] = {"task": "pydocs", "metric": "accuracy", "majority_class": pydocs_majority_rate()}
    for init, model_dir in (("pretrained", pretrained), ("from_scratch", out / "random-init")):
        with stage(f"pydocs_{init}", f"fine-tuning on pydocs, {init.replace('_', ' ')}"):
            summary["finetune"][init] = finetune_demo("pydocs.yaml", model_dir, out / "pydocs" / init, quick)
    if sst2_dir is not None:
        summary["sst2"] = {"metric": "accuracy", "data": str(sst2_dir)}
        for init, model_dir in (("pretrained", pretrained), ("from_scratch", out / "random-init")):
            with stage(f"sst2_{init}", f"fine-tuning on SST-2 ({sst2_dir}), {init.replace('_', ' ')}"):
                files = [
                    f"data.train_file={sst2_dir / 'train.tsv'}",
                    f"data.validation_file={sst2_dir / 'dev.tsv'}",
                ]
                summary["sst2"][init] = finetune_demo(
                    "sst2.yaml", model_dir, out / "sst2" / init, quick, files
                )
    else:
        print(f"\nSST-2 rows skipped: no {SST2_CANDIDATES[0]}/train.tsv (GLUE SST-2 TSVs; see the README)")

    with stage("reload", "reload in a fresh Python without hfpipe: AutoModel* + trust_remote_code"):
        summary["reload"] = reload_without_hfpipe(pretrained, out / "pydocs" / "pretrained" / "final")
    seconds["total"] = round(time.perf_counter() - start, 1)
    summary["outputs"] = {
        "pretrained": str(pretrained),
        "pydocs": str(out / "pydocs" / "pretrained" / "final"),
        "summary": str(out / "summary.json"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ----------------------------------------------------------------------------------------------
# The stages


def write_pretraining_data(folder: Path) -> dict:
    """OUT/data/pretrain.jsonl: the corpus' training documents minus those behind pydocs' validation
    split; the corpus' own validation documents stay the pretraining validation set."""
    from .data.corpus import python_docs_files
    from .tasks.builtin import pydocs_heldout_documents

    files, heldout = python_docs_files(), pydocs_heldout_documents()
    folder.mkdir(parents=True, exist_ok=True)
    kept = removed = 0
    with (
        open(files["train"], encoding="utf-8") as src,
        open(folder / "pretrain.jsonl", "w", encoding="utf-8") as dst,
    ):
        for line in src:
            if json.loads(line)["text"] in heldout:
                removed += 1
            else:
                kept += 1
                dst.write(line)
    shutil.copyfile(files["validation"], folder / "validation.jsonl")
    print(f"{kept:,} training documents; {removed} removed (pydocs held-out docstrings); "
          f"validation: the corpus' own split")  # fmt: skip
    return {"train_documents": kept, "removed_heldout_documents": removed}


def load_pretrain_recipe(out: Path, quick: bool):
    from .config import PretrainRecipe, load_recipe

    overrides = [f"output_dir={out / 'pretrain'}", "train.resume=none",
                 f"data.source={out / 'data' / 'pretrain.jsonl'}",
                 f"data.validation_source={out / 'data' / 'validation.jsonl'}"]  # fmt: skip
    return load_recipe(
        recipe_path("demo/pretrain.yaml"), PretrainRecipe, overrides + (QUICK["pretrain"] if quick else [])
    )


def train_demo_tokenizer(recipe) -> dict:
    """Train the recipe's tokenizer into OUT/pretrain/tokenizer/, where pretraining then finds it."""
    from .data.sources import iter_texts, load_text_datasets
    from .data.tokenizer import get_tokenizer

    train_texts, _ = load_text_datasets(recipe.data, seed=recipe.seed)
    tokenizer = get_tokenizer(
        recipe.tokenizer, lambda: iter_texts(train_texts), recipe.output_dir, retrain=True
    )
    print(
        f"{recipe.tokenizer.type}: {len(tokenizer):,} tokens; 'Return the docstrings.' -> "
        f"{tokenizer.tokenize('Return the docstrings.')}"
    )
    return {"type": recipe.tokenizer.type, "vocab_size": len(tokenizer)}


def pydocs_majority_rate() -> float:
    """Accuracy of always answering the most frequent label of pydocs' validation split."""
    from collections import Counter

    from .tasks.builtin import pydocs_splits

    labels = [row["label"] for row in pydocs_splits()["validation"]]
    return round(Counter(labels).most_common(1)[0][1] / len(labels), 4)


def save_random_init(pretrained: Path, folder: Path, seed: int) -> None:
    """The control's starting point: the pretrained model's architecture and tokenizer, random weights."""
    from transformers import AutoTokenizer, set_seed

    from .hub.export import save_model_folder
    from .model.configuration_hfpipe import HfpipeConfig
    from .model.modeling_hfpipe import HfpipeForMaskedLM

    set_seed(seed)
    # With the recipe's seed these are the very weights pretraining started from.
    model = HfpipeForMaskedLM(HfpipeConfig.from_pretrained(pretrained))
    save_model_folder(model, AutoTokenizer.from_pretrained(pretrained), folder)


def finetune_demo(recipe_name: str, model_dir: Path, out: Path, quick: bool, extra: list[str] = ()) -> float:
    """Fine-tune with recipes/demo/RECIPE_NAME from model_dir into out; returns validation accuracy."""
    from .config import FinetuneRecipe, load_recipe
    from .train.finetune import finetune

    overrides = [f"output_dir={out}", f"model.name_or_path={model_dir}", "train.resume=none", *extra]
    recipe = load_recipe(
        recipe_path(f"demo/{recipe_name}"), FinetuneRecipe, overrides + (QUICK["finetune"] if quick else [])
    )
    results = finetune(recipe)
    print(f"{recipe.task} validation accuracy: {results['accuracy']:.4f}")
    return round(float(results["accuracy"]), 4)


# A fresh interpreter that stands for a machine without hfpipe: a meta-path finder refuses it
# (it is installed in this venv), and the check below proves the refusal works.
_WITHOUT_HFPIPE = """
import importlib.abc, json, sys

class NoHfpipe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hfpipe" or name.startswith("hfpipe."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the demo)", name=name)

sys.meta_path.insert(0, NoHfpipe())
try:
    import hfpipe
    raise SystemExit("hfpipe is importable: not a fresh environment")
except ModuleNotFoundError:
    pass

from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

mlm_dir, classifier_dir, text, docstring = sys.argv[1:5]
tokenizer = AutoTokenizer.from_pretrained(mlm_dir, trust_remote_code=True)
model = AutoModelForMaskedLM.from_pretrained(mlm_dir, trust_remote_code=True)
text = text.format(mask=tokenizer.mask_token)
guesses = pipeline("fill-mask", model=model, tokenizer=tokenizer)(text, top_k=5)
classifier = AutoModelForSequenceClassification.from_pretrained(classifier_dir, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(classifier_dir, trust_remote_code=True)
classify = pipeline("text-classification", model=classifier, tokenizer=tokenizer)
prediction = classify(docstring, truncation=True)[0]
print(json.dumps({
    "fill_mask": {"text": text, "model_class": type(model).__name__,
                  "top": [{"token": g["token_str"], "score": round(g["score"], 4)} for g in guesses]},
    "classify": {"text": docstring, "model_class": type(classifier).__name__,
                 "label": prediction["label"], "score": round(prediction["score"], 4)},
}))
"""


def reload_without_hfpipe(mlm_dir: Path, classifier_dir: Path) -> dict:
    """Load both final/ folders in a subprocess where `import hfpipe` fails; fill-mask and classify."""
    from .tasks.builtin import pydocs_splits
    from .tasks.spec import PYDOCS_LABELS

    example = pydocs_splits()["validation"][0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory(prefix="hfpipe-demo-") as scratch:
        env["HF_MODULES_CACHE"] = str(Path(scratch) / "modules")  # remote code copied afresh
        done = subprocess.run(
            [sys.executable, "-c", _WITHOUT_HFPIPE, str(mlm_dir.resolve()), str(classifier_dir.resolve()),
             FILL_MASK_TEXT, example["text"]],
            cwd=scratch, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"reloading without hfpipe failed:\n{done.stderr[-3000:]}")
    reload = json.loads(done.stdout.strip().splitlines()[-1])
    reload["classify"]["true_label"] = PYDOCS_LABELS[example["label"]]
    fill = reload["fill_mask"]
    print(f"{fill['model_class']}: {fill['text']}")
    for guess in fill["top"]:
        print(f"  {guess['token']!r}: {guess['score']:.3f}")
    c = reload["classify"]
    print(
        f"{c['model_class']}: {c['text'][:70]!r}... -> {c['label']} "
        f"({c['score']:.2f}; true: {c['true_label']})"
    )
    return reload


# ----------------------------------------------------------------------------------------------
# The report


def print_summary(summary: dict) -> None:
    """The table: accuracy pretrained vs from scratch per task, then the wall time of each stage."""
    pre, fill = summary["pretrain"], summary["reload"]["fill_mask"]
    print("\n== summary: validation accuracy (0-1) of the exported model; one recipe for both columns ==")
    print(f"{'task':<8} {'pretrained':>10} {'from scratch':>12} {'majority class':>14}")
    row = summary["finetune"]
    print(
        f"{'pydocs':<8} {row['pretrained']:>10.4f} {row['from_scratch']:>12.4f} "
        f"{row['majority_class']:>14.4f}"
        "   in domain: pretraining read Python's docs (minus the held-out ones)"
    )
    if "sst2" in summary:
        row = summary["sst2"]
        print(
            f"{'sst2':<8} {row['pretrained']:>10.4f} {row['from_scratch']:>12.4f} {'':>14}"
            "   out of domain: movie reviews"
        )
    print(
        f"\npretraining: {pre['step']:,} steps, {pre['tokens']:,} tokens, "
        f"masked-token accuracy {pre['eval_accuracy']:.4f}"
    )
    print(
        f"fill-mask: {fill['text']!r} -> "
        + ", ".join(f"{g['token']!r} {g['score']:.3f}" for g in fill["top"][:3])
    )
    print("wall time: " + ", ".join(f"{stage} {sec:.0f} s" for stage, sec in summary["seconds"].items()))
    print("written: " + ", ".join(summary["outputs"].values()))
