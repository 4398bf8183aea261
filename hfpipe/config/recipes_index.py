"""The recipes that ship with hfpipe, addressable by name as well as by path.

    hfpipe recipes                            list them
    hfpipe pretrain tiny                      = hfpipe pretrain recipes/pretrain/tiny.yaml
    hfpipe finetune glue/sst2                 = hfpipe finetune recipes/finetune/glue/sst2.yaml

    from hfpipe.config.recipes_index import resolve_recipe, shipped_recipe
    shipped_recipe("tiny", "pretrain")        # .../recipes/pretrain/tiny.yaml, wherever hfpipe is installed

The recipes live in the top-level `recipes/` folder of a checkout; the wheel installs that folder as
`hfpipe/recipes/` (pyproject.toml maps the package `hfpipe.recipes` to `recipes/`). `recipes_dir()`
finds either, so the demo and the GLUE suite run from a pip install in an empty folder.
"""

from __future__ import annotations

from pathlib import Path

from .recipe import RecipeError

PACKAGE = Path(__file__).resolve().parents[1]
"""The hfpipe package folder."""

KINDS = ("pretrain", "finetune")
"""The recipe kinds (CLI subcommands); each has a folder recipes/KIND/ whose recipes go by short names."""

NOT_RECIPES = ("accelerate",)
"""Folders of recipes/ that hold `accelerate launch --config_file` files, not hfpipe recipes."""


def recipes_dir() -> Path:
    """The shipped `recipes/` folder: inside the package (a wheel install), else beside it (a checkout)."""
    for path in (PACKAGE / "recipes", PACKAGE.parent / "recipes"):
        if (path / "pretrain").is_dir():
            return path
    raise FileNotFoundError(f"hfpipe's recipes are missing (looked in {PACKAGE / 'recipes'} and "
                            f"{PACKAGE.parent / 'recipes'}): reinstall hfpipe")


def recipe_kind(path: str | Path) -> str:
    """"finetune" for a recipe with a top-level `task:` key, else "pretrain"."""
    text = Path(path).read_text() if Path(path).is_file() else ""
    return "finetune" if "\ntask:" in "\n" + text else "pretrain"


def recipe_names(kind: str) -> list[str]:
    """The names `shipped_recipe(name, kind)` accepts: `tiny`, `glue/sst2` for the files in recipes/KIND/,
    then the other recipes of that kind by their path under recipes/ (`ablations/position-rope`)."""
    base = recipes_dir()
    own = sorted(p.relative_to(base / kind).with_suffix("").as_posix() for p in (base / kind).rglob("*.yaml"))
    others = sorted(
        p.relative_to(base).with_suffix("").as_posix()
        for p in base.rglob("*.yaml")
        if p.relative_to(base).parts[0] not in (*KINDS, *NOT_RECIPES) and recipe_kind(p) == kind
    )
    return own + others


def shipped_recipe(name: str, kind: str | None = None) -> Path:
    """The shipped recipe NAME (with or without `.yaml`), looked up in recipes/KIND/ (recipes/pretrain/
    then recipes/finetune/ when KIND is None), then in recipes/. Unknown: a RecipeError naming the choices."""
    base = recipes_dir()
    stem = name.removesuffix(".yaml")
    for folder in [*([kind] if kind else KINDS), ""]:
        if (base / folder / f"{stem}.yaml").is_file():
            return base / folder / f"{stem}.yaml"
    choices = "; ".join(f"{k} recipes: {', '.join(recipe_names(k))}" for k in ([kind] if kind else KINDS))
    raise RecipeError(f"{name!r} is neither a file nor a shipped recipe; {choices} (see `hfpipe recipes`)")


def resolve_recipe(name_or_path: str | Path, kind: str | None = None) -> Path:
    """What the command line's RECIPE names: an existing file wins, else `shipped_recipe(name, kind)`."""
    path = Path(name_or_path)
    return path if path.is_file() else shipped_recipe(str(name_or_path), kind)


def _summary(path: Path) -> str:
    """The recipe's first comment line (every recipe starts with one saying what it is)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def format_recipes() -> str:
    """What `hfpipe recipes` prints: every name by kind with its first comment line, and where they live."""
    base = recipes_dir()
    blocks = []
    for kind in KINDS:
        names = recipe_names(kind)
        width = max(map(len, names), default=0)
        rows = [f"  {n:<{width}}  {_summary(shipped_recipe(n, kind))}".rstrip() for n in names]
        blocks.append("\n".join([f"{kind} recipes (hfpipe {kind} NAME [key=value ...]):", *rows]))
    for folder in NOT_RECIPES:
        rows = [f"  {p}\n      {_summary(p)}" for p in sorted((base / folder).glob("*.yaml"))]
        title = f"{folder} configs (accelerate launch --config_file PATH -m hfpipe ...):"
        blocks.append("\n".join([title, *rows]))
    blocks.append(f"(in {base}; a path to your own YAML file works wherever a NAME does)")
    return "\n\n".join(blocks) + "\n"
