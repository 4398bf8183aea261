"""Spearman rank correlation as an offline `evaluate` module (same outputs as the Hub's `spearmanr`).

Usage:
    import evaluate
    spearman = evaluate.load("/path/to/hfpipe/metrics/spearmanr")
    spearman.compute(predictions=[0.1, 0.4, 0.35], references=[0.0, 0.5, 0.3])
    spearman.compute(predictions=..., references=..., return_pvalue=True)  # adds 'spearmanr_pvalue'

Inputs are stored as float64, so results equal scipy's on the same float64 arrays. evaluate copies this
single file into its module cache and imports it there, so it may import only installed libraries
(never hfpipe or a sibling file).
"""

import datasets
import evaluate
from scipy.stats import spearmanr

_DESCRIPTION = """The Spearman rank correlation is the Pearson correlation of the ranks of two sets of numbers
(ties get their average rank). It measures how well a monotonic function describes the relationship: +1 an
exact increasing one, -1 an exact decreasing one, 0 none. This is STS-B's second GLUE metric."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): ground-truth scores.
    return_pvalue (bool, default False): also return the two-sided p-value as 'spearmanr_pvalue'.
Returns:
    spearmanr (float): in [-1, 1].
    spearmanr_pvalue (float): only when return_pvalue=True.
Examples:
    >>> spearman.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 4.0, 9.0])
    {'spearmanr': 1.0}
"""

_CITATION = """@article{2020SciPy-NMeth,
  author  = {Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and others},
  title   = {{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  journal = {Nature Methods},
  year    = {2020},
  volume  = {17},
  pages   = {261--272}
}"""


class Spearmanr(evaluate.Metric):
    """Spearman rank correlation computed by scipy.stats.spearmanr."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=[
                "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"
            ],
        )

    def _compute(self, predictions, references, return_pvalue: bool = False) -> dict:
        result = spearmanr(references, predictions)
        scores = {"spearmanr": float(result[0])}
        if return_pvalue:
            scores["spearmanr_pvalue"] = float(result[1])
        return scores
