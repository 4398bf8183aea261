"""Pearson correlation as an offline `evaluate` module (same outputs as the Hub's `pearsonr`).

Usage:
    import evaluate
    pearson = evaluate.load("/path/to/hfpipe/metrics/pearsonr")
    pearson.compute(predictions=[0.1, 0.4, 0.35], references=[0.0, 0.5, 0.3])
    pearson.compute(predictions=..., references=..., return_pvalue=True)  # adds 'p-value'

Inputs are stored as float64 (the Hub module uses float32), so results equal scipy's on the same
float64 arrays. evaluate copies this single file into its module cache and imports it there, so it may
import only installed libraries (never hfpipe or a sibling file).
"""

import datasets
import evaluate
from scipy.stats import pearsonr

_DESCRIPTION = """The Pearson correlation coefficient measures the linear relationship between two sets of
numbers: +1 is an exact increasing linear relationship, -1 an exact decreasing one, 0 none. The p-value
(two-sided) is the probability that uncorrelated data would show a correlation at least this strong."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): ground-truth scores.
    return_pvalue (bool, default False): also return the two-sided p-value as 'p-value'.
Returns:
    pearsonr (float): in [-1, 1].
    p-value (float): only when return_pvalue=True.
Examples:
    >>> pearson.compute(predictions=[1.0, 2.0, 3.0], references=[2.0, 4.0, 6.0])
    {'pearsonr': 1.0}
"""

_CITATION = """@article{2020SciPy-NMeth,
  author  = {Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and others},
  title   = {{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  journal = {Nature Methods},
  year    = {2020},
  volume  = {17},
  pages   = {261--272}
}"""


class Pearsonr(evaluate.Metric):
    """Pearson correlation computed by scipy.stats.pearsonr."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references, return_pvalue: bool = False) -> dict:
        result = pearsonr(references, predictions)
        scores = {"pearsonr": float(result[0])}
        if return_pvalue:
            scores["p-value"] = float(result[1])
        return scores
