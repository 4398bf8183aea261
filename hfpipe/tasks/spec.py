"""The fine-tuning task table: for each task its data, columns, labels, head kind and metrics.

    from hfpipe.tasks.spec import TaskDataArgs, get_task, load_task_data, preprocess, compute_task_metrics
    spec = get_task("sst2")                                   # TASKS["sst2"]
    args = TaskDataArgs(train_file="../shared/data/sst2/train.tsv", validation_file="../shared/data/sst2/dev.tsv")
    raw = load_task_data(spec, args)                          # DatasetDict, Hub column names, int labels
    tokenized = preprocess(spec, raw, tokenizer, args)        # input_ids, labels, lengths; no padding
    ...                                                       # the loop (finetune.py) trains and predicts
    metrics = compute_task_metrics(spec, logits, tokenized["validation"]["labels"])
    main_metric_value(spec, metrics)                          # the number used to keep the best checkpoint

A task is one frozen `TaskSpec`; adding a task means adding one entry to `TASKS`. The loop never
branches on the task name, only on `spec.kind`: sequence_classification, regression,
token_classification or question_answering. Local file reading lives in `task_data.py`, SQuAD windows
and answer post-processing in `qa.py`.

Metric values are what the evaluate modules return, as Hugging Face's example scripts report them:
GLUE and CoNLL scores are fractions in [0, 1] (multiply by 100 for a paper table), SQuAD exact_match
and f1 are percentages. Keys follow the papers: `matthews_correlation`, `accuracy`, `f1`, `pearson`,
`spearmanr`, `exact_match`; MNLI's mismatched split adds `accuracy_mismatched`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hfpipe.config.recipe import RecipeError, check
from hfpipe.tasks.files import TaskDataError, load_task_data, parse_label, read_task_file
from hfpipe.tasks.qa import (
    QA_EVAL_META_COLUMNS,
    postprocess_qa_predictions,
    prepare_qa_eval_features,
    prepare_qa_train_features,
)

if TYPE_CHECKING:
    import datasets

__all__ = [
    "CONLL_TAGS",
    "QA_EVAL_META_COLUMNS",
    "TASKS",
    "TaskDataArgs",
    "TaskDataError",
    "TaskSpec",
    "align_labels_with_words",
    "compute_task_metrics",
    "get_task",
    "load_task_data",
    "main_metric_value",
    "parse_label",
    "postprocess_qa_predictions",
    "preprocess",
    "read_task_file",
]


# --------------------------------------------------------------------------------------------------
# The recipe section.


@dataclass
class TaskDataArgs:
    """Where the task's data comes from and how it is tokenized (the `data:` section of a finetune recipe)."""

    dataset_name: str | None = None
    """Hub dataset, e.g. `nyu-mll/glue`; null uses the task's default Hub dataset. Ignored when
    train_file or validation_file is set."""
    dataset_config: str | None = None
    """Hub dataset configuration, e.g. `sst2` (GLUE has one per task)."""
    train_file: str | None = None
    """Local training file; when this or validation_file is set, only local files are read (the Hub
    dataset is not used). GLUE `.tsv` (quoting off), `.csv`, `.json`/`.jsonl` records, CoNLL columns
    for NER, SQuAD JSON for QA; see `hfpipe/task_data.py`."""
    validation_file: str | None = None
    """Local validation file (same formats as train_file), e.g. `../shared/data/sst2/dev.tsv`."""
    validation_mismatched_file: str | None = None
    """MNLI only: local mismatched validation file (GLUE `dev_mismatched.tsv`)."""
    text_columns: list[str] | None = None
    """Your file's text column(s) when they are not named like the task's (e.g. `[review]` for
    sst2's `sentence`, or two names for a sentence-pair task); null uses the task's names."""
    label_column: str | None = None
    """Your file's label column when it is not named like the task's (`label`, `ner_tags`)."""
    max_length: int = 128
    """Truncate inputs to this many tokens (capped at the tokenizer's model_max_length). For QA it
    is the window length (384 is usual)."""
    doc_stride: int = 128
    """QA only: tokens shared by consecutive windows of a long context; must be < max_length."""
    max_answer_length: int = 30
    """QA only: longest answer, in tokens, that post-processing may predict."""
    n_best: int = 20
    """QA only: how many top start and end logits per window are paired in post-processing."""
    max_train_examples: int | None = None
    """Keep only the first N training examples (quick runs and tests); null keeps all."""
    max_eval_examples: int | None = None
    """Keep only the first N examples of each validation split; null keeps all."""
    preprocessing_num_workers: int | None = None
    """Processes used to tokenize (datasets.map num_proc); null tokenizes in this process."""

    def validate(self) -> None:
        check(
            self.dataset_config is None or self.dataset_name is not None,
            "dataset_config",
            "is set but dataset_name is not; set both (e.g. nyu-mll/glue and sst2)",
        )
        for name in (
            "dataset_name",
            "dataset_config",
            "train_file",
            "validation_file",
            "validation_mismatched_file",
        ):
            value = getattr(self, name)
            check(value is None or bool(value.strip()), name, "must not be empty (use null)")
        if self.text_columns is not None:
            check(len(self.text_columns) > 0, "text_columns", "must name at least one column (or be null)")
            check(
                all(c.strip() for c in self.text_columns),
                "text_columns",
                f"has an empty name: {self.text_columns}",
            )
            check(
                len(set(self.text_columns)) == len(self.text_columns),
                "text_columns",
                f"has duplicates: {self.text_columns}",
            )
        if self.label_column is not None:
            check(bool(self.label_column.strip()), "label_column", "must not be empty (use null)")
        for name in ("max_length", "doc_stride", "max_answer_length", "n_best"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("max_train_examples", "max_eval_examples", "preprocessing_num_workers"):
            value = getattr(self, name)
            check(value is None or value >= 1, name, f"must be >= 1 (or null), got {value}")


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
    """hfpipe.tasks.metrics modules computed on the validation split(s)."""
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
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise RecipeError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}", key="task")
    return TASKS[key]


# --------------------------------------------------------------------------------------------------
# Tokenization.


def preprocess(
    spec: TaskSpec, dataset_dict: datasets.DatasetDict, tokenizer: Any, args: TaskDataArgs
) -> datasets.DatasetDict:
    """Tokenize every split for `spec.kind`, without padding (the loop pads each batch dynamically).

    - sequence tasks: `tokenizer(text[, text_pair], truncation=True, max_length)`, `labels` int
      (float32 for regression).
    - token classification: words with `is_split_into_words=True`; `labels` holds the word's tag on
      its first sub-token and -100 on the others and on special tokens.
    - QA: "train" becomes windows with start/end positions; other splits become windows with
      `example_id` and `offset_mapping` for `postprocess_qa_predictions` (drop
      `QA_EVAL_META_COLUMNS` before collating).
    Every split gets `lengths` (tokens per row) for length-grouped batching. Original columns are
    removed. Needs a fast (Rust `tokenizers`) tokenizer: word_ids and offsets come from it.
    """
    import datasets

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"task {spec.name} needs a fast tokenizer (tokenizers-backed), got {type(tokenizer).__name__}"
        )
    max_length = min(
        args.max_length, getattr(tokenizer, "model_max_length", args.max_length) or args.max_length
    )
    if spec.kind == "question_answering" and args.doc_stride >= max_length:
        raise RecipeError(
            f"must be < data.max_length ({max_length}), got {args.doc_stride}", key="data.doc_stride"
        )
    out = datasets.DatasetDict()
    for split, ds in dataset_dict.items():
        if spec.kind == "question_answering":
            function = prepare_qa_train_features if split == "train" else prepare_qa_eval_features
            kwargs = {"tokenizer": tokenizer, "max_length": max_length, "doc_stride": args.doc_stride}
        else:
            function = (
                _encode_token_classification if spec.kind == "token_classification" else _encode_sequences
            )
            kwargs = {"spec": spec, "tokenizer": tokenizer, "max_length": max_length}
        out[split] = ds.map(
            function,
            batched=True,
            fn_kwargs=kwargs,
            remove_columns=ds.column_names,
            num_proc=args.preprocessing_num_workers,
            desc=f"Tokenizing {spec.name} {split}",
        )
    return out


def _encode_sequences(
    batch: dict[str, list], spec: TaskSpec, tokenizer: Any, max_length: int
) -> dict[str, list]:
    texts = [batch[column] for column in spec.text_columns]
    encoding = tokenizer(*texts, truncation=True, max_length=max_length)
    labels = batch[spec.label_column]
    encoding["labels"] = [float(y) for y in labels] if spec.kind == "regression" else list(labels)
    encoding["lengths"] = [len(ids) for ids in encoding["input_ids"]]
    return dict(encoding)


def _encode_token_classification(
    batch: dict[str, list], spec: TaskSpec, tokenizer: Any, max_length: int
) -> dict[str, list]:
    words = batch[spec.text_columns[0]]
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    encoding["labels"] = [
        align_labels_with_words(encoding.word_ids(i), tags) for i, tags in enumerate(batch[spec.label_column])
    ]
    encoding["lengths"] = [len(ids) for ids in encoding["input_ids"]]
    return dict(encoding)


def align_labels_with_words(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Per-token labels: the word's label on its first sub-token, -100 elsewhere (ignored by the loss).

    `word_ids` is `encoding.word_ids(i)`: the word index of each token, None for special tokens.
    Labelling only the first sub-token keeps one prediction per word, which is what seqeval scores.
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(-100 if word is None or word == previous else int(word_labels[word]))
        previous = word
    return labels


# --------------------------------------------------------------------------------------------------
# Metrics.


@functools.cache
def _metric(name: str):
    from hfpipe.tasks import metrics

    return metrics.load(name)


_RENAME = {"pearsonr": "pearson"}
"""hfpipe.tasks.metrics result key -> our key, where papers name it differently."""


def compute_task_metrics(
    spec: TaskSpec, predictions: Any, references: Any, split: str = "validation"
) -> dict[str, float]:
    """The task's metrics on one evaluation split.

    predictions / references by kind:
    - sequence_classification: logits (N, C) (argmaxed) or class ids (N,); references ids (N,).
    - regression: scores (N,) or (N, 1); references floats (N,).
    - token_classification: logits (N, T, C) or ids (N, T), padded or ragged; references label ids
      (N, T) with -100 on ignored tokens (as `preprocess` makes them). Only positions whose reference is
      not -100 are scored; ids become tag names for seqeval (entity-level f1/precision/recall, and
      token accuracy).
    - question_answering: `{id: answer text}` (from `postprocess_qa_predictions`) or the Hub squad
      format `[{"id", "prediction_text"}]`; references are the raw validation examples (rows with
      `id` and `answers`, e.g. the `datasets.Dataset`).
    Keys get a suffix for other splits: MNLI's `validation_mismatched` gives `accuracy_mismatched`.
    """
    if spec.kind == "question_answering":
        scores = _squad_scores(predictions, references)
    elif spec.kind == "token_classification":
        scores = _seqeval_scores(spec, predictions, references)
    else:
        if spec.kind == "regression":
            predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
        else:
            predictions = np.asarray(predictions)
            predictions = predictions.argmax(-1) if predictions.ndim == 2 else predictions.astype(np.int64)
        references = np.asarray(references).reshape(-1)
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        scores = {}
        for name in spec.metrics:
            result = _metric(name).compute(predictions=predictions.tolist(), references=references.tolist())
            scores.update({_RENAME.get(k, k): float(v) for k, v in result.items()})
    suffix = "" if split == "validation" else "_" + split.removeprefix("validation_")
    return {key + suffix: value for key, value in scores.items()}


def _seqeval_scores(spec: TaskSpec, predictions: Any, references: Any) -> dict[str, float]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction rows for {len(references)} reference rows")
    tags_pred, tags_true = [], []
    for pred_row, ref_row in zip(predictions, references):
        pred_row, ref_row = np.asarray(pred_row), np.asarray(ref_row)
        if pred_row.ndim == 2:
            pred_row = pred_row.argmax(-1)
        keep = np.flatnonzero(ref_row != -100)
        tags_true.append([spec.label_names[i] for i in ref_row[keep]])
        tags_pred.append([spec.label_names[i] for i in pred_row[keep]])
    result = _metric("seqeval").compute(predictions=tags_pred, references=tags_true)
    return {key: float(result[f"overall_{key}"]) for key in ("f1", "precision", "recall", "accuracy")}


def _squad_scores(
    predictions: Mapping[str, str] | Sequence[Mapping[str, str]], references: Any
) -> dict[str, float]:
    if not isinstance(predictions, Mapping):  # the Hub squad format: [{"id", "prediction_text"}, ...]
        predictions = {row["id"]: row["prediction_text"] for row in predictions}
    refs = [{"id": row["id"], "answers": {"text": list(row["answers"]["text"]),
                                          "answer_start": list(row["answers"]["answer_start"])}}
            for row in references]  # fmt: skip
    missing = [row["id"] for row in refs if row["id"] not in predictions]
    if missing:
        warnings.warn(
            f"squad: {len(missing)} question(s) have no prediction and score 0, e.g. {missing[0]!r}",
            stacklevel=3,
        )
    # One prediction per reference, in reference order (evaluate needs equal counts; extra ids are ignored).
    preds = [{"id": row["id"], "prediction_text": predictions.get(row["id"], "")} for row in refs]
    result = _metric("squad").compute(predictions=preds, references=refs)
    return {"exact_match": float(result["exact_match"]), "f1": float(result["f1"])}


def main_metric_value(spec: TaskSpec, metrics: Mapping[str, float]) -> float:
    """The number that decides the best checkpoint (higher is better), e.g. MNLI matched accuracy."""
    if spec.main_metric not in metrics:
        raise KeyError(
            f"task {spec.name}: main metric {spec.main_metric!r} missing; got {', '.join(metrics)}"
        )
    return float(metrics[spec.main_metric])
