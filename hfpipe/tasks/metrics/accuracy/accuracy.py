"""Accuracy as an offline `evaluate` module (same inputs and output as the Hub's `accuracy`).

Usage:
    import evaluate
    accuracy = evaluate.load("/path/to/hfpipe/metrics/accuracy")  # or hfpipe.tasks.metrics.load("accuracy")
    accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {'accuracy': 0.666...}

evaluate copies this single file into its module cache and imports it there, so it may import only
installed libraries (never hfpipe or a sibling file).
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """Accuracy is the proportion of correct predictions among all predictions:
(TP + TN) / (TP + TN + FP + FN). With `normalize=False` it is the number (or weighted sum) of correct
predictions instead of the fraction."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    normalize (bool, default True): return the fraction of correct predictions; if False, their count.
    sample_weight (list of float, optional): per-example weights.
Returns:
    accuracy (float): in [0, 1] when normalize=True.
Examples:
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
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


class Accuracy(evaluate.Metric):
    """Fraction (or count) of predictions equal to their reference, computed by scikit-learn."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"
            ],
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
