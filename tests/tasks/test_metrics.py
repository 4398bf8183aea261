"""Tests for hfpipe.tasks.metrics: each function against its library, SQuAD against the official rules.

Run: .venv/bin/pytest tests/tasks/test_metrics.py -q

Inputs are random but seeded and non-trivial (several classes, ties, imperfect predictions), and every
function is compared with scikit-learn / scipy / seqeval on the same inputs. SQuAD is checked against
scores worked out by hand from the official v1.1 rules, and on the real dev set against the official
script's scoring, written out here step by step.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
import seqeval.scheme
import sklearn.metrics

from hfpipe.config import TaskDataArgs
from hfpipe.tasks import TASKS, compute_task_metrics, get_task, load_task_data, metrics


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded generator per test, so each test's inputs do not depend on which tests ran before."""
    return np.random.default_rng(1234)


def noisy_labels(rng: np.random.Generator, n: int, num_classes: int, error_rate: float):
    """References and predictions that agree except on about `error_rate` of the examples."""
    references = rng.integers(0, num_classes, size=n)
    flip = rng.random(n) < error_rate
    predictions = np.where(flip, rng.integers(0, num_classes, size=n), references)
    return predictions.tolist(), references.tolist()


def test_every_metric_of_the_task_table_is_a_function_here():
    names = {name for spec in TASKS.values() for name in spec.metrics}
    assert names == {"accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr", "seqeval", "squad"}
    assert all(callable(getattr(metrics, name)) for name in names)


# --- classification ------------------------------------------------------------------------------------


def test_accuracy_matches_sklearn(rng):
    predictions, references = noisy_labels(rng, 500, 3, 0.4)
    weights = rng.random(500).tolist()
    want = sklearn.metrics.accuracy_score(references, predictions)
    assert metrics.accuracy(predictions, references) == want
    got = metrics.accuracy(predictions, references, normalize=False, sample_weight=weights)
    want = sklearn.metrics.accuracy_score(references, predictions, normalize=False, sample_weight=weights)
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    assert 0.5 < got / sum(weights) < 0.9  # the inputs are neither perfect nor random


def test_f1_matches_sklearn_for_every_average(rng):
    predictions, references = noisy_labels(rng, 400, 2, 0.35)
    for pos_label in (0, 1):
        got = metrics.f1(predictions, references, pos_label=pos_label)
        assert got == sklearn.metrics.f1_score(references, predictions, pos_label=pos_label)
    predictions, references = noisy_labels(rng, 400, 4, 0.5)
    weights = rng.random(400).tolist()
    scores = set()
    for average in ("micro", "macro", "weighted"):
        got = metrics.f1(predictions, references, average=average, sample_weight=weights)
        want = sklearn.metrics.f1_score(references, predictions, average=average, sample_weight=weights)
        assert got == pytest.approx(want, rel=1e-12, abs=0)
        scores.add(round(got, 12))
    assert len(scores) == 3  # the averages really differ on these inputs
    # "weighted" weights classes by their reference counts: swapping the arguments changes it.
    swapped = metrics.f1(references, predictions, average="weighted")
    assert swapped != pytest.approx(metrics.f1(predictions, references, average="weighted"), rel=1e-9)
    with pytest.raises(ValueError, match="Samplewise metrics are not available"):  # sklearn's own error
        metrics.f1(predictions, references, average="samples")


def test_matthews_correlation_matches_sklearn(rng):
    for num_classes in (2, 5):
        predictions, references = noisy_labels(rng, 400, num_classes, 0.5)
        got = metrics.matthews_correlation(predictions, references)
        assert got == sklearn.metrics.matthews_corrcoef(references, predictions)
        assert 0.2 < got < 0.9


# --- regression ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reference_fn"), [("pearsonr", scipy.stats.pearsonr), ("spearmanr", scipy.stats.spearmanr)]
)
def test_correlations_match_scipy(rng, name, reference_fn):
    references = rng.normal(size=60)
    predictions = 0.3 * references + rng.normal(size=60)
    predictions = np.round(predictions, 1)  # ties, so spearman's average ranks are exercised
    got = getattr(metrics, name)(predictions.tolist(), references.tolist())
    assert got == pytest.approx(float(reference_fn(references, predictions)[0]), rel=1e-12, abs=1e-15)
    assert 0.05 < got < 0.8


def test_regression_scores_are_computed_in_float64(rng):
    """A head returns float32; scipy would correlate float32 arrays in float32, so the glue casts first."""
    references = rng.uniform(0, 5, 300).astype(np.float32)
    predictions = (references + rng.normal(0, 1, 300)).astype(np.float32)
    got = compute_task_metrics(get_task("stsb"), predictions[:, None], references)
    want = scipy.stats.pearsonr(references.astype(np.float64), predictions.astype(np.float64))[0]
    assert got["pearson"] == float(want)  # scipy 1.17 on the float32 arrays gives another number


# --- sequence labelling --------------------------------------------------------------------------------


def random_tags(rng: np.random.Generator, n_sentences: int):
    """IOB2 reference sentences and predictions with swapped types, broken spans and spurious entities."""
    types = ["PER", "LOC", "ORG", "MISC"]
    references, predictions = [], []
    for _ in range(n_sentences):
        sentence = []
        while len(sentence) < rng.integers(3, 15):
            if rng.random() < 0.6:
                sentence.append("O")
            else:
                entity_type = types[rng.integers(len(types))]
                sentence += [f"B-{entity_type}"] + [f"I-{entity_type}"] * int(rng.integers(0, 3))
        predicted = list(sentence)
        for i in range(len(predicted)):
            roll = rng.random()
            if roll < 0.08:
                predicted[i] = "O"
            elif roll < 0.16:
                predicted[i] = f"{['B', 'I'][rng.integers(2)]}-{types[rng.integers(len(types))]}"
        references.append(sentence)
        predictions.append(predicted)
    return predictions, references


@pytest.mark.parametrize("mode", [None, "strict"])
def test_seqeval_matches_seqeval(rng, mode):
    predictions, references = random_tags(rng, 80)
    kwargs = {"mode": mode, "scheme": seqeval.scheme.IOB2 if mode else None, "zero_division": 0}
    got = metrics.seqeval(predictions, references, **kwargs)
    assert got == {
        "f1": seqeval.metrics.f1_score(references, predictions, **kwargs),
        "precision": seqeval.metrics.precision_score(references, predictions, **kwargs),
        "recall": seqeval.metrics.recall_score(references, predictions, **kwargs),
        "accuracy": seqeval.metrics.accuracy_score(references, predictions),
    }
    # The overall (micro) row of seqeval's report, which evaluate's seqeval reported as overall_*.
    report = seqeval.metrics.classification_report(references, predictions, output_dict=True, **kwargs)
    micro = report["micro avg"]
    assert got["precision"] == micro["precision"] and got["recall"] == micro["recall"]
    assert got["f1"] == micro["f1-score"]
    assert got["precision"] != got["recall"]  # so swapped arguments would be caught
    assert 0.3 < got["f1"] < 0.95


def test_seqeval_strict_mode_rejects_ill_formed_entities():
    # "I-PER" without a "B-PER" is an entity under the lenient conlleval rules, but not in strict IOB2.
    predictions, references = [["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]]
    assert metrics.seqeval(predictions, references)["f1"] == 1.0
    strict_iob2 = {"mode": "strict", "scheme": seqeval.scheme.IOB2, "zero_division": 0}
    strict = metrics.seqeval(predictions, references, **strict_iob2)
    assert strict["f1"] == 0.0


# --- SQuAD ---------------------------------------------------------------------------------------------


def squad_ref(qid: str, *texts: str) -> dict:
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


@pytest.mark.parametrize(
    ("prediction", "answers", "exact_match", "f1"),
    [
        # Normalisation: case, punctuation, articles and whitespace all vanish.
        ("  The Eiffel   Tower. ", ["eiffel tower"], 1, Fraction(1)),
        ("an Apple!", ["APPLE"], 1, Fraction(1)),
        # Articles go only as whole words ("theatre" keeps its "the"); hyphens are deleted, not spaced.
        ("theatre", ["atre"], 0, Fraction(0)),
        ("state-of-the-art", ["state of the art"], 0, Fraction(0)),
        # Partial overlap: 3 shared tokens, P = 3/3, R = 3/4, F1 = 2PR/(P+R) = 6/7.
        ("Martin Luther King", ["Martin Luther King Jr."], 0, Fraction(6, 7)),
        # Repeated tokens count once per match: P = 1/3, R = 1, F1 = 1/2.
        ("go go go", ["go"], 0, Fraction(1, 2)),
        # Max over references: "blue house on hill" vs "red house" F1 1/3, vs "blue house" F1 2/3.
        ("the blue house on the hill", ["red house", "blue house"], 0, Fraction(2, 3)),
        # Max over references: only the second one matches exactly.
        ("Denver Broncos", ["Broncos", "the Denver Broncos"], 1, Fraction(1)),
    ],
)
def test_squad_single_question_by_hand(prediction, answers, exact_match, f1):
    got = metrics.squad({"q": prediction}, [squad_ref("q", *answers)])
    assert got["exact_match"] == 100.0 * exact_match
    assert got["f1"] == pytest.approx(100.0 * float(f1), rel=1e-12)


def test_squad_averages_over_questions_and_scores_unanswered_as_zero():
    references = [
        squad_ref("a", "Paris"),
        squad_ref("b", "Martin Luther King Jr."),
        squad_ref("c", "1976"),
        squad_ref("d", "the moon"),
        squad_ref("f", "."),  # normalises to "": only an empty prediction matches, a missing one does not
    ]
    predictions = {  # in a different order than the references; "d" and "f" are missing, "e" is not asked
        "c": "in 1976",  # EM 0, F1: P = 1/2, R = 1 -> 2/3
        "e": "the moon",  # ignored, as in the official script
        "a": "paris",  # EM 1, F1 1
        "b": "Martin Luther King",  # EM 0, F1 6/7
    }
    with pytest.warns(UserWarning, match=r"2 question\(s\) have no prediction and score 0, e.g. id='d'"):
        got = metrics.squad(predictions, references)
    assert got["exact_match"] == 20.0
    assert got["f1"] == pytest.approx(100 * float((1 + Fraction(6, 7) + Fraction(2, 3)) / 5), rel=1e-12)
    assert metrics.squad({"f": ""}, [squad_ref("f", ".")]) == {"exact_match": 100.0, "f1": 0.0}


def test_squad_rejects_reference_without_answers_and_no_references():
    with pytest.raises(ValueError, match=r"reference id='x' has no answers"):
        metrics.squad({"x": "a"}, [squad_ref("x")])
    with pytest.raises(ValueError, match="no references"):
        metrics.squad({"x": "a"}, [])


def official_squad_v1_1(articles: list[dict], predictions: dict[str, str]) -> dict[str, float]:
    """The official SQuAD v1.1 evaluation script's scoring, step for step, over its nested dev JSON."""

    def normalize(s: str) -> str:
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(prediction: str, truth: str) -> float:
        common = Counter(normalize(prediction).split()) & Counter(normalize(truth).split())
        same = sum(common.values())
        if same == 0:
            return 0
        precision = 1.0 * same / len(normalize(prediction).split())
        recall = 1.0 * same / len(normalize(truth).split())
        return (2 * precision * recall) / (precision + recall)

    exact_match = f1_sum = total = 0
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                truths = [answer["text"] for answer in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(normalize(prediction) == normalize(t) for t in truths)
                f1_sum += max(f1(prediction, t) for t in truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1_sum / total}


@pytest.mark.shared_data
def test_squad_equals_the_official_script_on_the_dev_set(shared_data):
    import json

    path = shared_data / "squad-v1.1/dev.json"
    dev = load_task_data(get_task("squad"), TaskDataArgs(validation_file=str(path)))["validation"]
    predictions = {}
    for i, (qid, context, answers) in enumerate(zip(dev["id"], dev["context"], dev["answers"])):
        start, text = answers["answer_start"][0], answers["text"][0]
        kind = i % 6  # exact, a window around the answer, case and articles, a wrong span, empty, missing
        if kind == 0:
            predictions[qid] = text
        elif kind == 1:
            predictions[qid] = context[max(0, start - 12) : start + len(text) + 4]
        elif kind == 2:
            predictions[qid] = "The " + answers["text"][-1].upper() + "!"
        elif kind == 3:
            predictions[qid] = context[:25]
        elif kind == 4:
            predictions[qid] = ""
    want = official_squad_v1_1(json.loads(path.read_text())["data"], predictions)
    with pytest.warns(UserWarning, match="have no prediction"):
        got = metrics.squad(predictions, dev)
    assert got == want
    assert 25 < got["exact_match"] < got["f1"] < 75  # neither perfect nor empty
