"""Recipes: YAML run files validated as typed dataclasses by pydantic (litgpt / torchtune style).

    recipe = load_recipe("recipes/pretrain/tiny.yaml", PretrainRecipe, ["train.lr=1e-4"])
    save_recipe(recipe, "runs/tiny/recipe.yaml")  # every field resolved, secrets written as null

Later wins: dataclass defaults < YAML file < `section.key=value` overrides. A recipe is a plain
dataclass of sections (`sections.py`); the docstring under a field is its help (`format_help`, i.e.
`hfpipe validate --help-keys`). pydantic checks the types in strict JSON mode (YAML 1.2 is a JSON
superset): `"0.1"` is not a float, `1` is not a bool, unknown keys are errors; a whole float for an
int (`2e9`) and null for a secret (it takes its default) are accepted. Then each section's
`validate()` runs, innermost first. Each problem is one line: its origin, the dotted key, pydantic's
message, the value, and "did you mean" for unknown keys (other trainers' names too) and choices:

    override 'train.max_steps=ten': train.max_steps: Input should be a valid integer (got 'ten')
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import operator
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import pydantic
import yaml

from . import yaml12

T = TypeVar("T")


class RecipeError(ValueError):
    """A recipe key, value or file the user must fix, one line per problem.

    `reason` and the dotted `key` describe the first problem, `source` is the file or override that set
    it; `more` holds the other problems found at the same time (RecipeErrors too).
    """

    def __init__(self, reason: str, *, key: str | None = None, source: str | None = None, more=()):
        self.reason, self.key, self.source, self.more = reason, key, source, tuple(more)
        line = f"{key}: {reason}" if key else reason
        super().__init__("\n".join([f"{source}: {line}" if source else line, *map(str, self.more)]))


def check(condition: bool, key: str, reason: str) -> None:
    """Raise `RecipeError(reason, key=key)` unless `condition`; for use inside `validate()`."""
    if not condition:
        raise RecipeError(reason, key=key)


# ---------------------------------------------------------------------------------------------
# dict -> dataclass: pydantic checks the types, then each section's validate() runs.


@functools.cache
def _validator(cls: type) -> type[pydantic.BaseModel]:
    """A pydantic model with one field, `root: cls`, so one strict config covers `cls` and its sections."""
    config = pydantic.ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)
    return pydantic.create_model(f"{cls.__name__}Validator", __config__=config, root=(cls, ...))


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build dataclass `cls` from a plain mapping, checking every key and value.

    Missing keys take the dataclass default; `where` is the dotted prefix used in error messages.
    After the types are checked, every section's `validate()` runs, innermost first.
    """
    if not isinstance(data, Mapping):
        raise RecipeError(f"expected a mapping of keys (got {_show(data)})", key=where or None)
    data = json.loads(json.dumps(data, default=_not_json))  # a copy to fix YAML habits in; .inf stays
    while True:
        try:
            obj = _validator(cls).model_validate_json(json.dumps({"root": data})).root
            break
        except pydantic.ValidationError as e:
            errors = [err for err in e.errors(include_url=False) if not _accept_yaml_habit(data, err)]
            if errors:  # else every error was a habit, now accepted: validate again
                first, *more = [_problem(cls, err, where) for err in errors]
                raise RecipeError(first.reason, key=first.key, more=more) from None
    _run_validate(obj, where)
    return obj


def _not_json(value: Any) -> Any:  # e.g. YAML's !!binary or !!set
    raise RecipeError(f"not a YAML 1.2 value (string, number, bool, null, list or mapping): {_show(value)}")


def _accept_yaml_habit(data: dict, error: Mapping[str, Any]) -> bool:
    """If `error` is a whole float for an int, or null for a secret, fix `data` at its location."""
    *path, name = error["loc"][1:]  # after "root"
    parent, value = functools.reduce(operator.getitem, path, data), error["input"]
    if error["type"] == "int_type" and isinstance(value, float) and value.is_integer():
        parent[name] = int(value)
    elif value is None and is_secret(str(name)):
        del parent[name]  # takes its default
    else:
        return False
    return True


def _problem(cls: type, error: Mapping[str, Any], where: str) -> RecipeError:
    """One pydantic error as one line: the dotted key, pydantic's message and the value given."""
    loc, value, kind = error["loc"][1:], error["input"], error["type"]
    if kind == "unexpected_keyword_argument":
        return _unknown_key(cls, loc, where)
    reason = error["msg"] if kind == "missing" else f"{error['msg']} (got {_show(value)})"
    if kind == "literal_error":  # msg: "Input should be 'a', 'b' or 'c'"
        close = difflib.get_close_matches(str(value), re.findall(r"'([^']*)'", error["msg"]), n=1)
        reason += f"; did you mean {close[0]!r}?" if close else ""
    return RecipeError(reason, key=_dotted(where, loc) or None)


def _run_validate(obj: Any, where: str) -> None:
    """Call `validate()` on every section inside `obj`, innermost first; errors get the dotted key."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            _run_validate(item, f"{where}[{i}]")
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return
    for f in dataclasses.fields(obj):
        _run_validate(getattr(obj, f.name), _join(where, f.name))
    try:
        getattr(obj, "validate", lambda: None)()
    except ValueError as e:  # a RecipeError from check(), or any ValueError: it gets the dotted key
        key = _join(where, getattr(e, "key", None) or "")
        raise RecipeError(getattr(e, "reason", str(e)), key=key or None) from None


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where and name else where or name


def _dotted(where: str, loc: Iterable[str | int]) -> str:
    """pydantic's error location as a dotted key: `('sources', 1, 'path')` -> `sources[1].path`."""
    return functools.reduce(lambda key, p: f"{key}[{p}]" if isinstance(p, int) else _join(key, p), loc, where)


# Our key: the names other trainers (HF TrainingArguments, litgpt) use for it, for "did you mean".
_OTHER_NAMES = {
    "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size per_device_eval_batch_size micro_batch_size",
    "num_epochs": "num_train_epochs epochs",
    "warmup_fraction": "warmup_ratio",
    "schedule": "lr_scheduler_type lr_scheduler",
    "mixed_precision": "bf16 fp16 precision",
    "compile": "torch_compile",
    "log_every_steps": "logging_steps log_interval",
    "eval_every_steps": "eval_steps eval_interval",
    "save_every_steps": "save_steps save_interval",
    "keep_last": "save_total_limit",
    "resume": "resume_from_checkpoint",
    "num_workers": "dataloader_num_workers",
    "adam_eps": "adam_epsilon",
    "adam_betas": "adam_beta1 adam_beta2",
    "max_grad_norm": "clip_grad_norm grad_clip",
    "repo_id": "hub_model_id",
    "private": "hub_private_repo",
    "name_or_path": "model_name_or_path checkpoint_dir",
    "output_dir": "out_dir",
}
KEY_HINTS = {other: ours for ours, others in _OTHER_NAMES.items() for other in others.split()}
"""A name used by another trainer -> our key."""


def _unknown_key(cls: type, loc: tuple, where: str) -> RecipeError:
    """'unknown key', the closest valid key (or ours for another trainer's name) and the valid keys."""
    name, section = str(loc[-1]), re.sub(r"\[\d+\]", "[]", _dotted("", loc[:-1]))
    valid = [k.rpartition(".")[2] for k in field_help(cls) if k.rpartition(".")[0] == section]
    guess = KEY_HINTS.get(name)
    if guess not in valid:
        guess = next(iter(difflib.get_close_matches(name, valid, n=1, cutoff=0.6)), None)
    parent = _dotted(where, loc[:-1])
    hint = f"; did you mean {_join(parent, guess)!r}?" if guess else ""
    scope = f"valid keys in {parent!r}" if parent else "valid top-level keys"
    return RecipeError(f"unknown key {_join(parent, name)!r}{hint} {scope}: {', '.join(valid)}")


# ---------------------------------------------------------------------------------------------
# Overrides, loading and saving.


_OVERRIDE = re.compile(r"\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*=(.*)", re.DOTALL | re.ASCII)


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
        match = _OVERRIDE.fullmatch(item) if isinstance(item, str) else None
        if match is None:
            raise RecipeError(
                f"bad override {item!r}: write section.key=value, e.g. train.lr=1e-4 (the key: letters, "
                "digits and _ separated by dots, no leading dashes)"
            )
        node, (*parents, name) = out, match[1].split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                earlier = ".".join(parents[: depth + 1])
                raise RecipeError(f"override {item!r} conflicts with an earlier override of {earlier!r}")
        node[name] = _yaml_load(match[2], source=f"override {item!r}")
    return out


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` updated by `update`; mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = deep_merge(merged[key], value) if both else value
    return merged


def load_recipe(path: str | Path, cls: type[T], overrides: Iterable[str] = ()) -> T:
    """Read the YAML recipe at `path`, merge `key=value` overrides over it, validate as `cls`.

    Each error line names its origin: the file (with the line for YAML syntax errors) or the override.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file not found: {path} (looked in {path.resolve().parent})")
    data = _yaml_load(path.read_text(encoding="utf-8"), source=str(path))
    if data is not None and not isinstance(data, dict):
        raise RecipeError(
            f"the top level must be a mapping of keys (e.g. 'train:'), got {type(data).__name__}",
            source=str(path),
        )
    overrides = list(overrides)
    try:
        return from_dict(cls, deep_merge(data or {}, parse_overrides(overrides)))
    except RecipeError as e:
        raise _with_origin(e, overrides, path) from None


def _with_origin(error: RecipeError, overrides: list[str], path: Path) -> RecipeError:
    """`error`, each line with its source: the last override that set its key (or one above) or the file."""
    key = error.key or next(iter(re.findall(r"^unknown key '([^']+)'", error.reason)), "")
    above = {key[:i] for i, c in enumerate(key + ".") if c in ".["}  # a.b[0] -> a, a.b, a.b[0]
    setter = next((item for item in reversed(overrides) if item.split("=")[0].strip() in above), None)
    source = error.source or (f"override {setter!r}" if setter else str(path))
    more = [_with_origin(e, overrides, path) for e in error.more]
    return RecipeError(error.reason, key=error.key, source=source, more=more)


_SECRET = re.compile(r"^(?:.*_)?(?:token|password|passwd|secret|api_key)$", re.IGNORECASE)
_SPECIAL_TOKENS = re.compile(r"^(?:pad|mask|cls|sep|unk|bos|eos|special)_token$")


def is_secret(name: str) -> bool:
    """Fields such as `token`, `hub_token`, `password` are never written (special tokens are fine)."""
    return bool(_SECRET.match(name)) and not _SPECIAL_TOKENS.match(name)


def to_dict(recipe: Any) -> dict[str, Any]:
    """Plain dict of every field of a recipe (defaults included); secret fields become None."""
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
# Help text: the attribute docstrings, as pydantic reads them into its JSON schema.


class FieldHelp(NamedTuple):
    type: str
    default: str
    doc: str


@functools.cache
def _schema(cls: type) -> dict[str, Any]:
    """pydantic's JSON schema of dataclass `cls`: the descriptions are the docstrings."""
    schema = _validator(cls).model_json_schema()
    return schema["$defs"][schema["properties"]["root"]["$ref"].rpartition("/")[2]]


def field_help(cls: type, prefix: str = "") -> dict[str, FieldHelp]:
    """Map every dotted key of recipe class `cls` to (type, default, docstring), sections included.

    A section field without a docstring takes its class's; keys in a list of sections read `key[].name`.
    """
    out, hints, docs = {}, typing.get_type_hints(cls), _schema(cls)["properties"]
    for f in (f for f in dataclasses.fields(cls) if f.init):
        key, tp = _join(prefix, f.name), hints[f.name]
        section = next((t for t in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(t)), None)
        doc = docs[f.name].get("description") or (_schema(section).get("description", "") if section else "")
        out[key] = FieldHelp(_type_name(tp), _default_text(f, section is tp), doc)
        if section is not None:
            out.update(field_help(section, key if section is tp else f"{key}[]"))
    return out


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is type(None):
        return "any" if tp is Any else "null"
    if origin in (typing.Union, types.UnionType, Literal):
        return " | ".join(repr(a) if origin is Literal else _type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    return tp.__name__ if isinstance(tp, type) else str(tp)


def _default_text(f: dataclasses.Field, is_section: bool) -> str:
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "required"
    if is_section:
        return "(section)"
    value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return yaml12.dump(value, flow=True)


def format_help(cls: type) -> str:
    """A readable listing of every key of `cls`: `key: type = default` and its help text."""
    lines = [f"Keys of {cls.__name__} (dataclass defaults < YAML < section.key=value overrides)", ""]
    for key, (type_name, default, doc) in field_help(cls).items():
        if default == "(section)":
            lines += ["", f"## {key}: {doc.splitlines()[0] if doc else type_name}"]
            continue
        lines.append(f"{key}: {type_name} = {default}")
        for paragraph in doc.split("\n\n") if doc else []:
            lines.append(textwrap.indent(textwrap.fill(" ".join(paragraph.split()), 96), " " * 4))
    return "\n".join(lines).rstrip() + "\n"
