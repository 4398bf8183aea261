"""Look at what attention does: a grid of attention-probability heatmaps, one per (layer, head).

    hfpipe attention MODEL_DIR "the cat sat on the mat" --out attn.png [--layer L]

    from hfpipe.teach.attention_viz import plot_attention
    plot_attention(model, tokenizer, "the cat sat on the mat", "attn.png", layer=0)

Rows of the grid are layers (or the one `layer` asked for), columns are heads. In each heatmap,
row i is query token i and column j key token j; a row sums to 1 (softmax over the keys). The
probabilities come from the model's own `output_attentions=True`, so any transformers encoder that
returns attentions works (hfpipe or BERT). The figure is drawn with matplotlib's Agg backend (no
display needed) at a fixed size per cell, so the PNG size follows the grid: see `figure_size`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

CELL_INCHES = 2.5  # each heatmap's square
TITLE_INCHES = 0.5  # the strip above the grid that holds the title
DPI = 100


def figure_size(rows: int, cols: int) -> tuple[float, float]:
    """Figure size in inches; the PNG is (width * DPI, height * DPI) pixels."""
    return cols * CELL_INCHES, rows * CELL_INCHES + TITLE_INCHES


@torch.no_grad()
def attention_maps(
    model, tokenizer, text: str, layer: int | None = None
) -> tuple[np.ndarray, list[str], list[int]]:
    """The probabilities to plot, (layers shown, H, T, T), the token labels, and the layer indices."""
    encoded = tokenizer(text, return_tensors="pt")
    model = model.eval()
    outputs = model(**encoded, output_attentions=True)
    attentions = outputs.attentions
    if not attentions or attentions[0] is None:
        raise ValueError(
            f"{type(model).__name__} returned no attention probabilities (token_mixer="
            f"{getattr(model.config, 'token_mixer', 'attention')!r}); only attention models can be plotted"
        )
    layers = list(range(len(attentions)))
    if layer is not None:
        if not -len(layers) <= layer < len(layers):
            raise ValueError(
                f"layer={layer} is out of range: the model has {len(layers)} layers (0..{len(layers) - 1})"
            )
        layers = [layers[layer]]
    maps = torch.stack([attentions[i][0] for i in layers]).float().numpy()  # L' x (H, T, T) -> (L', H, T, T)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    return maps, tokens, layers


def plot_attention(model, tokenizer, text: str, out_png: str | Path, layer: int | None = None) -> np.ndarray:
    """Save the heatmap grid to `out_png` and return the matrices drawn, (rows, H, T, T), read back
    from the figure's images (so callers can check the picture shows the model's attentions)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    maps, tokens, layers = attention_maps(model, tokenizer, text, layer)
    rows, heads, T, _ = maps.shape
    fig, axes = plt.subplots(rows, heads, figsize=figure_size(rows, heads), dpi=DPI, squeeze=False)
    fontsize = max(4, min(8, 160 // max(T, 1)))
    vmax = float(maps.max())  # one colour scale for the grid, so heads compare; rows sum to 1 anyway
    drawn = np.zeros_like(maps)
    for r, layer_index in enumerate(layers):
        for h in range(heads):
            ax = axes[r][h]
            image = ax.imshow(maps[r, h], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            drawn[r, h] = np.asarray(image.get_array())
            ax.set_title(f"layer {layer_index} head {h}", fontsize=8)
            ax.set_xticks(range(T), tokens, rotation=90, fontsize=fontsize)
            ax.set_yticks(range(T), tokens, fontsize=fontsize)
    width_chars = int(figure_size(rows, heads)[0] * 11)  # ~11 characters per inch at this font size
    shown = text if len(text) <= width_chars - 2 else text[: width_chars - 5] + "..."
    fig.suptitle(
        f"attention probabilities (rows: queries, columns: keys), max {vmax:.2f}\n{shown!r}", fontsize=8
    )
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=1 - TITLE_INCHES / figure_size(rows, heads)[1] - 0.02,
                        wspace=0.6, hspace=0.6)  # fmt: skip
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=DPI)  # no bbox_inches="tight": the PNG keeps figure_size exactly
    plt.close(fig)
    return drawn


# ----------------------------------------------------------------------------------------------
# Command line: hfpipe attention
# ----------------------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "attention",
        help="plot a model's attention probabilities for a text as a PNG grid of heatmaps",
        description="Heatmaps of attention probabilities (layers x heads, or one layer) with token labels.",
    )
    parser.add_argument("model_dir", help="a saved model folder with its tokenizer")
    parser.add_argument("text", help="the text to encode")
    parser.add_argument("--out", default="attention.png", help="PNG to write (default: attention.png)")
    parser.add_argument("--layer", type=int, default=None, help="plot only this layer (default: all layers)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModel, AutoTokenizer

    import hfpipe.model  # noqa: F401  registers hfpipe's Auto classes: no trust_remote_code prompt in hfpipe

    folder = Path(args.model_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: point MODEL_DIR at a saved model folder")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager")
    drawn = plot_attention(model, tokenizer, args.text, args.out, layer=args.layer)
    rows, heads, T, _ = drawn.shape
    print(f"wrote {args.out}: {rows} layer(s) x {heads} heads, {T} tokens")
    return 0
