"""The fine-tuning task table: for each task its columns, labels, head kind, metrics and Hub dataset.

    from hfpipe.tasks import get_task, main_metric_value
    spec = get_task("sst2")                   # TASKS["sst2"]: kind, text_columns, label_names, metrics, ...
    spec.num_labels, spec.id2label            # 2, {0: 'negative', 1: 'positive'}
    main_metric_value(spec, {"accuracy": 0.91})  # the number that keeps the best checkpoint

A task is one frozen `TaskSpec`; adding a task means adding one entry to `TASKS`. The loop never
branches on the task name, only on `spec.kind`: sequence_classification, regression,
token_classification or question_answering. The rest of hfpipe/tasks/ follows the data and reads
this table: files.py (local files, the Hub, or builtin.py's embedded data -> examples), preprocess.py
(examples -> features), qa.py (SQuAD windows and answers), metrics.py (predictions -> scores). This
module imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hfpipe.config import RecipeError
from hfpipe.config.finetune_recipe import task_key

if TYPE_CHECKING:
    import datasets

__all__ = ["CONLL_TAGS", "TASKS", "TaskSpec", "get_task", "main_metric_value"]


# --------------------------------------------------------------------------------------------------
# The task table.

TaskKind = Literal["sequence_classification", "regression", "token_classification", "question_answering"]


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: its columns, labels, metrics and where its data lives."""

    name: str
    """Recipe name of the task (`task: sst2`)."""
    kind: TaskKind
    """Which head and which preprocessing: a class per text (pair), a float per text pair, a class
    per word, or an answer span per question."""
    text_columns: tuple[str, ...]
    """Input column(s) in the Hub dataset's names: one text, a text pair, `tokens`, or (question, context)."""
    label_column: str
    """Target column: `label`, `ner_tags` or `answers`."""
    label_names: tuple[str, ...]
    """Class names in id order, as the Hub dataset's ClassLabel has them; () for regression and QA."""
    metrics: tuple[str, ...]
    """Functions of hfpipe.tasks.metrics computed on the validation split(s)."""
    main_metric: str
    """Key of `compute_task_metrics`' result that picks the best checkpoint (higher is better)."""
    hub_dataset: str
    """Default Hub dataset (`data.dataset_name` overrides it)."""
    hub_config: str | None
    """Default Hub configuration (`data.dataset_config` overrides it)."""
    hub_splits: tuple[tuple[str, str], ...] = (("train", "train"), ("validation", "validation"))
    """(our split, Hub split) pairs; MNLI maps validation <- validation_matched."""
    local_format: Literal["glue_tsv", "conll", "squad_json"] = "glue_tsv"
    """Format of the local files this task was written for (other table formats work too)."""
    file_columns: tuple[tuple[str, str], ...] = ()
    """(GLUE TSV header name, Hub column) pairs, e.g. ("#1 String", "sentence1") for MRPC."""
    headerless_columns: tuple[str, ...] = ()
    """Column names of a GLUE TSV without a header line (CoLA: source, label, mark, sentence)."""

    @property
    def num_labels(self) -> int:
        """Outputs of the head: classes, 1 for regression, 2 (start, end) for QA."""
        return {"regression": 1, "question_answering": 2}.get(self.kind, len(self.label_names))

    @property
    def id2label(self) -> dict[int, str]:
        """For the model config (`config.id2label`); empty for regression and QA."""
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    @property
    def pipeline_tag(self) -> str:
        """The Hub pipeline tag of the fine-tuned model (model card metadata)."""
        return {
            "sequence_classification": "text-classification",
            "regression": "text-classification",
            "token_classification": "token-classification",
            "question_answering": "question-answering",
        }[self.kind]

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """Splits evaluated every epoch: validation (+ validation_mismatched for MNLI)."""
        return tuple(split for split, _ in self.hub_splits if split != "train")

    def features(self) -> datasets.Features:
        """The `datasets.Features` of loaded examples, matching the Hub dataset's columns and types."""
        import datasets

        if self.kind == "question_answering":
            answers = {
                "text": datasets.List(datasets.Value("string")),
                "answer_start": datasets.List(datasets.Value("int32")),
            }
            string = datasets.Value("string")
            return datasets.Features(
                {"id": string, "title": string, "context": string, "question": string, "answers": answers}
            )
        if self.kind == "token_classification":
            return datasets.Features(
                {
                    "id": datasets.Value("string"),
                    self.text_columns[0]: datasets.List(datasets.Value("string")),
                    self.label_column: datasets.List(datasets.ClassLabel(names=list(self.label_names))),
                }
            )
        label = (
            datasets.Value("float32")
            if self.kind == "regression"
            else datasets.ClassLabel(names=list(self.label_names))
        )
        return datasets.Features(
            {**{c: datasets.Value("string") for c in self.text_columns}, self.label_column: label}
        )


GLUE = "nyu-mll/glue"
CONLL_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
"""CoNLL-2003 NER tags in the Hub dataset's order (IOB2)."""
PYDOCS_LABELS = ("asyncio", "email", "http", "logging", "unittest", "xml")
"""Classes of the built-in `pydocs` task (tasks/builtin.py): the standard-library package a docstring
comes from; six packages with 100-250 docstrings each."""


def _glue(name: str, text_columns: tuple[str, ...], label_names: tuple[str, ...], metrics: tuple[str, ...],
          main_metric: str, **kwargs: Any) -> TaskSpec:  # fmt: skip
    kind = "regression" if not label_names else "sequence_classification"
    return TaskSpec(
        name, kind, text_columns, "label", label_names, metrics, main_metric, GLUE, name, **kwargs
    )


_ENTAIL = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        # CoLA's GLUE TSVs have no header: source, label (0/1), author's mark, sentence.
        _glue("cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",), "matthews_correlation",
              headerless_columns=("source", "label", "mark", "sentence")),
        _glue("sst2", ("sentence",), ("negative", "positive"), ("accuracy",), "accuracy"),
        # MRPC TSV: Quality  #1 ID  #2 ID  #1 String  #2 String (Quality 1 = paraphrase).
        _glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy"), "f1",
              file_columns=(("#1 String", "sentence1"), ("#2 String", "sentence2"), ("Quality", "label"))),
        # STS-B TSV: index genre filename year old_index source1 source2 sentence1 sentence2 score.
        _glue("stsb", ("sentence1", "sentence2"), (), ("pearsonr", "spearmanr"), "pearson",
              file_columns=(("score", "label"),)),
        # QQP TSV: id qid1 qid2 question1 question2 is_duplicate.
        _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy"), "f1",
              file_columns=(("is_duplicate", "label"),)),
        # MNLI TSV: ... sentence1 sentence2 [label1..label5] gold_label (string labels).
        _glue("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
              "accuracy",
              hub_splits=(("train", "train"), ("validation", "validation_matched"),
                          ("validation_mismatched", "validation_mismatched")),
              file_columns=(("sentence1", "premise"), ("sentence2", "hypothesis"), ("gold_label", "label"))),
        # QNLI TSV: index question sentence label; RTE / WNLI: index sentence1 sentence2 label.
        _glue("qnli", ("question", "sentence"), _ENTAIL, ("accuracy",), "accuracy"),
        _glue("rte", ("sentence1", "sentence2"), _ENTAIL, ("accuracy",), "accuracy"),
        _glue("wnli", ("sentence1", "sentence2"), _ENTAIL[::-1], ("accuracy",), "accuracy"),  # 1 = entailment
        # Built in, offline: which standard-library package a docstring comes from (tasks/builtin.py).
        TaskSpec("pydocs", "sequence_classification", ("text",), "label", PYDOCS_LABELS, ("accuracy",), "accuracy",
                 "builtin:pydocs", None),
        # "eriktks/conll2003" (formerly "conll2003") is a loading script, which datasets >= 4 refuses;
        # lhoestq/conll2003 holds the same data as plain files with the same ClassLabel order.
        TaskSpec("conll2003", "token_classification", ("tokens",), "ner_tags", CONLL_TAGS, ("seqeval",), "f1",
                 "lhoestq/conll2003", None, local_format="conll"),
        TaskSpec("squad", "question_answering", ("question", "context"), "answers", (), ("squad",), "f1",
                 "rajpurkar/squad", None, local_format="squad_json"),
    )
}  # fmt: skip
"""Every task hfpipe can fine-tune on, by recipe name."""


def get_task(name: str) -> TaskSpec:
    """The task called `name` (case, `-` and `_` ignored: `SST-2` finds sst2)."""
    key = task_key(name)
    if key not in TASKS:
        raise RecipeError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}", key="task")
    return TASKS[key]


def main_metric_value(spec: TaskSpec, metrics: Mapping[str, float]) -> float:
    """The number that decides the best checkpoint (higher is better), e.g. MNLI matched accuracy."""
    if spec.main_metric not in metrics:
        raise KeyError(
            f"task {spec.name}: main metric {spec.main_metric!r} missing; got {', '.join(metrics)}"
        )
    return float(metrics[spec.main_metric])
