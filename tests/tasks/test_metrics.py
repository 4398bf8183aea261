"""Tests for hfpipe.tasks.metrics: each offline evaluate module against its reference library.

Run: .venv/bin/pytest tests/test_metrics.py -q

Inputs are random but seeded and non-trivial (several classes, ties, imperfect predictions), and every
module is compared with scikit-learn / scipy / seqeval on the same inputs. SQuAD is checked against
scores worked out by hand from the official v1.1 rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import evaluate
import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
import seqeval.scheme
import sklearn.metrics

from hfpipe.tasks import metrics

REPO = Path(__file__).resolve().parents[2]


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


# --- the package ---------------------------------------------------------------------------------------


def test_every_metric_folder_is_registered_and_loadable_by_plain_evaluate():
    folders = {p.parent.name for p in Path(metrics.__file__).parent.glob("*/*.py")}
    assert folders == set(metrics.METRIC_NAMES)
    for name in metrics.METRIC_NAMES:
        folder = Path(metrics.path(name))
        assert (folder / f"{name}.py").is_file()
        module = evaluate.load(str(folder))  # the local-module convention, without hfpipe's wrapper
        assert isinstance(module, evaluate.Metric)
        assert module.name == name
        assert module.description and module.citation


def test_unknown_metric_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown metric 'acuracy'; hfpipe ships: accuracy, f1, .*squad"):
        metrics.load("acuracy")
    with pytest.raises(ValueError, match="Unknown metric 'glue'"):
        metrics.path("glue")


def test_load_gives_each_instance_its_own_experiment_id_unless_asked():
    a, b = metrics.load("accuracy"), metrics.load("accuracy")
    assert a.experiment_id != b.experiment_id
    assert metrics.load("accuracy", experiment_id="shared").experiment_id == "shared"
    distributed = metrics.load("accuracy", num_process=2, process_id=1)
    assert distributed.experiment_id == "default_experiment"  # evaluate's rendez-vous needs a shared id
    # Interleaved use of two instances keeps their data apart.
    a.add_batch(predictions=[1, 1], references=[1, 1])
    b.add_batch(predictions=[0, 1], references=[1, 1])
    assert b.compute() == {"accuracy": 0.5}
    assert a.compute() == {"accuracy": 1.0}


def test_combine_accuracy_and_f1(rng):
    predictions, references = noisy_labels(rng, 300, 2, 0.3)
    combined = metrics.combine(["accuracy", "f1"])
    assert isinstance(combined, evaluate.CombinedEvaluations)
    assert combined.compute(predictions=predictions, references=references) == {
        "accuracy": sklearn.metrics.accuracy_score(references, predictions),
        "f1": sklearn.metrics.f1_score(references, predictions),
    }
    with pytest.raises(TypeError, match=r"list of metric names.*\['accuracy'\]"):
        metrics.combine("accuracy")


# --- classification ------------------------------------------------------------------------------------


def test_accuracy_matches_sklearn(rng):
    predictions, references = noisy_labels(rng, 500, 3, 0.4)
    weights = rng.random(500).tolist()
    accuracy = metrics.load("accuracy")
    assert accuracy.compute(predictions=predictions, references=references) == {
        "accuracy": sklearn.metrics.accuracy_score(references, predictions)
    }
    got = accuracy.compute(
        predictions=predictions, references=references, normalize=False, sample_weight=weights
    )
    want = sklearn.metrics.accuracy_score(references, predictions, normalize=False, sample_weight=weights)
    assert got["accuracy"] == pytest.approx(want, rel=1e-12, abs=0)
    assert 0.5 < got["accuracy"] / sum(weights) < 0.9  # the inputs are neither perfect nor random


def test_f1_matches_sklearn_for_every_average(rng):
    f1 = metrics.load("f1")
    predictions, references = noisy_labels(rng, 400, 2, 0.35)
    for pos_label in (0, 1):
        got = f1.compute(predictions=predictions, references=references, pos_label=pos_label)
        assert got == {"f1": sklearn.metrics.f1_score(references, predictions, pos_label=pos_label)}
    predictions, references = noisy_labels(rng, 400, 4, 0.5)
    weights = rng.random(400).tolist()
    scores = set()
    for average in ("micro", "macro", "weighted"):
        got = f1.compute(
            predictions=predictions, references=references, average=average, sample_weight=weights
        )
        want = sklearn.metrics.f1_score(references, predictions, average=average, sample_weight=weights)
        assert got["f1"] == pytest.approx(want, rel=1e-12, abs=0)
        scores.add(round(got["f1"], 12))
    assert len(scores) == 3  # the averages really differ on these inputs
    with pytest.raises(ValueError, match=r"average='samples' is not supported; use one of \['binary'"):
        f1.compute(predictions=predictions, references=references, average="samples")


def test_matthews_correlation_matches_sklearn(rng):
    mcc = metrics.load("matthews_correlation")
    for num_classes in (2, 5):
        predictions, references = noisy_labels(rng, 400, num_classes, 0.5)
        got = mcc.compute(predictions=predictions, references=references)["matthews_correlation"]
        assert got == sklearn.metrics.matthews_corrcoef(references, predictions)
        assert 0.2 < got < 0.9


# --- regression ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reference_fn", "pvalue_key"),
    [("pearsonr", scipy.stats.pearsonr, "p-value"), ("spearmanr", scipy.stats.spearmanr, "spearmanr_pvalue")],
)
def test_correlations_match_scipy(rng, name, reference_fn, pvalue_key):
    references = rng.normal(size=60)
    predictions = 0.3 * references + rng.normal(size=60)
    predictions = np.round(predictions, 1)  # ties, so spearman's average ranks are exercised
    metric = metrics.load(name)
    got = metric.compute(predictions=predictions.tolist(), references=references.tolist(), return_pvalue=True)
    want = reference_fn(references, predictions)
    assert set(got) == {name, pvalue_key}
    assert got[name] == pytest.approx(float(want[0]), rel=1e-12, abs=1e-15)
    assert got[pvalue_key] == pytest.approx(float(want[1]), rel=1e-12, abs=1e-15)
    assert 0.05 < got[name] < 0.8
    assert set(metric.compute(predictions=predictions.tolist(), references=references.tolist())) == {name}


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
    kwargs = {"mode": mode, "scheme": "IOB2" if mode else None, "zero_division": 0}
    got = metrics.load("seqeval").compute(predictions=predictions, references=references, **kwargs)
    lib_kwargs = {"mode": mode, "scheme": seqeval.scheme.IOB2 if mode else None, "zero_division": 0}
    report = seqeval.metrics.classification_report(references, predictions, output_dict=True, **lib_kwargs)
    for entity_type in ("PER", "LOC", "ORG", "MISC"):
        assert got[entity_type] == {
            "precision": report[entity_type]["precision"],
            "recall": report[entity_type]["recall"],
            "f1": report[entity_type]["f1-score"],
            "number": report[entity_type]["support"],
        }
    assert got["overall_precision"] == seqeval.metrics.precision_score(references, predictions, **lib_kwargs)
    assert got["overall_recall"] == seqeval.metrics.recall_score(references, predictions, **lib_kwargs)
    assert got["overall_f1"] == seqeval.metrics.f1_score(references, predictions, **lib_kwargs)
    assert got["overall_accuracy"] == seqeval.metrics.accuracy_score(references, predictions)
    assert 0.3 < got["overall_f1"] < 0.95


def test_seqeval_strict_mode_rejects_ill_formed_entities():
    # "I-PER" without a "B-PER" is an entity under the lenient conlleval rules, but not in strict IOB2.
    predictions, references = [["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]]
    seqeval_metric = metrics.load("seqeval")
    assert seqeval_metric.compute(predictions=predictions, references=references)["overall_f1"] == 1.0
    strict = seqeval_metric.compute(
        predictions=predictions, references=references, mode="strict", scheme="IOB2", zero_division=0
    )
    assert strict["overall_f1"] == 0.0


def test_seqeval_rejects_unknown_scheme_and_mode():
    tags = [["B-PER", "O"]]
    # A fresh instance per failing call: evaluate keeps a failed compute's cache-file lock held by that
    # instance, so the next compute on it would wait 1 s for that lock before using another file.
    with pytest.raises(ValueError, match=r"scheme='BIO' is not supported; use one of \['IOB1', 'IOB2'"):
        metrics.load("seqeval").compute(predictions=tags, references=tags, scheme="BIO", mode="strict")
    with pytest.raises(ValueError, match=r"mode='lenient' is not supported"):
        metrics.load("seqeval").compute(predictions=tags, references=tags, mode="lenient")


# --- SQuAD ---------------------------------------------------------------------------------------------


def squad_ref(qid: str, *texts: str) -> dict:
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


def squad_pred(qid: str, text: str) -> dict:
    return {"id": qid, "prediction_text": text}


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
    got = metrics.load("squad").compute(
        predictions=[squad_pred("q", prediction)], references=[squad_ref("q", *answers)]
    )
    assert got["exact_match"] == 100.0 * exact_match
    assert got["f1"] == pytest.approx(100.0 * float(f1), rel=1e-12)


def test_squad_averages_over_questions_and_scores_unanswered_as_zero():
    references = [
        squad_ref("a", "Paris"),
        squad_ref("b", "Martin Luther King Jr."),
        squad_ref("c", "1976"),
        squad_ref("d", "the moon"),
    ]
    predictions = [  # in a different order than the references; "d" is missing, "e" is not asked
        squad_pred("c", "in 1976"),  # EM 0, F1: P = 1/2, R = 1 -> 2/3
        squad_pred("e", "the moon"),  # ignored, as in the official script
        squad_pred("a", "paris"),  # EM 1, F1 1
        squad_pred("b", "Martin Luther King"),  # EM 0, F1 6/7
    ]
    with pytest.warns(UserWarning, match=r"1 question\(s\) have no prediction and score 0, e.g. id='d'"):
        got = metrics.load("squad").compute(predictions=predictions, references=references)
    assert got["exact_match"] == 25.0
    assert got["f1"] == pytest.approx(100 * float((1 + Fraction(6, 7) + Fraction(2, 3)) / 4), rel=1e-12)


def test_squad_rejects_reference_without_answers():
    with pytest.raises(ValueError, match=r"reference id='x' has no answers"):
        metrics.load("squad").compute(predictions=[squad_pred("x", "a")], references=[squad_ref("x")])


# --- offline, concurrent loading -----------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import json, socket, sys, time
    from pathlib import Path

    def no_network(*args, **kwargs):
        raise OSError("network access attempted")
    socket.socket.connect = socket.socket.connect_ex = no_network
    socket.create_connection = socket.getaddrinfo = no_network

    from hfpipe.tasks import metrics

    # Barrier: both workers start loading together, after their slow imports.
    barrier, me, peers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    (barrier / me).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < peers and time.monotonic() < deadline:
        time.sleep(0.01)

    timings, results = {}, {}
    for attempt in ("first", "second"):
        start = time.perf_counter()
        loaded = {name: metrics.load(name) for name in metrics.METRIC_NAMES}
        timings[attempt] = time.perf_counter() - start
    start = time.perf_counter()
    results = loaded["accuracy"].compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    timings["compute"] = time.perf_counter() - start
    print(json.dumps({"timings": timings, "results": results}))
    """
)


def test_two_offline_processes_load_from_a_fresh_cache_without_network(tmp_path):
    """Two processes (as accelerate launches them) populate one empty module cache at the same time."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_METRICS_CACHE=str(tmp_path / "metrics"),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(barrier), str(rank), "2"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    for report in reports:
        assert report["results"] == {"accuracy": 0.75}
        assert report["timings"]["second"] < 2.0  # cached: no download attempt, no lock wait
    cached = sorted(p.relative_to(tmp_path / "modules") for p in (tmp_path / "modules").rglob("*.py"))
    for name in metrics.METRIC_NAMES:
        assert len([p for p in cached if p.name == f"{name}.py"]) == 1  # one copy, shared by both
    assert not list((tmp_path / "metrics").rglob("*.arrow"))  # compute removed its cache files
