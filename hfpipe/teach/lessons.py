"""The four questions of the tutorial hfpipe grew from, answered by running code and measuring.

    hfpipe lessons            # all four
    hfpipe lessons qkv        # 1. what are Q, K and V, and where do they come from?
    hfpipe lessons positions  # 2. is there a better positional encoding?
    hfpipe lessons norms      # 3. why LayerNorm and not BatchNorm?
    hfpipe lessons shapes     # 4. which dimension change is which operation?

    from hfpipe.teach.lessons import lesson_qkv
    numbers = lesson_qkv(seed=0)   # prints the explanation, returns the measured numbers

Every lesson builds tiny real hfpipe modules (random weights, CPU, well under a second each), takes
a few measurements and prints them next to the explanation, so a claim like "attention has no
notion of order" comes with the number that shows it. Lessons 1-3 return a dict of those numbers
(tests/test_lessons.py asserts them); lesson 4 returns the traced (operation, named shape) rows.
Nothing here trains: the trained comparisons are `hfpipe ablate positions|norms|norm-position|mixer`
(measured tables in docs/ablations.md).
"""

from __future__ import annotations

import argparse
import math
import textwrap

import torch
from torch import nn

from ..model.configuration_hfpipe import HfpipeConfig
from ..model.modeling_hfpipe import (
    AlibiPositions,
    HfpipeForMaskedLM,
    HfpipeModel,
    TokenLayout,
    make_norm,
)
from .shapes import format_shapes, legend, trace_shapes

LESSONS = ("qkv", "positions", "norms", "shapes")
VOCAB = 100  # tiny vocabulary: the lessons look at mechanics, not at language


def _tiny_model(seed: int, **overrides) -> HfpipeModel:
    """bert-tiny (2 layers, C=128, H=2, D=64) with random weights, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    return HfpipeModel(HfpipeConfig.from_preset("bert-tiny", vocab_size=VOCAB, **overrides)).eval()


def _title(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}")


def _say(text: str) -> None:
    print(textwrap.dedent(text).strip("\n"))


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------------------------
# 1. Q, K and V
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _mixer_input_output(model: HfpipeModel, attn: torch.nn.Module, ids: torch.Tensor):
    """The hidden states x entering `attn` and its output, captured by a forward hook while the model
    runs its own backend (sdpa by default: a fused kernel, not our code)."""
    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, out):  # args = (x, layout, output_attentions); out = (output, probs)
        captured.update(x=args[0], out=out[0])

    handle = attn.register_forward_hook(hook)
    try:
        model(input_ids=ids)
    finally:
        handle.remove()
    return captured["x"], captured["out"]


def lesson_qkv(seed: int = 0) -> dict[str, float]:
    """Recompute one real attention module by hand from its weights and compare with its output."""
    model = _tiny_model(seed)
    attn = model.layers[0].mixer  # HfpipeSelfAttention of layer 0
    C, H, D = model.config.hidden_size, model.config.num_attention_heads, model.config.head_dim
    ids = torch.randint(1, VOCAB, (2, 6))
    x, module_out = _mixer_input_output(model, attn, ids)  # (B, T, C) each
    module_probs = model(input_ids=ids, output_attentions=True).attentions[0]  # (B, H, T, T)
    B, T, _ = x.shape

    # The fused projection is one Linear C -> 3C; its weight rows are W_q, then W_k, then W_v.
    W, b = attn.qkv.weight, attn.qkv.bias  # (3C, C), (3C,)
    W_q, W_k, W_v = W[:C], W[C : 2 * C], W[2 * C :]  # 3 x (C, C)
    b_q, b_k, b_v = b[:C], b[C : 2 * C], b[2 * C :]  # 3 x (C,)
    q, k, v = x @ W_q.T + b_q, x @ W_k.T + b_k, x @ W_v.T + b_v  # 3 x (B, T, C): the SAME x, three maps

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)

    scores = (
        heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(D)
    )  # (B, H, T, D) @ (B, H, D, T) -> (B, H, T, T)
    probs = scores.softmax(dim=-1)  # each query's row sums to 1 over the keys
    mixed = probs @ heads(v)  # (B, H, T, T) @ (B, H, T, D) -> (B, H, T, D)
    merged = mixed.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
    by_hand = merged @ attn.out_proj.weight.T + attn.out_proj.bias  # (B, T, C)

    # No positions inside attention: feed the mixer shuffled tokens, get the output shuffled the same way.
    perm = torch.randperm(T)
    no_positions = TokenLayout(  # BERT's learned positions were added to the input: none act in here
        attention_mask=None, token_mask=None, document_ids=None, rotary=None, position_ids=None,
        positions=model.positions,
    )
    shuffled_out, _ = attn(x[:, perm], no_positions)

    result = {
        "output_max_abs_diff": _maxdiff(by_hand, module_out),
        "probs_max_abs_diff": _maxdiff(probs, module_probs),
        "score_asymmetry": _maxdiff(scores, scores.transpose(-2, -1)),
        "permutation_max_abs_diff": _maxdiff(shuffled_out, module_out[:, perm]),
    }
    row = probs[0, 0, 0]
    _title("Lesson 1: what are Q, K and V, and where do they come from?")
    _say(f"""
        Model: bert-tiny (C={C} hidden, H={H} heads, D={D} head dim), random weights; input B={B} rows x T={T} tokens.
        Layer 0's attention gets hidden states x of shape (B={B}, T={T}, C={C}); a forward hook on
        model.layers[0].mixer captured x and the module's output.

        Q, K and V are three learned linear maps of the SAME x. hfpipe computes them as one Linear
        `qkv` (C={C} -> 3C={3 * C}); its weight {tuple(W.shape)} stacks them by rows:
            rows {0:>3}..{C - 1:<3}  -> W_q     q = x @ W_q^T + b_q   "what is this token looking for?"
            rows {C:>3}..{2 * C - 1:<3}  -> W_k     k = x @ W_k^T + b_k   "what does this token offer to be found by?"
            rows {2 * C:>3}..{3 * C - 1:<3}  -> W_v     v = x @ W_v^T + b_v   "what does this token pass on if chosen?"

        By hand: split C into H={H} heads of D={D}; scores = q k^T / sqrt(D) per head, shape (B, H, T, T);
        softmax over the keys; probs @ v; merge the heads back to C; out_proj.
            max |hand-made output - module output|        = {result["output_max_abs_diff"]:.1e}
            max |hand-made probs  - output_attentions|     = {result["probs_max_abs_diff"]:.1e}
        The module is nothing more than those few lines (here run by its {model.config._attn_implementation!r} backend).

        Q asks, K answers: score[i, j] = q_i . k_j compares token i's question with token j's answer.
        Two different maps, so the score matrix is not symmetric:
            max |score[i, j] - score[j, i]|               = {result["score_asymmetry"]:.2f}
        Token 0, head 0 spreads its attention over the {T} keys as {[round(p, 3) for p in row.tolist()]} (sums to {row.sum():.3f}).

        Nothing in q . k says WHERE token j sits. Shuffle the tokens fed to attention with the
        permutation {perm.tolist()}: the output comes out shuffled the same way, nothing else changes:
            max |attn(x[perm]) - attn(x)[perm]|           = {result["permutation_max_abs_diff"]:.1e}
        Order has to be put in from outside: that is lesson 2 (positions).
        """)
    return result


# ----------------------------------------------------------------------------------------------
# 2. Positions
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _pair_scores(model: HfpipeModel, query_token: int, key_token: int, i: int, j: int) -> torch.Tensor:
    """Layer 0's attention score of `query_token` at position i against `key_token` at position j, per head (H,).

    Runs the model's own embeddings (which add learned/sinusoidal positions) and qkv projection,
    and its own position scheme's rotation of q and k (RoPE; the other schemes leave them as they are)."""
    config, attn = model.config, model.layers[0].mixer
    C, H, D = config.hidden_size, config.num_attention_heads, config.head_dim
    ids, positions = torch.tensor([[query_token, key_token]]), torch.tensor([[i, j]])  # (1, 2)
    x = model.embeddings(ids, None, positions)  # (1, 2) -> (1, 2, C): layer 0's input (post-norm BERT)
    q, k, _ = attn.qkv(x).split(C, dim=-1)  # (1, 2, 3C) -> 3 x (1, 2, C)
    q, k = q.view(1, 2, H, D).transpose(1, 2), k.view(1, 2, H, D).transpose(1, 2)  # (1, H, 2, D)
    rotary = model.positions.rotary(positions, x.dtype)  # RoPE: (cos, sin), each (1, 1, 2, D); else None
    layout = TokenLayout(None, None, None, rotary, positions, model.positions)
    q, k = model.positions.rotate(q, k, layout)
    return (q[0, :, 0] * k[0, :, 1]).sum(-1) * attn.scaling  # (H,): q_i . k_j / sqrt(D)


SHIFT_QUERY, SHIFT_KEY, SHIFT = 2, 9, 50  # lesson 2 (b): query at i, key at j, both shifted by s
ALIBI_TOKENS = 5  # lesson 2 (c): the bias shown for a T x T score matrix
SHORT_TABLE, LONG_INPUT = 16, 24  # lesson 2 (d): max_position_embeddings, and a longer input


@torch.no_grad()
def _measure_order(seed: int) -> dict:
    """(a) permutation equivariance without positions; (b) which positions a score sees."""
    result: dict = {}
    # (a) No positions: the encoder is permutation-equivariant.
    models = {kind: _tiny_model(seed, position_embedding_type=kind) for kind in ("none", "absolute")}
    ids = torch.randint(1, VOCAB, (1, 8), generator=torch.Generator().manual_seed(seed))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(seed + 1))
    dog, bites, man = 11, 12, 13  # token ids standing for three words
    for kind, model in models.items():
        out = model(input_ids=ids).last_hidden_state  # (1, 8, C)
        result[f"{kind}_permutation_max_abs_diff"] = _maxdiff(
            model(input_ids=ids[:, perm]).last_hidden_state, out[:, perm]
        )
        dbm = model(input_ids=torch.tensor([[dog, bites, man]])).last_hidden_state.mean(
            1
        )  # (1, C) sentence vector
        mbd = model(input_ids=torch.tensor([[man, bites, dog]])).last_hidden_state.mean(1)
        result[f"{kind}_dog_bites_man_diff"] = _maxdiff(dbm, mbd)

    # (b) Score of the same two tokens at positions (i, j) and (i + s, j + s).
    i, j, s = SHIFT_QUERY, SHIFT_KEY, SHIFT
    for kind in ("rope", "absolute", "sinusoidal"):
        model = _tiny_model(seed, position_embedding_type=kind)
        before, after = _pair_scores(model, dog, man, i, j), _pair_scores(model, dog, man, i + s, j + s)
        result[f"{kind}_shift_score_diff"] = _maxdiff(before, after)
    return result


@torch.no_grad()
def _measure_bias_and_length(seed: int) -> dict:
    """(c) ALiBi's bias against its formula; (d) who runs past max_position_embeddings."""
    result: dict = {}
    # (c) ALiBi: the model's own score bias, compared with -slope * |i - j|.
    alibi = _tiny_model(seed, position_embedding_type="alibi")
    H, T = alibi.config.num_attention_heads, ALIBI_TOKENS
    positions = torch.arange(T)[None]  # (1, T)
    bias = alibi.positions.bias(positions)[0]  # (1, H, T, T) -> (H, T, T)
    slopes = AlibiPositions.slopes(H)
    distance = (positions[0, None, :] - positions[0, :, None]).abs()  # (1, T) - (T, 1) -> (T, T)
    result["alibi_slopes"] = slopes.tolist()
    result["alibi_bias_max_abs_diff"] = _maxdiff(bias, -slopes[:, None, None] * distance)
    result["alibi_head0_row"] = [round(x, 4) + 0.0 for x in bias[0, 0].tolist()]

    # (d) Beyond max_position_embeddings: who runs, who refuses.
    max_len, long_len = SHORT_TABLE, LONG_INPUT
    result["extrapolation"] = {}
    for kind in ("sinusoidal", "rope", "alibi", "none", "absolute"):
        model = _tiny_model(seed, position_embedding_type=kind, max_position_embeddings=max_len)
        try:
            out = model(input_ids=torch.randint(1, VOCAB, (1, long_len))).last_hidden_state
            result["extrapolation"][kind] = (
                f"runs: output {tuple(out.shape)}, finite={bool(out.isfinite().all())}"
            )
        except ValueError as err:
            result["extrapolation"][kind] = f"ValueError: {err}"
    return result


@torch.no_grad()
def lesson_positions(seed: int = 0) -> dict:
    """Permutation equivariance without positions, RoPE's relative scores, ALiBi's bias, extrapolation."""
    r = result = {**_measure_order(seed), **_measure_bias_and_length(seed)}
    i, j, s, T, H = SHIFT_QUERY, SHIFT_KEY, SHIFT, ALIBI_TOKENS, len(result["alibi_slopes"])
    max_len, long_len = SHORT_TABLE, LONG_INPUT
    _title("Lesson 2: is there a better positional encoding?")
    _say(f"""
        (a) Without positions (position_embedding_type="none") attention only compares contents, so the
        encoder is permutation-equivariant: shuffle the input tokens and the outputs shuffle identically.
                                                   none        absolute (BERT)
            max |enc(ids[perm]) - enc(ids)[perm]|  {r["none_permutation_max_abs_diff"]:<11.1e} {r["absolute_permutation_max_abs_diff"]:.1e}
            "dog bites man" vs "man bites dog"     {r["none_dog_bites_man_diff"]:<11.1e} {r["absolute_dog_bites_man_diff"]:.1e}
              (max diff of the mean-pooled sentence vectors)
        With no positions the two sentences are the same bag of words to the model.

        (b) Which positions does a score see? Same two tokens, query at i={i} and key at j={j}, then both
        shifted by s={s}. Layer 0's scores q.k/sqrt(D) per head, max |before - after|:
            rope        {r["rope_shift_score_diff"]:.1e}   q rotated by angle i*w, k by j*w: q.k depends on i - j only
            absolute    {r["absolute_shift_score_diff"]:.1e}   learned p_i added to the input: the score sees i and j themselves
            sinusoidal  {r["sinusoidal_shift_score_diff"]:.1e}   fixed sin/cos added to the input: same, through the qkv maps
        RoPE builds the relative distance into the score: "the word 2 before me" means the same anywhere.

        (c) ALiBi adds no vectors at all: each head h adds -slope_h * |i - j| to the scores (relative
        too), so far-away keys are penalized, more steeply in some heads. The model's own bias, T={T}:
            slopes (H={H}), 2^(-8(h+1)/H)            {[round(x, 4) for x in r["alibi_slopes"]]}
            max |model bias - (-slope * |i - j|)|  {r["alibi_bias_max_abs_diff"]:.1e}
            head 0 bias row of query 0            {r["alibi_head0_row"]}

        (d) Longer than trained: max_position_embeddings={max_len}, input of {long_len} tokens.
        """)
    for kind, line in r["extrapolation"].items():
        print(f"    {kind:<11} {line}")
    _say(f"""
        A learned table has no row for position {max_len}; the formulas (sin/cos, rotation, distance) do.
        Running is not the same as working well: which one trains best is an experiment, not a property.
        The trained comparison (same tiny model and budget, only the position type changes, 3 seeds each,
        then the loss at 2x and 4x the trained length):
            hfpipe ablate positions          (one variant: hfpipe pretrain recipes/ablations/position-rope.yaml)
        Measured tables: docs/ablations.md.
        """)
    return result


# ----------------------------------------------------------------------------------------------
# 3. Norms
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def lesson_norms(seed: int = 0) -> dict[str, float | str]:
    """One sequence normalized in a batch, alone and padded: LayerNorm/RMSNorm agree, BatchNorm does not."""
    torch.manual_seed(seed)
    config = HfpipeConfig.from_preset("bert-tiny", vocab_size=VOCAB)
    C, T, pad = config.hidden_size, 5, 3
    norms = {
        "layernorm": make_norm(config),  # the model's own norms: nn.LayerNorm(C) / nn.RMSNorm(C)
        "rmsnorm": make_norm(HfpipeConfig.from_preset("bert-tiny", vocab_size=VOCAB, norm_type="rmsnorm")),
        "batchnorm": nn.BatchNorm1d(C),  # what the question proposes, over (batch, tokens)
    }
    seq = torch.randn(1, T, C)  # the sequence we follow: (1, T, C)
    inputs = {
        "in a batch": torch.cat([seq, torch.randn(3, T, C)]),  # (4, T, C): three other sequences
        "alone": seq,  # (1, T, C)
        "padded": torch.cat([seq, torch.zeros(1, pad, C)], dim=1),  # (1, T + pad, C): pad positions are zeros
    }

    def apply(name: str, x: torch.Tensor) -> torch.Tensor:
        norm = norms[name]
        if name == "batchnorm":  # BatchNorm1d wants (N, C, L): it normalizes each channel over N and L
            return norm(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C) -> (B, C, T) -> (B, T, C)
        return norm(x)

    result: dict[str, float | str] = {}
    for name in norms:
        norms[name].train()
        outs = {how: apply(name, x)[0, :T] for how, x in inputs.items()}  # our sequence's real tokens only
        result[f"{name}_batch_vs_alone"] = _maxdiff(outs["in a batch"], outs["alone"])
        result[f"{name}_padded_vs_alone"] = _maxdiff(outs["padded"], outs["alone"])

    # Train vs eval: BatchNorm keeps running statistics; eval mode uses them instead of the batch's.
    batch = inputs["in a batch"]
    for name in norms:
        norms[name].train()
        train_out = apply(name, batch)
        for _ in range(2):
            apply(name, batch)  # two more training steps update BatchNorm's running mean/var
        norms[name].eval()
        result[f"{name}_train_vs_eval"] = _maxdiff(apply(name, batch), train_out)

    # One sequence of one token, in training mode.
    one = seq[:, :1]  # (1, 1, C)
    norms["layernorm"].train()
    result["layernorm_one_token"] = f"works: output {tuple(apply('layernorm', one).shape)}"
    norms["batchnorm"].train()
    try:
        apply("batchnorm", one)
        result["batchnorm_one_token"] = "ran"
    except ValueError as err:
        result["batchnorm_one_token"] = f"ValueError: {err}"
    two = apply("batchnorm", seq[:, :2])  # two tokens: every feature becomes -1 or +1 (the weight is 1)
    result["batchnorm_two_tokens_mean_abs"] = two.abs().mean().item()

    _title("Lesson 3: why LayerNorm and not BatchNorm?")
    r = result
    _say(f"""
        One sequence (T={T} tokens, C={C} features) normalized three ways: in a batch with 3 other
        sequences, alone, and followed by {pad} padding tokens. Max diff on its {T} real tokens (training mode):
                                    LayerNorm   RMSNorm     BatchNorm1d
            batch vs alone          {r["layernorm_batch_vs_alone"]:<11.1e} {r["rmsnorm_batch_vs_alone"]:<11.1e} {r["batchnorm_batch_vs_alone"]:.2f}
            padded vs alone         {r["layernorm_padded_vs_alone"]:<11.1e} {r["rmsnorm_padded_vs_alone"]:<11.1e} {r["batchnorm_padded_vs_alone"]:.2f}
            train vs eval mode      {r["layernorm_train_vs_eval"]:<11.1e} {r["rmsnorm_train_vs_eval"]:<11.1e} {r["batchnorm_train_vs_eval"]:.2f}

        Why: LayerNorm takes its mean and variance over the C={C} features of ONE token (RMSNorm only the
        root mean square). A token's output depends on that token alone. BatchNorm takes, for each
        feature, the mean and variance over all B*T tokens of the batch: a token's output depends on the
        other sentences, on how much padding there is, and at inference (eval mode) on running averages
        collected during training -- so the same sentence gets different outputs in training and serving.

        A batch of one sequence with one token, training mode:
            LayerNorm    {r["layernorm_one_token"]}
            BatchNorm1d  {r["batchnorm_one_token"]}
        With two tokens BatchNorm runs but degenerates: each feature is just +-1 (mean |y| = {r["batchnorm_two_tokens_mean_abs"]:.3f}),
        whatever the words were. Text batches have variable lengths, padding and small per-device batches;
        LayerNorm needs none of the batch, which is why every Transformer in hfpipe uses it (or RMSNorm).
        """)
    return result


# ----------------------------------------------------------------------------------------------
# 4. Shapes
# ----------------------------------------------------------------------------------------------


def lesson_shapes(preset: str = "bert-mini") -> list[tuple[str, str]]:
    """Trace one forward pass (embeddings, layer 0, MLM head) and print every named shape."""
    config = HfpipeConfig.from_preset(preset)
    B, T = 2, 16
    with torch.device("meta"):  # shapes only: no weights, no arithmetic
        model = HfpipeForMaskedLM(config).eval()
        ids = torch.zeros(B, T, dtype=torch.long)
    rows = [r for r in trace_shapes(model, ids) if ".layers." not in r.path or ".layers.0" in r.path]
    _title("Lesson 4: which dimension change is which operation?")
    _say(f"""
        One forward pass of {preset} (MLM head), traced with forward hooks: `hfpipe shapes --preset {preset}`.
        {legend(config, B, T)}
        Every layer repeats layer 0's shapes, so only layer 0 is shown.
        """)
    print(format_shapes(rows))
    changes = [r for prev, r in zip(rows, rows[1:]) if r.shape != prev.shape]
    print("\nWhere the dimensions change (the rest keep (B, T, C)):")
    for r in changes:
        print(f"    {r.op:<28} {r.named:<26} {r.note}")
    return [(r.op, r.named) for r in rows]


# ----------------------------------------------------------------------------------------------
# Command line: hfpipe lessons
# ----------------------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "lessons",
        help="the tutorial's four questions (Q/K/V, positions, norms, shapes) answered with measurements",
        description="Run small experiments on tiny hfpipe models and print each answer with the numbers "
        "that show it: qkv, positions, norms, shapes, or all (the default).",
    )
    parser.add_argument(
        "which", nargs="?", default="all", choices=[*LESSONS, "all"], help="which lesson (default: all)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    lessons = {
        "qkv": lesson_qkv,
        "positions": lesson_positions,
        "norms": lesson_norms,
        "shapes": lesson_shapes,
    }
    for name in LESSONS if args.which == "all" else (args.which,):
        lessons[name]()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hfpipe.teach.lessons norms`: the same as `hfpipe lessons norms`."""
    import sys

    parser = argparse.ArgumentParser(prog="hfpipe")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["lessons", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    raise SystemExit(main())
