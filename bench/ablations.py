"""The tutorial's question "is there a better positional encoding?" (and LayerNorm vs RMSNorm,
attention vs pooling), answered by training: every recipe in recipes/ablations/, same data, budget
and seed; a table of final validation loss / masked-token accuracy and one plot of the eval curves.

    python bench/ablations.py [--steps 300] [--only position-rope position-absolute ...]

Writes bench/results/ablations.json and bench/results/ablations.png.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--only", nargs="+")
    parser.add_argument("--runs", default="/tmp/hfpipe-ablations")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ablations.json"))
    args = parser.parse_args()

    from hfpipe.config import PretrainRecipe, load_recipe
    from hfpipe.train.logs import read_metrics
    from hfpipe.train.pretrain import pretrain

    recipes = sorted((REPO / "recipes" / "ablations").glob("*.yaml"))
    if args.only:
        recipes = [r for r in recipes if r.stem in args.only]
    runs = Path(args.runs)
    tokenizer = runs / "tokenizer"  # one tokenizer for all: the runs differ only in the architecture
    results, curves = {}, {}
    for recipe_path in recipes:
        out = runs / recipe_path.stem
        overrides = [f"output_dir={out}", f"train.max_steps={args.steps}", "train.resume=none",
                     f"train.eval_every_steps={max(args.steps // 6, 1)}", "tracking.plot=false"]
        if tokenizer.exists():
            overrides.append(f"tokenizer.name_or_path={tokenizer}")
        final = pretrain(load_recipe(recipe_path, PretrainRecipe, overrides))
        if not tokenizer.exists():
            import shutil

            shutil.copytree(out / "tokenizer", tokenizer)
        results[recipe_path.stem] = {k: final[k] for k in ("eval_loss", "eval_accuracy", "eval_perplexity", "train_seconds")}
        curves[recipe_path.stem] = [(r["step"], r["eval_loss"]) for r in read_metrics(out / "metrics.jsonl") if "eval_loss" in r]

    rows = [f"| {name} | {r['eval_loss']:.3f} | {100 * r['eval_accuracy']:.1f} | {r['eval_perplexity']:.1f} |"
            for name, r in sorted(results.items(), key=lambda kv: kv[1]["eval_loss"])]
    print("\n".join([f"bert-tiny, {args.steps} steps, embedded corpus (lower loss is better)",
                     "| variant | eval loss | masked-token acc % | perplexity |", "|---|---|---|---|", *rows]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"steps": args.steps, "results": results, "curves": curves}, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, points in sorted(curves.items()):
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation MLM loss (fixed masks)")
    ax.set_title("Ablations: bert-tiny on Python's docs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
