"""The command line: help that teaches the recipe keys, recipes by name, lazy imports, logging, the wheel.

    .venv/bin/pytest tests/test_cli.py -q

The import and wheel checks run in subprocesses (a fresh interpreter is the only honest way to see
what `import hfpipe` loads, and where an installed hfpipe finds its recipes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hfpipe.cli import main
from hfpipe.config import RECIPE_CLASSES, field_help
from hfpipe.config.recipes_index import recipe_names, resolve_recipe, shipped_recipe

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "accelerate", "tokenizers")


def python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run CODE in a fresh interpreter of this venv; fail with its output if it fails."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# ---------------------------------------------------------------------------------------------
# --help lists every recipe key


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_help_lists_every_key_with_type_default_and_help(kind, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([kind, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: hfpipe {kind} [-h] recipe [key=value ...]" in out
    keys = field_help(RECIPE_CLASSES[kind])
    for key, (type_name, default, doc) in keys.items():
        if default != "(section)":  # `key: type = default`, then its help text (re-wrapped: first words)
            assert f"{key}: {type_name} = {default}\n    {' '.join(doc.split()[:3])}" in out, key
    assert "train.lr: float = 0.0005\n    Peak learning rate" in out
    assert len(keys) > 50


def test_help_keys_of_validate_still_work(capsys):
    assert main(["validate", "--help-keys", "finetune"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Keys of FinetuneRecipe") and "\ntask: " in out and "train.lr: float" in out


def test_help_and_import_hfpipe_load_neither_torch_nor_transformers(tmp_path):
    code = f"""
import json, sys
import hfpipe, hfpipe.config, hfpipe.cli
for argv in (["--help"], ["pretrain", "--help"], ["finetune", "--help"], ["validate", "--help"]):
    try:
        hfpipe.cli.main(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, argv
print("LOADED", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""
    loaded = json.loads(python(code, tmp_path).stdout.split("LOADED", 1)[1])
    assert loaded == []


def test_first_use_of_a_model_name_registers_the_auto_classes(tmp_path):
    """`import hfpipe` is light; the Auto classes know hfpipe before anyone can hand them an hfpipe model."""
    code = f"""
import sys
import hfpipe
assert not set(sys.modules) & {set(HEAVY)!r}, "import hfpipe loaded a heavy library"
config = hfpipe.HfpipeConfig.from_preset("bert-tiny", vocab_size=64)
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_config(config)
model.save_pretrained("saved")
print(type(model).__name__, type(AutoModel.from_pretrained("saved")).__name__,
      type(AutoConfig.from_pretrained("saved")).__module__, hfpipe.HfpipeForMaskedLM is type(model))
"""
    out = python(code, tmp_path).stdout.split()
    assert out == ["HfpipeForMaskedLM", "HfpipeModel", "hfpipe.model.configuration_hfpipe", "True"]


def test_unknown_attribute_of_hfpipe_is_an_attribute_error():
    import hfpipe

    with pytest.raises(AttributeError, match="no attribute 'HfpipeConfg'"):
        hfpipe.HfpipeConfg  # noqa: B018
    assert set(hfpipe.__all__) <= set(dir(hfpipe))


def test_teach_commands_parse_their_own_options(capsys):
    assert main(["shapes", "--preset", "bert-tiny", "--layers", "1"]) == 0
    assert capsys.readouterr().out.startswith("bert-tiny: B=")


# ---------------------------------------------------------------------------------------------
# Recipes by name


def test_names_resolve_to_the_shipped_recipes():
    assert resolve_recipe("tiny", "pretrain") == REPO / "recipes" / "pretrain" / "tiny.yaml"
    assert resolve_recipe("glue/sst2", "finetune") == REPO / "recipes" / "finetune" / "glue" / "sst2.yaml"
    assert resolve_recipe("glue/sst2.yaml") == REPO / "recipes" / "finetune" / "glue" / "sst2.yaml"
    rope = REPO / "recipes" / "ablations" / "position-rope.yaml"
    assert resolve_recipe("ablations/position-rope", "pretrain") == rope
    assert "ablations/position-rope" in recipe_names("pretrain") and "tiny" in recipe_names("pretrain")
    assert "glue/sst2" in recipe_names("finetune") and "tiny" not in recipe_names("finetune")


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    (tmp_path / "tiny").write_text("output_dir: mine\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("tiny", "pretrain") == Path("tiny")
    assert shipped_recipe("tiny", "pretrain") == REPO / "recipes" / "pretrain" / "tiny.yaml"


def test_validate_takes_names(capsys):
    assert main(["validate", "tiny", "train.max_steps=3"]) == 0
    assert main(["validate", "glue/sst2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["tiny: OK (PretrainRecipe)", "glue/sst2: OK (FinetuneRecipe)"]


@pytest.mark.parametrize("kind, typo", [("pretrain", "tinyy"), ("finetune", "glue/sst3")])
def test_unknown_name_is_a_one_line_error_listing_the_choices(kind, typo, capsys):
    assert main([kind, typo]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hfpipe {kind}: error: '{typo}' is neither a file")
    listed = err.split(f"{kind} recipes: ", 1)[1].split(" (see")[0].split(", ")
    assert listed == recipe_names(kind) and len(listed) > 5


def test_recipes_lists_every_shipped_recipe(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for kind in ("pretrain", "finetune"):
        for name in recipe_names(kind):
            assert f"\n  {name} " in out, name
    assert "GLUE SST-2: binary sentiment" in out  # each name with its recipe's first comment line
    assert str(REPO / "recipes" / "accelerate" / "cpu_2proc.yaml") in out


# ---------------------------------------------------------------------------------------------
# Logging


def test_cli_logging_shows_hfpipe_info_with_time_and_level(tmp_path):
    code = """
import logging
from hfpipe.cli import configure_logging
configure_logging()
logging.getLogger("hfpipe.data.packing").info("packed %d blocks", 3)
logging.getLogger("hfpipe.data.packing").warning("long documents")
logging.getLogger("some.library").info("library chatter")
"""
    main_err = python(code, tmp_path).stderr.splitlines()
    assert len(main_err) == 2, main_err
    assert main_err[0].endswith(" INFO hfpipe.data.packing: packed 3 blocks") and main_err[0][2] == ":"
    assert main_err[1].endswith(" WARNING hfpipe.data.packing: long documents")
    other_rank = python(code, tmp_path, RANK="1").stderr.splitlines()  # INFO from the main process only
    assert len(other_rank) == 1 and other_rank[0].endswith("WARNING hfpipe.data.packing: long documents")


# ---------------------------------------------------------------------------------------------
# The wheel ships the recipes, and an installed hfpipe finds them from any folder


def test_wheel_ships_every_module_and_recipe_and_finds_them_installed(tmp_path):
    source = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((REPO / name).read_bytes())
    for folder in ("hfpipe", "recipes"):
        files = [p for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        for path in files:
            (source / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            (source / path.relative_to(REPO)).write_bytes(path.read_bytes())
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(source),
         "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "absent from the `packages` configuration" not in build.stdout + build.stderr, (
        "a folder of hfpipe/ or recipes/ is missing from [tool.setuptools] packages in pyproject.toml")
    (wheel,) = (tmp_path / "dist").glob("hfpipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "hfpipe").rglob("*.py")}
    recipes = {"hfpipe/" + p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
    assert not modules - names and not recipes - names, sorted((modules | recipes) - names)
    assert "hfpipe/recipes/pretrain/tiny.yaml" in names

    site, empty = tmp_path / "site", tmp_path / "empty"
    zipfile.ZipFile(wheel).extractall(site)
    empty.mkdir()
    code = """
import hfpipe
from hfpipe.cli import main
from hfpipe.config.recipes_index import recipes_dir
print(hfpipe.__file__)
print(recipes_dir())
main(["validate", "glue/sst2"])
"""
    out = python(code, empty, PYTHONPATH=str(site)).stdout.splitlines()
    assert out == [str(site / "hfpipe" / "__init__.py"), str(site / "hfpipe" / "recipes"),
                   "glue/sst2: OK (FinetuneRecipe)"]
