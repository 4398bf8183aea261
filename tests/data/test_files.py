"""Compressed book sources: reading, cleaning options, file splits, corrupt files, mixtures, resume.

Run: .venv/bin/python -m pytest -q tests/data/test_files.py
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import math
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset, IterableDataset

from hfpipe.config import CleanArgs, DataArgs, PretrainRecipe, SourceArgs, TokenizerArgs, load_recipe
from hfpipe.data.files import BadFileError, clean_text, read_compressed
from hfpipe.data.packing import shard_for_process
from hfpipe.data.sources import DataSourceError, iter_texts, load_text_datasets
from hfpipe.data.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[2]
GUTENBERG = REPO.parent / "shared" / "data" / "gutenberg"  # ../shared beside the checkout (or a worktree's ../..)
if not GUTENBERG.exists():
    GUTENBERG = REPO.parent.parent / "shared" / "data" / "gutenberg"

HEADER = "The Project Gutenberg EBook of Book {i}\r\nlicense words here\r\n\r\n*** START OF THIS PROJECT GUTENBERG EBOOK BOOK {i} ***\r\n"
FOOTER = "*** END OF THIS PROJECT GUTENBERG EBOOK BOOK {i} ***\r\n\r\nfooter license text that must not be read\r\n"
BODY = ("CHAPTER I\r\n\r\nbook{i} first paragraph is hard\r\nwrapped over three\r\nlines of text.\r\n\r\n"
        "  book{i} second paragraph, also\r\n  wrapped.\r\n\r\n\r\nShort.\r\n")
CLEAN = CleanArgs(strip_markers=True, join_lines=True, min_chars=12)


def book(i: int) -> str:
    return HEADER.format(i=i) + BODY.format(i=i) + FOOTER.format(i=i)


def expected(i: int) -> list[str]:
    return [f"book{i} first paragraph is hard wrapped over three lines of text.",
            f"book{i} second paragraph, also wrapped."]


def write_books(folder: Path, n: int, opener=bz2.open, suffix=".txt.bz2") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:04d}_book{suffix}"
        with opener(path, "wb") as f:
            f.write(book(i).encode("utf-8"))
        paths.append(path)
    return paths


def books_args(folder: Path, **kw) -> DataArgs:
    manifest = folder / "MANIFEST.tsv"
    if not manifest.exists():  # books 0 and 3 are validation, as the Gutenberg manifest marks them
        rows = [f"books/{p.name}\t{'valid' if p.name[:4] in ('0000', '0003') else 'train'}"
                for p in sorted((folder / "books").glob("*"))]
        manifest.write_text("file\tsplit\n" + "\n".join(rows) + "\n")
    defaults = dict(source=str(folder / "books" / "*.txt.bz2"), manifest=str(manifest), clean=CLEAN,
                    cache_dir=str(folder / "cache"), max_validation_documents=None)
    return DataArgs(**{**defaults, **kw})


def test_clean_text_strips_markers_crlf_and_joins_paragraphs():
    assert clean_text(book(7), CLEAN) == expected(7)
    # without joining: one document per line, markers still stripped, short lines dropped
    lines = clean_text(book(7), CleanArgs(strip_markers=True, min_chars=12))
    assert lines == ["book7 first paragraph is hard", "wrapped over three", "lines of text.",
                     "book7 second paragraph, also"]
    # no cleaning: the license text stays, CR never does
    raw = clean_text(book(7), CleanArgs())
    assert "footer license text that must not be read" in raw and not any("\r" in t for t in raw)
    # the older "*END*THE SMALL PRINT" header form starts the body too
    old = "small print legalese\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nBody text of an old book.\n\n*** END OF THE PROJECT\n"
    assert clean_text(old, CLEAN) == ["Body text of an old book."]


@pytest.mark.parametrize("opener,suffix", [(bz2.open, ".txt.bz2"), (gzip.open, ".txt.gz"), (lzma.open, ".txt.xz")])
def test_every_compression_reads_the_same_text(tmp_path, opener, suffix):
    (path,) = write_books(tmp_path, 1, opener, suffix)
    assert read_compressed(path) == book(0)


def test_zst_without_zstandard_names_the_pip_install(tmp_path, monkeypatch):
    path = tmp_path / "b.txt.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard -> ImportError
    with pytest.raises(BadFileError, match=r"b\.txt\.zst: reading \.zst files needs the zstandard package: pip install zstandard \(or hfpipe\[zst\]\)"):
        read_compressed(path)


@pytest.mark.parametrize("streaming", [False, True])
def test_book_glob_splits_by_manifest_file(tmp_path, streaming):
    write_books(tmp_path / "books", 6)
    train, validation = load_text_datasets(books_args(tmp_path, streaming=streaming), seed=0)
    assert isinstance(train, IterableDataset if streaming else Dataset)
    assert list(iter_texts(validation)) == expected(0) + expected(3)
    assert list(iter_texts(train)) == [t for i in (1, 2, 4, 5) for t in expected(i)]
    if streaming:  # one shard per file: two processes get whole, disjoint files
        assert train.num_shards == 4
        shares = [list(iter_texts(shard_for_process(train, r, 2))) for r in range(2)]
        assert sorted(shares[0] + shares[1]) == sorted(iter_texts(train))
        assert {t.split()[0] for t in shares[0]}.isdisjoint({t.split()[0] for t in shares[1]})


def test_without_manifest_validation_is_a_fraction_of_files(tmp_path):
    write_books(tmp_path / "books", 40)
    args = books_args(tmp_path, manifest=None, validation_fraction=0.25)
    train, validation = load_text_datasets(args, seed=0)
    valid_books = {t.split()[0] for t in iter_texts(validation)}
    train_books = {t.split()[0] for t in iter_texts(train)}
    assert valid_books.isdisjoint(train_books) and len(valid_books | train_books) == 40
    assert 3 <= len(valid_books) <= 18  # ~10 of 40 by hash of the file name


def test_a_glob_matching_nothing_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"glob '.*nothing/\*\.txt\.bz2' matches no file"):
        load_text_datasets(DataArgs(source=str(tmp_path / "nothing" / "*.txt.bz2")), seed=0)
    text = tmp_path / "plain.txt"
    text.write_text("a line\n")
    with pytest.raises(DataSourceError, match=r"data.manifest is set but data.source .*plain.txt' is not a glob of compressed"):
        load_text_datasets(DataArgs(source=str(text), manifest=str(text)), seed=0)
    write_books(tmp_path / "books", 3)
    (tmp_path / "MANIFEST.tsv").write_text("file\tsplit\nbooks/0000_book.txt.bz2\tvalid\n")
    with pytest.raises(DataSourceError, match=r"does not list 2 source file\(s\), e.g. 0001_book.txt.bz2"):
        load_text_datasets(books_args(tmp_path), seed=0)


@pytest.mark.parametrize("streaming", [False, True])
def test_corrupt_file_stops_or_is_skipped_by_option(tmp_path, streaming, caplog):
    write_books(tmp_path / "books", 4)
    bad = tmp_path / "books" / "0002_book.txt.bz2"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataSourceError, match=r"0002_book\.txt\.bz2: corrupt \.bz2 file"):
        train, _ = load_text_datasets(books_args(tmp_path, streaming=streaming), seed=0)
        list(iter_texts(train))
    with caplog.at_level(logging.WARNING):
        train, _ = load_text_datasets(books_args(tmp_path, streaming=streaming, on_corrupt="skip"), seed=0)
        assert list(iter_texts(train)) == expected(1)
    assert "0002_book.txt.bz2: corrupt .bz2 file" in caplog.text


def test_cli_names_a_corrupt_book_in_one_line(tmp_path):
    import subprocess

    write_books(tmp_path / "books", 4)
    bad = tmp_path / "books" / "0002_book.txt.bz2"
    bad.write_bytes(b"BZh9 not really bzip2")
    books_args(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "hfpipe", "pretrain", str(REPO / "recipes/pretrain/tiny.yaml"), f"output_dir={out}",
         f"data.source={tmp_path / 'books' / '*.txt.bz2'}", f"data.manifest={tmp_path / 'MANIFEST.tsv'}",
         "data.clean.strip_markers=true", "train.max_steps=2"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hfpipe pretrain: error: ") and "0002_book.txt.bz2: corrupt .bz2 file" in last
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists()


def test_missing_markers_error_skip_or_keep(tmp_path):
    write_books(tmp_path / "books", 4)
    with bz2.open(tmp_path / "books" / "0001_book.txt.bz2", "wb") as f:
        f.write(b"A book whose header was cut off.\n\nIt has a long enough paragraph.\n")
    with pytest.raises(DataSourceError, match=r"0001_book\.txt\.bz2: no start/end marker line .* set data\.clean\.missing_markers"):
        load_text_datasets(books_args(tmp_path), seed=0)
    skip = CleanArgs(strip_markers=True, join_lines=True, min_chars=12, missing_markers="skip")
    train, _ = load_text_datasets(books_args(tmp_path, clean=skip), seed=0)
    assert list(iter_texts(train)) == expected(2)
    keep = CleanArgs(strip_markers=True, join_lines=True, min_chars=12, missing_markers="keep")
    train, _ = load_text_datasets(books_args(tmp_path, clean=keep, cache_dir=str(tmp_path / "c2")), seed=0)
    assert list(iter_texts(train)) == ["A book whose header was cut off.", "It has a long enough paragraph."] + expected(2)


def test_mixture_weights_and_a_tokenizer_trained_on_the_mixture(tmp_path):
    write_books(tmp_path / "books", 30)
    wiki = tmp_path / "wiki.txt"
    wiki.write_text("".join(f"zebra{i} quokka wiki line number {i}\n" for i in range(400)))
    args = books_args(tmp_path, streaming=True, extra_sources=[SourceArgs(source=str(wiki), weight=0.2)],
                      weight=0.8)
    train, validation = load_text_datasets(args, seed=0)
    first = list(iter_texts(train, limit=200))
    counts = Counter("wiki" if t.startswith("zebra") else "book" for t in first)
    assert 0.7 <= counts["book"] / 200 <= 0.9, counts
    assert any(t.startswith("zebra") for t in iter_texts(validation))  # every source's validation part
    tokenizer = train_tokenizer(iter_texts(train, limit=300), TokenizerArgs(vocab_size=400, min_frequency=1),
                                output_dir=tmp_path / "tok")
    vocab = tokenizer.get_vocab()
    assert "quokka" in vocab and "paragraph" in vocab


@pytest.mark.skipif(not (GUTENBERG / "MANIFEST.tsv").exists(),
                    reason="needs ../shared/data/gutenberg (the real Gutenberg books); absent on a fresh machine")
def test_real_gutenberg_books(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    for name in ("0000_pg3809.txt.bz2", "0014_pg6902.txt.bz2", "0015_pg3251.txt.bz2"):
        if not (GUTENBERG / "books" / name).exists():
            pytest.skip(f"{name} not in {GUTENBERG}")
        (books / name).symlink_to(GUTENBERG / "books" / name)
    args = DataArgs(source=str(books / "*.txt.bz2"), manifest=str(GUTENBERG / "MANIFEST.tsv"),
                    clean=CleanArgs(strip_markers=True, join_lines=True, min_chars=40), streaming=True)
    train, validation = load_text_datasets(args, seed=0)
    valid = list(iter_texts(validation))
    train_texts = list(iter_texts(train))
    assert valid and train_texts  # 0000 is a manifest `valid` book, the others `train`
    assert any("Robur" in t for t in valid) and not any("Robur" in t for t in train_texts)  # Verne's hero
    everything = " ".join(valid + train_texts)
    assert "anyone anywhere" not in everything and "General Terms of Use" not in everything  # header, license
    assert "\r" not in everything and "\n" not in everything
    assert min(map(len, valid + train_texts)) >= 40


def test_streaming_books_run_resumes_exactly(tmp_path, capsys):
    """The streaming-resume contract on a mixture of compressed books (weight 0.7) and a text file (0.3):
    the resumed run starts at step 3 and ends with the same losses as the uninterrupted one."""
    from hfpipe.train.pretrain import pretrain

    sys.path.insert(0, str(REPO / "tests" / "train"))
    from test_pretrain import losses, tiny_overrides

    write_books(tmp_path / "books", 12)
    books_args(tmp_path)  # writes the manifest

    def run():
        items = tiny_overrides(tmp_path, "stream", **{
            "data.source": str(tmp_path / "books" / "*.txt.bz2"), "data.manifest": str(tmp_path / "MANIFEST.tsv"),
            "data.clean.strip_markers": "true", "data.clean.join_lines": "true", "data.clean.min_chars": 12,
            "data.weight": 0.7, "data.extra_sources": f"[{{source: {tmp_path / 'corpus.txt'}, weight: 0.3}}]",
            "data.streaming": "true", "train.max_steps": 6, "train.save_every_steps": 3})
        return pretrain(load_recipe(REPO / "recipes/pretrain/tiny.yaml", PretrainRecipe, items))

    full = run()
    assert full["step"] == 6 and math.isfinite(full["eval_loss"])
    out = tmp_path / "stream"
    shutil.rmtree(out / "checkpoints" / "step-00000006")
    shutil.rmtree(out / "final")
    before = losses(out)
    capsys.readouterr()
    resumed = run()
    assert "at step 3" in capsys.readouterr().out
    assert resumed["final_train_loss"] == full["final_train_loss"]
    assert resumed["eval_loss"] == full["eval_loss"]
    assert losses(out) == before
