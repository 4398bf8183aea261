"""Text sources for pretraining: Hub datasets, local files, the builtin corpus; mixing and splits.

    from hfpipe.config import DataArgs
    from hfpipe.data.sources import load_text_datasets, iter_texts, tokenize_dataset, collate

    args = DataArgs(source="../shared/data/wikitext-2/train.txt", block_size=128)
    train, validation = load_text_datasets(args, seed=42)       # one `text` column each
    tokenizer = get_tokenizer(..., texts_factory=lambda: iter_texts(train), ...)
    train_rows = tokenize_dataset(train, tokenizer, args, whole_word=False)
    batch = collate([train_rows[i] for i in range(8)], tokenizer.pad_token_id)

A source (`data.source`, and each of `data.extra_sources`) is one of
- `builtin:python-docs`: the interpreter's own documentation (see `hfpipe.data.corpus`), offline;
- a local file or glob: `.txt` (one document per non-blank line, as datasets' `text` builder
  reads it), `.csv`, `.tsv` (tab-separated, no quoting), `.json`/`.jsonl`, `.parquet`;
  `data.text_column` names the column holding the text;
- a glob of compressed text files (`books/*.txt.bz2`, also .gz/.xz/.zst): one book per file, read
  and cleaned by `hfpipe.data.files` (`data.clean`), validation chosen by file (`data.manifest`
  or a hash of the file name), one stream shard per file;
- otherwise a Hugging Face Hub dataset name, read with `datasets.load_dataset(source,
  config_name, split=split)` (needs internet).

Blank documents are dropped. Validation comes from `data.validation_source` (a second source),
`data.validation_split` (another split of the same source), the builtin corpus' own split, or is
carved off: a document belongs to validation when a hash of its text falls below
`validation_fraction`. Hash carving needs no shuffling or seed, works identically when streaming,
and keeps duplicates of one document on the same side. Several sources are mixed with
`datasets.interleave_datasets` (probabilities = normalized weights, `all_exhausted`: small
sources are re-read until every source has been seen once, so weights are real proportions).

With `streaming: true` every dataset is an `IterableDataset`: nothing is downloaded or converted
up front, memory stays flat, and `shard_for_process` gives each process its own share.
Tokenization, packing and collation live in `hfpipe.data.packing` and are re-exported here.
"""

from __future__ import annotations

import glob
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import datasets
from datasets import Dataset, IterableDataset

from ..config import DataArgs
from . import corpus
from .files import (
    COMPRESSED_SUFFIXES,
    BadFileError,
    DataSourceError,
    book_dataset,
    is_compressed,
    split_files,
)
from .packing import collate, shard_for_process, tokenize_dataset  # noqa: F401  (re-exported API)

logger = logging.getLogger(__name__)

AnyDataset = Dataset | IterableDataset
BUILTIN_PREFIX = "builtin:"
BUILTINS = ("python-docs",)
# file suffix -> (datasets builder, builder kwargs). TSV: literal quotes are not CSV quoting (QUOTE_NONE).
FILE_BUILDERS = {
    ".txt": ("text", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t", "quoting": 3}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
UTF8_CHECK_CHUNK = 1 << 22  # bytes read at a time when checking that a text file is UTF-8
# Streaming reads text/json files in 1 MB chunks instead of datasets' 10 MB: the chunk (its string
# and its lines) is most of a streaming run's memory, so this keeps the footprint small and flat.
STREAMING_CHUNK_BYTES = 1 << 20


# ---------------------------------------------------------------------------------------------
# Reading one source


def resolve_files(pattern: str) -> list[Path]:
    """The files a local source names (a path or a glob), sorted; errors name what is wrong."""
    if any(c in pattern for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            raise FileNotFoundError(f"data source glob {pattern!r} matches no file")
    else:
        path = Path(pattern).expanduser()
        if path.is_dir():
            raise DataSourceError(
                f"data source {pattern!r} is a folder: name a file or a glob like '{pattern}/*.txt'"
            )
        if not path.is_file():
            raise FileNotFoundError(f"data source file {pattern!r} does not exist")
        files = [path]
    suffixes = {f.suffix.lower() for f in files}
    if suffixes <= set(COMPRESSED_SUFFIXES):
        return files  # compressed books: read and cleaned by hfpipe.data.files
    unknown = suffixes - set(FILE_BUILDERS)
    if unknown:
        raise DataSourceError(
            f"data source {pattern!r}: unsupported file type {sorted(unknown)}; use one of "
            f"{sorted(FILE_BUILDERS)} or compressed text {list(COMPRESSED_SUFFIXES)} (not mixed)"
        )
    if len({FILE_BUILDERS[s][0] for s in suffixes}) > 1:
        raise DataSourceError(
            f"data source {pattern!r} mixes file types {sorted(suffixes)}; use one type per source"
        )
    return files


def check_utf8(path: Path) -> bool:
    """Raise `DataSourceError` naming the file, byte offset and line of the first non-UTF-8 byte;
    return whether the file holds anything but whitespace (the same pass).

    Reads the file in chunks (~0.5 GB/s; 20 ms for WikiText-2's 10.8 MB), negligible next to
    tokenization (a few MB/s); datasets' own error names neither the file nor the offset.
    """
    offset, pending, text = 0, b"", False
    with open(path, "rb") as f:
        while True:
            chunk = f.read(UTF8_CHECK_CHUNK)
            data = pending + chunk
            text = text or not data.isspace() and bool(data)  # isspace() stops at the first other byte
            if not data:
                return text
            try:
                data.decode("utf-8")
                pending = b""
            except UnicodeDecodeError as e:
                if chunk and e.end == len(data) and e.reason == "unexpected end of data":
                    pending = data[e.start :]  # a character cut by the chunk boundary
                else:
                    position = offset + e.start
                    line = 1 + _count_newlines(path, position)
                    raise DataSourceError(
                        f"{path}: not valid UTF-8 at byte offset {position} (line {line}): "
                        f"{data[e.start : e.start + 4]!r} ({e.reason}); re-encode the file as UTF-8"
                    ) from None
            offset += len(data) - len(pending)
            if not chunk:
                return text


def _count_newlines(path: Path, end: int) -> int:
    """Newlines in the first `end` bytes of `path`, read in chunks (for error messages)."""
    count = 0
    with open(path, "rb") as f:
        while end > 0 and (chunk := f.read(min(UTF8_CHECK_CHUNK, end))):
            count += chunk.count(b"\n")
            end -= len(chunk)
    return count


def _text_files(files: list[Path], source: str, role: str) -> list[Path]:
    """`files` less the empty or whitespace-only ones (skipped with a warning); an error naming the
    file when nothing is left. Checks that text files are UTF-8 on the way."""
    builder = FILE_BUILDERS[files[0].suffix.lower()][0]
    blank = [f for f in files if (f.stat().st_size == 0 if builder == "parquet" else not check_utf8(f))]
    if len(files) == 1 and blank:
        what = "is empty" if files[0].stat().st_size == 0 else "holds only whitespace"
        raise DataSourceError(f"{files[0]}: no {role} document: the file {what}; put text in it or name another file")
    if len(blank) == len(files):
        raise DataSourceError(f"{source}: no {role} document: all {len(files)} files are empty or only whitespace "
                              f"({', '.join(f.name for f in blank[:5])}{', ...' if len(blank) > 5 else ''})")
    if blank:
        logger.warning("data source %s: skipping %d empty file(s): %s", source, len(blank), ", ".join(map(str, blank)))
    return [f for f in files if f not in blank]


def _load_raw(source: str, config_name: str | None, split: str, *, streaming: bool, cache_dir: str | None,
              role: str = "training"):
    """(dataset with the source's own columns, a name for messages). `role` names the data in errors."""
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name not in BUILTINS:
            raise DataSourceError(
                f"unknown builtin corpus {source!r}; available: {', '.join(BUILTIN_PREFIX + b for b in BUILTINS)}"
            )
        base = Path(cache_dir) / "hfpipe" if cache_dir else None
        part = "validation" if split == "validation" else "train"
        files = [corpus.python_docs_files(base)[part]]
        chunks = {"chunksize": STREAMING_CHUNK_BYTES} if streaming else {}
        ds = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train",
                                   streaming=streaming, cache_dir=cache_dir, **chunks)  # fmt: skip
        return ds, source
    looks_local = any(c in source for c in "*?[") or Path(source).suffix.lower() in FILE_BUILDERS
    if looks_local or Path(source).expanduser().exists():
        files = _text_files(resolve_files(source), source, role)
        builder, kwargs = FILE_BUILDERS[files[0].suffix.lower()]
        if streaming and builder in ("text", "json"):
            kwargs = {**kwargs, "chunksize": STREAMING_CHUNK_BYTES}
        name = source if len(files) == 1 else f"{source} ({len(files)} files)"
        try:
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                       streaming=streaming, cache_dir=cache_dir, **kwargs)  # fmt: skip
        except datasets.exceptions.DatasetGenerationError as e:  # e.g. a malformed JSON line or CSV row
            cause = str(e.__cause__ or e).strip().splitlines()
            raise DataSourceError(f"{name}: cannot be read as {builder}: {cause[-1] if cause else e}") from e
        return ds, name
    try:
        ds = datasets.load_dataset(source, config_name, split=split, streaming=streaming, cache_dir=cache_dir)
    except (FileNotFoundError, ConnectionError) as e:
        raise type(e)(
            f"data source {source!r} is neither a local file or glob (no such path) nor a Hub dataset "
            f"that could be loaded (offline? HF_DATASETS_OFFLINE=1 allows only cached datasets): {e}"
        ) from e
    return ds, f"{source}[{split}]"


def _text_only(ds: AnyDataset, text_column: str, name: str) -> AnyDataset:
    """Keep only `text_column`, renamed to `text`; error if it is missing or not a string column."""
    if isinstance(ds, IterableDataset) and ds.features is None:
        ds = ds._resolve_features()  # reads the first example to learn the columns
    columns = list(ds.features)
    if text_column not in columns:
        raise DataSourceError(
            f"{name}: no column {text_column!r}; available columns: {columns}. Set data.text_column"
        )
    dtype = getattr(ds.features[text_column], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise DataSourceError(f"{name}: column {text_column!r} holds {ds.features[text_column]}, not text")
    ds = ds.select_columns([text_column])
    return ds.rename_column(text_column, "text") if text_column != "text" else ds


def _hash_fraction(text: str) -> float:
    """A number in [0, 1) fixed by the text: the carve-off key (same on every machine and run)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _keep(batch: dict, part: str, fraction: float) -> list[bool]:
    """Filter: non-blank documents of `part` ('all', 'train' or 'validation')."""
    texts = batch["text"]
    if part == "all":
        return [bool(t and not t.isspace()) for t in texts]
    want_validation = part == "validation"
    return [bool(t and not t.isspace()) and (_hash_fraction(t) < fraction) == want_validation for t in texts]


def _part(ds: AnyDataset, part: str, fraction: float, name: str, num_proc: int | None) -> AnyDataset:
    """The non-blank documents of `part`; raises if nothing is left (never a silent empty dataset)."""
    kwargs = dict(batched=True, fn_kwargs={"part": part, "fraction": fraction})
    if isinstance(ds, Dataset):
        ds = ds.filter(_keep, num_proc=num_proc, desc=f"select {part} documents", **kwargs)
        empty = len(ds) == 0
    else:
        ds = ds.filter(_keep, **kwargs)
        empty = next(iter(ds.take(1)), None) is None
    if empty:
        what = {"all": "no non-blank document", "train": "no training document",
                "validation": "no validation document"}[part]  # fmt: skip
        hint = (
            " (raise data.validation_fraction or set data.validation_source)" if part == "validation" else ""
        )
        raise DataSourceError(f"{name}: {what}{hint}")
    return ds


def _source_parts(
    source: str,
    config_name: str | None,
    split: str,
    text_column: str,
    args: DataArgs,
    *,
    with_validation: bool,
    role: str = "training",
    manifest: str | None = None,
) -> tuple[AnyDataset, AnyDataset | None]:
    """(train part, validation part or None) of one source; `role` names what it is for in errors;
    `manifest` picks the validation files of a compressed-file source (else a hash of their names)."""
    if _is_compressed_source(source):
        return _book_parts(source, args, with_validation=with_validation, role=role, manifest=manifest)
    if manifest is not None:
        raise DataSourceError(f"data.manifest is set but data.source {source!r} is not a glob of compressed "
                              f"files ({', '.join(COMPRESSED_SUFFIXES)}); set data.manifest: null")
    ds, name = _load_raw(source, config_name, split, streaming=args.streaming, cache_dir=args.cache_dir,
                         role=role)
    ds = _text_only(ds, text_column, name)
    if not with_validation:
        return _part(ds, "all", args.validation_fraction, name, args.num_proc), None
    train = _part(ds, "train", args.validation_fraction, name, args.num_proc)
    return train, _part(ds, "validation", args.validation_fraction, name, args.num_proc)


def _is_compressed_source(source: str) -> bool:
    """A local path or glob naming compressed text files (`books/*.txt.bz2`)."""
    if source.startswith(BUILTIN_PREFIX):
        return False
    if is_compressed(source):
        return True
    try:
        return any(c in source for c in "*?[") and all(map(is_compressed, resolve_files(source)))
    except (OSError, DataSourceError):
        return False  # the ordinary reader reports it


def _book_parts(source: str, args: DataArgs, *, with_validation: bool, role: str, manifest: str | None):
    """(train, validation or None) of a compressed-file source, split by file (manifest or hash)."""
    files = resolve_files(source)
    name = f"{source} ({len(files)} files)"
    def make(fs: list[Path], role: str) -> AnyDataset:
        return _nonempty(lambda: book_dataset(fs, args.clean, on_corrupt=args.on_corrupt,
                                              streaming=args.streaming, cache_dir=args.cache_dir), name, role)

    if not with_validation:
        return make(files, role), None
    train_files, valid_files = split_files(files, args.validation_fraction, manifest)
    if not valid_files:
        raise DataSourceError(f"{name}: no validation file (raise data.validation_fraction, set data.manifest, "
                              f"or set data.validation_source)")
    if not train_files:
        raise DataSourceError(f"{name}: no training file left after taking validation files")
    return make(train_files, role), make(valid_files, "validation")


def _nonempty(build, name: str, role: str) -> AnyDataset:
    """`build()`, after checking it holds a document; errors from reading the files become one line."""
    try:
        ds = build()
        empty = len(ds) == 0 if isinstance(ds, Dataset) else next(iter(ds.take(1)), None) is None
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, BadFileError):
            cause = cause.__cause__ or cause.__context__
        raise (cause or DataSourceError(f"{name}: {e}")) from None
    if empty:
        raise DataSourceError(f"{name}: no {role} document left after cleaning (check data.clean.min_chars "
                              f"and the markers)")
    return ds


def _cap(ds: AnyDataset, n: int | None) -> AnyDataset:
    if n is None:
        return ds
    return ds.take(n) if isinstance(ds, IterableDataset) else ds.select(range(min(n, len(ds))))


def load_text_datasets(args: DataArgs, *, seed: int) -> tuple[AnyDataset, AnyDataset]:
    """(train, validation), each with a single `text` column of non-blank documents.

    `seed` fixes the order in which mixed sources are interleaved.
    """
    own_split = args.validation_source is None and args.validation_split is not None
    builtin_split = args.source.startswith(BUILTIN_PREFIX) and args.validation_source is None
    carve = args.validation_source is None and args.validation_split is None and not builtin_split
    train, validation = _source_parts(
        args.source, args.config_name, args.split, args.text_column, args, with_validation=carve,
        manifest=args.manifest,
    )
    if args.validation_source is not None or own_split or builtin_split:
        validation, _ = _source_parts(
            args.validation_source or args.source,
            args.config_name,
            args.validation_split or ("validation" if builtin_split else "train"),
            args.text_column,
            args,
            with_validation=False,
            role="validation",
        )
    trains, validations, weights = [train], [validation], [args.weight]
    for extra in args.extra_sources:
        extra_train, extra_validation = _source_parts(
            extra.source, extra.config_name, extra.split, extra.text_column, args, with_validation=True
        )
        trains.append(extra_train)
        validations.append(extra_validation)
        weights.append(extra.weight)
    if len(trains) > 1:
        probabilities = [w / sum(weights) for w in weights]
        train = datasets.interleave_datasets(
            trains, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted"
        )
        validation = datasets.concatenate_datasets(validations)  # every source's validation, unweighted
    train, validation = _cap(train, args.max_documents), _cap(validation, args.max_validation_documents)
    if isinstance(train, Dataset):
        logger.info("data: %d training and %d validation documents", len(train), len(validation))
    return train, validation


def iter_texts(dataset: AnyDataset, limit: int | None = None, batch_size: int = 1000) -> Iterator[str]:
    """Yield the `text` of each document, streaming in batches (for tokenizer training)."""
    count = 0
    for batch in dataset.select_columns(["text"]).iter(batch_size=batch_size):
        for text in batch["text"]:
            if limit is not None and count >= limit:
                return
            count += 1
            yield text
