"""MLM masking as a pure function: token ids in, (inputs, labels) out, for a whole (B, T) batch at once.

    from hfpipe.config import MaskingArgs
    from hfpipe.data.masking import default_mlm_probability, mask_tokens, row_keys
    batch = collate(rows, tokenizer.pad_token_id)
    inputs, labels = mask_tokens(
        batch["input_ids"], special_tokens_mask=batch["special_tokens_mask"],
        mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer), args=MaskingArgs(),
        mlm_probability=default_mlm_probability("modern-small"),
        keys=row_keys(seed, step, positions), word_starts=batch.get("word_starts"),
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

Randomness. Every draw is addressed: (row, stream, index), where the stream says what the draw
decides (CHOOSE a unit or a span start, a SPAN_LENGTH, DECIDE mask/random/keep for a group,
REPLACE a token by a random id) and the index is a unit, span start or token position inside the
row. Two sources answer these addresses, and the masking algorithm is the same for both:
- `keys=row_keys(seed, step, positions)` (training): a counter-based hash. Draw (row, stream, i)
  = murmur3's fmix32, twice, keyed by the row's 64-bit BLAKE2b key of (seed, step, global
  position). A row's mask therefore depends on (seed, step, position) and its own tokens only --
  not on the batch it is in, the micro-batch split, the number of processes or workers, nor on
  the padded width -- and a whole batch is hashed in a few numpy operations.
- `generator=make_generator(seed, step, rank)` (or any torch.Generator): draws taken in order from
  the generator; reproducible for the same batch, but a row's mask depends on its batch.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..config import MaskingArgs, RecipeError

IGNORE_INDEX = -100
MAX_SPAN_FACTOR = 10  # spans longer than MAX_SPAN_FACTOR x mean_span_length are cut
CHOOSE, SPAN_LENGTH, DECIDE, REPLACE = range(4)  # the streams of draws (see "Randomness" above)
N_STREAMS = 4


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


def _digest(seed: int, step: int, position: int) -> bytes:
    return hashlib.blake2b(f"hfpipe-mlm:{seed}:{step}:{position}".encode(), digest_size=8).digest()


def make_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """A CPU generator seeded from a hash of (seed, step, rank): reproducible, and independent
    across steps and ranks (unlike seed + step + rank, which collides: (0, 1, 0) == (0, 0, 1))."""
    return torch.Generator().manual_seed(int.from_bytes(_digest(seed, step, rank), "big") & (2**63 - 1))


def row_keys(seed: int, step: int, positions: Sequence[int]) -> torch.Tensor:
    """(B, 2) int64: each row's 64-bit key, as two 32-bit words, from a BLAKE2b hash of
    (seed, step, global position) -- the same hash `make_generator` seeds from."""
    digests = b"".join(_digest(seed, step, g) for g in positions)
    words = np.frombuffer(digests, dtype=">u4").reshape(len(positions), 2)  # (B, 2)
    return torch.from_numpy(words.astype(np.int64))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finalizer: a bijection of uint32 in which every input bit flips every output bit
    with probability ~1/2 (numpy uint32 arithmetic wraps modulo 2**32)."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


class KeyedDraws:
    """Draws addressed by (row key, stream, index): a pure function of the address, computed for any
    set of addresses at once. `index` is (N,) -- the same indices in every row -- or (B, N)."""

    def __init__(self, keys: torch.Tensor):
        words = keys.numpy().astype(np.uint32)
        self.k0, self.k1 = words[:, :1], words[:, 1:]  # (B, 1) each
        self.rows = len(words)

    def bits(self, stream: int, index: torch.Tensor) -> np.ndarray:
        """(B, N) uint32 hashes."""
        counter = index.numpy().astype(np.uint32) * np.uint32(N_STREAMS) + np.uint32(stream)
        return _fmix32(_fmix32(counter ^ self.k0) ^ self.k1)

    def uniform(self, stream: int, index: torch.Tensor) -> torch.Tensor:
        """(B, N) float32 uniform in [0, 1), 24 random bits (as torch.rand)."""
        return torch.from_numpy((self.bits(stream, index) >> 8).astype(np.float32) * np.float32(2**-24))

    def integers(self, stream: int, index: torch.Tensor, high: int) -> torch.Tensor:
        """(B, N) int64 uniform in [0, high): the top bits of hash x high (Lemire's multiply-shift)."""
        return torch.from_numpy(((self.bits(stream, index).astype(np.uint64) * np.uint64(high)) >> 32).astype(np.int64))


class GeneratorDraws:
    """The same interface over a torch.Generator: draws are taken in order, one table of
    (B, max index + 1) per call, so results depend on the call sequence and the batch shape."""

    def __init__(self, generator: torch.Generator, rows: int):
        self.generator, self.rows = generator, rows

    def _table_index(self, index: torch.Tensor) -> tuple[int, torch.Tensor]:
        index = index.expand(self.rows, -1) if index.dim() == 1 else index  # (B, N)
        return (int(index.max()) + 1 if index.numel() else 0), index

    def uniform(self, stream: int, index: torch.Tensor) -> torch.Tensor:
        width, index = self._table_index(index)
        return torch.rand((self.rows, width), generator=self.generator).gather(1, index)

    def integers(self, stream: int, index: torch.Tensor, high: int) -> torch.Tensor:
        width, index = self._table_index(index)
        return torch.randint(high, (self.rows, width), generator=self.generator).gather(1, index)


def _units(maskable: torch.Tensor, word_starts: torch.Tensor | None) -> torch.Tensor:
    """(B, T) unit index of each token inside its row: token index, or word index."""
    B, T = maskable.shape
    if word_starts is None:
        return torch.arange(T).expand(B, T)
    starts = word_starts.bool() | ~maskable  # special/pad tokens are one-token units of their own
    starts[:, 0] = True
    starts[:, 1:] |= ~maskable[:, :-1]  # a word never continues across a special token
    return starts.long().cumsum(dim=1) - 1  # (B, T), in [0, T)


@functools.lru_cache(maxsize=64)
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


def _choose_spans(B: int, U: int, p: float, mean: float, draws) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen (B, U) bool, group (B, U) long): units covered by spans, and each one's span id
    (where it starts, counted from max_len units before the row)."""
    max_len = max(1, math.ceil(MAX_SPAN_FACTOR * mean))
    q = _span_start_probability(p, mean, max_len)
    width = U + max_len  # spans may start up to max_len units before the row
    position = torch.arange(width)  # position i is unit i - max_len: the same address whatever U is
    starts = draws.uniform(CHOOSE, position) < q  # (B, width)
    # Geometric(1/mean) on {1, 2, ...} by inversion: L = 1 + floor(log(u) / log(1 - 1/mean)).
    if mean > 1:
        u = draws.uniform(SPAN_LENGTH, position).clamp_min(1e-12)
        lengths = 1 + torch.floor(torch.log(u) / math.log(1 - 1 / mean)).long()
    else:
        lengths = torch.ones((B, width), dtype=torch.long)
    lengths = lengths.clamp(max=max_len)
    end = torch.where(starts, position + lengths, position)  # (B, width); a non-start covers nothing
    reach, source = torch.cummax(end, dim=1)  # farthest end of any span starting at or before
    return (reach > position)[:, max_len:], source[:, max_len:]  # (B, U) each


@functools.lru_cache(maxsize=16)
def _replacement_ids(vocab_size: int, excluded: frozenset[int]) -> torch.Tensor:
    """Every id but the excluded ones; cached because it is the same for almost every batch."""
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
    generator: torch.Generator | None = None,
    keys: torch.Tensor | None = None,
    word_starts: torch.Tensor | None = None,
    special_token_ids: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (inputs, labels) for MLM; the arguments are not modified.

    `input_ids`, `special_tokens_mask` (1 = special or padding) and `word_starts` are (B, T).
    `word_starts` is used only when `args.whole_word`. Randomness comes from exactly one of
    `keys` ((B, 2) from `row_keys`: each row masked by its own key, whatever the batch) or
    `generator`. Random replacements are drawn uniformly from [0, vocab_size) minus
    `special_token_ids`, mask_token_id and every id at a special position of this batch; pass the
    tokenizer's `all_special_ids` to exclude the rest (e.g. [UNK]) too -- and then, as the ids at
    special positions are among them, the set does not depend on the batch either. Computed on
    the CPU; results are moved to `input_ids.device`.
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
    if (generator is None) == (keys is None):
        raise ValueError("pass exactly one source of randomness: keys=row_keys(...) or generator=make_generator(...)")
    device = input_ids.device
    ids = input_ids.detach().cpu()
    maskable = ~special_tokens_mask.detach().cpu().bool()
    B, T = ids.shape
    if keys is not None and tuple(keys.shape) != (B, 2):
        raise ValueError(f"keys must be (B, 2) = ({B}, 2) from row_keys, got {tuple(keys.shape)}")
    draws = KeyedDraws(keys) if keys is not None else GeneratorDraws(generator, B)
    units = _units(maskable, word_starts.detach().cpu() if args.whole_word else None)  # (B, T)

    # 1. Which units are predicted, and which decision group (unit or span) each belongs to.
    if args.span:
        chosen_unit, group_of_unit = _choose_spans(B, T, mlm_probability, args.mean_span_length, draws)
        group = torch.gather(group_of_unit, 1, units)  # (B, T): the span of each token's unit
    else:
        chosen_unit = draws.uniform(CHOOSE, torch.arange(T)) < mlm_probability  # (B, U=T)
        group = units  # (B, T): each unit decides alone
    chosen = torch.gather(chosen_unit, 1, units) & maskable  # (B, T)

    # 2. Per group: [MASK], random token, or keep -- one draw per group so a word/span is treated as a whole.
    draw = draws.uniform(DECIDE, group)  # (B, T), equal within a group
    to_mask = chosen & (draw < args.mask_replace_prob)
    to_random = chosen & ~to_mask & (draw < args.mask_replace_prob + args.random_replace_prob)

    # Never insert a special token: those named, [MASK], and any id the batch marks as special ([CLS],
    # [SEP], [PAD] seen here), so the default is safe even without special_token_ids.
    seen_special = ids[~maskable].unique().tolist()
    excluded = frozenset(i for i in {*(special_token_ids or ()), mask_token_id, *seen_special} if 0 <= i < vocab_size)
    allowed = _replacement_ids(vocab_size, excluded)  # ids a random replacement may take
    if to_random.any() and allowed.numel() == 0:
        raise ValueError(f"no non-special token to draw random replacements from (vocab_size={vocab_size})")
    random_ids = allowed[draws.integers(REPLACE, torch.arange(T), max(1, allowed.numel()))]  # (B, T)

    inputs = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs.to(device), labels.to(device)
