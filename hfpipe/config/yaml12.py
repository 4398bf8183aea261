"""YAML with YAML 1.2 scalars, for recipes: PyYAML's SafeLoader/SafeDumper with three changes.

    data = yaml12.load("lr: 1e-4\nmixed_precision: no\n")   # {'lr': 0.0001, 'mixed_precision': 'no'}
    text = yaml12.dump({"revision": "1e4"})                  # "revision: '1e4'\n" (quoted)

PyYAML reads YAML 1.1, where `1e-4` is a string, `yes`/`no`/`on`/`off` are booleans and
`2024-01-01` is a date. Recipes follow YAML 1.2 (the JSON superset): exponent numbers are floats,
only `true`/`false` are booleans, there are no dates; and a key written twice is an error
instead of the last one silently winning. The dumper quotes every string that a YAML 1.1 *or*
1.2 reader would take for another type, so a saved recipe reads back the same everywhere.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BOOL, _FLOAT, _TIMESTAMP = (f"tag:yaml.org,2002:{t}" for t in ("bool", "float", "timestamp"))
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, exponent floats and no dates; duplicate keys are errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[str, int] = {}  # key -> the line it was first set on
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    problem = f"duplicate key {key_node.value!r} (first set on line {seen[key_node.value]})"
                    raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
                seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT, _EXP_FLOAT, list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that also quotes exponent-looking strings; lists of scalars go on one line."""


_Dumper.add_implicit_resolver(_FLOAT, _EXP_FLOAT, list("-+0123456789"))


def _represent_list(dumper: _Dumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (str, int, float, bool, type(None))) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def load(text: str) -> Any:
    """Parse YAML 1.2 text (safe: plain data only). Raises `yaml.YAMLError` with a `problem_mark`."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass


def dump(data: Any, *, flow: bool = False) -> str:
    """YAML text for plain data, keys in insertion order; `flow=True` writes one line (`[1, 2]`)."""
    if flow:
        text = yaml.dump(data, Dumper=_Dumper, default_flow_style=True, width=1000).strip()
        return text.removesuffix("...").strip()
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
