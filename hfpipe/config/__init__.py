"""Recipes: the run configuration, validated YAML (the architecture is `HfpipeConfig`, in `hfpipe.model`).

    hfpipe validate recipes/pretrain/tiny.yaml train.lr=1e-4 --print
    hfpipe validate --help-keys finetune

    from hfpipe.config import PretrainRecipe, load_recipe, save_recipe
    recipe = load_recipe("recipes/pretrain/tiny.yaml", PretrainRecipe, ["train.max_steps=20"])

The bottom layer of hfpipe: it imports nothing else from hfpipe (two validators import the model
presets and the task table when they run). `recipe.py` is the machinery (pydantic type checks,
overrides, errors, saving, help), `yaml12.py` the YAML dialect; the schema is `sections.py` (shared
sections), `pretrain_recipe.py` and `finetune_recipe.py`.
"""

from .finetune_recipe import FinetuneRecipe, TaskDataArgs
from .pretrain_recipe import CleanArgs, DataArgs, MaskingArgs, PretrainRecipe, SourceArgs, TokenizerArgs
from .recipe import (
    RecipeError,
    check,
    deep_merge,
    field_help,
    format_help,
    from_dict,
    is_secret,
    load_recipe,
    parse_overrides,
    save_recipe,
    to_dict,
    to_yaml,
)
from .sections import EvalArgs, HubArgs, ModelArgs, TrackingArgs, TrainArgs

RECIPE_CLASSES: dict[str, type] = {"pretrain": PretrainRecipe, "finetune": FinetuneRecipe}
"""Recipe kind (the CLI subcommand) -> recipe class."""

__all__ = [
    "RECIPE_CLASSES",
    "CleanArgs",
    "DataArgs",
    "EvalArgs",
    "FinetuneRecipe",
    "HubArgs",
    "MaskingArgs",
    "ModelArgs",
    "PretrainRecipe",
    "RecipeError",
    "SourceArgs",
    "TaskDataArgs",
    "TokenizerArgs",
    "TrackingArgs",
    "TrainArgs",
    "check",
    "deep_merge",
    "field_help",
    "format_help",
    "from_dict",
    "is_secret",
    "load_recipe",
    "parse_overrides",
    "save_recipe",
    "to_dict",
    "to_yaml",
]
