"""The fine-tuning recipe: `FinetuneRecipe`, its `data:` section (`TaskDataArgs`) and `peft:` (`PeftArgs`).

    hfpipe finetune recipes/finetune/glue/sst2.yaml model.name_or_path=runs/pretrain

    from hfpipe.config import FinetuneRecipe, load_recipe
    recipe = load_recipe("recipes/finetune/glue/sst2.yaml", FinetuneRecipe, ["train.lr=3e-5"])

The code that uses them: `hfpipe.tasks` (the task table, data files, preprocessing),
`hfpipe.train.finetune` (the loop) and `hfpipe.train.lora` (LoRA through the peft library).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .recipe import check
from .sections import EvalArgs, HubArgs, ModelArgs, TrackingArgs, TrainArgs

TASK_NAMES = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "pydocs", "conll2003", "squad")
"""The names a recipe's `task:` may take: the keys of hfpipe.tasks.spec.TASKS (a test keeps them equal).
Named here, so the recipe layer checks a name without importing the task table (config imports nothing
above it)."""


def task_key(name: str) -> str:
    """A task name as the task table keys it: case, `-` and `_` ignored (`SST-2` finds sst2)."""
    return name.strip().lower().replace("-", "").replace("_", "")


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


@dataclass
class PeftArgs:
    """Parameter-efficient fine-tuning through the peft library (the `peft:` section of a finetune recipe)."""

    method: Literal["none", "lora"] = "none"
    """`none` trains every weight (full fine-tuning); `lora` freezes the pretrained weights and trains
    low-rank adapters on target_modules plus, in full, modules_to_save (LoRA, Hu et al. 2021). LoRA
    needs the peft library: `pip install peft`."""
    r: int = 8
    """LoRA rank: each adapted Linear W (out x in) becomes W + (alpha / r) B A, with B (out x r) and
    A (r x in) trained and W frozen."""
    alpha: float = 16
    """LoRA scaling: the low-rank update B A is multiplied by alpha / r (alpha / sqrt(r) with use_rslora)."""
    dropout: float = 0.1
    """Dropout on the input of each adapter, during training only."""
    target_modules: list[str] | None = None
    """Linear modules that get adapters, by name or name suffix (`qkv` adapts every layer's
    `mixer.qkv`). null adapts the attention projections, `[qkv, out_proj]`; add `up` and `down` for
    the MLP. A name that matches no Linear module is an error that lists the names there are."""
    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter. null: the task head, which starts untrained
    (`pooler` and `classifier` for sequence classification and regression, `classifier` for token
    classification, `qa_outputs` for question answering)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Biases that train too: none, all of them, or those of the adapted modules (peft's `bias`)."""
    use_rslora: bool = False
    """Rank-stabilized LoRA: scale by alpha / sqrt(r) instead of alpha / r (Kalajdzievski, 2023)."""
    merge: bool = True
    """Write final/ as the best adapter merged into the base weights (merge_and_unload): a plain
    hfpipe folder that loads without peft. adapter/ (for `PeftModel.from_pretrained(base, adapter)`)
    is written either way; false writes no final/."""

    def validate(self) -> None:
        check(self.r >= 1, "r", f"must be >= 1, got {self.r}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        for name in ("target_modules", "modules_to_save"):
            names = getattr(self, name)
            if names is None:
                continue
            check(len(names) > 0, name, "must name at least one module (or be null for the default)")
            check(all(n.strip() for n in names), name, f"has an empty name: {names}")
            check(len(set(names)) == len(names), name, f"has duplicates: {names}")


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
    peft: PeftArgs = field(default_factory=PeftArgs)
    """Parameter-efficient fine-tuning (LoRA) through the peft library; full fine-tuning by default."""

    def validate(self) -> None:
        check(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(task_key(self.task) in TASK_NAMES, "task",
              f"unknown task {self.task!r}; valid tasks: {', '.join(TASK_NAMES)}")
        check(
            self.model.name_or_path is not None,
            "model.name_or_path",
            "required for fine-tuning: a pretrained hfpipe folder, a Hub repo id or a BERT checkpoint folder",
        )
        lora = self.peft.method == "lora"
        check(not (lora and not self.peft.merge and self.hub.push_to_hub), "peft.merge",
              "must be true with hub.push_to_hub: the push uploads final/")
        check(not (lora and self.hub.push_checkpoints), "hub.push_checkpoints",
              "not with peft.method=lora: its checkpoints hold an adapter, not a model folder")
