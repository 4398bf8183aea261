"""Tokenize documents into training rows (pack or pad mode) and collate rows into batches.

    from hfpipe.data.packing import tokenize_dataset, collate, shard_for_process   # also in hfpipe.data.sources
    rows = tokenize_dataset(train_texts, tokenizer, data_args, whole_word=True)
    rows = shard_for_process(rows, rank, world_size)                           # streaming, multi-process
    batch = collate([rows[i] for i in range(32)], tokenizer.pad_token_id, pad_to_multiple_of=8)

A row holds
- `input_ids`: token ids; every document is encoded with the tokenizer's own post-processor, so it
  reads `[CLS] tokens [SEP]` for BERT-style tokenizers;
- `position_ids`: 0 at the first token of every document piece in the row, counting up inside
  it. The model's padding-free path reads document boundaries from these restarts, so attention
  never crosses a document;
- `special_tokens_mask`: 1 on special tokens ([CLS], [SEP], ...), which are never masked;
- `word_starts` (only with `whole_word=True`): 1 where a token starts a word, from the fast
  tokenizer's `word_ids()` -- the pre-tokenizer's words, so it works for WordPiece, BPE and
  Unigram alike; special tokens are 1.

`pack` mode concatenates the documents of each `datasets.map` batch (`MAP_BATCH_SIZE` documents)
into one stream and cuts it every `block_size` tokens, like run_mlm's `group_texts`, with two
differences: positions restart per document, and the remainder at the end of each batch is KEPT
as one shorter row (collate pads it) instead of dropped -- packing loses and duplicates no token.
A document that straddles a cut continues at position 0 of the next row. `pad` mode makes each
document its own row, split into block_size pieces when longer. Both are pure numpy over the
concatenated ids of a batch, with no per-token Python.

Non-streaming results are cached by `datasets` next to the source's cache files, under a
fingerprint of (input dataset, tokenizer, block_size, mode, whole_word), so a second run reads
the cache instead of tokenizing again.
"""

from __future__ import annotations

import hashlib
import logging
import math
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, Features, IterableDataset, List, Value
from datasets.distributed import split_dataset_by_node
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from ..config import DataArgs

logger = logging.getLogger(__name__)

MAP_BATCH_SIZE = 1000  # documents per datasets.map batch (and per packing stream)
FORMAT_VERSION = 1  # bump when the row format changes, to invalidate cached tokenizations
# Per-row statistics columns, summed after map and then dropped: documents longer than block_size,
# and the longest document's length. In pad mode a document over FAR_FACTOR blocks is worth a warning.
STATS_COLUMNS = ("_long_documents", "_longest_document")
FAR_FACTOR = 8
_warned_long_documents = False  # streaming mode: say once per process that a far-too-long document is split


def row_features(whole_word: bool, with_stats: bool = False) -> Features:
    """The arrow schema of tokenized rows (int32 ids; int8 flags to keep the cache small)."""
    features = {
        "input_ids": List(Value("int32")),
        "position_ids": List(Value("int32")),
        "special_tokens_mask": List(Value("int8")),
    }
    if whole_word:
        features["word_starts"] = List(Value("int8"))
    if with_stats:
        features.update({name: Value("int32") for name in STATS_COLUMNS})
    return Features(features)


def cut_points(lengths: np.ndarray, block_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Row boundaries and position ids for documents of `lengths` tokens laid end to end.

    Returns (bounds, positions): row r is tokens bounds[r]:bounds[r+1] of the stream, and
    positions[i] is token i's position inside its document piece. In `pack` mode rows are every
    block_size tokens (the last may be shorter); in `pad` mode each document starts a row and is
    cut every block_size tokens. Either way a token's position restarts at 0 at its document's
    start and at its row's start: position = index - max(document start, row start).
    """
    total = int(lengths.sum())
    doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    index = np.arange(total, dtype=np.int64)
    doc_start_of_token = np.repeat(doc_starts, lengths)
    if mode == "pack":
        bounds = np.append(np.arange(0, total, block_size, dtype=np.int64), total)
        positions = index - np.maximum(doc_start_of_token, index - index % block_size)
    else:
        pieces = -(-lengths // block_size)  # ceil: a document of L tokens makes ceil(L / block) rows
        first_piece = np.concatenate([[0], np.cumsum(pieces)[:-1]])
        piece_in_doc = np.arange(int(pieces.sum())) - np.repeat(first_piece, pieces)
        bounds = np.append(np.repeat(doc_starts, pieces) + piece_in_doc * block_size, total)
        positions = (index - doc_start_of_token) % block_size
    return bounds, positions.astype(np.int32)


def _word_starts(encodings: list, flat_special: np.ndarray) -> np.ndarray:
    """1 where a token starts a new word (word id changes, or a special token), else 0."""
    word_ids = np.fromiter(
        (-1 if w is None else w for w in chain.from_iterable(e.word_ids for e in encodings)),
        dtype=np.int64,
        count=flat_special.size,
    )
    starts = np.ones(word_ids.size, dtype=np.int8)
    starts[1:] = word_ids[1:] != word_ids[:-1]
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    doc_starts = np.cumsum(lengths)[:-1]
    starts[doc_starts[doc_starts < starts.size]] = 1  # a document's first token (word ids restart at 0)
    starts[(word_ids < 0) | (flat_special == 1)] = 1
    return starts


def encode_batch(
    batch: dict[str, list], *, tokenizer_json: str, special_ids: list[int], block_size: int, mode: str,
    whole_word: bool, with_stats: bool, python_lists: bool,
) -> dict[str, Any]:  # fmt: skip
    """datasets.map function: a batch of `text` documents -> packed or padded rows."""
    tokenizer = _backend(tokenizer_json)
    texts = batch["text"]
    # encode_batch_fast skips offsets (faster) but also word ids, which whole-word masking needs.
    encodings = tokenizer.encode_batch(texts) if whole_word else tokenizer.encode_batch_fast(texts)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter(
        chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(lengths.sum())
    )
    special = np.isin(flat, special_ids).astype(np.int8)
    bounds, positions = cut_points(lengths, block_size, mode)
    columns = {"input_ids": flat, "position_ids": positions, "special_tokens_mask": special}
    if whole_word:
        columns["word_starts"] = _word_starts(encodings, special)
    split = bounds[1:-1] if flat.size else []  # no token at all (e.g. no post-processor): no row
    # Arrow converts numpy rows fast (Dataset); an IterableDataset hands rows on as they are: lists.
    rows = {k: np.split(v, split) if flat.size else [] for k, v in columns.items()}
    if python_lists:
        rows = {k: [a.tolist() for a in v] for k, v in rows.items()}
    if with_stats:  # this batch's numbers go in its first row, zeros elsewhere
        for name, value in zip(STATS_COLUMNS, ((lengths > block_size).sum(), lengths.max(initial=0))):
            rows[name] = np.zeros(len(rows["input_ids"]), dtype=np.int32)
            rows[name][:1] = value
    elif mode != "pack" and lengths.max(initial=0) > FAR_FACTOR * block_size:  # packing cuts documents by design
        _warn_long_documents_once(int(lengths.max()), block_size)
    return rows


_backends: dict[str, Tokenizer] = {}


def _backend(tokenizer_json: str) -> Tokenizer:
    """The Rust tokenizer for this JSON, built once per process (map calls this per batch)."""
    key = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    if key not in _backends:
        tokenizer = Tokenizer.from_str(tokenizer_json)
        tokenizer.no_truncation()  # rows are cut by packing, never by the tokenizer
        tokenizer.no_padding()
        _backends[key] = tokenizer
    return _backends[key]


def _warn_long_documents_once(longest: int, block_size: int) -> None:
    global _warned_long_documents
    if not _warned_long_documents:
        _warned_long_documents = True
        logger.warning(
            "a document of %d tokens is far longer than data.block_size=%d and is split into pieces "
            "(positions restart in each piece); in streaming mode later ones are split silently",
            longest,
            block_size,
        )


def tokenize_dataset(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerFast,
    args: DataArgs,
    *,
    whole_word: bool,
) -> Dataset | IterableDataset:
    """Tokenize the `text` column into rows of `input_ids`, `position_ids`, `special_tokens_mask`
    (and `word_starts`), packed or padded per `args.mode`; cached on disk for a `Dataset`."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenize_dataset needs a fast tokenizer, got {type(tokenizer).__name__}")
    tokenizer_json = tokenizer.backend_tokenizer.to_str()
    fn_kwargs = dict(
        tokenizer_json=tokenizer_json, special_ids=sorted(set(tokenizer.all_special_ids)),
        block_size=args.block_size, mode=args.mode, whole_word=whole_word,
    )  # fmt: skip
    if isinstance(dataset, IterableDataset):
        return dataset.map(
            encode_batch, batched=True, batch_size=MAP_BATCH_SIZE, remove_columns=["text"],
            features=row_features(whole_word), fn_kwargs={**fn_kwargs, "with_stats": False, "python_lists": True},
        )  # fmt: skip
    key = repr((dataset._fingerprint, sorted(fn_kwargs.items()), FORMAT_VERSION))
    rows = dataset.map(
        encode_batch, batched=True, batch_size=MAP_BATCH_SIZE, remove_columns=dataset.column_names,
        num_proc=args.num_proc, features=row_features(whole_word, with_stats=True),
        fn_kwargs={**fn_kwargs, "with_stats": True, "python_lists": False}, desc=f"tokenize ({args.mode} {args.block_size})",
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
    )  # fmt: skip
    _log_stats(rows, args.block_size, args.mode)
    return rows.remove_columns(list(STATS_COLUMNS))


def _log_stats(rows: Dataset, block_size: int, mode: str) -> None:
    """Log rows, tokens, padding fraction and the documents that had to be split."""
    table = rows.data
    n_rows = table.num_rows
    n_tokens = pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0
    n_long = pc.sum(table.column(STATS_COLUMNS[0])).as_py() or 0
    longest = pc.max(table.column(STATS_COLUMNS[1])).as_py() or 0
    padding = 1 - n_tokens / max(1, n_rows * block_size)
    logger.info(
        "tokenized (%s mode): %d rows, %d tokens; padded to block_size=%d, %.2f%% of tokens would be "
        "padding (collate pads each batch only to its longest row); no token dropped",
        mode, n_rows, n_tokens, block_size, 100 * padding,
    )  # fmt: skip
    if n_long:  # a warning only when some document is far longer than a block: maybe not what was meant
        # pack mode cuts documents into blocks by design (WikiText's articles: every run): information;
        # pad mode's one-document rows split far too long documents into many: a warning
        level = logging.WARNING if mode != "pack" and longest > FAR_FACTOR * block_size else logging.INFO
        logger.log(
            level,
            "%d documents are longer than data.block_size=%d tokens (longest: %d) and were split into pieces "
            "(positions restart at 0 in each piece)", n_long, block_size, longest,
        )  # fmt: skip


def shard_for_process(dataset: Dataset | IterableDataset, rank: int, world_size: int):
    """This process' share of the rows: `datasets.distributed.split_dataset_by_node`.

    Map-style datasets get a contiguous block; iterable ones whole shards when num_shards is a
    multiple of world_size, else every world_size-th row. Shares are disjoint and cover the data.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


PAD_VALUES = {"position_ids": 0, "special_tokens_mask": 1, "word_starts": 1}  # input_ids: the pad token


def collate(
    examples: list[dict[str, Any]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad rows to the longest (rounded up to `pad_to_multiple_of`) and stack them.

    Returns int64 (B, T) tensors: `input_ids` (pad_token_id on padding), `attention_mask`
    (1 = real token), `position_ids` (0 on padding), `special_tokens_mask` (1 on special and
    padding tokens, so masking never touches them) and `word_starts` when rows have it (1 on
    padding).
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    names = [name for name in ("input_ids", *PAD_VALUES) if name in examples[0]]
    lengths = np.fromiter((len(e["input_ids"]) for e in examples), dtype=np.int64, count=len(examples))
    flat = {name: np.concatenate([np.asarray(e[name], dtype=np.int64) for e in examples]) for name in names}
    return collate_columns(flat, lengths, pad_token_id, pad_to_multiple_of)


def collate_columns(
    columns: dict[str, np.ndarray], lengths: np.ndarray, pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """`collate` for rows given as flat columns: row i of a column is the next lengths[i] values of
    `columns[name]` (as arrow stores list columns). Vectorised: one reshape per column when every row
    has the padded width (packed rows), else one masked scatter."""
    if len(lengths) == 0:
        raise ValueError("collate needs at least one example")
    if pad_token_id is None:
        raise ValueError("collate needs a pad_token_id; the tokenizer has no pad token")
    B, width = len(lengths), int(lengths.max())
    if pad_to_multiple_of:
        width = math.ceil(width / pad_to_multiple_of) * pad_to_multiple_of
    real = np.arange(width) < lengths[:, None]  # (B, T): 1 = real token
    batch = {"attention_mask": torch.from_numpy(real.astype(np.int64))}
    fills = {"input_ids": pad_token_id, **PAD_VALUES}
    for name, values in columns.items():
        if bool((lengths == width).all()):
            padded = values.astype(np.int64).reshape(B, width)  # (B, T)
        else:
            padded = np.full((B, width), fills[name], dtype=np.int64)  # (B, T)
            padded[real] = values
        batch[name] = torch.from_numpy(padded)
    for name in ("position_ids", "special_tokens_mask"):  # collate's contract: always present
        if name not in batch:
            raise ValueError(f"collate needs {name!r} in every row (rows from tokenize_dataset have it)")
    return batch
