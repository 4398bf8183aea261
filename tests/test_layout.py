"""The package's floor plan: folders follow the data, imports flow one way, one training step.

    .venv/bin/pytest tests/test_layout.py -q

Reads the source with `ast` (nothing is imported), so a cycle or a second copy of the step is caught
before it can hide behind lazy imports at run time.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hfpipe"
SUBPACKAGES = ("config", "model", "data", "tasks", "train", "hub", "teach")
MAX_LOOP_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _top_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported (TYPE_CHECKING blocks included:
    a cycle there is still a cycle a reader has to untangle); imports inside functions excluded."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):
            stack.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                stack.extend(handler.body)


def import_graph() -> dict[str, set[str]]:
    """hfpipe module -> the hfpipe modules it imports at module level."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import module` imports a module; `from module import name` the module itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            edges |= {t for t in targets if t in mods and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_subpackages_exist():
    found = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert set(SUBPACKAGES) <= found, f"missing subpackages: {set(SUBPACKAGES) - found}"


def test_no_module_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_subpackage_import_cycles():
    """config <- model <- data <- tasks <- train, hub, teach: imports flow one way between folders."""
    folders: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        src = module.split(".")[1] if module.count(".") >= 1 else module
        for target in targets:
            dst = target.split(".")[1] if target.count(".") >= 1 else target
            if src in SUBPACKAGES and dst in SUBPACKAGES and src != dst:
                folders.setdefault(src, set()).add(dst)
    cycle = find_cycle(folders)
    assert cycle is None, "subpackage cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_step_calls_backward():
    """One training step: every loop and benchmark goes through hfpipe/train/step.py."""
    callers = sorted(
        str(p.relative_to(PACKAGE.parent))
        for p in PACKAGE.rglob("*.py")
        if ".backward(" in p.read_text()
    )
    assert callers == ["hfpipe/train/step.py"]


@pytest.mark.parametrize("loop", ["pretrain.py", "finetune.py"])
def test_loop_functions_are_short(loop):
    tree = ast.parse((PACKAGE / "train" / loop).read_text())
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    too_long = {name: n for name, n in lengths.items() if n > MAX_LOOP_FUNCTION_LINES}
    assert not too_long, f"functions over {MAX_LOOP_FUNCTION_LINES} lines in train/{loop}: {too_long}"


def test_benchmarks_use_public_names_only():
    """bench/ measures hfpipe through its public functions: no `from hfpipe... import _private`."""
    private = []
    for path in sorted((PACKAGE.parent / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hfpipe"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, private
