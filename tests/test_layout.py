"""The package's floor plan: folders follow the data, imports flow one way, one training step.

    .venv/bin/pytest tests/test_layout.py -q

Reads the source with `ast` (nothing is imported), so a cycle or a second copy of the step is caught
before it can hide behind lazy imports at run time: an import inside a function counts like one at the
top of the module. The only exceptions are listed in LAZY_CYCLE_ALLOWED, each with its reason.
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


# (importing module, imported module) -> why a function-level import may close a cycle. Every entry must
# still be needed (a stale one fails test_lazy_cycle_allow_list_is_current).
LAZY_CYCLE_ALLOWED: dict[tuple[str, str], str] = {
    ("hfpipe.model.modeling_hfpipe", "hfpipe.model.convert"): (
        "HfpipePreTrainedModel.from_pretrained(bert_folder) converts through convert.py, which builds the "
        "model classes; the model file ships as remote code without convert.py, so the import must stay "
        "inside that one branch (a top-level import would break every Hub download)"
    ),
}


def _imports(tree: ast.Module):
    """Every import statement in the module: at the top, under `if`/`try` (TYPE_CHECKING included: a
    cycle there is still a cycle a reader has to untangle), and inside functions (a lazy import delays a
    cycle to run time; it does not remove it)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph(allowed: dict[tuple[str, str], str] = LAZY_CYCLE_ALLOWED) -> dict[str, set[str]]:
    """hfpipe module -> the hfpipe modules it imports anywhere in its source (less the allowed edges)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import module` imports a module; `from module import name` the module itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            edges |= {t for t in targets if t in mods and t != name and (name, t) not in allowed}
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


def test_lazy_imports_are_counted(tmp_path):
    """A cycle closed only by an import inside a function is still found."""
    pkg = tmp_path / "hfpipe"
    (pkg / "config").mkdir(parents=True)
    (pkg / "tasks").mkdir()
    for init in (pkg / "__init__.py", pkg / "config" / "__init__.py", pkg / "tasks" / "__init__.py"):
        init.write_text("")
    (pkg / "config" / "recipe.py").write_text("def validate():\n    from ..tasks.spec import get_task\n")
    (pkg / "tasks" / "spec.py").write_text("from hfpipe.config.recipe import validate\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        assert find_cycle(import_graph()) == ["hfpipe.config.recipe", "hfpipe.tasks.spec", "hfpipe.config.recipe"]
        assert find_cycle(import_graph({("hfpipe.config.recipe", "hfpipe.tasks.spec"): "test"})) is None
    finally:
        PACKAGE = saved


def test_lazy_cycle_allow_list_is_current():
    """Every allowed edge has a reason and still exists (else it is a stale exception hiding nothing)."""
    full = import_graph(allowed={})
    for (src, dst), reason in LAZY_CYCLE_ALLOWED.items():
        assert len(reason.split()) >= 5, f"{src} -> {dst}: say why this lazy import may close a cycle"
        assert dst in full.get(src, ()), f"{src} -> {dst} is allowed but no longer imported: remove the entry"


def test_recipe_task_names_match_the_task_table():
    """config names the tasks a recipe may take without importing the task table (no config -> tasks edge)."""
    from hfpipe.config.finetune_recipe import TASK_NAMES
    from hfpipe.tasks.spec import TASKS

    assert TASK_NAMES == tuple(TASKS)


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
