"""MLM masking as a pure, seeded function: token ids in, (inputs, labels) out.

    from hfpipe.config import MaskingArgs
    from hfpipe.data.masking import default_mlm_probability, make_generator, mask_tokens
    batch = collate(rows, tokenizer.pad_token_id)
    inputs, labels = mask_tokens(
        batch["input_ids"], special_tokens_mask=batch["special_tokens_mask"],
        mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer), args=MaskingArgs(),
        mlm_probability=default_mlm_probability("modern-small"),
        generator=make_generator(seed, step, rank), word_starts=batch.get("word_starts"),
        special_token_ids=tokenizer.all_special_ids)

How positions are chosen. Tokens are grouped into *units*: single tokens, or whole words when
`whole_word` (a word = a token with word_starts=1 and the tokens after it up to the next start;
special and padding tokens are never part of a word). Without `span`, each maskable unit is
chosen independently with probability p = mlm_probability, so the expected number of masked
tokens is exactly p x (maskable tokens); the count is Binomial, not fixed per row. With
`span`, units are covered by spans (SpanBERT): each unit starts a span with probability q and a
span covers Geometric(1/mean_span_length) units (capped at 10 x mean); q is solved so that the
expected covered fraction is p, spans may also start in (virtual) units before the row, so
coverage is uniform along the row. Special and padding tokens are never chosen.

What chosen units become: per unit (per span when `span`), [MASK] with probability
mask_replace_prob, a random non-special token with probability random_replace_prob, otherwise
kept. A whole word or span is therefore masked, replaced or kept as a whole. Labels hold the
original id at every chosen position (masked, replaced or kept) and -100 elsewhere, so the model
computes MLM logits only where labels != -100.

Reproducibility: all randomness comes from `generator`; `make_generator(seed, step, rank)` derives
it from a hash, so a given (seed, step, rank) always masks the same way and different steps or
ranks mask differently.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence

import torch

from ..config import MaskingArgs, RecipeError

IGNORE_INDEX = -100
MAX_SPAN_FACTOR = 10  # spans longer than MAX_SPAN_FACTOR x mean_span_length are cut


def default_mlm_probability(preset_name: str) -> float:
    """The masking rate a model preset was designed for: 0.30 `modern-*`, 0.15 `bert-*`."""
    if preset_name.startswith("modern-"):
        return 0.30
    if preset_name.startswith("bert-"):
        return 0.15
    raise RecipeError(
        f"no default masking rate for model preset {preset_name!r} (known families: modern-*, bert-*); "
        "set it explicitly",
        key="masking.mlm_probability",
    )


def make_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """A CPU generator seeded from a hash of (seed, step, rank): reproducible, and independent
    across steps and ranks (unlike seed + step + rank, which collides: (0, 1, 0) == (0, 0, 1))."""
    digest = hashlib.blake2b(f"hfpipe-mlm:{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "big") & (2**63 - 1))


def _units(maskable: torch.Tensor, word_starts: torch.Tensor | None) -> torch.Tensor:
    """(B, T) unit index of each token inside its row: token index, or word index."""
    B, T = maskable.shape
    if word_starts is None:
        return torch.arange(T).expand(B, T)
    starts = word_starts.bool() | ~maskable  # special/pad tokens are one-token units of their own
    starts[:, 0] = True
    starts[:, 1:] |= ~maskable[:, :-1]  # a word never continues across a special token
    return starts.long().cumsum(dim=1) - 1  # (B, T), in [0, T)


def _span_start_probability(p: float, mean: float, max_len: int) -> float:
    """q such that spans starting with probability q at each unit cover a fraction p of units.

    A unit is uncovered iff no span starting k units before it reaches it:
    P(uncovered) = prod_{k=0}^{max_len-1} (1 - q P(L > k)), with P(L > k) = (1 - 1/mean)^k
    (geometric lengths, cut at max_len). Solved for q by bisection.
    """
    r = 1.0 / mean
    survival = [(1 - r) ** k for k in range(max_len)]

    def coverage(q: float) -> float:
        return 1.0 - math.prod(1.0 - q * s for s in survival)

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if coverage(mid) < p else (lo, mid)
    return (lo + hi) / 2


def _choose_spans(B: int, U: int, p: float, mean: float, generator: torch.Generator):
    """(chosen (B, U) bool, group (B, U) long): units covered by spans, and each one's span id."""
    max_len = max(1, math.ceil(MAX_SPAN_FACTOR * mean))
    q = _span_start_probability(p, mean, max_len)
    width = U + max_len  # spans may start up to max_len units before the row
    starts = torch.rand((B, width), generator=generator) < q
    # Geometric(1/mean) on {1, 2, ...} by inversion: L = 1 + floor(log(u) / log(1 - 1/mean)).
    u = torch.rand((B, width), generator=generator).clamp_min(1e-12)
    if mean > 1:
        lengths = 1 + torch.floor(torch.log(u) / math.log(1 - 1 / mean)).long()
    else:
        lengths = torch.ones((B, width), dtype=torch.long)
    lengths = lengths.clamp(max=max_len)
    position = torch.arange(width).expand(B, width)
    end = torch.where(starts, position + lengths, position)  # a non-start covers nothing
    reach, source = torch.cummax(end, dim=1)  # farthest end of any span starting at or before
    chosen = (reach > position)[:, max_len:]
    group = (torch.arange(B).unsqueeze(1) * width + source)[:, max_len:]  # span id = its start
    return chosen, group


@functools.lru_cache(maxsize=16)
def _replacement_ids(vocab_size: int, excluded: frozenset[int]) -> torch.Tensor:
    """Every id but the excluded ones; cached because it is the same for almost every row."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[list(excluded)] = False
    return keep.nonzero().squeeze(1)


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int | None,
    vocab_size: int,
    args: MaskingArgs,
    mlm_probability: float,
    generator: torch.Generator,
    word_starts: torch.Tensor | None = None,
    special_token_ids: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (inputs, labels) for MLM; the arguments are not modified.

    `input_ids`, `special_tokens_mask` (1 = special or padding) and `word_starts` are (B, T).
    `word_starts` is used only when `args.whole_word`. Random replacements are drawn uniformly
    from [0, vocab_size) minus `special_token_ids`, mask_token_id and every id at a special
    position of this batch; pass the tokenizer's `all_special_ids` to exclude the rest (e.g.
    [UNK]) too. Randomness is drawn on the CPU from `generator`; results are moved to
    `input_ids.device`.
    """
    if mask_token_id is None:
        raise ValueError(
            "mask_token_id is None: the tokenizer has no mask token, so it cannot be used for MLM"
        )
    if not 0 < mlm_probability < 1:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if input_ids.dim() != 2 or special_tokens_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and special_tokens_mask must both be (B, T), got {tuple(input_ids.shape)} "
            f"and {tuple(special_tokens_mask.shape)}"
        )
    if args.whole_word and word_starts is None:
        raise ValueError("masking.whole_word needs word_starts: tokenize with whole_word=True")
    device = input_ids.device
    ids = input_ids.detach().cpu()
    maskable = ~special_tokens_mask.detach().cpu().bool()
    B, T = ids.shape
    units = _units(maskable, word_starts.detach().cpu() if args.whole_word else None)  # (B, T)

    # 1. Which units are predicted, and which decision group (unit or span) each belongs to.
    if args.span:
        chosen_unit, group_of_unit = _choose_spans(B, T, mlm_probability, args.mean_span_length, generator)
    else:
        chosen_unit = torch.rand((B, T), generator=generator) < mlm_probability  # (B, U=T)
        group_of_unit = torch.arange(B * T).view(B, T)
    chosen = torch.gather(chosen_unit, 1, units) & maskable  # (B, T)
    group = torch.gather(group_of_unit, 1, units)  # (B, T)

    # 2. Per group: [MASK], random token, or keep -- one draw per group so a word/span is treated as a whole.
    n_groups = int(group.max()) + 1 if group.numel() else 1
    draw = torch.rand(n_groups, generator=generator)[group]  # (B, T)
    to_mask = chosen & (draw < args.mask_replace_prob)
    to_random = chosen & ~to_mask & (draw < args.mask_replace_prob + args.random_replace_prob)

    # Never insert a special token: those named, [MASK], and any id the batch marks as special ([CLS],
    # [SEP], [PAD] seen here), so the default is safe even without special_token_ids.
    seen_special = ids[~maskable].unique().tolist()
    excluded = frozenset(i for i in {*(special_token_ids or ()), mask_token_id, *seen_special} if 0 <= i < vocab_size)
    allowed = _replacement_ids(vocab_size, excluded)  # ids a random replacement may take
    if to_random.any() and allowed.numel() == 0:
        raise ValueError(f"no non-special token to draw random replacements from (vocab_size={vocab_size})")
    random_ids = allowed[torch.randint(max(1, allowed.numel()), (B, T), generator=generator)]

    inputs = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs.to(device), labels.to(device)
