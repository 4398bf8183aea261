"""Recipes: YAML run files validated by typed dataclasses (litgpt / torchtune style).

A recipe describes a *run* (data, budget, schedule, hub); the *architecture* is `HfpipeConfig`.
Values are resolved in this order, later wins:

    dataclass defaults  <  YAML file  <  `section.key=value` command-line overrides

Usage::

    from hfpipe.config.recipe import load_recipe, save_recipe
    from hfpipe.config.recipe_types import PretrainRecipe

    recipe = load_recipe("recipes/pretrain/tiny.yaml", PretrainRecipe, ["train.lr=1e-4", "train.max_steps=20"])
    save_recipe(recipe, "runs/tiny/recipe.yaml")  # every field resolved, secrets written as null

Every section is a dataclass. The string literal under a field is its help text (shown by
`format_help`, i.e. `hfpipe validate --help-keys`). Choices are `typing.Literal` sets: a recipe names
an option, it never imports code (unlike torchtune's `_component_`). A section may define
`validate(self)`; raise `RecipeError(reason, key="field")` there and the error carries the full
dotted key (`train.lr: must be > 0, got -1.0`).

YAML is read with YAML 1.2 scalars: `1e-4` is a float (PyYAML's YAML 1.1 reads a string), and only
`true`/`false` are booleans (so `mixed_precision: no` stays the string "no"). Duplicate keys are errors.

This module defines the machinery and the sections it owns (model, train, eval, hub, tracking). The
data sections live beside their code (`data.py`, `tokenizer.py`, `masking.py`, `tasks.py`) and the
two top-level recipes are composed in `recipe_types.py`, so those modules can import `RecipeError`
from here without a circular import.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import yaml

T = TypeVar("T")


class RecipeError(ValueError):
    """A recipe key, value or file the user must fix. `key` is the dotted key when there is one."""

    def __init__(self, reason: str, *, key: str | None = None, source: str | None = None):
        self.reason, self.key, self.source = reason, key, source
        message = f"{key}: {reason}" if key else reason
        super().__init__(f"{source}: {message}" if source else message)


def check(condition: bool, key: str, reason: str) -> None:
    """Raise `RecipeError(reason, key=key)` unless `condition`; for use inside `validate()`."""
    if not condition:
        raise RecipeError(reason, key=key)


# ---------------------------------------------------------------------------------------------
# YAML with YAML 1.2 scalars (1e-4 is a float, yes/no/on/off are strings) and no duplicate keys.

_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and exponent floats, rejecting duplicate keys."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT_TAG, _EXP_FLOAT, list("-+0123456789"))


def _construct_map(loader: _Loader, node: yaml.MappingNode):
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} (first set on line {seen[key_node.value]})",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key_node.value] = key_node.start_mark.line + 1
    return loader.construct_yaml_map(node)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


class _Dumper(yaml.SafeDumper):
    """Quotes any string that YAML 1.1 *or* our 1.2 loader would read as another type."""


_Dumper.add_implicit_resolver(_FLOAT_TAG, _EXP_FLOAT, list("-+0123456789"))


def _represent_list(dumper: _Dumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (str, int, float, bool, type(None))) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _yaml_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(f"invalid YAML: {problem}", source=where) from None


# ---------------------------------------------------------------------------------------------
# dict -> dataclass, with type checks and errors that name the dotted key.


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build dataclass `cls` from a plain mapping, checking every key and value.

    Missing keys take the dataclass default; `where` is the dotted prefix used in error messages.
    Nested dataclasses, `list[...]`, `dict[str, ...]`, `Literal[...]` and `X | None` are supported.
    After construction the section's `validate()` (if any) runs.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        raise RecipeError(f"expected a mapping of keys, got {_show(data)}", key=where or None)
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            raise _unknown_key(str(name), list(fields), where)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(where, name)
        section = hints[name] if _is_dataclass_type(hints[name]) else None
        if name in data and data[name] is None and is_secret(name) and f.default is not dataclasses.MISSING:
            pass  # save_recipe writes secrets as null: read that back as the default
        elif name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif section is not None and f.default_factory in (section, dataclasses.MISSING):
            kwargs[name] = from_dict(section, {}, where=key)  # names missing keys inside the section
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing required key {key!r}")
    try:
        obj = cls(**kwargs)
    except RecipeError:
        raise
    except (ValueError, TypeError) as e:  # a __post_init__ check in someone's section
        raise RecipeError(str(e), key=where or None) from e
    _run_validate(obj, where)
    return obj


def _run_validate(obj: Any, where: str) -> None:
    validate = getattr(obj, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except RecipeError as e:
        if e.key is None or e.source is not None:
            raise
        raise RecipeError(e.reason, key=_join(where, e.key) or None) from None
    except ValueError as e:
        raise RecipeError(str(e), key=where or None) from e


_NONE = type(None)


def _convert(tp: Any, value: Any, key: str, nullable: bool = False) -> Any:
    """Return `value` checked (and lightly coerced: int -> float) against annotation `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not _NONE]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:
            return _convert(options[0], value, key, nullable=len(options) < len(args))
        for option in options:
            try:
                return _convert(option, value, key)
            except RecipeError:
                continue
        raise _mismatch(tp, value, key)
    if value is None:
        raise _mismatch(tp, value, key, nullable)
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return allowed
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        choices = ", ".join(repr(a) for a in args)
        raise RecipeError(f"expected one of {choices}, got {_show(value)}{hint}", key=key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _mismatch(tp, value, key, nullable)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise RecipeError(f"expected {len(args)} items, got {len(value)}: {value!r}", key=key)
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _mismatch(tp, value, key, nullable)
        key_tp, value_tp = args if args else (Any, Any)
        return {
            _convert(key_tp, k, f"{key} (key {k!r})"): _convert(value_tp, v, f"{key}.{k}")
            for k, v in value.items()
        }
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise RecipeError(f"expected a mapping (section {tp.__name__}), got {_show(value)}", key=key)
        return from_dict(tp, value, where=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # `max_tokens: 2e9`
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _mismatch(tp, value, key, nullable)


def _mismatch(tp: Any, value: Any, key: str, nullable: bool = False) -> RecipeError:
    tail = "; null is also accepted" if nullable else ""
    return RecipeError(f"expected {_type_name(tp)}, got {_show(value)}{tail}", key=key)


def _show(value: Any) -> str:
    return "null" if value is None else f"{value!r} ({type(value).__name__})"


# Names used by other trainers (HF TrainingArguments, litgpt) -> ours, for "did you mean".
KEY_HINTS = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "batch_size",
    "micro_batch_size": "batch_size",
    "num_train_epochs": "num_epochs",
    "epochs": "num_epochs",
    "warmup_ratio": "warmup_fraction",
    "lr_scheduler_type": "schedule",
    "lr_scheduler": "schedule",
    "bf16": "mixed_precision",
    "fp16": "mixed_precision",
    "precision": "mixed_precision",
    "torch_compile": "compile",
    "logging_steps": "log_every_steps",
    "log_interval": "log_every_steps",
    "eval_steps": "eval_every_steps",
    "eval_interval": "eval_every_steps",
    "save_steps": "save_every_steps",
    "save_interval": "save_every_steps",
    "save_total_limit": "keep_last",
    "resume_from_checkpoint": "resume",
    "dataloader_num_workers": "num_workers",
    "adam_epsilon": "adam_eps",
    "adam_beta1": "adam_betas",
    "adam_beta2": "adam_betas",
    "clip_grad_norm": "max_grad_norm",
    "grad_clip": "max_grad_norm",
    "hub_model_id": "repo_id",
    "hub_private_repo": "private",
    "model_name_or_path": "name_or_path",
    "checkpoint_dir": "name_or_path",
    "out_dir": "output_dir",
}


def _unknown_key(name: str, valid: list[str], where: str) -> RecipeError:
    guess = KEY_HINTS.get(name)
    if guess not in valid:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        guess = close[0] if close else None
    hint = f"; did you mean {_join(where, guess)!r}?" if guess else ""
    scope = f"valid keys in {where!r}" if where else "valid top-level keys"
    return RecipeError(f"unknown key {_join(where, name)!r}{hint} {scope}: {', '.join(valid)}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where and name else where or name


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError as e:
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}: {e}") from e


# ---------------------------------------------------------------------------------------------
# Overrides, loading and saving.


_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn `["train.lr=1e-4", "hub.push_to_hub=true"]` into a nested dict.

    Values are YAML (`3`, `1e-4`, `true`, `null`, `[1, 2]`, `{a: 1}`); an empty value is null.
    Later items win. Lists are replaced as a whole, not indexed.
    """
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise RecipeError(f"bad override {item!r}: write section.key=value, e.g. train.lr=1e-4")
        key, _, text = item.partition("=")
        key = key.strip()
        if not _OVERRIDE_KEY.match(key):
            raise RecipeError(
                f"bad override {item!r}: {key!r} is not a dotted key such as train.lr "
                "(letters, digits and _ separated by dots, no leading dashes)"
            )
        value = _yaml_load(text, source=f"override {item!r}")
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                earlier = ".".join(parts[: depth + 1])
                raise RecipeError(f"override {item!r} conflicts with an earlier override of {earlier!r}")
            node = child
        node[parts[-1]] = value
    return out


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` updated by `update`; mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | Path, cls: type[T], overrides: Iterable[str] = ()) -> T:
    """Read the YAML recipe at `path`, merge `key=value` overrides over it, validate as `cls`.

    Errors name their origin: the file (with line for YAML syntax errors) or the override.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file not found: {path} (looked in {path.resolve().parent})")
    data = _yaml_load(path.read_text(encoding="utf-8"), source=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"the top level must be a mapping of keys (e.g. 'train:'), got {type(data).__name__}",
            source=str(path),
        )
    overrides = list(overrides)
    merged = deep_merge(data, parse_overrides(overrides))
    try:
        return from_dict(cls, merged)
    except RecipeError as e:
        raise RecipeError(e.reason, key=e.key, source=_origin(e, overrides, path)) from None


def _origin(error: RecipeError, overrides: list[str], path: Path) -> str:
    """The override that set the faulty key, else the file."""
    text = error.key or _quoted_key(error.reason) or ""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if text == key or text.startswith((key + ".", key + "[")):
            return f"override {item!r}"
    return str(path)


def _quoted_key(reason: str) -> str | None:
    match = re.match(r"(?:unknown key|missing required key) '([^']+)'", reason)
    return match.group(1) if match else None


_SECRET = re.compile(r"^(?:.*_)?(?:token|password|passwd|secret|api_key)$", re.IGNORECASE)
_SPECIAL_TOKENS = re.compile(r"^(?:pad|mask|cls|sep|unk|bos|eos|special)_token$")


def is_secret(name: str) -> bool:
    """Fields such as `token`, `hub_token`, `password` are never written (special tokens are fine)."""
    return bool(_SECRET.match(name)) and not _SPECIAL_TOKENS.match(name)


def to_dict(recipe: Any) -> dict[str, Any]:
    """Plain dict of every init field of a recipe (defaults included); secret fields become None."""
    if not (dataclasses.is_dataclass(recipe) and not isinstance(recipe, type)):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(recipe).__name__}")
    return _plain(recipe)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        pairs = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.init)
    elif isinstance(value, Mapping):
        pairs = ((str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    elif isinstance(value, Path):
        return str(value)
    else:
        return value
    return {name: None if is_secret(name) else _plain(v) for name, v in pairs}


def to_yaml(recipe: Any) -> str:
    """The fully resolved recipe as YAML text (field order of the dataclasses)."""
    return yaml.dump(to_dict(recipe), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def save_recipe(recipe: Any, path: str | Path) -> Path:
    """Write the resolved recipe to `path` (parents created) so a run can be reproduced from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Resolved {type(recipe).__name__}: dataclass defaults < YAML < command-line overrides.\n"
        "# Secrets (token/password fields) are never written; the Hub token comes from HF_TOKEN.\n"
    )
    path.write_text(header + to_yaml(recipe), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Help text from attribute docstrings.


class FieldHelp(NamedTuple):
    type: str
    default: str
    doc: str


def field_help(cls: type) -> dict[str, FieldHelp]:
    """Map every dotted key of recipe class `cls` to (type, default, docstring), sections included."""
    out: dict[str, FieldHelp] = {}
    _collect_help(cls, "", out)
    return out


def _collect_help(cls: type, prefix: str, out: dict[str, FieldHelp]) -> None:
    docs, hints = attribute_docs(cls), _type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, tp = _join(prefix, f.name), hints[f.name]
        section = _section_type(tp)
        doc = docs.get(f.name) or (_class_doc(section) if section else "")
        out[key] = FieldHelp(_type_name(tp), _default_text(f), doc)
        if section is not None:
            _collect_help(section, key if _is_dataclass_type(tp) else f"{key}[]", out)


def _class_doc(cls: type) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "")
    return "" if doc.startswith(f"{cls.__name__}(") else doc  # dataclass's generated signature


def _section_type(tp: Any) -> type | None:
    """The dataclass inside `tp` (itself, `X | None` or `list[X]`), if any."""
    if _is_dataclass_type(tp):
        return tp
    for arg in typing.get_args(tp):
        if _is_dataclass_type(arg):
            return arg
    return None


@cache
def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> the string literal written right under it in the class body (MRO merged)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is _NONE:
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    return tp.__name__ if isinstance(tp, type) else str(tp)


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        try:
            value = f.default_factory()
        except TypeError:  # a section with required keys
            return "(section)"
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def format_help(cls: type) -> str:
    """A readable listing of every key of `cls`: `key: type = default` and its help text."""
    lines = [
        f"Keys of {cls.__name__} (dataclass defaults < YAML < section.key=value overrides)",
        "",
    ]
    for key, (type_name, default, doc) in field_help(cls).items():
        if default == "(section)":
            lines += ["", f"## {key}: {doc.splitlines()[0] if doc else type_name}"]
            continue
        lines.append(f"{key}: {type_name} = {default}")
        for paragraph in doc.split("\n\n") if doc else []:
            lines.append(
                textwrap.fill(
                    " ".join(paragraph.split()), 100, initial_indent="    ", subsequent_indent="    "
                )
            )
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# The sections this module owns. Data sections live in data.py, tokenizer.py, masking.py, tasks.py;
# PretrainRecipe and FinetuneRecipe are composed in recipe_types.py.


@dataclass
class ModelArgs:
    """Which model to build or load."""

    preset: str = "bert-mini"
    """Name of an `HfpipeConfig` preset (see `HfpipeConfig.from_preset`) used to build a fresh
    model. Not used when `name_or_path` is set."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """`HfpipeConfig` fields set on top of the preset, e.g. `{num_hidden_layers: 4,
    position_embedding_type: rope}`. `HfpipeConfig` checks the names and values."""
    name_or_path: str | None = None
    """Start from existing weights: an hfpipe output folder, a Hub repo id, or a BERT checkpoint
    folder. Required for fine-tuning; null for pretraining from scratch."""
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "flash_attention_2"] = "sdpa"
    """Attention kernel. `sdpa` (PyTorch scaled_dot_product_attention) runs everywhere;
    `flash_attention_2` needs the flash-attn package and a CUDA GPU."""

    def validate(self) -> None:
        from ..model.configuration_hfpipe import PRESETS, HfpipeConfig  # lazy: pulls in transformers

        ok = self.name_or_path is None or bool(self.name_or_path.strip())
        check(ok, "name_or_path", "must not be empty (null builds a fresh model from the preset)")
        valid = set(inspect.signature(HfpipeConfig.__init__).parameters) - {"self", "kwargs"}
        valid |= set(vars(HfpipeConfig()))  # generic PreTrainedConfig attributes are allowed too
        for name in self.config_overrides:
            close = difflib.get_close_matches(name, sorted(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            check(name in valid, f"config_overrides.{name}", f"not a field of HfpipeConfig{hint}")
        if self.name_or_path is not None:
            return  # the preset is not used; the loaded config gets the overrides
        close = difflib.get_close_matches(self.preset, list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        check(
            self.preset in PRESETS,
            "preset",
            f"unknown preset {self.preset!r}; {hint}available: {', '.join(PRESETS)}",
        )
        try:
            HfpipeConfig.from_preset(self.preset, **self.config_overrides)
        except (ValueError, TypeError) as e:
            raise RecipeError(str(e), key="config_overrides") from None


@dataclass
class TrainArgs:
    """Optimization, schedule, budget, precision and checkpointing."""

    max_steps: int | None = 1000
    """Stop after this many optimizer steps. Training stops at the first budget reached
    (max_steps, max_tokens, max_minutes, num_epochs); at least one must be set."""
    max_tokens: int | None = None
    """Stop after this many input tokens (padding excluded), summed over all processes."""
    max_minutes: float | None = None
    """Stop after this many minutes of wall-clock training time (a final checkpoint is saved)."""
    num_epochs: float | None = None
    """Stop after this many passes over the training data (fractions allowed); used for fine-tuning."""
    batch_size: int = 32
    """Sequences per micro-batch per process. The global batch is batch_size x
    gradient_accumulation_steps x number of processes."""
    gradient_accumulation_steps: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    lr: float = 5e-4
    """Peak learning rate (AdamW), reached at the end of warmup."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay; biases and norm weights are not decayed."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """AdamW (beta1, beta2)."""
    adam_eps: float = 1e-6
    """AdamW epsilon."""
    schedule: Literal["linear", "cosine", "wsd", "onecycle", "constant"] = "linear"
    """Learning-rate schedule after warmup: linear or cosine decay to min_lr_ratio x lr; `wsd`
    (warmup-stable-decay) holds lr then decays over the last decay_fraction of training;
    `onecycle` rises linearly to lr over the first half and falls back over the second (Cramming's triangle; warmup_fraction is ignored); `constant` holds lr."""
    warmup_fraction: float = 0.06
    """Fraction of the total steps spent warming up linearly from 0 to lr."""
    warmup_steps: int | None = None
    """Warmup length in steps; when set it overrides warmup_fraction."""
    decay_fraction: float = 0.2
    """For `wsd`: fraction of the total steps spent in the final decay."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr (linear, cosine and wsd schedules)."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; null disables clipping."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """accelerate mixed precision. bf16 needs a GPU or CPU that supports it; fp16 uses a grad scaler."""
    compile: bool = False
    """Wrap the model in torch.compile (slow first steps, faster afterwards on GPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (about 30% slower)."""
    log_every_steps: int = 10
    """Log loss, learning rate, throughput and grad norm every N optimizer steps."""
    eval_every_steps: int | None = 200
    """Evaluate every N optimizer steps (and at the end); null evaluates only at the end."""
    save_every_steps: int | None = 500
    """Save a resumable checkpoint every N optimizer steps (and at the end); null saves only at the end."""
    keep_last: int = 3
    """Number of step checkpoints kept on disk; older ones are deleted."""
    resume: str = "auto"
    """`auto` resumes from the newest checkpoint in output_dir if there is one, `none` starts
    fresh, anything else is a checkpoint folder to resume from."""
    on_nan: Literal["stop", "skip"] = "stop"
    """What to do when the loss is NaN or infinite: `stop` raises with the step number,
    `skip` drops that batch's update and counts it in the logs."""
    num_workers: int = 0
    """DataLoader worker processes per training process (0 loads in the main process)."""
    early_stopping_patience: int | None = None
    """Fine-tuning: stop when the main metric has not improved for this many evaluations."""
    group_by_length: bool = True
    """Fine-tuning: batch examples of similar length together to reduce padding."""

    def validate(self) -> None:
        budgets = ("max_steps", "max_tokens", "max_minutes", "num_epochs")
        check(
            any(getattr(self, b) is not None for b in budgets),
            "",
            "no training budget: set at least one of max_steps, max_tokens, max_minutes, num_epochs",
        )
        for name in (
            *budgets,
            "warmup_steps",
            "eval_every_steps",
            "save_every_steps",
            "early_stopping_patience",
        ):
            value = getattr(self, name)
            minimum = 0 if name == "warmup_steps" else None
            if value is not None:
                ok = value >= minimum if minimum is not None else value > 0
                check(ok, name, f"must be {'>= 0' if minimum is not None else '> 0'} (or null), got {value}")
        for name in ("batch_size", "gradient_accumulation_steps", "log_every_steps", "keep_last"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(
            len(self.adam_betas) == 2,
            "adam_betas",
            f"must be two numbers [beta1, beta2], got {self.adam_betas}",
        )
        check(
            all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas",
            f"each must be in [0, 1), got {self.adam_betas}",
        )
        check(self.adam_eps > 0, "adam_eps", f"must be > 0, got {self.adam_eps}")
        check(
            0 <= self.warmup_fraction < 1, "warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}"
        )
        check(
            0 <= self.decay_fraction <= 1, "decay_fraction", f"must be in [0, 1], got {self.decay_fraction}"
        )
        if self.schedule == "wsd" and self.warmup_steps is None:
            total = self.warmup_fraction + self.decay_fraction
            check(total <= 1, "decay_fraction", f"warmup_fraction + decay_fraction must be <= 1, got {total}")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm is not None:
            check(self.max_grad_norm > 0, "max_grad_norm", f"must be > 0 (or null), got {self.max_grad_norm}")
        check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        check(bool(self.resume.strip()), "resume", "must be 'auto', 'none' or a checkpoint folder")


@dataclass
class EvalArgs:
    """Evaluation during and after training."""

    batch_size: int = 64
    """Sequences per evaluation batch per process (no gradients, so it can exceed train.batch_size)."""
    max_batches: int | None = None
    """Evaluate on at most this many batches (a quick estimate during long runs); null uses the
    whole validation split."""

    def validate(self) -> None:
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        if self.max_batches is not None:
            check(self.max_batches >= 1, "max_batches", f"must be >= 1 (or null), got {self.max_batches}")


@dataclass
class HubArgs:
    """Pushing the result to the Hugging Face Hub (the token comes from HF_TOKEN, never the recipe)."""

    push_to_hub: bool = False
    """Upload the final model, tokenizer, model card and remote code when training ends."""
    repo_id: str | None = None
    """Target repository, `user/name` or `org/name`; required when push_to_hub is true."""
    private: bool = False
    """Create the repository as private if it does not exist yet."""
    revision: str | None = None
    """Branch to push the final model to; null pushes to the default branch (main)."""
    push_checkpoints: bool = False
    """Also push every saved checkpoint to checkpoint_branch while training."""
    checkpoint_branch: str = "checkpoints"
    """Branch that receives intermediate checkpoints when push_checkpoints is true."""
    commit_message: str | None = None
    """Commit message of the final push; null writes one with the step count and main metric."""

    def validate(self) -> None:
        if self.push_to_hub or self.push_checkpoints:
            check(
                self.repo_id is not None,
                "repo_id",
                "required when hub.push_to_hub or hub.push_checkpoints is true",
            )
        if self.repo_id is not None:
            ok = re.fullmatch(r"(?:[\w.-]+/)?[\w.-]+", self.repo_id) is not None
            check(ok, "repo_id", f"must look like 'user/name', got {self.repo_id!r}")
        check(bool(self.checkpoint_branch.strip()), "checkpoint_branch", "must not be empty")


@dataclass
class TrackingArgs:
    """Experiment tracking and plots."""

    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = field(default_factory=list)
    """Trackers to log to through accelerate; [] logs only to the console and metrics.jsonl."""
    project_name: str = "hfpipe"
    """Project (experiment group) name passed to the trackers."""
    peak_tflops: float | None = None
    """Peak dense TFLOP/s of one device, used for model FLOPs utilization (MFU); null guesses it
    from the device name."""
    plot: bool = True
    """Write a loss-curve PNG to output_dir at the end of training."""

    def validate(self) -> None:
        check(
            len(set(self.report_to)) == len(self.report_to), "report_to", f"has duplicates: {self.report_to}"
        )
        check(bool(self.project_name.strip()), "project_name", "must not be empty")
        if self.peak_tflops is not None:
            check(self.peak_tflops > 0, "peak_tflops", f"must be > 0 (or null), got {self.peak_tflops}")
