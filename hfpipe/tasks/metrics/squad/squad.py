"""SQuAD v1.1 exact match and F1 as an offline `evaluate` module (same inputs/outputs as the Hub's `squad`).

Usage:
    import evaluate
    squad = evaluate.load("/path/to/hfpipe/metrics/squad")  # or hfpipe.tasks.metrics.load("squad")
    squad.compute(
        predictions=[{"id": "q1", "prediction_text": "the Eiffel Tower"}],
        references=[{"id": "q1", "answers": {"text": ["Eiffel Tower"], "answer_start": [0]}}],
    )  # {'exact_match': 100.0, 'f1': 100.0}

The scoring follows the official SQuAD v1.1 evaluation script line for line: answers are normalised
(lowercase, punctuation removed, articles a/an/the removed, whitespace collapsed), each question takes its
best score over its reference answers, and a question without a prediction scores 0 (with a warning).
evaluate copies this single file into its module cache and imports it there, so it may import only
installed libraries (never hfpipe or a sibling file).
"""

import re
import string
import warnings
from collections import Counter

import datasets
import evaluate

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

_DESCRIPTION = """Stanford Question Answering Dataset (SQuAD) v1.1 metric: exact_match is the percentage of
questions whose normalised prediction equals a normalised reference answer; f1 is the mean over questions
of the best token-overlap F1 against any reference answer, in percent."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of dict): {"id": str, "prediction_text": str} per question.
    references (list of dict): {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}
        per question, as in the SQuAD dataset.
Returns:
    exact_match (float): in [0, 100].
    f1 (float): in [0, 100].
Examples:
    >>> squad.compute(predictions=[{"id": "1", "prediction_text": "1976"}],
    ...               references=[{"id": "1", "answers": {"text": ["1976"], "answer_start": [97]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

_CITATION = """@inproceedings{Rajpurkar2016SQuAD10,
  title={SQuAD: 100, 000+ Questions for Machine Comprehension of Text},
  author={Pranav Rajpurkar and Jian Zhang and Konstantin Lopyrev and Percy Liang},
  booktitle={EMNLP},
  year={2016}
}"""


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Harmonic mean of token precision and recall over the normalised bags of tokens."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    """The official SQuAD v1.1 scoring, written out here so it needs no download."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
            homepage="https://rajpurkar.github.io/SQuAD-explorer/",
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references) -> dict:
        if not references:
            raise ValueError("squad: no references to score.")
        predicted = {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
        exact_match = f1 = 0.0
        unanswered = []
        for reference in references:
            answers = reference["answers"]["text"]
            if not answers:
                raise ValueError(
                    f"squad: reference id={reference['id']!r} has no answers; SQuAD v1.1 needs at least one "
                    "answer text per question."
                )
            if reference["id"] not in predicted:
                unanswered.append(reference["id"])
                continue
            prediction = predicted[reference["id"]]
            exact_match += max(exact_match_score(prediction, answer) for answer in answers)
            f1 += max(f1_score(prediction, answer) for answer in answers)
        if unanswered:
            warnings.warn(
                f"squad: {len(unanswered)} question(s) have no prediction and score 0, "
                f"e.g. id={unanswered[0]!r}.",
                stacklevel=2,
            )
        return {"exact_match": 100.0 * exact_match / len(references), "f1": 100.0 * f1 / len(references)}
