"""Compressed book files as a pretraining source: read, strip boilerplate, join wrapped lines.

    hfpipe pretrain recipes/pretrain/gutenberg-mini.yaml      # data.source: ../shared/data/gutenberg/books/*.txt.bz2

    from hfpipe.config import CleanArgs
    from hfpipe.data.files import book_datasets
    train, validation = book_datasets(files, CleanArgs(strip_markers=True, join_lines=True, min_chars=40),
                                      validation_files=..., streaming=True)

A source whose files end in `.bz2`, `.gz`, `.xz` or `.zst` (e.g. `books/*.txt.bz2`) is read here
instead of by a `datasets` builder. Each file is one book: decompressed whole (a book is < 10 MB),
decoded as UTF-8, cleaned by the recipe's `data.clean` options, and yielded one paragraph per
document. The datasets are `datasets.{Iterable,}Dataset.from_generator` over the list of files,
so a streamed source has one shard per file and `shard_for_process` gives each process whole
files. Validation is chosen by file: the manifest's `split` column (`data.manifest`) or a hash of
the file name below `data.validation_fraction`.

Bad input: a corrupt or undecodable file is named and either stops the run or is skipped with a
warning (`data.on_corrupt`); a file without the markers stops the run, is skipped or kept whole
(`data.clean.missing_markers`). `.zst` needs the optional `zstandard` package.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import logging
import lzma
import re
from pathlib import Path

import datasets
from datasets import Dataset, IterableDataset

from ..config import CleanArgs

logger = logging.getLogger(__name__)

COMPRESSED_SUFFIXES = (".bz2", ".gz", ".xz", ".zst")


class DataSourceError(ValueError):
    """A corpus the user must fix: empty, wrong column, undecodable bytes, unknown builtin."""


class BadFileError(DataSourceError):
    """A file that cannot be used as it is (corrupt, not UTF-8, no markers): the message names it."""


def is_compressed(path: Path | str) -> bool:
    return Path(path).suffix.lower() in COMPRESSED_SUFFIXES


def read_compressed(path: Path | str) -> str:
    """The whole decompressed text of `path` (UTF-8); `BadFileError` naming the file when it is
    corrupt, truncated or not UTF-8."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".zst":
            try:
                import zstandard
            except ImportError:
                raise BadFileError(f"{path}: reading .zst files needs the zstandard package: "
                                   f"pip install zstandard (or hfpipe[zst])") from None
            with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
                data = reader.read()
        else:
            opener = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}[suffix]
            with opener(path, "rb") as f:
                data = f.read()
        return data.decode("utf-8")
    except BadFileError:
        raise
    except UnicodeDecodeError as e:
        raise BadFileError(f"{path}: not valid UTF-8 at decompressed byte {e.start} ({e.reason})") from None
    except (OSError, EOFError, lzma.LZMAError, ValueError) as e:  # bz2/gzip: OSError/EOFError; zstd: ZstdError
        raise BadFileError(f"{path}: corrupt {suffix} file ({type(e).__name__}: {e})") from None


def _marker_regex(prefixes: list[str]) -> re.Pattern:
    return re.compile("|".join(f"^{re.escape(p)}.*$" for p in prefixes), re.MULTILINE)


def strip_markers(text: str, clean: CleanArgs) -> str | None:
    """The body between the first start-marker line and the next end-marker line (markers are line
    prefixes, `clean.start_markers` / `clean.end_markers`); None when either never appears."""
    start = _marker_regex(clean.start_markers).search(text)
    if start is None:
        return None
    end = _marker_regex(clean.end_markers).search(text, start.end())
    if end is None:
        return None
    return text[start.end() : end.start()]


def clean_text(text: str, clean: CleanArgs, name: str = "text") -> list[str] | None:
    """The documents (paragraphs, or lines without `join_lines`) of one file's text after the
    `clean` options; None when the file is to be skipped (markers missing, missing_markers: skip)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if clean.strip_markers:
        body = strip_markers(text, clean)
        if body is None:
            if clean.missing_markers == "error":
                raise BadFileError(f"{name}: no start/end marker line (data.clean.start_markers "
                                   f"{clean.start_markers}, end_markers {clean.end_markers}); set "
                                   f"data.clean.missing_markers to skip or keep")
            if clean.missing_markers == "skip":
                return None
        else:
            text = body
    if clean.join_lines:  # paragraphs are separated by blank lines; their lines are hard-wrapped
        pieces = (" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", text))
    else:
        pieces = (line.strip() for line in text.split("\n"))
    return [p for p in pieces if p and len(p) >= clean.min_chars]


def generate_documents(files: list[str], clean: dict, on_corrupt: str, stamp: str = ""):
    """`from_generator` body: {"text": paragraph} for every kept paragraph of `files`, in order.
    `stamp` (the files' sizes and mtimes) only keys the `datasets` cache, so an edited file is re-read."""
    clean_args = CleanArgs(**clean)
    skipped = []
    for name in files:
        try:
            paragraphs = clean_text(read_compressed(name), clean_args, name)
        except BadFileError as e:
            if on_corrupt == "error" or "no start/end marker" in str(e) or "zstandard" in str(e):
                raise
            logger.warning("skipping %s", e)
            skipped.append(name)
            continue
        if paragraphs is None:
            logger.warning("skipping %s: no start/end marker line (data.clean.missing_markers: skip)", name)
            skipped.append(name)
            continue
        for paragraph in paragraphs:
            yield {"text": paragraph}
    if skipped and len(files) > 1:
        logger.warning("data: skipped %d of %d files: %s", len(skipped), len(files), ", ".join(skipped))


def read_manifest(path: str) -> dict[str, str]:
    """{file name: split} from a TSV with `file` and `split` columns (paths relative to it or bare names)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or "file" not in rows[0] or "split" not in rows[0]:
        raise BadFileError(f"{path}: a manifest needs tab-separated `file` and `split` columns")
    return {Path(r["file"]).name: r["split"] for r in rows}


def split_files(files: list[Path], fraction: float, manifest: str | None) -> tuple[list[Path], list[Path]]:
    """(train files, validation files): by the manifest's split, else by a hash of the file name."""
    if manifest is not None:
        splits = read_manifest(manifest)
        unlisted = [f.name for f in files if f.name not in splits]
        if unlisted:
            raise BadFileError(f"{manifest}: does not list {len(unlisted)} source file(s), e.g. {unlisted[0]}; "
                               f"add them or set data.manifest: null")
        valid = [f for f in files if splits[f.name] in ("valid", "validation")]
    else:
        def key(f: Path) -> float:
            return int.from_bytes(hashlib.blake2b(f.name.encode(), digest_size=8).digest(), "big") / 2**64

        valid = [f for f in files if key(f) < fraction]
    return [f for f in files if f not in valid], valid


def book_dataset(files: list[Path], clean: CleanArgs, *, on_corrupt: str, streaming: bool,
                 cache_dir: str | None) -> Dataset | IterableDataset:
    """One `text` column of cleaned paragraphs of `files` (one shard per file when streaming)."""
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    stamp = hashlib.blake2b(repr(stats).encode(), digest_size=16).hexdigest()
    kwargs = {"files": [str(f) for f in files], "clean": dict(vars(clean)), "on_corrupt": on_corrupt, "stamp": stamp}
    features = datasets.Features({"text": datasets.Value("string")})
    if streaming:
        return IterableDataset.from_generator(generate_documents, features=features, gen_kwargs=kwargs)
    return Dataset.from_generator(generate_documents, features=features, gen_kwargs=kwargs, cache_dir=cache_dir)
