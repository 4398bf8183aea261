"""`make demo` / `hfpipe demo`: the main job end to end, offline, on one CPU, in a few minutes.

    1. train a WordPiece tokenizer and pretrain a tiny BERT (recipes/pretrain/tiny.yaml) on the
       embedded corpus (Python's own documentation, which every Python installation carries);
    2. fine-tune it on SST-2 (a slice of ../shared/data/sst2 when present);
    3. reload both exported folders with AutoModel* and trust_remote_code=True, as a user
       without hfpipe would, and fill in a masked word.
"""

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _recipe_path(relative: str) -> Path:
    for base in (REPO / "recipes", Path(__file__).resolve().parent / "recipes"):
        if (base / relative).is_file():
            return base / relative
    raise FileNotFoundError(f"recipe {relative} not found next to the hfpipe package")


def run_demo(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from .config import FinetuneRecipe, PretrainRecipe, load_recipe
    from .train.finetune import finetune
    from .train.pretrain import pretrain

    out = Path(args.output_dir)
    print("== 1/3 pretraining a tiny BERT on the embedded corpus ==")
    recipe = load_recipe(_recipe_path("pretrain/tiny.yaml"), PretrainRecipe,
                         [f"output_dir={out / 'pretrain'}", "train.resume=none"])
    results = pretrain(recipe)
    final = out / "pretrain" / "final"

    print("\n== 2/3 fine-tuning on SST-2 ==")
    sst2 = REPO.parent / "shared" / "data" / "sst2"
    if (sst2 / "train.tsv").is_file():
        ft = load_recipe(_recipe_path("finetune/glue/sst2.yaml"), FinetuneRecipe, [
            f"output_dir={out / 'sst2'}", f"model.name_or_path={final}",
            f"data.train_file={sst2 / 'train.tsv'}", f"data.validation_file={sst2 / 'dev.tsv'}",
            "data.max_train_examples=8000", "train.num_epochs=1", "train.lr=1e-3", "train.resume=none",
        ])
        ft_results = finetune(ft)
        print(f"SST-2 dev accuracy: {ft_results['accuracy']:.4f} (chance: 0.51). A 2-layer model pretrained for a "
              "minute on Python's docs, fine-tuned on 8,000 reviews: expect well above chance, far below BERT.")
    else:
        print(f"skipped: {sst2} not found (put GLUE SST-2 TSVs there, or run a recipe with the Hub dataset)")

    print("\n== 3/3 reloading the exported model the way any transformers user would ==")
    tokenizer = AutoTokenizer.from_pretrained(final, trust_remote_code=True)
    model = AutoModelForMaskedLM.from_pretrained(final, trust_remote_code=True)
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    text = f"Return the {tokenizer.mask_token} of the list."
    print(text)
    for guess in fill(text, top_k=3):
        print(f"  {guess['token_str']!r}: {guess['score']:.3f}")
    print(json.dumps({k: results[k] for k in ("step", "eval_loss", "eval_accuracy")}, indent=2))
    print(f"\nDone. Pretrained model: {final}")
    return 0
