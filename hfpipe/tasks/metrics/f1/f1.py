"""F1 score as an offline `evaluate` module (same inputs and output as the Hub's `f1`).

Usage:
    import evaluate
    f1 = evaluate.load("/path/to/hfpipe/metrics/f1")  # or hfpipe.tasks.metrics.load("f1")
    f1.compute(predictions=[0, 1, 1], references=[0, 1, 0])                   # binary, pos_label=1
    f1.compute(predictions=[0, 2, 1], references=[0, 1, 1], average="macro")  # multi-class

evaluate copies this single file into its module cache and imports it there, so it may import only
installed libraries (never hfpipe or a sibling file).
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

AVERAGES = ("binary", "micro", "macro", "weighted")

_DESCRIPTION = """F1 is the harmonic mean of precision and recall: 2 * (precision * recall) / (precision + recall).
`average` says how per-class scores combine: "binary" scores only `pos_label`; "micro" counts all true
positives, false positives and false negatives globally; "macro" is the unweighted mean over classes;
"weighted" weights each class by its support."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    labels (list of int, optional): classes to include when average is not "binary".
    pos_label (int, default 1): the positive class when average="binary".
    average (str, default "binary"): one of "binary", "micro", "macro", "weighted".
    sample_weight (list of float, optional): per-example weights.
Returns:
    f1 (float): in [0, 1].
Examples:
    >>> f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])
    {'f1': 0.5}
"""

_CITATION = """@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}"""


class F1(evaluate.Metric):
    """F1 score computed by scikit-learn; `average` is limited to the four averages that give one number."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"
            ],
        )

    def _compute(
        self,
        predictions,
        references,
        labels=None,
        pos_label: int = 1,
        average: str = "binary",
        sample_weight=None,
    ) -> dict:
        if average not in AVERAGES:
            raise ValueError(f"f1: average={average!r} is not supported; use one of {list(AVERAGES)}.")
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
        )
        return {"f1": float(score)}
