"""Matthews correlation coefficient as an offline `evaluate` module (as the Hub's `matthews_correlation`).

Usage:
    import evaluate
    mcc = evaluate.load("/path/to/hfpipe/metrics/matthews_correlation")
    mcc.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {'matthews_correlation': 0.5}

This is CoLA's GLUE metric. evaluate copies this single file into its module cache and imports it there,
so it may import only installed libraries (never hfpipe or a sibling file).
"""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = """The Matthews correlation coefficient (MCC) measures the quality of binary and multi-class
classifications. It accounts for true and false positives and negatives and stays informative when the
classes have very different sizes: +1 is a perfect prediction, 0 no better than chance, -1 total
disagreement. Multi-class inputs use the generalisation of Gorodkin (2004)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    sample_weight (list of float, optional): per-example weights.
Returns:
    matthews_correlation (float): in [-1, 1].
Examples:
    >>> mcc.compute(predictions=[1, 1, 0, 0], references=[1, 1, 0, 0])
    {'matthews_correlation': 1.0}
"""

_CITATION = """@article{matthews1975comparison,
  title={Comparison of the predicted and observed secondary structure of T4 phage lysozyme},
  author={Matthews, Brian W},
  journal={Biochimica et Biophysica Acta (BBA)-Protein Structure},
  volume={405},
  number={2},
  pages={442--451},
  year={1975}
}"""


class MatthewsCorrelation(evaluate.Metric):
    """Matthews correlation coefficient computed by scikit-learn."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"
            ],
        )

    def _compute(self, predictions, references, sample_weight=None) -> dict:
        score = matthews_corrcoef(references, predictions, sample_weight=sample_weight)
        return {"matthews_correlation": float(score)}
