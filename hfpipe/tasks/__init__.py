"""Fine-tuning tasks, in the order the data flows: task table -> examples -> features -> scores.

    from hfpipe.config import TaskDataArgs                    # the recipe's `data:` section
    from hfpipe.tasks import compute_task_metrics, get_task, load_task_data, preprocess
    spec = get_task("sst2")                                   # spec.py: the task table
    args = TaskDataArgs(train_file="../shared/data/sst2/train.tsv", validation_file=".../dev.tsv")
    raw = load_task_data(spec, args)                          # files.py: DatasetDict, Hub columns, int labels
    features = preprocess(spec, raw, tokenizer, args)         # preprocess.py (+ qa.py for SQuAD windows)
    ...                                                       # the loop (hfpipe/train/finetune.py) predicts
    metrics = compute_task_metrics(spec, logits, features["validation"]["labels"])  # metrics.py
    main_metric_value(spec, metrics)                          # the number that keeps the best checkpoint

No cycles: spec.py imports none of its siblings; files, preprocess and metrics read the table, and
preprocess cuts SQuAD windows with qa.py.
"""

from .files import TaskDataError, load_task_data, parse_label, read_task_file
from .metrics import compute_task_metrics
from .preprocess import align_labels_with_words, preprocess
from .qa import QA_EVAL_META_COLUMNS, postprocess_qa_predictions
from .spec import CONLL_TAGS, TASKS, TaskSpec, get_task, main_metric_value

__all__ = [
    "CONLL_TAGS",
    "QA_EVAL_META_COLUMNS",
    "TASKS",
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
