"""Examples -> model features: tokenize every split of a task, without padding.

    from hfpipe.tasks import get_task, load_task_data, preprocess
    raw = load_task_data(spec, args)                     # examples in the Hub's columns (files.py)
    features = preprocess(spec, raw, tokenizer, args)    # input_ids, labels, lengths; the loop pads per batch

Sequence tasks tokenize their text (pair) and keep the label; token classification labels each
word's first sub-token (`align_labels_with_words`); QA cuts contexts into windows (qa.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hfpipe.config import RecipeError
from hfpipe.tasks.qa import prepare_qa_eval_features, prepare_qa_train_features

if TYPE_CHECKING:
    import datasets

    from hfpipe.config import TaskDataArgs
    from hfpipe.tasks.spec import TaskSpec


def preprocess(
    spec: TaskSpec, dataset_dict: datasets.DatasetDict, tokenizer: Any, args: TaskDataArgs
) -> datasets.DatasetDict:
    """Tokenize every split for `spec.kind`, without padding (the loop pads each batch dynamically).

    - sequence tasks: `tokenizer(text[, text_pair], truncation=True, max_length)`, `labels` int
      (float32 for regression).
    - token classification: words with `is_split_into_words=True`; `labels` holds the word's tag on
      its first sub-token and -100 on the others and on special tokens.
    - QA: "train" becomes windows with start/end positions; other splits become windows with
      `example_id` and `offset_mapping` for `postprocess_qa_predictions` (drop
      `QA_EVAL_META_COLUMNS` before collating).
    Every split gets `lengths` (tokens per row) for length-grouped batching. Original columns are
    removed. Needs a fast (Rust `tokenizers`) tokenizer: word_ids and offsets come from it.
    """
    import datasets

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"task {spec.name} needs a fast tokenizer (tokenizers-backed), got {type(tokenizer).__name__}"
        )
    max_length = min(
        args.max_length, getattr(tokenizer, "model_max_length", args.max_length) or args.max_length
    )
    if spec.kind == "question_answering" and args.doc_stride >= max_length:
        raise RecipeError(
            f"must be < data.max_length ({max_length}), got {args.doc_stride}", key="data.doc_stride"
        )
    out = datasets.DatasetDict()
    for split, ds in dataset_dict.items():
        if spec.kind == "question_answering":
            function = prepare_qa_train_features if split == "train" else prepare_qa_eval_features
            kwargs = {"tokenizer": tokenizer, "max_length": max_length, "doc_stride": args.doc_stride}
        else:
            function = (
                _encode_token_classification if spec.kind == "token_classification" else _encode_sequences
            )
            kwargs = {"spec": spec, "tokenizer": tokenizer, "max_length": max_length}
        out[split] = ds.map(
            function,
            batched=True,
            fn_kwargs=kwargs,
            remove_columns=ds.column_names,
            num_proc=args.preprocessing_num_workers,
            desc=f"Tokenizing {spec.name} {split}",
        )
    return out


def _encode_sequences(
    batch: dict[str, list], spec: TaskSpec, tokenizer: Any, max_length: int
) -> dict[str, list]:
    texts = [batch[column] for column in spec.text_columns]
    encoding = tokenizer(*texts, truncation=True, max_length=max_length)
    labels = batch[spec.label_column]
    encoding["labels"] = [float(y) for y in labels] if spec.kind == "regression" else list(labels)
    encoding["lengths"] = [len(ids) for ids in encoding["input_ids"]]
    return dict(encoding)


def _encode_token_classification(
    batch: dict[str, list], spec: TaskSpec, tokenizer: Any, max_length: int
) -> dict[str, list]:
    words = batch[spec.text_columns[0]]
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    encoding["labels"] = [
        align_labels_with_words(encoding.word_ids(i), tags) for i, tags in enumerate(batch[spec.label_column])
    ]
    encoding["lengths"] = [len(ids) for ids in encoding["input_ids"]]
    return dict(encoding)


def align_labels_with_words(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Per-token labels: the word's label on its first sub-token, -100 elsewhere (ignored by the loss).

    `word_ids` is `encoding.word_ids(i)`: the word index of each token, None for special tokens.
    Labelling only the first sub-token keeps one prediction per word, which is what seqeval scores.
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(-100 if word is None or word == previous else int(word_labels[word]))
        previous = word
    return labels
