"""Tests for hfpipe.tasks: the task table (spec.py), loading (files.py), tokenization (preprocess.py), metric glue.

Run: .venv/bin/pytest tests/tasks/test_tasks.py -q

Real-data tests read ../shared/data (skipped with a reason when absent) and check the counts its
README verified. Everything else uses small files written here, a hand-made WordPiece vocabulary (so
expected sub-tokens are known exactly) and a stub in place of the Hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
import sklearn.metrics
from transformers import BertTokenizer

from hfpipe.config import FinetuneRecipe, RecipeError, TaskDataArgs, from_dict, load_recipe
from hfpipe.tasks import (
    CONLL_TAGS,
    TASKS,
    TaskDataError,
    align_labels_with_words,
    compute_task_metrics,
    files,
    get_task,
    load_task_data,
    main_metric_value,
    preprocess,
)

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_local(task: str, tmp_path: Path, name: str, text: str, **kwargs) -> datasets.Dataset:
    """Load one validation file written from `text`."""
    args = TaskDataArgs(validation_file=write(tmp_path / name, text), **kwargs)
    return load_task_data(get_task(task), args)["validation"]


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizer:
    """A WordPiece tokenizer over a hand-made vocabulary: `playing` -> play ##ing, `yorkers` -> york ##ers."""
    words = [
        "the",
        "new",
        "york",
        "##ers",
        "play",
        "##ing",
        "in",
        "a",
        "good",
        "bad",
        "film",
        "is",
        "##s",
        ".",
    ]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    return BertTokenizer(vocab=vocab, model_max_length=512)


# --- the task table -------------------------------------------------------------------------------


def test_task_table_has_the_glue_ner_and_qa_tasks_as_papers_score_them():
    expected = {
        "cola": ("sequence_classification", "matthews_correlation", ("sentence",)),
        "sst2": ("sequence_classification", "accuracy", ("sentence",)),
        "mrpc": ("sequence_classification", "f1", ("sentence1", "sentence2")),
        "stsb": ("regression", "pearson", ("sentence1", "sentence2")),
        "qqp": ("sequence_classification", "f1", ("question1", "question2")),
        "mnli": ("sequence_classification", "accuracy", ("premise", "hypothesis")),
        "qnli": ("sequence_classification", "accuracy", ("question", "sentence")),
        "rte": ("sequence_classification", "accuracy", ("sentence1", "sentence2")),
        "wnli": ("sequence_classification", "accuracy", ("sentence1", "sentence2")),
        "pydocs": ("sequence_classification", "accuracy", ("text",)),  # built in (tasks/builtin.py)
        "conll2003": ("token_classification", "f1", ("tokens",)),
        "squad": ("question_answering", "f1", ("question", "context")),
    }
    assert {name: (s.kind, s.main_metric, s.text_columns) for name, s in TASKS.items()} == expected
    # Label ids as the Hub datasets number them.
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["wnli"].label2id == {"not_entailment": 0, "entailment": 1}
    assert TASKS["qnli"].label2id == {"entailment": 0, "not_entailment": 1}
    assert TASKS["mrpc"].id2label == {0: "not_equivalent", 1: "equivalent"}
    assert CONLL_TAGS == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
    assert (TASKS["stsb"].num_labels, TASKS["squad"].num_labels, TASKS["conll2003"].num_labels) == (1, 2, 9)
    assert TASKS["mnli"].eval_splits == ("validation", "validation_mismatched")
    assert dict(TASKS["mnli"].hub_splits)["validation"] == "validation_matched"
    assert all(TASKS[t].hub_dataset == "nyu-mll/glue" and TASKS[t].hub_config == t for t in list(TASKS)[:9])


def test_get_task_normalizes_names_and_lists_valid_ones():
    assert get_task("SST-2") is TASKS["sst2"] and get_task("sts_b") is TASKS["stsb"]
    with pytest.raises(
        RecipeError, match=r"^task: unknown task 'sst3'; valid tasks: cola, sst2, mrpc, .*squad$"
    ):
        get_task("sst3")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_length": 0}, "data.max_length: must be >= 1, got 0"),
        ({"dataset_config": "sst2"}, "data.dataset_config: is set but dataset_name is not"),
        ({"text_columns": ["a", "a"]}, "data.text_columns: has duplicates"),
        ({"max_eval_examples": 0}, "data.max_eval_examples: must be >= 1 (or null), got 0"),
        ({"train_file": " "}, "data.train_file: must not be empty"),
    ],
)
def test_task_data_args_validate_names_the_dotted_key(values, message):
    with pytest.raises(RecipeError) as error:
        from_dict(TaskDataArgs, values, where="data")
    assert str(error.value).startswith(message)


# --- the real files in ../shared/data -------------------------------------------------------------


@pytest.mark.shared_data
def test_sst2_and_cola_dev_load_with_verified_counts(shared_data):
    sst2 = load_task_data(get_task("sst2"), TaskDataArgs(validation_file=str(shared_data / "sst2/dev.tsv")))
    dev = sst2["validation"]
    assert list(sst2) == ["validation"] and dev.column_names == ["sentence", "label"]
    assert len(dev) == 872 and np.bincount(dev["label"]).tolist() == [428, 444]
    assert dev[0] == {"sentence": "it 's a charming and often affecting journey . ", "label": 1}
    # CoLA has no header: the first data row must not be eaten as one.
    cola = load_task_data(get_task("cola"), TaskDataArgs(validation_file=str(shared_data / "cola/dev.tsv")))
    dev = cola["validation"]
    assert len(dev) == 1043 and np.bincount(dev["label"]).tolist() == [322, 721]
    assert dev[0]["sentence"] == "The sailors rode the breeze clear of the rocks."
    assert dev.features["label"].names == ["unacceptable", "acceptable"]


@pytest.mark.shared_data
def test_conll_dev_loads_with_verified_counts(shared_data):
    dev = load_task_data(
        get_task("conll2003"), TaskDataArgs(validation_file=str(shared_data / "conll2003/dev.txt"))
    )["validation"]
    tags = [t for row in dev["ner_tags"] for t in row]
    assert len(dev) == 3250 and sum(map(len, dev["tokens"])) == 51362 == len(tags)
    counts = np.bincount(tags, minlength=9)
    b_counts = {CONLL_TAGS[i]: int(counts[i]) for i in (1, 3, 5, 7)}
    assert b_counts == {"B-PER": 1842, "B-ORG": 1341, "B-LOC": 1837, "B-MISC": 922}
    assert "-DOCSTART-" not in {w for row in dev["tokens"] for w in row}
    assert dev[0]["tokens"][:3] == ["CRICKET", "-", "LEICESTERSHIRE"] and dev[0]["ner_tags"][:3] == [0, 0, 3]


@pytest.mark.shared_data
def test_squad_dev_loads_flattened_like_the_hub(shared_data):
    dev = load_task_data(
        get_task("squad"), TaskDataArgs(validation_file=str(shared_data / "squad-v1.1/dev.json"))
    )["validation"]
    assert len(dev) == 10570 and len(set(dev["id"])) == 10570 and len(set(dev["title"])) == 48
    assert sum(len(a["text"]) for a in dev["answers"]) == 34726
    assert dev.column_names == ["id", "title", "context", "question", "answers"]
    first = dev[0]
    assert first["answers"] == {"text": ["Denver Broncos"] * 3, "answer_start": [177] * 3}
    assert first["context"][177 : 177 + len("Denver Broncos")] == "Denver Broncos"


# --- GLUE TSV layouts and users' own files -------------------------------------------------------

GLUE_FILES = {
    # task: (TSV text, expected first row)
    "mrpc": (
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tHe said "no .\tHe said no .\n',
        {"sentence1": 'He said "no .', "sentence2": "He said no .", "label": 1},
    ),
    "stsb": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\tAn air plane takes off.\t5.000\n",
        {"sentence1": "A plane takes off.", "sentence2": "An air plane takes off.", "label": 5.0},
    ),
    "qqp": (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhy?\tWhy not?\t0\n",
        {"question1": "Why?", "question2": "Why not?", "label": 0},
    ),
    "mnli": (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
        "0\t1\t1n\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tA man eats.\tA person eats.\tneutral\tentailment\t"
        "entailment\tentailment\tentailment\tentailment\n",
        {"premise": "A man eats.", "hypothesis": "A person eats.", "label": 0},
    ),
    "qnli": (
        "index\tquestion\tsentence\tlabel\n0\tWho?\tNobody.\tnot_entailment\n",
        {"question": "Who?", "sentence": "Nobody.", "label": 1},
    ),
    "rte": (
        "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\tentailment\n",
        {"sentence1": "A b.", "sentence2": "C d.", "label": 0},
    ),
    "wnli": (
        "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\t1\n",
        {"sentence1": "A b.", "sentence2": "C d.", "label": 1},  # 1 = entailment in GLUE's WNLI files
    ),
}


@pytest.mark.parametrize("task", list(GLUE_FILES))
def test_glue_tsv_layouts_map_to_hub_columns_and_label_ids(task, tmp_path):
    text, expected = GLUE_FILES[task]
    rows = load_local(task, tmp_path, "dev.tsv", text)
    assert rows.column_names == list(expected) and len(rows) == 1
    assert rows[0] == pytest.approx(expected) if task == "stsb" else rows[0] == expected


def test_user_csv_with_quoting_and_renamed_columns(tmp_path):
    text = 'review,stars,extra\n"Great, really great",positive,x\n"He said ""meh""",negative,y\n'
    rows = load_local("sst2", tmp_path, "mine.csv", text, text_columns=["review"], label_column="stars")
    assert rows.to_dict() == {"sentence": ["Great, really great", 'He said "meh"'], "label": [1, 0]}


def test_user_json_and_jsonl_records(tmp_path):
    records = [{"a": "One.", "b": "Two.", "sim": 3.5}, {"a": "Three.", "b": "Four.", "sim": "1"}]
    as_list = load_local(
        "stsb", tmp_path, "mine.json", json.dumps(records), text_columns=["a", "b"], label_column="sim"
    )
    assert as_list["label"] == [3.5, 1.0] and as_list["sentence1"] == ["One.", "Three."]
    lines = "\n".join(json.dumps({"premise": p, "hypothesis": h, "label": y}) for p, h, y in
                      [("P1", "H1", "contradiction"), ("P2", "H2", 1)])  # fmt: skip
    mnli = load_local("mnli", tmp_path, "mine.jsonl", lines)
    assert mnli.to_dict() == {"premise": ["P1", "P2"], "hypothesis": ["H1", "H2"], "label": [2, 1]}
    ner = [{"words": ["New", "York"], "tags": ["B-LOC", "I-LOC"]}, {"words": ["Hi"], "tags": [0]}]
    rows = load_local(
        "conll2003",
        tmp_path,
        "ner.json",
        json.dumps({"data": ner}),
        text_columns=["words"],
        label_column="tags",
    )
    assert rows["tokens"] == [["New", "York"], ["Hi"]] and rows["ner_tags"] == [[5, 6], [0]]
    squad = {"id": "q1", "context": "Paris is in France.", "question": "Where?",
             "answers": [{"text": "France", "answer_start": 12}]}  # fmt: skip
    rows = load_local(
        "squad", tmp_path, "qa.jsonl", json.dumps(squad) + "\n" + json.dumps({**squad, "id": "q2"})
    )
    assert rows["answers"][0] == {"text": ["France"], "answer_start": [12]} and rows["id"] == ["q1", "q2"]


def test_local_files_replace_the_hub_and_limits_keep_the_first_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the Hub must not be used"))
    text = "sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(10))
    args = TaskDataArgs(
        dataset_name="nyu-mll/glue", dataset_config="sst2",
        train_file=write(tmp_path / "train.tsv", text), validation_file=write(tmp_path / "dev.tsv", text),
        max_train_examples=3, max_eval_examples=4,
    )  # fmt: skip
    data = load_task_data(get_task("sst2"), args)
    assert data["train"]["sentence"] == ["s0", "s1", "s2"] and len(data["validation"]) == 4


# --- errors that name the file, row and column ----------------------------------------------------

HEADER = "sentence\tlabel\n"


@pytest.mark.parametrize(
    ("task", "name", "text", "message"),
    [
        ("sst2", "d.tsv", HEADER + "good .\t1\nbad .\t7\n", r"d.tsv, line 3, column 'label': label '7' is not in the label set of task sst2: negative, positive"),
        ("sst2", "d.tsv", HEADER + "good .\t1\n  \t0\n", r"d.tsv, line 3, column 'sentence': empty text"),
        ("sst2", "d.tsv", "text\tlabel\nx\t1\n", r"d.tsv, line 1 \(header\), column 'sentence': missing column; columns found: text, label"),
        ("stsb", "d.tsv", "sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\tfive\n", r"d.tsv, line 3, column 'score': regression target must be a finite number, got 'five'"),
        ("rte", "d.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", r"d.tsv, line 2, column 'label': label 'maybe' is not in the label set of task rte: entailment, not_entailment"),
        ("sst2", "d.tsv", HEADER + 'he said "hi\t1\textra\n', r"d.tsv, line 2: expected 2 tab-separated fields \(sentence, label\), found 3"),
        ("sst2", "d.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b"}\n', r"d.jsonl, line 2, column 'label': missing column; columns found: sentence"),
        ("sst2", "d.json", '[{"sentence": "a", "label": 1}, {"sentence": "", "label": 0}]', r"d.json, record 2, column 'sentence': empty text"),
        ("conll2003", "d.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP B-VERB\n", r"d.txt, line 4, column 'NER \(last column\)': label 'B-VERB' is not in the label set"),
        ("squad", "d.json", json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "abc def", "qas": [{"id": "q9", "question": "?", "answers": [{"text": "def", "answer_start": 3}]}]}]}]}), r"d.json, question id q9, column 'answers': answer 'def' is not at answer_start=3 of the context \(found ' de'\)"),
    ],
)  # fmt: skip
def test_bad_input_names_file_row_and_column(task, name, text, message, tmp_path):
    with pytest.raises(TaskDataError, match=message):
        load_local(task, tmp_path, name, text)


def test_missing_file_names_the_key(tmp_path):
    args = TaskDataArgs(train_file=str(tmp_path / "nope.tsv"))
    with pytest.raises(FileNotFoundError, match=r"^data.train_file: no such file: .*nope.tsv"):
        load_task_data(get_task("sst2"), args)


def test_text_columns_count_must_match_the_task(tmp_path):
    with pytest.raises(RecipeError, match=r"^data.text_columns: task mrpc takes 2 text column\(s\)"):
        load_local("mrpc", tmp_path, "d.csv", "a,label\nx,1\n", text_columns=["a"])


# --- the Hub (a stub: there is no network here) ---------------------------------------------------


def fake_hub(splits: dict[str, dict], features: datasets.Features | None = None):
    hub = datasets.DatasetDict(
        {s: datasets.Dataset.from_dict(c, features=features) for s, c in splits.items()}
    )
    calls = []

    def load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        return hub

    return load_dataset, calls


def test_hub_mnli_splits_are_renamed_and_columns_kept(monkeypatch):
    rows = {"premise": ["p"], "hypothesis": ["h"], "label": [2], "idx": [0]}
    splits = ["train", "validation_matched", "validation_mismatched", "test_matched"]
    load_dataset, calls = fake_hub({s: rows for s in splits})
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = load_task_data(get_task("mnli"), TaskDataArgs(dataset_name="nyu-mll/glue", dataset_config="mnli"))
    assert calls == [("nyu-mll/glue", "mnli")]
    assert list(data) == ["train", "validation", "validation_mismatched"]
    assert data["validation"].column_names == ["premise", "hypothesis", "label"]


def test_hub_columns_can_be_renamed_and_label_order_is_checked(monkeypatch):
    def hub_with_labels(names):
        features = datasets.Features(
            {"text": datasets.Value("string"), "y": datasets.ClassLabel(names=names)}
        )
        split = {"text": ["a"], "y": [1]}
        load_dataset, calls = fake_hub({"train": split, "validation": split, "test": split}, features)
        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        return calls

    args = TaskDataArgs(dataset_name="someone/reviews", text_columns=["text"], label_column="y")
    calls = hub_with_labels(["negative", "positive"])
    data = load_task_data(get_task("sst2"), args)
    assert calls == [("someone/reviews", None)] and list(data) == ["train", "validation"]
    assert data["train"].to_dict() == {"sentence": ["a"], "label": [1]}
    hub_with_labels(["pos", "neg"])  # same column, other order: training would silently flip labels
    with pytest.raises(
        RuntimeError, match=r"labels \['pos', 'neg'\] differ from task sst2's \['negative', 'positive'\]"
    ):
        load_task_data(get_task("sst2"), args)


def test_hub_failure_says_how_to_use_local_files(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("dataset not found")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(files, "hub_unreachable", lambda: None)  # the Hub answers, the dataset fails
    with pytest.raises(
        RuntimeError, match=r"'nyu-mll/glue' \(config 'cola'\) for task cola: dataset not found.*data.train_file="
    ):
        load_task_data(get_task("cola"), TaskDataArgs())


def test_an_unreachable_hub_is_one_line_before_any_retry(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no retries against a dead Hub"))
    monkeypatch.setattr(files, "hub_unreachable", lambda: "no connection to huggingface.co: timed out")
    with pytest.raises(files.HubUnreachableError) as error:
        load_task_data(get_task("sst2"), TaskDataArgs())
    assert str(error.value) == (
        "task sst2 loads 'nyu-mll/glue/sst2' from the Hugging Face Hub, which is unreachable (no connection to "
        "huggingface.co: timed out): give local files instead, e.g. data.train_file=../shared/data/sst2/train.tsv "
        "data.validation_file=../shared/data/sst2/dev.tsv (under hfpipe glue: sst2:data.train_file=...)")


def test_hf_hub_offline_still_reads_the_datasets_cache_then_says_it_in_one_line(monkeypatch):
    monkeypatch.setattr(files, "hub_unreachable", lambda: "HF_HUB_OFFLINE=1")
    load_dataset, calls = fake_hub({s: {"sentence": ["a"], "label": [1]} for s in ("train", "validation")})
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert list(load_task_data(get_task("sst2"), TaskDataArgs())) == ["train", "validation"]  # cached: used

    def not_cached(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", not_cached)
    with pytest.raises(files.HubUnreachableError, match=r"unreachable \(HF_HUB_OFFLINE=1\): give local files"):
        load_task_data(get_task("sst2"), TaskDataArgs())


def test_hub_unreachable_reads_hf_hub_offline_and_probes_the_endpoint(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert files.hub_unreachable() == "HF_HUB_OFFLINE=1"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert files.hub_unreachable().startswith("no connection to 127.0.0.1:")


# --- tokenization ---------------------------------------------------------------------------------


def test_first_sub_token_gets_the_word_label(tokenizer):
    words, tags = ["The", "New", "Yorkers", "playing", "."], [0, 3, 4, 0, 0]
    encoding = tokenizer(words, is_split_into_words=True)
    pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    assert pieces == ["[CLS]", "the", "new", "york", "##ers", "play", "##ing", ".", "[SEP]"]
    labels = align_labels_with_words(encoding.word_ids(), tags)
    assert labels == [-100, 0, 3, 4, -100, 0, -100, 0, -100]
    # Through preprocess on a dataset: the same, plus lengths, and truncation drops whole words' labels.
    data = datasets.DatasetDict(
        {"validation": datasets.Dataset.from_dict({"tokens": [words], "ner_tags": [tags]})}
    )
    out = preprocess(get_task("conll2003"), data, tokenizer, TaskDataArgs(max_length=6))["validation"][0]
    assert out["labels"] == [-100, 0, 3, 4, -100, -100] and out["lengths"] == 6 == len(out["input_ids"])


def test_sequence_pairs_are_truncated_not_padded(tokenizer):
    pairs = {
        "sentence1": ["the film is good .", "a film"],
        "sentence2": ["the film is bad .", "new"],
        "label": [4.5, 1.0],
    }
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict(pairs)})
    out = preprocess(get_task("stsb"), data, tokenizer, TaskDataArgs(max_length=9))["train"]
    assert out.column_names == ["input_ids", "token_type_ids", "attention_mask", "labels", "lengths"]
    assert out["lengths"] == [9, 6] == [len(ids) for ids in out["input_ids"]]  # no padding; longest_first cut
    assert out[1]["token_type_ids"] == [0, 0, 0, 0, 1, 1] and out["labels"] == [4.5, 1.0]
    assert isinstance(out[0]["labels"], float)


def test_preprocess_refuses_slow_tokenizers():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="needs a fast tokenizer"):
        preprocess(get_task("sst2"), datasets.DatasetDict(), Slow(), TaskDataArgs())


# --- metric glue against scikit-learn / scipy / seqeval -------------------------------------------


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[refs] * 0.8
    preds = logits.argmax(-1)
    mrpc = compute_task_metrics(get_task("mrpc"), logits, refs)
    assert mrpc == pytest.approx(
        {"f1": sklearn.metrics.f1_score(refs, preds), "accuracy": sklearn.metrics.accuracy_score(refs, preds)}
    )
    cola = compute_task_metrics(get_task("cola"), preds, refs)  # ids work as well as logits
    assert cola == pytest.approx({"matthews_correlation": sklearn.metrics.matthews_corrcoef(refs, preds)})
    assert main_metric_value(get_task("mrpc"), mrpc) == mrpc["f1"]
    mism = compute_task_metrics(get_task("mnli"), preds, refs, split="validation_mismatched")
    assert list(mism) == ["accuracy_mismatched"]
    with pytest.raises(KeyError, match="main metric 'accuracy' missing; got accuracy_mismatched"):
        main_metric_value(get_task("mnli"), mism)


def test_regression_metrics_match_scipy():
    rng = np.random.default_rng(1)
    refs = rng.uniform(0, 5, 100)
    preds = (refs + rng.normal(0, 1, 100))[:, None]  # (N, 1) as a regression head returns
    out = compute_task_metrics(get_task("stsb"), preds, refs)
    assert out == pytest.approx(
        {
            "pearson": scipy.stats.pearsonr(refs, preds[:, 0])[0],
            "spearmanr": scipy.stats.spearmanr(refs, preds[:, 0])[0],
        }
    )
    assert main_metric_value(get_task("stsb"), out) == out["pearson"]


def test_seqeval_glue_filters_ignored_tokens_and_matches_seqeval():
    ner = get_task("conll2003")
    refs = [[-100, 1, 2, -100, 0, 5, -100], [-100, 3, 4, 0, -100, -100, -100]]  # padded with -100
    preds = [[7, 1, 2, 8, 0, 6, 0], [0, 3, 0, 0, 5, 5, 5]]  # junk on ignored positions must not count
    out = compute_task_metrics(ner, np.array(preds), np.array(refs))
    y_true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"]]
    y_pred = [["B-PER", "I-PER", "O", "I-LOC"], ["B-ORG", "O", "O"]]
    assert out == pytest.approx({
        "f1": seqeval.metrics.f1_score(y_true, y_pred),
        "precision": seqeval.metrics.precision_score(y_true, y_pred),
        "recall": seqeval.metrics.recall_score(y_true, y_pred),
        "accuracy": seqeval.metrics.accuracy_score(y_true, y_pred),
    })  # fmt: skip
    assert out["f1"] == pytest.approx(2 / 3)  # PER right; LOC (I- start counts as entity) right; ORG wrong
    logits = np.eye(9)[np.array(preds)]  # (N, T, C) logits give the same result
    assert compute_task_metrics(ner, logits, refs) == out


def test_squad_glue_scores_exact_match_and_f1_in_percent():
    refs = [
        {"id": "a", "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [0, 7]}},
        {"id": "b", "answers": {"text": ["in 1990"], "answer_start": [3]}},
    ]
    out = compute_task_metrics(get_task("squad"), {"a": "the Broncos", "b": "1990 or 1991"}, refs)
    # a: "the" is dropped by normalization -> exact; b: 1 common token, P=1/3, R=1/2 -> F1 0.4.
    assert out == pytest.approx({"exact_match": 50.0, "f1": 70.0})
    as_list = [{"id": "a", "prediction_text": "the Broncos"}, {"id": "b", "prediction_text": "1990 or 1991"}]
    assert compute_task_metrics(get_task("squad"), as_list, refs) == out


# --- recipes --------------------------------------------------------------------------------------

FINETUNE_RECIPES = sorted((REPO / "recipes" / "finetune").rglob("*.yaml"))


def test_every_task_has_a_recipe_named_for_it():
    names = {p.relative_to(REPO / "recipes" / "finetune").as_posix() for p in FINETUNE_RECIPES}
    assert {f"glue/{t}.yaml" for t in list(TASKS)[:9]} | {"conll2003.yaml", "squad.yaml"} <= names


@pytest.mark.parametrize("path", FINETUNE_RECIPES, ids=lambda p: p.stem)
def test_finetune_recipe_validates_and_matches_its_task(path):
    recipe = load_recipe(path, FinetuneRecipe)
    spec = get_task(recipe.task)
    # `glue/sst2.yaml` or a variant of it such as `glue/sst2-lora.yaml`
    assert path.stem.partition("-")[0] == spec.name and recipe.data.dataset_name == spec.hub_dataset
    assert recipe.data.dataset_config == spec.hub_config
    assert recipe.train.max_steps is None and recipe.train.num_epochs >= 1
    header = path.read_text().splitlines()[:3]
    command = f"hfpipe finetune recipes/finetune/{path.relative_to(REPO / 'recipes' / 'finetune').as_posix()}"
    assert any(command in line for line in header) and any("accelerate launch -m" in line for line in header)
