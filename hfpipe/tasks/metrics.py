"""Predictions -> scores: plain functions over scikit-learn, scipy and seqeval, and the SQuAD v1.1 scorer.

    from hfpipe.tasks.metrics import accuracy, f1, seqeval, squad, compute_task_metrics
    accuracy([0, 1, 1], [0, 1, 0])                                  # 0.666...
    f1([0, 2, 1], [0, 1, 1], average="macro")                       # keyword arguments go to the library
    seqeval([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])    # {'f1': 1.0, 'precision': 1.0, ...}
    squad({"q1": "the Eiffel Tower"}, [{"id": "q1", "answers": {"text": ["Eiffel Tower"]}}])
    compute_task_metrics(get_task("mrpc"), logits, labels)          # {'f1': 0.88, 'accuracy': 0.84}

Every function takes (predictions, references), as `evaluate` does; the libraries take (y_true, y_pred).
Values are what Hugging Face's example scripts report: GLUE and CoNLL scores are fractions in [0, 1]
(multiply by 100 for a paper table), SQuAD exact_match and f1 are percentages. The keys of
`compute_task_metrics` follow the papers: `matthews_correlation`, `accuracy`, `f1`, `pearson`,
`spearmanr`, `exact_match`; MNLI's mismatched split adds `accuracy_mismatched`.

The libraries are imported inside the functions: importing scikit-learn takes seconds, and the CLI and
recipe validation import hfpipe.tasks without scoring anything.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hfpipe.tasks.spec import TaskSpec

# --------------------------------------------------------------------------------------------------
# Classification and regression: one number each.


def accuracy(predictions: Any, references: Any, **kwargs: Any) -> float:
    """Fraction of predictions equal to their reference (`sklearn.metrics.accuracy_score`)."""
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(references, predictions, **kwargs))


def f1(predictions: Any, references: Any, **kwargs: Any) -> float:
    """F1 of class 1 (`sklearn.metrics.f1_score`); pass `average="macro"` (etc.) for several classes."""
    from sklearn.metrics import f1_score

    return float(f1_score(references, predictions, **kwargs))


def matthews_correlation(predictions: Any, references: Any, **kwargs: Any) -> float:
    """Matthews correlation in [-1, 1], CoLA's metric (`sklearn.metrics.matthews_corrcoef`)."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(references, predictions, **kwargs))


def pearsonr(predictions: Any, references: Any) -> float:
    """Pearson correlation (`scipy.stats.pearsonr`); pass float64, scipy keeps float32 as float32."""
    from scipy import stats

    return float(stats.pearsonr(references, predictions)[0])


def spearmanr(predictions: Any, references: Any) -> float:
    """Spearman rank correlation, ties at their average rank (`scipy.stats.spearmanr`)."""
    from scipy import stats

    return float(stats.spearmanr(references, predictions)[0])


# --------------------------------------------------------------------------------------------------
# Sequence labelling and extractive QA: several numbers each.


def seqeval(predictions: list[list[str]], references: list[list[str]], **kwargs: Any) -> dict[str, float]:
    """CoNLL NER scores of tag sequences: entity-level micro f1, precision and recall, and token accuracy.

    A predicted entity counts only when its type and whole span match a reference entity (lenient
    about B-/I- prefixes, like conlleval). Keyword arguments go to seqeval's f1/precision/recall
    functions, e.g. `mode="strict", scheme=seqeval.scheme.IOB2`.
    """
    from seqeval import metrics

    return {
        "f1": float(metrics.f1_score(references, predictions, **kwargs)),
        "precision": float(metrics.precision_score(references, predictions, **kwargs)),
        "recall": float(metrics.recall_score(references, predictions, **kwargs)),
        "accuracy": float(metrics.accuracy_score(references, predictions)),
    }


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation, in its order: lowercase, drop punctuation, drop the
    articles a/an/the (whole words), collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def _token_f1(prediction: str, truth: str) -> float:
    """Harmonic mean of token precision and recall over the normalised bags of tokens."""
    predicted, true = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(predicted) & Counter(true)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(true)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Mapping[str, str], references: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 in percent, as the official evaluation script computes them.

    `predictions` maps question id -> answer text (the official predictions file); `references` are
    rows with `id` and `answers: {"text": [...]}` (the Hub's squad rows). Each question takes its best
    score over its reference answers; a question without a prediction scores 0 (with a warning);
    predictions for other ids are ignored.
    """
    exact_match = f1_sum = 0.0
    n, unanswered = 0, []
    for row in references:
        n += 1
        answers = row["answers"]["text"]
        if not answers:
            raise ValueError(
                f"squad: reference id={row['id']!r} has no answers; SQuAD v1.1 needs at least one answer text"
            )
        if row["id"] not in predictions:
            unanswered.append(row["id"])
            continue
        prediction = predictions[row["id"]]
        exact_match += max(_exact_match(prediction, answer) for answer in answers)
        f1_sum += max(_token_f1(prediction, answer) for answer in answers)
    if n == 0:
        raise ValueError("squad: no references to score")
    if unanswered:
        warnings.warn(
            f"squad: {len(unanswered)} question(s) have no prediction and score 0, e.g. id={unanswered[0]!r}",
            stacklevel=2,
        )
    return {"exact_match": 100.0 * exact_match / n, "f1": 100.0 * f1_sum / n}


# --------------------------------------------------------------------------------------------------
# A task's metrics on one evaluation split.

_ONE_NUMBER = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearsonr": pearsonr,
    "spearmanr": spearmanr,
}
"""The `spec.metrics` names of classification and regression tasks -> their functions."""

_KEYS = {"pearsonr": "pearson"}
"""Function name -> result key, where papers name it differently (STS-B's `pearson`)."""


def compute_task_metrics(
    spec: TaskSpec, predictions: Any, references: Any, split: str = "validation"
) -> dict[str, float]:
    """The task's metrics on one evaluation split.

    predictions / references by kind:
    - sequence_classification: logits (N, C) (argmaxed) or class ids (N,); references ids (N,).
    - regression: scores (N,) or (N, 1); references floats (N,).
    - token_classification: logits (N, T, C) or ids (N, T), padded or ragged; references label ids
      (N, T) with -100 on ignored tokens (as `preprocess` makes them). Only positions whose reference is
      not -100 are scored; ids become tag names for seqeval (entity-level f1/precision/recall, and
      token accuracy).
    - question_answering: `{id: answer text}` (from `postprocess_qa_predictions`) or the Hub squad
      format `[{"id", "prediction_text"}]`; references are the raw validation examples (rows with
      `id` and `answers`, e.g. the `datasets.Dataset`).
    Keys get a suffix for other splits: MNLI's `validation_mismatched` gives `accuracy_mismatched`.
    """
    if spec.kind == "question_answering":
        if not isinstance(predictions, Mapping):  # the Hub squad format: [{"id", "prediction_text"}, ...]
            predictions = {row["id"]: row["prediction_text"] for row in predictions}
        scores = squad(predictions, references)
    elif spec.kind == "token_classification":
        scores = seqeval(*_tag_names(spec, predictions, references))
    else:
        if spec.kind == "regression":
            predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
            references = np.asarray(references, dtype=np.float64).reshape(-1)
        else:
            predictions = np.asarray(predictions)
            predictions = predictions.argmax(-1) if predictions.ndim == 2 else predictions.astype(np.int64)
            references = np.asarray(references).reshape(-1).astype(np.int64)
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        scores = {_KEYS.get(name, name): _ONE_NUMBER[name](predictions, references) for name in spec.metrics}
    suffix = "" if split == "validation" else "_" + split.removeprefix("validation_")
    return {key + suffix: value for key, value in scores.items()}


def _tag_names(spec: TaskSpec, predictions: Any, references: Any) -> tuple[list[list[str]], list[list[str]]]:
    """(predicted tags, reference tags) per sentence, at the positions whose reference is not -100."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction rows for {len(references)} reference rows")
    tags_pred, tags_true = [], []
    for pred_row, ref_row in zip(predictions, references):
        pred_row, ref_row = np.asarray(pred_row), np.asarray(ref_row)
        if pred_row.ndim == 2:  # logits (T, C) -> ids (T,)
            pred_row = pred_row.argmax(-1)
        keep = np.flatnonzero(ref_row != -100)
        tags_true.append([spec.label_names[i] for i in ref_row[keep]])
        tags_pred.append([spec.label_names[i] for i in pred_row[keep]])
    return tags_pred, tags_true
