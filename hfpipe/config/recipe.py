"""Recipes: YAML run files validated as typed dataclasses (litgpt / torchtune style), on pydantic.

    from hfpipe.config import PretrainRecipe, load_recipe, save_recipe

    recipe = load_recipe("recipes/pretrain/tiny.yaml", PretrainRecipe, ["train.lr=1e-4", "train.max_steps=20"])
    save_recipe(recipe, "runs/tiny/recipe.yaml")  # every field resolved, secrets written as null

Values are resolved in this order, later wins:

    dataclass defaults  <  YAML file  <  `section.key=value` command-line overrides

A recipe is a plain dataclass of sections (plain dataclasses too, see `sections.py`); the string
under a field is its help text (`format_help`, i.e. `hfpipe validate --help-keys`). Choices are
`typing.Literal` sets: a recipe names an option, it never imports code (unlike torchtune's
`_component_`).

pydantic checks the types. The merged mapping is validated in pydantic's strict JSON mode (YAML 1.2
is a superset of JSON): `"0.1"` is not a float, `1` is not a bool, `true` is not an int, an int is
fine for a float, unknown keys are errors. Before that, two YAML habits are made explicit: a whole
float for an int (`max_tokens: 2e9` is a float in YAML 1.2), and null for a secret (`save_recipe`
writes secrets as null; read back, they take their default). After the types, each section's
`validate(self)` runs, innermost first: it raises `RecipeError(reason, key="field")` (or calls
`check`) and the error carries the full dotted key (`train.lr: must be > 0, got -1.0`).

What this module adds to pydantic, for users: one error line that names the dotted key, the value
and what is expected, prefixed by the file or the override that set it; "did you mean" for unknown
keys and choices (Hugging Face names too: `learning_rate` -> `lr`); `section.key=value` overrides;
secrets never written.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import pydantic
import yaml

from . import yaml12

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
# dict -> dataclass: pydantic checks the types, then each section's validate() runs.

_STRICT = pydantic.ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)


@cache
def _validator(cls: type) -> type[pydantic.BaseModel]:
    """A pydantic model with one field, `root: cls`, so one config covers `cls` and every section in it."""
    return pydantic.create_model(f"{cls.__name__}Validator", __config__=_STRICT, root=(cls, ...))


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build dataclass `cls` from a plain mapping, checking every key and value.

    Missing keys take the dataclass default; `where` is the dotted prefix used in error messages.
    After the types are checked, every section's `validate()` runs, innermost first.
    """
    if not _is_dataclass_type(cls):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        raise RecipeError(f"expected a mapping of keys, got {_show(data)}", key=where or None)
    text = json.dumps({"root": _prepare(cls, data)}, default=_not_yaml)  # .inf and .nan stay as they are
    try:
        obj = _validator(cls).model_validate_json(text).root
    except pydantic.ValidationError as e:
        errors = e.errors(include_url=False)
        first = next((err for err in errors if err["type"] in _UNKNOWN_KEY), errors[0])
        raise _recipe_error(cls, first, where) from None
    _run_validate(obj, where)
    return obj


def _not_yaml(value: Any) -> Any:
    raise RecipeError(f"not a YAML 1.2 value (string, number, bool, null, list or mapping): {_show(value)}")


def _prepare(tp: Any, value: Any) -> Any:
    """`value` with a whole float for an int made an int, and null secrets dropped (they take their default)."""
    tp = _without_none(tp)[0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if _is_dataclass_type(tp) and isinstance(value, Mapping):
        hints = _type_hints(tp)
        kept = {k: v for k, v in value.items() if not (v is None and is_secret(str(k)))}
        return {k: _prepare(hints.get(k, Any), v) for k, v in kept.items()}
    if origin is list and args and isinstance(value, list):
        return [_prepare(args[0], v) for v in value]
    if origin is dict and args and isinstance(value, Mapping):
        return {k: _prepare(args[1], v) for k, v in value.items()}
    return value


_UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden")


def _recipe_error(cls: type, error: Mapping[str, Any], where: str) -> RecipeError:
    """pydantic's error as one line: the dotted key, what is expected and the value given."""
    loc = error["loc"][1:]  # after "root"
    tp, key = _locate(cls, loc)
    key, value = _join(where, key), error["input"]
    inner, nullable = _without_none(tp)
    if error["type"] == "missing":
        return RecipeError(f"missing required key {key!r}")
    if error["type"] in _UNKNOWN_KEY:
        return _unknown_key(str(loc[-1]), [f.name for f in dataclasses.fields(inner) if f.init], key)
    if error["type"] == "value_error":  # a ValueError raised in a dataclass's __post_init__
        return RecipeError(str(error["ctx"]["error"]), key=key or None)
    if value is not None and typing.get_origin(inner) is Literal:
        choices = typing.get_args(inner)
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(repr(c) for c in choices)
        return RecipeError(f"expected one of {listed}, got {_show(value)}{hint}", key=key)
    if value is not None and _is_dataclass_type(inner):
        return RecipeError(f"expected a mapping (section {inner.__name__}), got {_show(value)}", key=key)
    tail = "; null is also accepted" if nullable else ""
    return RecipeError(f"expected {_type_name(inner)}, got {_show(value)}{tail}", key=key or None)


def _locate(cls: type, loc: tuple) -> tuple[Any, str]:
    """The annotation that a pydantic error location points at, and its dotted key.

    `('sources', 0, 'path')` -> `(str, 'sources[0].path')`. Stops at a name that is not a field (an
    unknown key: the section that lacks it is returned) or at a union member's tag.
    """
    tp, key = cls, ""
    for part in loc:
        inner = _without_none(tp)[0]
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if _is_dataclass_type(inner) and part in _type_hints(inner):
            tp, key = _type_hints(inner)[part], _join(key, part)
        elif origin is list and isinstance(part, int):
            tp, key = (args[0] if args else Any), f"{key}[{part}]"
        elif origin is dict and isinstance(part, str):
            tp, key = (args[1] if args else Any), _join(key, part)
        else:
            break
    return tp, key


def _run_validate(obj: Any, where: str) -> None:
    """Call `validate()` on every section inside `obj`, innermost first; errors get the dotted key."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            _run_validate(item, f"{where}[{i}]")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _run_validate(getattr(obj, f.name), _join(where, f.name))
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


def _without_none(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (itself, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return (rest[0] if len(rest) == 1 else typing.Union[rest]), True
    return tp, False


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


# ---------------------------------------------------------------------------------------------
# Overrides, loading and saving.


_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _yaml_load(text: str, source: str) -> Any:
    try:
        return yaml12.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(f"invalid YAML: {problem}", source=where) from None


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
    """Plain dict of every field of a recipe (defaults included); secret fields become None."""
    if not (dataclasses.is_dataclass(recipe) and not isinstance(recipe, type)):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(recipe).__name__}")
    return _redacted(dataclasses.asdict(recipe))


def _redacted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): None if is_secret(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def to_yaml(recipe: Any) -> str:
    """The fully resolved recipe as YAML text (field order of the dataclasses)."""
    return yaml12.dump(to_dict(recipe))


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
# Help text: the attribute docstrings, as pydantic reads them (`use_attribute_docstrings`).


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
    docs, hints = _field_docs(cls), _type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, tp = _join(prefix, f.name), hints[f.name]
        section = next((t for t in (tp, *typing.get_args(tp)) if _is_dataclass_type(t)), None)
        doc = docs.get(f.name) or (_class_doc(section) if section else "")
        out[key] = FieldHelp(_type_name(tp), _default_text(f), doc)
        if section is not None:
            _collect_help(section, key if section is tp else f"{key}[]", out)


@cache
def _field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring: the field descriptions of pydantic's JSON schema for `cls`."""
    schema = _validator(cls).model_json_schema()
    name = schema["properties"]["root"]["$ref"].rsplit("/", 1)[-1]
    return {f: p.get("description", "") for f, p in schema["$defs"][name]["properties"].items()}


def _class_doc(cls: type) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "")
    return "" if doc.startswith(f"{cls.__name__}(") else doc  # dataclass's generated signature


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
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
    if not _has_default(f):
        return "required"
    try:
        value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    except TypeError:  # a section with required keys
        return "(section)"
    return "(section)" if dataclasses.is_dataclass(value) else yaml12.dump(value, flow=True)


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
