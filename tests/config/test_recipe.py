"""Tests for hfpipe/config: precedence, error messages, YAML handling, round trip, secrets, help.

.venv/bin/pytest tests/config/test_recipe.py -q
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from hfpipe.config import (
    EvalArgs,
    HubArgs,
    ModelArgs,
    RecipeError,
    TrackingArgs,
    TrainArgs,
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
)


@dataclass
class Source:
    """One data source."""

    path: str
    """Where the text lives."""
    weight: float = 1.0
    """Sampling weight."""

    def validate(self) -> None:
        check(self.weight > 0, "weight", f"must be > 0, got {self.weight}")


@dataclass
class Secrets:
    token: str | None = None
    hub_token: str | None = None
    password: str = ""
    pad_token: str = "[PAD]"
    max_tokens: int = 5


@dataclass(kw_only=True)
class Recipe:
    """A test-local top-level recipe mixing our sections with list/dict/Literal fields."""

    output_dir: str = "runs/test"
    """Where outputs go."""
    task: Literal["sst2", "cola"]
    """Required task name."""
    sources: list[Source] = field(default_factory=list)
    """Data sources."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form mapping."""
    model: ModelArgs = field(default_factory=ModelArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    hub: HubArgs = field(default_factory=HubArgs)
    tracking: TrackingArgs = field(default_factory=TrackingArgs)
    secrets: Secrets = field(default_factory=Secrets)


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(data: dict, cls: type = Recipe) -> str:
    with pytest.raises(RecipeError) as info:
        from_dict(cls, data)
    return str(info.value)


# --- precedence -------------------------------------------------------------------------------


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = write(
        tmp_path,
        "task: sst2\ntrain:\n  lr: 1e-3\n  batch_size: 16\nmodel:\n  config_overrides: {num_hidden_layers: 2, num_attention_heads: 2}\n",
    )
    recipe = load_recipe(
        path, Recipe, ["train.lr=1e-4", "model.config_overrides.num_attention_heads=8", "hub.private=true"]
    )
    assert recipe.train.lr == 1e-4  # override beats YAML
    assert recipe.train.batch_size == 16  # YAML beats default
    assert recipe.train.warmup_fraction == 0.06  # default kept
    assert recipe.model.config_overrides == {
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
    }  # overrides deep-merge into mappings
    assert recipe.hub.private is True


def test_parse_overrides_values_are_yaml():
    got = parse_overrides(["a.b=3", "a.c=1e-4", "a.d=true", "e=null", "f=[1, 2]", "g=main", "h=", "a.b=4"])
    assert got == {"a": {"b": 4, "c": 1e-4, "d": True}, "e": None, "f": [1, 2], "g": "main", "h": None}
    assert isinstance(got["a"]["c"], float)
    assert deep_merge({"a": {"x": 1, "b": 0}, "f": [9]}, got)["a"] == {"x": 1, "b": 4, "c": 1e-4, "d": True}


def test_yaml_12_scalars(tmp_path):
    text = "task: sst2\ntrain:\n  lr: 5e-5\n  mixed_precision: no\n  max_tokens: 2e6\n"
    recipe = load_recipe(write(tmp_path, text), Recipe)
    assert recipe.train.lr == 5e-5 and isinstance(recipe.train.lr, float)
    assert recipe.train.mixed_precision == "no"  # YAML 1.1 would read False
    assert recipe.train.max_tokens == 2_000_000 and isinstance(recipe.train.max_tokens, int)


# --- error messages ---------------------------------------------------------------------------


def test_unknown_key_names_full_key_and_suggestion():
    msg = error_of({"task": "sst2", "train": {"learning_rate": 1e-4}})
    assert msg.startswith(
        "unknown key 'train.learning_rate'; did you mean 'train.lr'? valid keys in 'train': "
    )
    assert "gradient_accumulation_steps" in msg
    msg = error_of({"task": "sst2", "train": {"max_step": 5}})
    assert "did you mean 'train.max_steps'?" in msg
    assert error_of({"task": "sst2", "trian": {}}).startswith("unknown key 'trian'; did you mean 'train'?")


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"train": {"max_steps": "ten"}}, "train.max_steps: Input should be a valid integer (got 'ten')"),
        ({"train": {"batch_size": True}}, "train.batch_size: Input should be a valid integer (got True)"),
        ({"train": {"lr": "0.1"}}, "train.lr: Input should be a valid number (got '0.1')"),
        ({"train": {"lr": None}}, "train.lr: Input should be a valid number (got null)"),
        ({"train": {"batch_size": 2.5}}, "train.batch_size: Input should be a valid integer (got 2.5)"),
        ({"train": {"compile": 1}}, "train.compile: Input should be a valid boolean (got 1)"),
        (
            {"train": {"adam_betas": [0.9, "x"]}},
            "train.adam_betas[1]: Input should be a valid number (got 'x')",
        ),
        ({"train": {"adam_betas": 0.9}}, "train.adam_betas: Input should be a valid array (got 0.9)"),
        ({"model": {"config_overrides": [1]}}, "model.config_overrides: Input should be an object (got [1])"),
        (
            {"sources": [{"path": "a"}, {"path": 3}]},
            "sources[1].path: Input should be a valid string (got 3)",
        ),
        ({"hub": "yes"}, "hub: Input should be an object (got 'yes')"),
        (
            {"train": {"max_tokens": float("inf")}},
            "train.max_tokens: Input should be a valid integer (got inf)",
        ),
    ],
)
def test_wrong_type_names_key_type_and_value(data, expected):
    assert error_of({"task": "sst2", **data}) == expected


def test_every_problem_is_one_line_with_its_origin(tmp_path):
    path = write(tmp_path, "task: sst2\ntrain:\n  lr: '0.1'\n  max_step: 5\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, Recipe, ["train.max_steps=ten", "hub.push_to_hub=1"])
    assert str(info.value).splitlines() == [
        "override 'train.max_steps=ten': train.max_steps: Input should be a valid integer (got 'ten')",
        f"{path}: train.lr: Input should be a valid number (got '0.1')",
        f"{path}: unknown key 'train.max_step'; did you mean 'train.max_steps'? valid keys in 'train': "
        + ", ".join(f.name for f in dataclasses.fields(TrainArgs)),
        "override 'hub.push_to_hub=1': hub.push_to_hub: Input should be a valid boolean (got 1)",
    ]
    assert info.value.key == "train.max_steps" and len(info.value.more) == 3
    with pytest.raises(RecipeError) as info:  # an override of a whole list owns the keys in it
        load_recipe(write(tmp_path, "task: sst2\n", "ok.yaml"), Recipe, ["sources=[{path: 3}]"])
    assert str(info.value).splitlines() == [
        "override 'sources=[{path: 3}]': sources[0].path: Input should be a valid string (got 3)"
    ]


def test_int_is_accepted_for_float_and_null_only_for_optional():
    recipe = from_dict(Recipe, {"task": "sst2", "train": {"lr": 1, "max_steps": None, "max_minutes": 2}})
    assert recipe.train.lr == 1.0 and type(recipe.train.lr) is float
    assert recipe.train.max_steps is None and recipe.train.max_minutes == 2.0


def test_literal_lists_allowed_values():
    msg = error_of({"task": "sst2", "model": {"attn_implementation": "spda"}})
    assert msg == (
        "model.attn_implementation: Input should be 'sdpa', 'eager', 'flex_attention' or 'flash_attention_2' "
        "(got 'spda'); did you mean 'sdpa'?"
    )
    assert error_of({"task": "sst2", "tracking": {"report_to": ["mlflow"]}}) == (
        "tracking.report_to[0]: Input should be 'tensorboard', 'wandb' or 'trackio' (got 'mlflow')"
    )


def test_missing_required_key():
    assert error_of({}) == "task: Field required"
    assert error_of({"task": "sst2", "sources": [{"weight": 2}]}) == "sources[0].path: Field required"


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"train": {"lr": -1}}, "train.lr: must be > 0, got -1.0"),
        (
            {"train": {"gradient_accumulation_steps": 0}},
            "train.gradient_accumulation_steps: must be >= 1, got 0",
        ),
        (
            {"train": {"max_steps": None}},
            "train: no training budget: set at least one of max_steps, max_tokens",
        ),
        ({"hub": {"push_to_hub": True}}, "hub.repo_id: required when hub.push_to_hub"),
        ({"sources": [{"path": "a", "weight": 0}]}, "sources[0].weight: must be > 0, got 0.0"),
        ({"eval": {"batch_size": 0}}, "eval.batch_size: must be >= 1, got 0"),
        (
            {"model": {"preset": "bert-mni"}},
            "model.preset: unknown preset 'bert-mni'; did you mean 'bert-mini'?",
        ),
        (
            {"model": {"config_overrides": {"num_layers": 2}}},
            "model.config_overrides.num_layers: not a field of HfpipeConfig; did you mean 'num_hidden_layers'?",
        ),
        (
            {"model": {"config_overrides": {"num_attention_heads": 3}}},
            "model.config_overrides: HfpipeConfig.hidden_size",
        ),
    ],
)
def test_validate_hooks_report_dotted_key(data, expected):
    assert error_of({"task": "sst2", **data}).startswith(expected)


@pytest.mark.parametrize("item", ["train.lr", "--train.lr=1", "=3", "train..lr=1", "train.lr=[1,"])
def test_bad_override_syntax(item):
    with pytest.raises(RecipeError, match="override") as info:
        parse_overrides([item])
    assert repr(item) in str(info.value)


def test_override_errors_are_reported_like_yaml_errors(tmp_path):
    path = write(tmp_path, "task: sst2\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, Recipe, ["train.max_steps=ten"])
    assert (
        str(info.value)
        == "override 'train.max_steps=ten': train.max_steps: Input should be a valid integer (got 'ten')"
    )
    with pytest.raises(
        RecipeError,
        match=r"^override 'train.learning_rate=1': unknown key 'train.learning_rate'; did you mean 'train.lr'",
    ):
        load_recipe(path, Recipe, ["train.learning_rate=1"])
    bad_yaml = write(tmp_path, "task: sst2\ntrain:\n  max_steps: ten\n", "bad.yaml")
    expected = rf"^{bad_yaml}: train.max_steps: Input should be a valid integer \(got 'ten'\)$"
    with pytest.raises(RecipeError, match=expected):
        load_recipe(bad_yaml, Recipe)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe file not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml", Recipe)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "task: sst2\ntrain:\n  lr: 1e-4\n  batch_size: [16\n")
    with pytest.raises(RecipeError, match=rf"^{path}, line 5, column 1: invalid YAML: "):
        load_recipe(path, Recipe)
    path = write(tmp_path, "task: sst2\ntrain:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(
        RecipeError, match=r"line 4, column 3: invalid YAML: duplicate key 'lr' \(first set on line 3\)"
    ):
        load_recipe(path, Recipe)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(RecipeError, match="the top level must be a mapping of keys .* got list"):
        load_recipe(write(tmp_path, "- a\n- b\n"), Recipe)


# --- saving -----------------------------------------------------------------------------------


def test_save_load_round_trip_writes_every_field(tmp_path):
    data = {"task": "cola", "sources": [{"path": "a.txt", "weight": 2}], "extra": {"k": [1, "x"]}}
    recipe = load_recipe(write(tmp_path, yaml.safe_dump(data)), Recipe, ["train.lr=3e-4", "train.mixed_precision=no"])
    # A string that YAML 1.2 would read as a float must be quoted when saved.
    recipe = dataclasses.replace(recipe, hub=HubArgs(revision="1e4"))
    path = save_recipe(recipe, tmp_path / "out" / "recipe.yaml")
    again = load_recipe(path, Recipe)
    assert again == recipe
    assert again.hub.revision == "1e4" and again.train.lr == 3e-4 and again.sources[0].weight == 2.0
    saved = yaml.safe_load(path.read_text())
    assert saved["train"]["warmup_fraction"] == 0.06  # defaults are written too
    assert set(saved["train"]) == {f.name for f in dataclasses.fields(TrainArgs)}
    assert saved["train"]["mixed_precision"] == "no"  # quoted, so even a YAML 1.1 reader gets the string
    assert saved["train"]["max_tokens"] is None and "max_tokens: null" in path.read_text()  # null stays null


def test_secrets_are_never_written(tmp_path):
    recipe = from_dict(
        Recipe,
        {
            "task": "sst2",
            "secrets": {
                "token": "hf_SECRET1",
                "hub_token": "hf_SECRET2",
                "password": "SECRET3",
                "max_tokens": 7,
            },
            "extra": {"api_key": "SECRET4", "ok": 1},
        },
    )
    text = save_recipe(recipe, tmp_path / "r.yaml").read_text()
    assert "SECRET" not in text
    assert load_recipe(tmp_path / "r.yaml", Recipe).secrets == Secrets(max_tokens=7)  # null: the default
    saved = to_dict(recipe)
    assert saved["secrets"] == {
        "token": None,
        "hub_token": None,
        "password": None,
        "pad_token": "[PAD]",
        "max_tokens": 7,
    }
    assert saved["extra"] == {"api_key": None, "ok": 1}
    assert [is_secret(n) for n in ("token", "HF_TOKEN", "mask_token", "max_tokens", "tokenizer")] == [
        True,
        True,
        False,
        False,
        False,
    ]


# --- help ---------------------------------------------------------------------------------------


def test_field_help_reads_attribute_docstrings():
    help_ = field_help(Recipe)
    assert help_["train.lr"] == (
        "float",
        "0.0005",
        "Peak learning rate (AdamW), reached at the end of warmup.",
    )
    assert help_["task"] == ("'sst2' | 'cola'", "required", "Required task name.")
    assert help_["sources[].path"].doc == "Where the text lives."
    assert help_["train.max_steps"].type == "int | null" and help_["train.max_steps"].default == "1000"
    assert help_["tracking.report_to"].default == "[]"
    assert help_["train"].default == "(section)"
    undocumented = [k for k, h in field_help(TrainArgs).items() if not h.doc]
    assert undocumented == []
    text = format_help(Recipe)
    assert "train.lr: float = 0.0005\n    Peak learning rate (AdamW), reached at the end of warmup.\n" in text
    assert "## train: Optimization, schedule, budget, precision and checkpointing." in text


# --- the real top-level recipes (hfpipe.config) ---------------------------------------------------


def _recipe_types():
    try:
        import hfpipe.config as recipe_types
    except ImportError as e:
        pytest.skip(f"hfpipe.config does not import yet: {e}")
    return recipe_types


def test_top_level_recipes_compose():
    rt = _recipe_types()
    with pytest.raises(RecipeError, match="^task: Field required$"):
        from_dict(rt.FinetuneRecipe, {"model": {"name_or_path": "x"}})
    with pytest.raises(RecipeError, match="^model.name_or_path: required for fine-tuning"):
        from_dict(rt.FinetuneRecipe, {"task": "sst2"})
    with pytest.raises(RecipeError, match="^task: unknown task 'sst3'"):
        from_dict(rt.FinetuneRecipe, {"task": "sst3", "model": {"name_or_path": "x"}})
    with pytest.raises(
        RecipeError, match="^unknown key 'masking.mlm_prob'; did you mean 'masking.mlm_probability'"
    ):
        from_dict(rt.PretrainRecipe, {"masking": {"mlm_prob": 0.3}})
    for cls in rt.RECIPE_CLASSES.values():
        keys = field_help(cls)
        assert {"output_dir", "seed", "model.preset", "train.lr", "hub.repo_id", "data"} <= set(keys)
        assert all(help_.doc for help_ in keys.values()), [k for k, h in keys.items() if not h.doc]


RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHIPPED = [
    (kind, path)
    for kind, folders in (("pretrain", ("pretrain", "ablations")), ("finetune", ("finetune",)))
    for folder in folders
    for path in sorted((RECIPES / folder).rglob("*.yaml"))
]


@pytest.mark.parametrize("kind, path", SHIPPED, ids=[p.relative_to(RECIPES).as_posix() for _, p in SHIPPED])
def test_every_shipped_recipe_validates_and_round_trips(kind, path, tmp_path):
    cls = _recipe_types().RECIPE_CLASSES[kind]
    recipe = load_recipe(path, cls)
    assert load_recipe(save_recipe(recipe, tmp_path / "resolved.yaml"), cls) == recipe
