"""The fine-tuning recipe: `FinetuneRecipe` and its `data:` section, `TaskDataArgs`.

    hfpipe finetune recipes/finetune/glue/sst2.yaml model.name_or_path=runs/pretrain

    from hfpipe.config import FinetuneRecipe, load_recipe
    recipe = load_recipe("recipes/finetune/glue/sst2.yaml", FinetuneRecipe, ["train.lr=3e-5"])

The code that uses them: `hfpipe.tasks` (the task table, data files, preprocessing) and
`hfpipe.train.finetune` (the loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .recipe import check
from .sections import EvalArgs, HubArgs, ModelArgs, TrackingArgs, TrainArgs


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
    for NER, SQuAD JSON for QA; see `hfpipe/tasks/files.py`."""
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


@dataclass(kw_only=True)
class FinetuneRecipe:
    """Fine-tuning on a task (`hfpipe finetune RECIPE.yaml [section.key=value ...]`).

    Recipes usually set `train.lr: 2e-5`, `train.num_epochs: 3` and `train.max_steps: null`.
    """

    output_dir: str = "runs/finetune"
    """Folder for checkpoints, logs, the resolved recipe, predictions and the final model."""
    seed: int = 42
    """Seed for the head init, data order and dropout."""
    task: str
    """Name of a task in hfpipe's task table, e.g. `sst2`, `cola`, `conll2003`, `squad`."""
    model: ModelArgs = field(default_factory=ModelArgs)
    """The pretrained model to start from; model.name_or_path is required."""
    data: TaskDataArgs = field(default_factory=TaskDataArgs)
    """Where the task's data comes from and how it is tokenized."""
    train: TrainArgs = field(default_factory=TrainArgs)
    """Optimization, schedule, budget, precision and checkpointing."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation during and after training."""
    hub: HubArgs = field(default_factory=HubArgs)
    """Pushing the result to the Hugging Face Hub."""
    tracking: TrackingArgs = field(default_factory=TrackingArgs)
    """Experiment tracking and plots."""

    def validate(self) -> None:
        from ..tasks.spec import get_task  # lazy: the task table pulls in numpy and datasets

        check(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        get_task(self.task)  # RecipeError naming the valid tasks if it is not in the task table
        check(
            self.model.name_or_path is not None,
            "model.name_or_path",
            "required for fine-tuning: a pretrained hfpipe folder, a Hub repo id or a BERT checkpoint folder",
        )
