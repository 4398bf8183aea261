"""Which dimension change is which operation: trace every tensor shape of one forward pass.

    hfpipe shapes --preset bert-mini --batch-size 2 --seq-len 16 --layers 1

    from hfpipe.teach.shapes import trace_shapes, format_shapes
    print(format_shapes(trace_shapes(model, input_ids)))

Each row names its dimensions -- B batch, T tokens, C hidden, H heads, D head dim, I MLP width,
V vocabulary, L labels -- and, where the shape changes, says in one sentence which operation
changed it ("head split: view C=256 as H=4 x D=64, then swap T and H").

How: forward hooks on the model's modules record what goes in and out of them, and the attention
inside each layer runs through a tracing attention function registered with transformers'
`AttentionInterface` as "hfpipe_trace" (an eager attention that records Q, K, V, scores,
probabilities and output); the model's own implementation is restored afterwards. A few shapes
that never cross a module boundary (the Q/K/V split of the fused projection, the GLU halves) are
derived from their neighbours and say so. Nothing in modeling_hfpipe.py is changed for this.

The CLI builds the model on PyTorch's "meta" device: shapes without weights or arithmetic, so even
bert-large at its full vocabulary traces instantly.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface

from ..model.configuration_hfpipe import PRESETS, HfpipeConfig
from ..model.modeling_hfpipe import GATED_ACTS, HfpipeForMaskedLM, HfpipeModel

TRACE_IMPLEMENTATION = "hfpipe_trace"


class ShapeRow(NamedTuple):
    """One traced tensor. `note` says which operation changed the dimensions ("" when none did)."""

    path: str  # module path, e.g. "model.layers.0.mixer"
    op: str  # operation name, e.g. "q head split"
    shape: tuple  # e.g. (2, 4, 16, 64)
    named: str  # e.g. "(B=2, H=4, T=16, D=64)"
    note: str


class _Tracer:
    """Collects rows; `add` pairs each dimension size with its letter."""

    def __init__(self, paths: dict[int, str]):
        self.paths = paths  # id(module) -> dotted path
        self.rows: list[ShapeRow] = []

    def add(self, module_or_path, op: str, tensor_or_shape, letters: str, note: str = "") -> None:
        path = module_or_path if isinstance(module_or_path, str) else self.paths.get(id(module_or_path), "?")
        shape = tuple(tensor_or_shape.shape if isinstance(tensor_or_shape, torch.Tensor) else tensor_or_shape)
        names = letters.split()
        if len(names) != len(shape):
            raise AssertionError(f"{op}: letters {names} do not match shape {shape}")
        named = "(" + ", ".join(n if n == "1" else f"{n}={s}" for n, s in zip(names, shape)) + ")"
        self.rows.append(ShapeRow(path, op, shape, named, note))


_ACTIVE: list[_Tracer] = []  # the tracer the attention function reports to (one trace at a time)


def _tracing_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention, written out again so that every intermediate shape can be recorded."""
    t = _ACTIVE[-1]
    B, H, T, D = query.shape
    C = H * D
    for name, x in (("q", query), ("k", key), ("v", value)):
        t.add(
            module,
            f"{name} head split",
            x,
            "B H T D",
            f"head split: view C={C} as H={H} x D={D}, then swap T and H",
        )
    if getattr(module.config, "position_embedding_type", None) == "rope":
        t.add(
            module,
            "rotary on q and k",
            query,
            "B H T D",
            "rotary: rotate feature pairs by position; shape unchanged",
        )
    if isinstance(attention_mask, torch.Tensor):
        letters = "B H T T" if attention_mask.shape[1] > 1 else "B 1 T T"
        t.add(
            module,
            "attention mask (additive)",
            attention_mask,
            letters,
            "broadcast over heads and added to the scores",
        )
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, D) @ (B, H, D, T) -> (B, H, T, T)
    t.add(
        module,
        "scores q @ k^T",
        scores,
        "B H T T",
        f"q @ k^T contracts D={D}: one score per (query, key) pair",
    )
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, H, T, T)
    t.add(
        module, "softmax", probs, "B H T T", "softmax over the key axis: shape unchanged, each row sums to 1"
    )
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value)  # (B, H, T, T) @ (B, H, T, D) -> (B, H, T, D)
    t.add(
        module,
        "weighted sum probs @ v",
        out,
        "B H T D",
        f"probs @ v contracts the key axis T={T}: back to D={D}",
    )
    out = out.transpose(1, 2).contiguous()  # (B, H, T, D) -> (B, T, H, D)
    t.add(module, "swap heads back", out, "B T H D", "transpose H and T back before merging heads")
    return out, probs


AttentionInterface.register(TRACE_IMPLEMENTATION, _tracing_attention)


class _Hooks:
    """Forward hooks that add rows to a tracer; `remove` takes them all off again."""

    def __init__(self, tracer: _Tracer):
        self.tracer = tracer
        self.handles: list = []

    def before(self, module: nn.Module, op: str, letters: str, note: str = "") -> None:
        """A row for the module's first input."""
        self.call_before(module, lambda m, args: self.tracer.add(m, op, args[0], letters, note))

    def after(self, module: nn.Module, op: str, letters: str, note: str = "") -> None:
        """A row for the module's output (its first element when it returns a tuple)."""
        self.call_after(module, lambda m, args, out: self.tracer.add(m, op, _first(out), letters, note))

    def call_before(self, module: nn.Module, hook) -> None:
        self.handles.append(module.register_forward_pre_hook(hook))

    def call_after(self, module: nn.Module, hook) -> None:
        self.handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _hooks(model: nn.Module, tracer: _Tracer) -> _Hooks:
    """Hooks that describe each module's input/output in the model's terms, one describer per part."""
    hooks = _Hooks(tracer)
    for path, module in model.named_modules():  # each module name belongs to one describer
        name = path.rsplit(".", 1)[-1]
        for describe in (_describe_embeddings, _describe_mixer, _describe_mlp_and_norms, _describe_heads):
            describe(hooks, model, path, name, module)
    return hooks


def _describe_embeddings(hooks: _Hooks, model: nn.Module, path: str, name: str, module: nn.Module) -> None:
    config = model.config
    if name == "embeddings":
        hooks.before(module, "input ids", "B T")
    elif name == "word_embeddings":
        note = f"lookup: each id becomes a row of the (V, C={config.hidden_size}) table"
        hooks.after(module, "token embedding", "B T C", note)
    elif name == "token_type_embeddings":
        hooks.after(module, "segment embedding", "B T C", "lookup in the (segments, C) table")
    elif name == "position_embeddings":  # the position scheme: only absolute and sinusoidal return a vector
        hooks.call_after(module, _position_embedding(hooks.tracer, config))
    elif path.endswith("embeddings.norm"):
        hooks.call_before(module, _embedding_sum(hooks.tracer, config))
        hooks.after(module, "embedding norm" + ("" if config.embedding_norm else " (identity: off)"), "B T C")


def _describe_mixer(hooks: _Hooks, model: nn.Module, path: str, name: str, module: nn.Module) -> None:
    config = model.config
    if name == "qkv":
        hooks.call_after(module, _qkv(hooks.tracer))
    elif name == "mixer" and config.token_mixer == "attention":
        hooks.call_before(module, _rotary(hooks.tracer))
    elif name == "mixer":
        op, note = MIXER_ROWS[config.token_mixer]
        hooks.after(module, op, "B T C", note)
    elif name == "out_proj":
        H, D = config.num_attention_heads, config.head_dim
        hooks.before(module, "head merge", "B T C", f"head merge: view H={H} x D={D} as C={H * D}")
        hooks.after(module, "attention output projection", "B T C", "Linear C -> C")


# (operation, note) of the token mixers that are not attention
MIXER_ROWS = {
    "pooling": ("pooling mixer", "average of each token's window minus the token: shape unchanged"),
    "uniform": ("uniform mixer", "(B, T, T) equal weights @ (B, T, C): each token gets its document's average"),
}

ACTIVATION_NAMES = {
    "gelu": "GELU",
    "geglu": "GeGLU: GELU(gate) * value",
    "swiglu": "SwiGLU: SiLU(gate) * value",
}


def _describe_mlp_and_norms(hooks: _Hooks, model: nn.Module, path: str, name: str, module: nn.Module) -> None:
    config = model.config
    pre_norm, gated = config.norm_position == "pre", config.hidden_act in GATED_ACTS
    if name in ("mixer_norm", "mlp_norm"):
        branch = "attention" if name == "mixer_norm" else "MLP"
        if pre_norm:
            if name == "mlp_norm":
                hooks.before(module, "residual: x + attention", "B T C")
            hooks.after(module, f"pre-norm before {branch}", "B T C")
        else:
            hooks.before(module, f"residual: x + {branch}", "B T C")
            hooks.after(module, f"post-norm after {branch}", "B T C")
    elif name == "up":
        width = f"2I={module.out_features}" if gated else f"I={module.out_features}"
        note = f"Linear C={module.in_features} -> {width}"
        hooks.after(module, "MLP up", "B T 2I" if gated else "B T I", note)
    elif name == "down":
        I = module.in_features  # noqa: E741
        note = "elementwise: shape unchanged"
        if gated:
            note = f"split 2I={2 * I} into gate and value halves of I={I}, multiply"
        hooks.before(module, f"activation {ACTIVATION_NAMES[config.hidden_act]}", "B T I", note)
        hooks.after(module, "MLP down", "B T C", f"Linear I={I} -> C={module.out_features}")
    elif path.endswith("layers." + name) and name.isdigit() and pre_norm:
        hooks.after(module, "residual: x + MLP (layer output)", "B T C")
    elif name == "final_norm":
        hooks.after(module, "final norm" if config.final_norm else "final norm (identity: off)", "B T C")


def _describe_heads(hooks: _Hooks, model: nn.Module, path: str, name: str, module: nn.Module) -> None:
    if name == "pooler":
        hooks.before(module, "pooler input", "B T C")
    elif path.endswith("pooler.dense"):
        note = "take the first ([CLS]) token: (B, T, C) -> (B, C)"
        hooks.before(module, "pooler: first token", "B C", note)
        hooks.after(module, "pooler dense + tanh", "B C", "Linear C -> C")
    elif name == "mlm_head":
        hooks.before(module, "MLM head input", "B T C")
    elif path.endswith("mlm_head.dense"):
        hooks.after(module, "MLM transform dense", "B T C", "Linear C -> C")
    elif path.endswith("mlm_head.norm"):
        hooks.after(module, "MLM transform norm", "B T C")
    elif path.endswith("mlm_head.decoder"):
        V = module.out_features
        hooks.after(module, "MLM decoder to vocabulary", "B T V", f"Linear C={module.in_features} -> V={V}")
    elif name == "classifier":
        letters = "B T L" if type(model).__name__.endswith("TokenClassification") else "B L"
        hooks.after(module, "classifier", letters, f"Linear C -> L={module.out_features}")
    elif name == "qa_outputs":
        hooks.after(module, "QA start/end logits", "B T 2", "Linear C -> 2 (start, end)")


# (operation, note) of the position schemes that add a vector to the embeddings; the others return None
POSITION_ROWS = {
    "absolute": ("position embedding (learned)", "lookup of positions 0..T-1 in the (max positions, C) table"),
    "sinusoidal": ("position embedding (sinusoidal)", "fixed sin/cos of each position, no parameters"),
}


def _position_embedding(tracer: _Tracer, config: HfpipeConfig):
    def hook(module, args, out):
        if out is not None:
            op, note = POSITION_ROWS[config.position_embedding_type]
            tracer.add(module, op, out, "B T C", note)

    return hook


def _embedding_sum(tracer: _Tracer, config: HfpipeConfig):
    def hook(module, args):
        parts = ["token"] + ["segment"] * (config.type_vocab_size > 0)
        parts += ["position"] * (config.position_embedding_type in POSITION_ROWS)
        tracer.add(module, "embedding sum", args[0], "B T C", " + ".join(parts) + ", elementwise")

    return hook


def _qkv(tracer: _Tracer):
    def hook(module, args, out):
        C = out.shape[-1] // 3
        tracer.add(
            module,
            "qkv projection",
            out,
            "B T 3C",
            f"one Linear C={C} -> 3C={3 * C} computes Q, K and V together",
        )
        for name in "qkv":
            tracer.add(
                module,
                f"{name} = split of qkv",
                (*out.shape[:-1], C),
                "B T C",
                f"split 3C into three C={C} (derived)",
            )

    return hook


def _rotary(tracer: _Tracer):
    def hook(module, args):
        layout = args[1]
        if layout.rotary is not None:
            tracer.add(
                module,
                "rotary cos/sin",
                layout.rotary[0],
                "B 1 T D",
                "angles per position and feature pair, shared by heads",
            )

    return hook


@contextmanager
def _traced(model: nn.Module):
    tracer = _Tracer({id(m): path or "(root)" for path, m in model.named_modules()})
    hooks = _hooks(model, tracer)
    previous = model.config._attn_implementation
    uses_attention = model.config.token_mixer == "attention"
    if uses_attention:
        model.set_attn_implementation(TRACE_IMPLEMENTATION)
    _ACTIVE.append(tracer)
    try:
        yield tracer
    finally:
        _ACTIVE.pop()
        hooks.remove()
        if uses_attention:
            model.set_attn_implementation(previous)


@torch.no_grad()
def trace_shapes(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> list[ShapeRow]:
    """Run one forward pass of an hfpipe model and return every traced shape, in execution order.

    Rows are `ShapeRow(path, op, shape, named, note)`: the first four are (module path, operation
    name, shape tuple, named shape string); `note` is the sentence about the dimension change."""
    with _traced(model) as tracer:
        model(input_ids=input_ids, attention_mask=attention_mask)
    return tracer.rows


def format_shapes(rows: list[ShapeRow], max_layers: int | None = None) -> str:
    """A plain-text table; `max_layers` keeps only the first N encoder layers (the rest repeat them)."""
    shown, hidden_layers = [], set()
    for row in rows:
        parts = row.path.split(".")
        if "layers" in parts and max_layers is not None:
            index = int(parts[parts.index("layers") + 1])
            if index >= max_layers:
                hidden_layers.add(index)
                continue
        shown.append(row)
    width_path = max(len(r.path) for r in shown)
    width_op = max(len(r.op) for r in shown)
    width_named = max(len(r.named) for r in shown)
    lines = [f"{'module':{width_path}}  {'operation':{width_op}}  {'shape':{width_named}}  what changed"]
    lines.append("-" * len(lines[0]))
    previous_layer = None
    for r in shown:
        parts = r.path.split(".")
        layer = parts[parts.index("layers") + 1] if "layers" in parts else None
        if layer != previous_layer and previous_layer is not None and layer is None and hidden_layers:
            lines.append(f"... layers {min(hidden_layers)}-{max(hidden_layers)} repeat these shapes ...")
        previous_layer = layer
        lines.append(f"{r.path:{width_path}}  {r.op:{width_op}}  {r.named:{width_named}}  {r.note}".rstrip())
    return "\n".join(lines)


def legend(config: HfpipeConfig, batch_size: int, seq_len: int) -> str:
    I = config.intermediate_size  # noqa: E741
    return (
        f"B={batch_size} batch  T={seq_len} tokens  C={config.hidden_size} hidden  H={config.num_attention_heads} heads  "
        f"D={config.head_dim} head dim  I={I} MLP width  V={config.vocab_size} vocabulary"
    )


# ----------------------------------------------------------------------------------------------
# Command line: hfpipe shapes
# ----------------------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "shapes",
        help="print every tensor shape of one forward pass, with named dimensions",
        description="Run one forward pass of a preset model (on the meta device: no weights, instant) and "
        "print every tensor shape with named dimensions and the operation that changes it.",
    )
    parser.add_argument(
        "--preset", default="bert-mini", choices=list(PRESETS), help="architecture (default: bert-mini)"
    )
    parser.add_argument("--batch-size", type=int, default=2, help="B (default: 2)")
    parser.add_argument("--seq-len", type=int, default=16, help="T (default: 16)")
    parser.add_argument(
        "--layers", type=int, default=1, help="how many encoder layers to show (default: 1; 0 = all)"
    )
    parser.add_argument("--vocab-size", type=int, default=None, help="V (default: the preset's)")
    parser.add_argument(
        "--head", choices=["mlm", "none"], default="mlm", help="add the MLM head (default) or not"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    for name in ("batch_size", "seq_len"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    config = HfpipeConfig.from_preset(args.preset, **overrides)
    if args.seq_len > config.max_position_embeddings:
        raise ValueError(
            f"--seq-len {args.seq_len} exceeds the preset's max_position_embeddings={config.max_position_embeddings}"
        )
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = (HfpipeForMaskedLM if args.head == "mlm" else HfpipeModel)(config).eval()
        input_ids = torch.zeros(args.batch_size, args.seq_len, dtype=torch.long)
    rows = trace_shapes(model, input_ids)
    print(f"{args.preset}: {legend(config, args.batch_size, args.seq_len)}")
    print(format_shapes(rows, max_layers=args.layers or None))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hfpipe.teach.shapes --preset modern-tiny`: the same as `hfpipe shapes`."""
    parser = argparse.ArgumentParser(prog="hfpipe")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["shapes", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
