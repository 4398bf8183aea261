"""Entity-level precision/recall/F1 for sequence labelling (NER) as an offline `evaluate` module.

Same inputs and outputs as the Hub's `seqeval` metric:

    import evaluate
    seqeval = evaluate.load("/path/to/hfpipe/metrics/seqeval")  # or hfpipe.tasks.metrics.load("seqeval")
    seqeval.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])
    # {'PER': {'precision': 1.0, 'recall': 1.0, 'f1': 1.0, 'number': 1},
    #  'overall_precision': 1.0, 'overall_recall': 1.0, 'overall_f1': 1.0, 'overall_accuracy': 1.0}

Entities are compared whole (type and span), which is why this is the CoNLL-2003 metric rather than
token accuracy. evaluate copies this single file into its module cache and imports it there, so it may
import only installed libraries (never hfpipe or a sibling file).
"""

import datasets
import evaluate
import seqeval.scheme
from seqeval.metrics import accuracy_score, classification_report

# The tagging schemes seqeval implements; named here so a typo fails with the list of valid names
# instead of resolving an arbitrary attribute of seqeval.scheme.
SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")
MODES = (None, "strict")

_DESCRIPTION = """seqeval evaluates sequence labelling (named-entity recognition, chunking, ...) at the
entity level, in the style of the CoNLL-2000 `conlleval` script: a predicted entity counts only when its
type and its whole span match a reference entity. Overall scores are micro averages over all entities;
overall_accuracy is token-level accuracy."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): predicted tags per token, e.g. [["B-PER", "I-PER", "O"]].
    references (list of list of str): reference tags, same shape as predictions.
    suffix (bool, default False): tags carry the prefix at the end ("PER-B") instead of the start.
    scheme (str, optional): one of "IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU"; used with mode="strict"
        (None lets seqeval detect it).
    mode (str, optional): None (conlleval-compatible, lenient about B/I prefixes) or "strict" (an entity must
        be well formed under `scheme`).
    sample_weight (list of float, optional): per-sequence weights.
    zero_division ("warn", 0 or 1, default "warn"): value for precision/recall when the denominator is 0.
Returns:
    One dict per entity type with 'precision', 'recall', 'f1' and 'number' (reference entities of that type),
    plus 'overall_precision', 'overall_recall', 'overall_f1' and 'overall_accuracy'.
Examples:
    >>> seqeval.compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])["overall_f1"]
    1.0
"""

_CITATION = """@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  note={Software available from https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018},
}
@inproceedings{ramshaw-marcus-1995-text,
  title = "Text Chunking using Transformation-Based Learning",
  author = "Ramshaw, Lance and Marcus, Mitch",
  booktitle = "Third Workshop on Very Large Corpora",
  year = "1995",
  url = "https://www.aclweb.org/anthology/W95-0107",
}"""


class Seqeval(evaluate.Metric):
    """seqeval's classification report reshaped into the Hub metric's flat dict."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            homepage="https://github.com/chakki-works/seqeval",
            codebase_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(
        self,
        predictions,
        references,
        suffix: bool = False,
        scheme: str | None = None,
        mode: str | None = None,
        sample_weight=None,
        zero_division="warn",
    ) -> dict:
        if scheme is not None and scheme not in SCHEMES:
            raise ValueError(f"seqeval: scheme={scheme!r} is not supported; use one of {list(SCHEMES)}.")
        if mode not in MODES:
            raise ValueError(f"seqeval: mode={mode!r} is not supported; use one of {list(MODES)}.")
        report = classification_report(
            y_true=references,
            y_pred=predictions,
            suffix=suffix,
            output_dict=True,
            scheme=getattr(seqeval.scheme, scheme) if scheme is not None else None,
            mode=mode,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        report.pop("macro avg")
        report.pop("weighted avg")
        overall = report.pop("micro avg")
        scores = {
            entity_type: {
                "precision": float(score["precision"]),
                "recall": float(score["recall"]),
                "f1": float(score["f1-score"]),
                "number": int(score["support"]),
            }
            for entity_type, score in report.items()
        }
        scores["overall_precision"] = float(overall["precision"])
        scores["overall_recall"] = float(overall["recall"])
        scores["overall_f1"] = float(overall["f1-score"])
        scores["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
        return scores
