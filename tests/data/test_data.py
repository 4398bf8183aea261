"""Sources, splits, mixing, packing, caching, streaming shards, collation, and bad input.

Run: .venv/bin/pytest tests/test_data.py
"""

from __future__ import annotations

import json
import logging
import math
import pydoc_data.topics
import random
from collections import Counter

import pytest
import torch
from datasets import Dataset, IterableDataset

from hfpipe.config import DataArgs, RecipeError, SourceArgs, TokenizerArgs
from hfpipe.data import corpus, packing
from hfpipe.data import sources as data
from hfpipe.data.packing import shard_for_process, tokenize_dataset
from hfpipe.data.sources import DataSourceError, collate, iter_texts, load_text_datasets
from hfpipe.data.tokenizer import train_tokenizer

WORDS = (
    "the of and to in is was for on as with by he at from his an were are which this be or first also new "
    "after had one their its who has two been but they not all more other she time year world city people "
    "national between during under while would could including several later became known history music"
).split()


def make_docs(n: int, seed: int = 0, long_every: int = 50) -> list[str]:
    """n synthetic documents of 1-120 words; every `long_every`-th one is ~700 words (> a block)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        length = 700 if i % long_every == long_every - 1 else rng.randint(1, 120)
        docs.append(f"doc{i} " + " ".join(rng.choice(WORDS) for _ in range(length)))
    return docs


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    topics = pydoc_data.topics.topics
    return train_tokenizer(
        [topics[k] for k in sorted(topics)] + make_docs(200), TokenizerArgs(vocab_size=500)
    )


def args_for(tmp_path, source, **kwargs) -> DataArgs:
    return DataArgs(source=str(source), cache_dir=str(tmp_path / "cache"), **kwargs)


# --- sources and splits ----------------------------------------------------------------------------


def test_text_file_drops_blank_lines_and_carves_validation_by_hash(tmp_path):
    docs = make_docs(2000)
    write_lines(tmp_path / "corpus.txt", [line for doc in docs for line in (doc, "", "   ")])
    args = args_for(tmp_path, tmp_path / "corpus.txt", max_validation_documents=None)
    train, validation = load_text_datasets(args, seed=0)
    assert Counter(list(train["text"])) + Counter(list(validation["text"])) == Counter(
        docs
    )  # disjoint, covering
    n = len(docs)
    assert abs(len(validation) / n - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n)
    again_train, again_validation = load_text_datasets(args_for(tmp_path, tmp_path / "corpus.txt"), seed=123)
    assert list(again_train["text"]) == list(train["text"]) and list(again_validation["text"]) == list(
        validation["text"]
    )
    assert list(iter_texts(train, limit=7)) == list(train["text"])[:7]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_column_formats_and_text_column(tmp_path, suffix):
    docs = [f'a "quoted" doc, number {i} with some words' for i in range(60)]
    table = Dataset.from_dict({"id": list(range(60)), "body": docs})
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".csv":
        table.to_csv(str(path), index=False)
    elif suffix == ".tsv":
        path.write_text("id\tbody\n" + "".join(f"{i}\t{d}\n" for i, d in enumerate(docs)), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps([{"id": i, "body": d} for i, d in enumerate(docs)]), encoding="utf-8")
    elif suffix == ".jsonl":
        table.to_json(str(path), lines=True)
    else:
        table.to_parquet(str(path))
    train, validation = load_text_datasets(
        args_for(tmp_path, path, text_column="body", validation_fraction=0.2), seed=0
    )
    assert train.column_names == ["text"]
    assert sorted(list(train["text"]) + list(validation["text"])) == sorted(docs)
    with pytest.raises(DataSourceError, match=r"no column 'text'; available columns: \['id', 'body'\]"):
        load_text_datasets(args_for(tmp_path, path), seed=0)
    with pytest.raises(DataSourceError, match=r"column 'id' holds .*int64.*, not text"):
        load_text_datasets(args_for(tmp_path, path, text_column="id"), seed=0)


def test_missing_files_folders_and_empty_globs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data source file '.*nope\.txt' does not exist"):
        load_text_datasets(args_for(tmp_path, tmp_path / "nope.txt"), seed=0)
    with pytest.raises(FileNotFoundError, match=r"glob '.*\*\.jsonl' matches no file"):
        load_text_datasets(args_for(tmp_path, tmp_path / "*.jsonl"), seed=0)
    with pytest.raises(DataSourceError, match="is a folder"):
        load_text_datasets(args_for(tmp_path, tmp_path), seed=0)
    (tmp_path / "notes.md").write_text("hello\n")
    with pytest.raises(DataSourceError, match=r"unsupported file type \['.md'\]"):
        load_text_datasets(args_for(tmp_path, tmp_path / "notes.md"), seed=0)
    with pytest.raises(
        ConnectionError, match=r"'corpora/wiki' is neither a local file or glob \(no such path\)"
    ):
        load_text_datasets(
            args_for(tmp_path, "corpora/wiki"), seed=0
        )  # offline: not on disk, Hub unreachable
    with pytest.raises(
        DataSourceError, match=r"unknown builtin corpus 'builtin:wiki'; available: builtin:python-docs"
    ):
        load_text_datasets(args_for(tmp_path, "builtin:wiki"), seed=0)


def test_empty_corpus_and_empty_validation_are_errors(tmp_path):
    write_lines(tmp_path / "blank.txt", ["", "  ", "\t"])
    with pytest.raises(DataSourceError, match=r"blank\.txt: no training document"):
        load_text_datasets(args_for(tmp_path, tmp_path / "blank.txt"), seed=0)
    write_lines(tmp_path / "one.txt", ["a single document"])
    with pytest.raises(DataSourceError, match=r"one\.txt: no (training|validation) document"):
        load_text_datasets(args_for(tmp_path, tmp_path / "one.txt"), seed=0)


@pytest.mark.parametrize("chunk", [5, 1 << 22])
def test_undecodable_bytes_name_the_file_offset_and_line(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(data, "UTF8_CHECK_CHUNK", chunk)  # 5: multi-byte characters straddle chunks
    good = "première ligne €\nzweite Zeile ü\n".encode()
    (tmp_path / "ok.txt").write_bytes(good * 50)
    data.check_utf8(tmp_path / "ok.txt")  # straddling characters are not errors
    (tmp_path / "bad.txt").write_bytes(good + b"third \xff line\n")
    offset = len(good) + len(b"third ")
    with pytest.raises(
        DataSourceError, match=rf"bad\.txt: not valid UTF-8 at byte offset {offset} \(line 3\)"
    ):
        load_text_datasets(args_for(tmp_path, tmp_path / "bad.txt"), seed=0)
    (tmp_path / "cut.txt").write_bytes(good + "é".encode()[:1])  # file ends inside a character
    with pytest.raises(DataSourceError, match=rf"cut\.txt: not valid UTF-8 at byte offset {len(good)}"):
        data.check_utf8(tmp_path / "cut.txt")


def test_builtin_corpus_is_deterministic_and_sizable(tmp_path):
    first, second = corpus.collect_documents(), corpus.collect_documents()
    assert first == second
    megabytes = sum(len(d.encode()) for d in first) / 1e6
    assert len(first) > 4000 and megabytes > 1.5 and len(set(first)) == len(first)
    assert all(len(d.split()) >= corpus.MIN_WORDS for d in first)
    train, validation = load_text_datasets(
        args_for(tmp_path, "builtin:python-docs", max_validation_documents=None), seed=0
    )
    assert len(train) + len(validation) == len(first)
    assert not set(list(train["text"])) & set(list(validation["text"]))
    assert 0.03 < len(validation) / len(first) < 0.07


def test_validation_source_and_max_documents(tmp_path):
    write_lines(tmp_path / "train.txt", make_docs(300, seed=1))
    write_lines(tmp_path / "valid.txt", make_docs(40, seed=2))
    args = args_for(tmp_path, tmp_path / "train.txt", validation_source=str(tmp_path / "valid.txt"),
                    max_documents=100, max_validation_documents=30)  # fmt: skip
    train, validation = load_text_datasets(args, seed=0)
    assert list(train["text"]) == make_docs(300, seed=1)[:100]  # no carve-off: validation has its own source
    assert list(validation["text"]) == make_docs(40, seed=2)[:30]


def test_mixing_sources_follows_weights(tmp_path):
    write_lines(tmp_path / "a.txt", [f"alpha document {i}" for i in range(3000)])
    write_lines(tmp_path / "b.txt", [f"beta document {i}" for i in range(300)])
    extra = SourceArgs(source=str(tmp_path / "b.txt"), weight=1.0)
    args = args_for(tmp_path, tmp_path / "a.txt", weight=3.0, extra_sources=[extra])
    train, validation = load_text_datasets(args, seed=0)
    head = list(train["text"])[:800]
    share = sum(t.startswith("alpha") for t in head) / len(head)
    assert abs(share - 0.75) < 5 * math.sqrt(0.75 * 0.25 / len(head))
    assert {t for t in list(train["text"]) if t.startswith("beta")} | {
        t for t in list(validation["text"]) if t.startswith("beta")
    } == {f"beta document {i}" for i in range(300)}  # fmt: skip  (the small source is read whole)
    assert any(t.startswith("beta") for t in list(validation["text"]))  # each source contributes validation


def test_data_args_validation_names_the_key():
    with pytest.raises(RecipeError, match="block_size: must be >= 8, got 4"):
        DataArgs(block_size=4).validate()
    with pytest.raises(RecipeError, match=r"validation_fraction: must be in \(0, 1\)"):
        DataArgs(validation_fraction=1.5).validate()
    with pytest.raises(RecipeError, match=r"extra_sources\[0\]\.weight: must be > 0"):
        DataArgs(extra_sources=[SourceArgs(source="x.txt", weight=0)]).validate()


# --- tokenization and packing ----------------------------------------------------------------------


def reference_rows(documents_ids, block_size, mode):
    """Plain-Python expected rows (ids, positions). Packing restarts with every map batch."""
    rows = []
    for start in range(0, len(documents_ids), packing.MAP_BATCH_SIZE):
        encoded = documents_ids[start : start + packing.MAP_BATCH_SIZE]
        if mode == "pad":  # a document per row, cut every block_size tokens
            for ids in encoded:
                for j in range(0, len(ids), block_size):
                    rows.append((ids[j : j + block_size], list(range(len(ids[j : j + block_size])))))
        else:  # one stream cut every block_size tokens; a position counts from the later of the
            # document's start and the row's start
            stream = [(token, position) for ids in encoded for position, token in enumerate(ids)]
            for j in range(0, len(stream), block_size):
                chunk = stream[j : j + block_size]
                rows.append(([t for t, _ in chunk], [min(p, k) for k, (_, p) in enumerate(chunk)]))
    return rows


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_rows_match_a_reference_packer(tokenizer, mode, caplog):
    docs = make_docs(2300)  # three map batches, 46 documents longer than the block
    with caplog.at_level(logging.INFO, logger="hfpipe.data.packing"):
        rows = tokenize_dataset(Dataset.from_dict({"text": docs}), tokenizer, DataArgs(block_size=64, mode=mode),
                                whole_word=False)  # fmt: skip
    documents_ids = [tokenizer(doc)["input_ids"] for doc in docs]
    expected = reference_rows(documents_ids, 64, mode)
    assert [(r["input_ids"], r["position_ids"]) for r in rows] == expected
    stream = [t for ids in documents_ids for t in ids]
    assert [t for r in rows for t in r["input_ids"]] == stream  # no token lost or duplicated
    if mode == "pack":
        short = [len(r["input_ids"]) for r in rows if len(r["input_ids"]) != 64]
        assert len(short) <= 3  # only the tail of each of the 3 map batches
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    assert all(m == (t in special) for r in rows for t, m in zip(r["input_ids"], r["special_tokens_mask"]))
    long_docs = sum(len(ids) > 64 for ids in documents_ids)
    longest = max(len(ids) for ids in documents_ids)
    assert longest > 8 * 64  # "far" longer than a block: in pad mode a warning; packing cuts by design
    messages = [
        (r.levelno, r.getMessage()) for r in caplog.records if "longer than data.block_size" in r.getMessage()
    ]
    assert messages == [(logging.INFO if mode == "pack" else logging.WARNING, f"{long_docs} documents are longer than data.block_size=64 tokens "
                         f"(longest: {longest}) and were split into pieces (positions restart at 0 in each piece)")]  # fmt: skip
    assert any("no token dropped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_word_starts_come_from_word_ids(kind):
    topics = pydoc_data.topics.topics
    tok = train_tokenizer([topics[k] for k in sorted(topics)], TokenizerArgs(type=kind, vocab_size=400))
    docs = ["Unbelievably, tokenizers split words: don't they?", "internationalization localization"]
    rows = tokenize_dataset(
        Dataset.from_dict({"text": docs}), tok, DataArgs(block_size=512, mode="pad"), whole_word=True
    )
    for row, doc in zip(rows, docs):
        word_ids = tok(doc).word_ids()
        expected = [int(w is None or i == 0 or w != word_ids[i - 1]) for i, w in enumerate(word_ids)]
        assert row["word_starts"] == expected
        assert sum(expected) < len(expected) - 2  # some words really are several tokens


def test_second_tokenization_hits_the_cache(tmp_path, tokenizer, monkeypatch):
    write_lines(tmp_path / "corpus.txt", make_docs(500))
    args = args_for(tmp_path, tmp_path / "corpus.txt", block_size=32)
    train, _ = load_text_datasets(args, seed=0)
    first = tokenize_dataset(train, tokenizer, args, whole_word=True)

    def must_not_run(*a, **k):
        raise AssertionError("re-tokenized although a cached result exists")

    monkeypatch.setattr(packing, "encode_batch", must_not_run)
    train_again, _ = load_text_datasets(args, seed=0)
    second = tokenize_dataset(train_again, tokenizer, args, whole_word=True)
    assert second.cache_files == first.cache_files and list(second["input_ids"]) == list(first["input_ids"])
    with pytest.raises(AssertionError, match="re-tokenized"):  # another block size is another cache entry
        tokenize_dataset(train_again, tokenizer, args_for(tmp_path, tmp_path / "corpus.txt", block_size=48),
                         whole_word=True)  # fmt: skip


def test_streaming_gives_the_same_rows_and_disjoint_covering_shards(tmp_path, tokenizer):
    docs = make_docs(1500)
    write_lines(tmp_path / "part-0.txt", docs[:700])
    write_lines(tmp_path / "part-1.txt", docs[700:])
    eager_args = args_for(tmp_path, tmp_path / "part-*.txt", block_size=64)
    stream_args = args_for(tmp_path, tmp_path / "part-*.txt", block_size=64, streaming=True)
    eager, _ = load_text_datasets(eager_args, seed=0)
    stream, stream_validation = load_text_datasets(stream_args, seed=0)
    assert isinstance(stream, IterableDataset) and isinstance(stream_validation, IterableDataset)
    assert [d["text"] for d in stream] == list(eager["text"])
    one_file, _ = load_text_datasets(args_for(tmp_path, tmp_path / "part-1.txt", streaming=True), seed=0)
    for texts in (stream, one_file):  # 2 shards: a file per rank; 1 shard: every other document
        shards = [[d["text"] for d in shard_for_process(texts, rank, 2)] for rank in range(2)]
        assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == sorted(d["text"] for d in texts)
    rows = tokenize_dataset(stream, tokenizer, stream_args, whole_word=False)
    assert isinstance(rows, IterableDataset)
    eager_rows = tokenize_dataset(eager, tokenizer, eager_args, whole_word=False)
    assert [r["input_ids"] for r in rows] == list(eager_rows["input_ids"])
    per_rank = [tokenize_dataset(shard_for_process(stream, rank, 2), tokenizer, stream_args, whole_word=False)
                for rank in range(2)]  # fmt: skip
    tokens = Counter(t for shard in per_rank for r in shard for t in r["input_ids"])
    assert tokens == Counter(t for r in eager_rows for t in r["input_ids"])


def test_collate_pads_and_marks_padding_special():
    rows = [
        {"input_ids": [2, 7, 8, 3], "position_ids": [0, 1, 2, 3], "special_tokens_mask": [1, 0, 0, 1],
         "word_starts": [1, 1, 0, 1]},
        {"input_ids": [2, 9, 3, 2, 5, 3], "position_ids": [0, 1, 2, 0, 1, 2], "special_tokens_mask": [1, 0, 1, 1, 0, 1],
         "word_starts": [1, 1, 1, 1, 1, 1]},
    ]  # fmt: skip
    batch = collate(rows, pad_token_id=0, pad_to_multiple_of=8)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {k: (2, 8) for k in
            ("input_ids", "attention_mask", "position_ids", "special_tokens_mask", "word_starts")}  # fmt: skip
    assert batch["input_ids"][0].tolist() == [2, 7, 8, 3, 0, 0, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 0, 1, 2, 0, 0]
    assert batch["special_tokens_mask"][0].tolist() == [1, 0, 0, 1, 1, 1, 1, 1]
    assert batch["word_starts"][0].tolist() == [1, 1, 0, 1, 1, 1, 1, 1]
    assert all(v.dtype == torch.long for v in batch.values())
    assert "word_starts" not in collate([{k: v for k, v in rows[0].items() if k != "word_starts"}], 0)


@pytest.mark.shared_data
def test_wikitext_validation_file_loads_every_non_blank_line(tmp_path, shared_data):
    path = shared_data / "wikitext-2" / "valid.txt"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train, validation = load_text_datasets(args_for(tmp_path, path, max_validation_documents=None), seed=0)
    assert len(train) + len(validation) == len(lines) > 2000
