"""SQuAD v1.1 from all-MiniLM-L6-v2 on a split of the dev set BY ARTICLE (no train set is available here).

    python bench/squad_dev_split.py [--eval-articles 8] [--max-train N] [--max-length 256] [--steps S]

The 48 dev articles are split: the first 40 to fine-tune on, the last 8 to evaluate (no paragraph
appears on both sides). The numbers are from such a split, NOT the official SQuAD dev evaluation.
Writes bench/results/squad_dev_split.json.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", default="/tmp/minilm")
    parser.add_argument("--runs", default="/tmp/hfpipe-bench-squad")
    parser.add_argument("--eval-articles", type=int, default=8)
    parser.add_argument("--max-train", type=int, default=3000, help="training questions (about 8,800 in 40 articles)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--doc-stride", type=int, default=96)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "squad_dev_split.json"))
    args = parser.parse_args()
    dev = REPO.parent / "shared" / "data" / "squad-v1.1" / "dev.json"
    if not dev.is_file():
        print(f"skipped: {dev} not found")
        return 0

    from finetune_compare import minilm_folder

    from hfpipe.config import FinetuneRecipe, load_recipe
    from hfpipe.model.convert import convert_bert
    from hfpipe.tasks.files import split_squad_by_article
    from hfpipe.train.finetune import finetune

    runs = Path(args.runs)
    train_file, eval_file = split_squad_by_article(dev, runs / "split", args.eval_articles)
    model = convert_bert(minilm_folder(Path(args.minilm)), runs / "minilm-hfpipe", architecture="BertModel")
    recipe = load_recipe(REPO / "recipes/finetune/squad.yaml", FinetuneRecipe, [
        f"output_dir={runs / 'squad'}", f"model.name_or_path={model}", f"data.train_file={train_file}",
        f"data.validation_file={eval_file}", f"data.max_train_examples={args.max_train}",
        f"data.max_length={args.max_length}", f"data.doc_stride={args.doc_stride}", f"train.num_epochs={args.epochs}",
        "train.lr=1e-4", "train.batch_size=16", "train.log_every_steps=20", "train.resume=none", "eval.batch_size=64",
    ])
    results = finetune(recipe)
    report = {"model": "all-MiniLM-L6-v2 converted with hfpipe convert bert",
              "split": f"SQuAD v1.1 dev by article: first {48 - args.eval_articles} to train, last {args.eval_articles} to evaluate",
              "train_questions": args.max_train, "max_length": args.max_length, "doc_stride": args.doc_stride,
              "epochs": args.epochs, "exact_match": results["exact_match"], "f1": results["f1"]}
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
