"""Extractive QA (SQuAD): question+context -> overlapping token windows, and logits -> answer text.

    train = examples.map(prepare_qa_train_features, batched=True, remove_columns=examples.column_names,
                         fn_kwargs=dict(tokenizer=tok, max_length=384, doc_stride=128))
    feats = examples.map(prepare_qa_eval_features, ...)        # keeps example_id and offset_mapping
    answers = postprocess_qa_predictions(examples, feats, start_logits, end_logits)  # {id: text}

The approach of Hugging Face's run_qa.py. A context longer than the window is split into several
features that overlap by `doc_stride` tokens, so every answer lies wholly inside at least one window.
A training feature is labelled with the token span of the first reference answer, or with the CLS
token (index 0 for BERT) when the answer is not inside that window. Evaluation features keep the
character offsets of their context tokens (None for question and special tokens), so the best
start/end logits map back to an exact substring of the original context, not to detokenized text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

QA_EVAL_META_COLUMNS = ("example_id", "offset_mapping")
"""Columns of evaluation features that are for post-processing only; drop them before collating."""


def _tokenize(examples: dict[str, list], tokenizer: Any, max_length: int, doc_stride: int):
    """Tokenize (question, context) pairs into overlapping windows; returns (encoding, context_index)."""
    pad_on_right = tokenizer.padding_side == "right"  # question first unless the model pads on the left
    questions = [q.lstrip() for q in examples["question"]]  # leading spaces waste window tokens
    first, second = (questions, examples["context"]) if pad_on_right else (examples["context"], questions)
    encoding = tokenizer(
        first,
        second,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    return encoding, 1 if pad_on_right else 0


def prepare_qa_train_features(
    examples: dict[str, list], tokenizer: Any, max_length: int, doc_stride: int
) -> dict[str, list]:
    """Batched map function: one feature per window with `start_positions` / `end_positions`."""
    encoding, context_index = _tokenize(examples, tokenizer, max_length, doc_stride)
    sample_map = encoding.pop("overflow_to_sample_mapping")
    offset_mapping = encoding.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offset_mapping):
        input_ids = encoding["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = encoding.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        context_tokens = [t for t, s in enumerate(sequence_ids) if s == context_index]
        first, last = context_tokens[0], context_tokens[-1]
        start_char = answers["answer_start"][0] if answers["answer_start"] else -1
        end_char = start_char + len(answers["text"][0]) if answers["answer_start"] else -1
        if start_char < 0 or not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            starts.append(cls_index)  # no answer, or not (wholly) inside this window
            ends.append(cls_index)
            continue
        token = first
        while token <= last and offsets[token][0] <= start_char:
            token += 1
        starts.append(token - 1)  # last token starting at or before the answer's first character
        token = last
        while token >= first and offsets[token][1] >= end_char:
            token -= 1
        ends.append(token + 1)  # first token ending at or after the answer's last character
    encoding["start_positions"] = starts
    encoding["end_positions"] = ends
    encoding["lengths"] = [len(ids) for ids in encoding["input_ids"]]
    return dict(encoding)


def prepare_qa_eval_features(
    examples: dict[str, list], tokenizer: Any, max_length: int, doc_stride: int
) -> dict[str, list]:
    """Batched map function: windows with `example_id` and context-only `offset_mapping`."""
    encoding, context_index = _tokenize(examples, tokenizer, max_length, doc_stride)
    sample_map = encoding.pop("overflow_to_sample_mapping")
    encoding["example_id"] = [examples["id"][s] for s in sample_map]
    encoding["offset_mapping"] = [
        [list(o) if s == context_index else None for o, s in zip(offsets, encoding.sequence_ids(i))]
        for i, offsets in enumerate(encoding["offset_mapping"])
    ]
    encoding["lengths"] = [len(ids) for ids in encoding["input_ids"]]
    return dict(encoding)


def postprocess_qa_predictions(
    examples: Any,
    features: Any,
    all_start_logits: Sequence | np.ndarray,
    all_end_logits: Sequence | np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Best answer text per example id, from the start/end logits of its features.

    `examples` has `id` and `context`; `features` has `example_id` and `offset_mapping` (both as made
    by `prepare_qa_eval_features`, e.g. `datasets.Dataset`s). Logits are one row per feature, in
    feature order; rows may be padded past the feature's length (dynamic padding) with any value.
    For each feature the `n_best` highest start and end logits are paired; a pair is valid when both
    tokens are context tokens, end >= start and the span has at most `max_answer_length` tokens. The
    valid pair with the highest start+end logit over all features of the example wins; its text is
    `context[offsets[start][0] : offsets[end][1]]`. An example with no valid pair gets "".
    """
    n_features = len(features["example_id"])
    if len(all_start_logits) != n_features or len(all_end_logits) != n_features:
        raise ValueError(
            f"got {len(all_start_logits)} start and {len(all_end_logits)} end logit rows for {n_features} features"
        )
    features_of: dict[str, list[int]] = defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        features_of[example_id].append(i)
    offset_mapping = features["offset_mapping"]
    predictions: dict[str, str] = {}
    for example_id, context in zip(examples["id"], examples["context"]):
        best_score, best_text = -np.inf, ""
        for i in features_of[example_id]:
            offsets = offset_mapping[i]
            start_logits = np.asarray(all_start_logits[i], dtype=np.float64)[: len(offsets)]
            end_logits = np.asarray(all_end_logits[i], dtype=np.float64)[: len(offsets)]
            top_ends = np.argsort(end_logits)[::-1][:n_best]
            for start in np.argsort(start_logits)[::-1][:n_best]:
                for end in top_ends:
                    if offsets[start] is None or offsets[end] is None:
                        continue
                    if end < start or end - start + 1 > max_answer_length:
                        continue
                    score = start_logits[start] + end_logits[end]
                    if score > best_score:
                        best_score = score
                        best_text = context[offsets[start][0] : offsets[end][1]]
        predictions[example_id] = best_text
    return predictions
