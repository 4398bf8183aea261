"""Offline `evaluate` metric modules shipped with hfpipe.

`evaluate.load("accuracy")` downloads its script from the Hugging Face Hub. hfpipe runs where the Hub may be
unreachable, so each metric it needs lives here as a local evaluate module: a folder holding a script of
the same name (`metrics/accuracy/accuracy.py`), which `evaluate.load(<folder>)` accepts directly.

    from hfpipe.tasks import metrics
    accuracy = metrics.load("accuracy")
    accuracy.compute(predictions=[0, 1], references=[1, 1])            # {'accuracy': 0.5}
    clf = metrics.combine(["accuracy", "f1"])
    clf.compute(predictions=[0, 1], references=[1, 1])                 # {'accuracy': 0.5, 'f1': 0.666...}
    evaluate.load(metrics.path("seqeval"))                             # plain evaluate works too

Loading a local module never touches the network: evaluate parses the script's imports, copies it into
its module cache (HF_MODULES_CACHE, under a file lock, in a folder named by the hash of the script) and
imports it from there. Several processes may load at once (accelerate): the copy is serialised by that
lock, and `load` gives each single-process metric its own `experiment_id`, so processes never queue on
the same prediction cache file in HF_METRICS_CACHE (evaluate would otherwise wait out a 1 s lock timeout
and then pick a random file name).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import evaluate

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "f1",
    "matthews_correlation",
    "pearsonr",
    "spearmanr",
    "seqeval",
    "squad",
)
"""Metrics shipped with hfpipe; each is a folder `<name>/<name>.py` beside this file."""

_ROOT = Path(__file__).resolve().parent


class UnknownMetricError(ValueError):
    """A metric name that hfpipe does not ship."""


def path(name: str) -> str:
    """Folder of the evaluate module for `name`, as `evaluate.load` expects it.

    Raises UnknownMetricError (a ValueError) listing the valid names, and FileNotFoundError when the
    script is missing from the installation (a wheel built without the package data).
    """
    if name not in METRIC_NAMES:
        raise UnknownMetricError(f"Unknown metric {name!r}; hfpipe ships: {', '.join(METRIC_NAMES)}.")
    folder = _ROOT / name
    script = folder / f"{name}.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"Metric script {script} is missing from this hfpipe installation; reinstall hfpipe "
            "(its package data must include hfpipe/metrics/*/*.py)."
        )
    return str(folder)


def load(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of hfpipe's local module `name`; kwargs go to `evaluate.load` unchanged.

    Unless you pass `experiment_id` or run evaluate's own distributed mode (`num_process > 1`, where all
    processes must share one experiment_id), each call gets a fresh experiment_id so concurrent processes
    write separate cache files.
    """
    if "experiment_id" not in kwargs and kwargs.get("num_process", 1) == 1:
        kwargs["experiment_id"] = f"hfpipe-{uuid.uuid4().hex}"
    return evaluate.load(path(name), **kwargs)


def combine(names: Sequence[str], *, force_prefix: bool = False, **kwargs) -> evaluate.CombinedEvaluations:
    """`evaluate.combine` of several hfpipe metrics, each loaded with `load(name, **kwargs)`.

    Results merge into one dict; keys that collide are prefixed with the metric name (see evaluate.combine).
    """
    if isinstance(names, str):
        raise TypeError(f"combine() takes a list of metric names, got the string {names!r}; use [{names!r}].")
    return evaluate.combine([load(name, **kwargs) for name in names], force_prefix=force_prefix)
