"""The two top-level recipes, composed from the sections each module owns.

    hfpipe pretrain recipes/pretrain/tiny.yaml train.max_steps=20
    hfpipe finetune recipes/finetune/sst2.yaml model.name_or_path=runs/pretrain

    from hfpipe.config.recipe import load_recipe
    from hfpipe.config.recipe_types import PretrainRecipe
    recipe = load_recipe("recipes/pretrain/tiny.yaml", PretrainRecipe, ["train.lr=1e-4"])

Why a separate file: `data.py`, `tokenizer.py`, `masking.py` and `tasks.py` define their own sections
and import `RecipeError` from `recipe.py`; composing the top-level recipes here, instead of in
`recipe.py`, keeps the import graph one-way (recipe.py <- section modules <- recipe_types.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.masking import MaskingArgs
from ..data.sources import DataArgs
from ..data.tokenizer import TokenizerArgs
from ..tasks.spec import TaskDataArgs, get_task
from .recipe import EvalArgs, HubArgs, ModelArgs, TrackingArgs, TrainArgs, check


@dataclass(kw_only=True)
class PretrainRecipe:
    """Masked-language-model pretraining (`hfpipe pretrain RECIPE.yaml [section.key=value ...]`)."""

    output_dir: str = "runs/pretrain"
    """Folder for checkpoints, logs, the resolved recipe and the final model."""
    seed: int = 42
    """Seed for weight init, data order and masking (the run is reproducible from it)."""
    model: ModelArgs = field(default_factory=ModelArgs)
    """The model: a fresh HfpipeConfig preset, or existing weights to continue from."""
    tokenizer: TokenizerArgs = field(default_factory=TokenizerArgs)
    """The tokenizer: trained on the corpus or loaded."""
    data: DataArgs = field(default_factory=DataArgs)
    """The pretraining corpus: sources, tokenization and packing."""
    masking: MaskingArgs = field(default_factory=MaskingArgs)
    """How tokens are masked for the MLM objective."""
    train: TrainArgs = field(default_factory=TrainArgs)
    """Optimization, schedule, budget, precision and checkpointing."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation during and after training."""
    hub: HubArgs = field(default_factory=HubArgs)
    """Pushing the result to the Hugging Face Hub."""
    tracking: TrackingArgs = field(default_factory=TrackingArgs)
    """Experiment tracking and plots."""

    def validate(self) -> None:
        check(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


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
    """Name of a task in the task table (hfpipe/tasks.py), e.g. `sst2`, `cola`, `conll2003`, `squad`."""
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
        check(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        get_task(self.task)  # RecipeError naming the valid tasks if it is not in the task table
        check(
            self.model.name_or_path is not None,
            "model.name_or_path",
            "required for fine-tuning: a pretrained hfpipe folder, a Hub repo id or a BERT checkpoint folder",
        )


RECIPE_CLASSES: dict[str, type] = {"pretrain": PretrainRecipe, "finetune": FinetuneRecipe}
"""Recipe kind (the CLI subcommand) -> recipe class."""
