"""Tests for hfpipe.tasks.qa: SQuAD windows with document stride, and offset post-processing back to text.

Run: .venv/bin/pytest tests/tasks/test_qa.py -q

The real-data tests use every 25th question of ../shared/data/squad-v1.1/dev.json (423 questions from
all 48 articles) and a WordPiece tokenizer trained here on that text (1,000 pieces, so words split
into several tokens). Windows are short (128 tokens, stride 48) so that nearly every context is split.
"Perfect" logits put a peak on the start/end tokens that `prepare_qa_train_features` labelled; the
post-processing must then return the gold answer text exactly, as cut from the original context.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer

from hfpipe.config import RecipeError, TaskDataArgs
from hfpipe.tasks import compute_task_metrics, get_task, load_task_data, preprocess
from hfpipe.tasks.files import split_squad_by_article
from hfpipe.tasks.qa import (
    postprocess_qa_predictions,
    prepare_qa_eval_features,
    prepare_qa_train_features,
)

MAX_LENGTH, STRIDE = 128, 48
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def squad_slice(shared_data) -> datasets.Dataset:
    dev = load_task_data(
        get_task("squad"), TaskDataArgs(validation_file=str(shared_data / "squad-v1.1/dev.json"))
    )["validation"]
    return dev.select(range(0, len(dev), 25))


def train_wordpiece(texts: list[str], padding_side: str = "right") -> BertTokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1000, special_tokens=SPECIALS))
    return BertTokenizer(vocab=tok.get_vocab(), model_max_length=512, padding_side=padding_side)


@pytest.fixture(scope="module")
def tokenizer(squad_slice) -> BertTokenizer:
    return train_wordpiece(sorted(set(squad_slice["context"])) + list(squad_slice["question"]))


def features(examples: datasets.Dataset, tokenizer, train: bool) -> datasets.Dataset:
    function = prepare_qa_train_features if train else prepare_qa_eval_features
    kwargs = {"tokenizer": tokenizer, "max_length": MAX_LENGTH, "doc_stride": STRIDE}
    return examples.map(function, batched=True, remove_columns=examples.column_names, fn_kwargs=kwargs)


def perfect_logits(train_features: datasets.Dataset, width: int = MAX_LENGTH + 7):
    """Peaks on the labelled start/end tokens; rows padded past each feature's length (as batches are)."""
    starts, ends = np.full((len(train_features), width), -5.0), np.full((len(train_features), width), -5.0)
    for i, (s, e) in enumerate(zip(train_features["start_positions"], train_features["end_positions"])):
        if s != 0:  # 0 = CLS: the answer is not in this window
            starts[i, s], ends[i, e] = 10.0, 10.0
    return starts, ends


def answer_tokens(tokenizer, context: str, start: int, end: int) -> tuple[int, bool]:
    """(tokens the answer overlaps, whether its ends fall on token boundaries), from the context alone."""
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [o for o in offsets if o[0] < end and o[1] > start]
    aligned = any(o[0] == start for o in offsets) and any(o[1] == end for o in offsets)
    return len(inside), aligned


@pytest.mark.shared_data
def test_windows_overlap_by_doc_stride_and_keep_context_offsets(squad_slice, tokenizer):
    evals = features(squad_slice, tokenizer, train=False)
    assert len(evals) > 3 * len(squad_slice)  # the contexts really are split into several windows
    ids, offsets = list(evals["input_ids"]), list(evals["offset_mapping"])  # plain lists: fast indexing
    example_ids, lengths = list(evals["example_id"]), list(evals["lengths"])
    context_id = {ex_id: context for ex_id, context in zip(squad_slice["id"], squad_slice["context"])}
    shared = 0
    for i in range(len(evals)):
        assert len(ids[i]) <= MAX_LENGTH and lengths[i] == len(ids[i])
        context_positions = [t for t, o in enumerate(offsets[i]) if o is not None]
        assert ids[i][0] == tokenizer.cls_token_id and offsets[i][0] is None  # CLS/question: no offsets
        context = context_id[example_ids[i]]
        assert all(0 <= offsets[i][t][0] <= offsets[i][t][1] <= len(context) for t in context_positions)
        if i + 1 < len(evals) and example_ids[i + 1] == example_ids[i]:
            # consecutive windows of one context share exactly STRIDE context tokens
            nxt = [t for t, o in enumerate(offsets[i + 1]) if o is not None]
            assert [ids[i][t] for t in context_positions[-STRIDE:]] == [ids[i + 1][t] for t in nxt[:STRIDE]]
            shared += 1
    assert shared > 2 * len(squad_slice)


@pytest.mark.shared_data
def test_train_labels_cut_out_the_answer_and_every_short_answer_has_a_window(squad_slice, tokenizer):
    train = features(squad_slice, tokenizer, train=True)
    evals = features(squad_slice, tokenizer, train=False)
    assert train["input_ids"] == evals["input_ids"]  # same windows, so eval offsets fit train labels
    by_id = {ex["id"]: ex for ex in squad_slice}
    found = set()
    for s, e, ex_id, offsets in zip(train["start_positions"], train["end_positions"], evals["example_id"],
                                    evals["offset_mapping"]):  # fmt: skip
        if s == 0:
            assert e == 0
            continue
        ex = by_id[ex_id]
        gold, start = ex["answers"]["text"][0], ex["answers"]["answer_start"][0]
        span = ex["context"][offsets[s][0] : offsets[e][1]]
        assert s <= e and gold in span  # the labelled tokens cover the answer ...
        _, aligned = answer_tokens(tokenizer, ex["context"], start, start + len(gold))
        assert span == gold or not aligned  # ... exactly, when it starts and ends on token boundaries
        found.add(ex_id)
    for ex in squad_slice:  # the doc-stride guarantee: an answer of <= STRIDE tokens is inside a window
        start, text = ex["answers"]["answer_start"][0], ex["answers"]["text"][0]
        n_tokens, _ = answer_tokens(tokenizer, ex["context"], start, start + len(text))
        if n_tokens <= STRIDE:
            assert ex["id"] in found, (ex["id"], text)


@pytest.mark.shared_data
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_perfect_logits_recover_the_gold_answers(squad_slice, tokenizer, padding_side):
    if padding_side == "left":  # context first, question second (models that pad on the left)
        tokenizer = BertTokenizer(vocab=tokenizer.get_vocab(), model_max_length=512, padding_side="left")
    train = features(squad_slice, tokenizer, train=True)
    evals = features(squad_slice, tokenizer, train=False)
    starts, ends = perfect_logits(train)
    predictions = postprocess_qa_predictions(
        squad_slice, evals, starts, ends, n_best=20, max_answer_length=STRIDE
    )
    assert set(predictions) == set(squad_slice["id"])
    scorable = []
    for ex in squad_slice:
        start, text = ex["answers"]["answer_start"][0], ex["answers"]["text"][0]
        n_tokens, aligned = answer_tokens(tokenizer, ex["context"], start, start + len(text))
        if aligned and n_tokens <= STRIDE:
            assert predictions[ex["id"]] == text
            scorable.append(ex)
    assert len(scorable) >= 0.98 * len(squad_slice)
    subset = datasets.Dataset.from_list(scorable)
    assert compute_task_metrics(get_task("squad"), predictions, subset) == {"exact_match": 100.0, "f1": 100.0}


def test_postprocess_keeps_spans_valid_and_picks_the_best_window():
    examples = {"id": ["a", "b"], "context": ["Paris is the capital of France.", "Nothing here."]}
    #  tokens:         CLS   q     SEP  Paris    is     the      capital   of       France    .        SEP
    offsets = [[None, None, None, [0, 5], [6, 8], [9, 12], [13, 20], [21, 23], [24, 30], [30, 31], None]]
    feats = {"example_id": ["a", "a", "b"], "offset_mapping": [offsets[0], offsets[0], [None, [0, 7], None]]}
    start = np.zeros((3, 12))
    end = np.zeros((3, 12))
    start[0, 1], end[0, 1] = 50, 50  # question token: never an answer
    start[0, 8], end[0, 3] = 9, 9  # end before start: invalid
    start[0, 3], end[0, 8] = 4, 4  # "Paris ... France": 6 tokens, too long for max_answer_length=5
    start[0, 6], end[0, 6] = 3, 3  # "capital": the best valid span of window 0
    start[1, 8], end[1, 8] = 5, 5  # "France" in window 1 scores higher: the best over windows wins
    start[1, 11], end[1, 11] = 99, 99  # padding past the feature's length is ignored
    start[2, :], end[2, :] = 1, 1
    start[2, 1], end[2, 0] = 2, 2  # b: the only valid pair is (1, 1) -> "Nothing"
    out = postprocess_qa_predictions(examples, feats, start, end, n_best=20, max_answer_length=5)
    assert out == {"a": "France", "b": "Nothing"}
    out = postprocess_qa_predictions(examples, feats, start, end, n_best=20, max_answer_length=6)
    assert out["a"] == "France"  # 4 + 4 = 8 < 5 + 5 = 10
    none = postprocess_qa_predictions({"id": ["b"], "context": ["x"]}, {"example_id": ["b"], "offset_mapping": [[None]]},
                                      [[1.0]], [[1.0]])  # fmt: skip
    assert none == {"b": ""}
    with pytest.raises(ValueError, match="got 1 start and 1 end logit rows for 3 features"):
        postprocess_qa_predictions(examples, feats, start[:1], end[:1])


def test_preprocess_qa_splits_train_and_eval_features_and_checks_the_stride():
    rows = {"id": ["q1"], "title": ["t"], "context": ["the new film is good ."], "question": ["is it good ?"],
            "answers": [{"text": ["good"], "answer_start": [16]}]}  # fmt: skip
    data = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(rows), validation=datasets.Dataset.from_dict(rows)
    )
    tok = train_wordpiece(["the new film is good .", "is it good ?"] * 5)
    out = preprocess(get_task("squad"), data, tok, TaskDataArgs(max_length=64, doc_stride=16))
    train, val = out["train"][0], out["validation"][0]
    assert set(out["train"].column_names) >= {"start_positions", "end_positions", "lengths"}
    assert set(out["validation"].column_names) >= {"example_id", "offset_mapping", "lengths"}
    assert tok.convert_ids_to_tokens(train["input_ids"][train["start_positions"]]) == "good"
    assert val["example_id"] == "q1" and train["start_positions"] == train["end_positions"]
    with pytest.raises(RecipeError, match=r"^data.doc_stride: must be < data.max_length \(64\), got 64"):
        preprocess(get_task("squad"), data, tok, TaskDataArgs(max_length=64, doc_stride=64))


@pytest.mark.shared_data
def test_split_squad_by_article(shared_data, tmp_path):
    train_path, dev_path = split_squad_by_article(
        shared_data / "squad-v1.1/dev.json", tmp_path, n_eval_articles=8
    )
    train_articles = json.loads(train_path.read_text())["data"]
    dev_articles = json.loads(dev_path.read_text())["data"]
    assert (len(train_articles), len(dev_articles)) == (40, 8)
    spec = get_task("squad")
    data = load_task_data(spec, TaskDataArgs(train_file=str(train_path), validation_file=str(dev_path)))
    assert len(data["train"]) + len(data["validation"]) == 10570
    assert not set(data["train"]["title"]) & set(data["validation"]["title"])
