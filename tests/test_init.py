"""`import hfpipe` registers the model with transformers' Auto classes in either import order, and stays
light. Run: .venv/bin/pytest tests/test_init.py -q

Each case runs in a fresh interpreter (an import order can only be tested before anything is imported).
"""

import json
import subprocess
import sys

import pytest
from fresh_env import run_without_hfpipe
from launch import REPO, cli_env

LOAD = """
from transformers import AutoConfig, AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained(FOLDER)  # no trust_remote_code: the registration answers
config = AutoConfig.from_pretrained(FOLDER)
print(json.dumps([type(model).__module__, type(config).__module__]))
"""

ORDERS = {
    "hfpipe first (isort's order)": "import json\nimport hfpipe\n" + LOAD,
    "transformers first": "import json\nimport transformers\nimport hfpipe\n" + LOAD,
    "hfpipe first, then transformers' submodule": "import json\nimport hfpipe\nimport transformers.models.auto\n" + LOAD,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from hfpipe import HfpipeConfig, HfpipeForMaskedLM

    out = tmp_path_factory.mktemp("saved") / "final"
    HfpipeForMaskedLM(HfpipeConfig.from_preset("bert-tiny", vocab_size=128)).save_pretrained(out)
    return out


@pytest.mark.parametrize("order", ORDERS)
def test_auto_classes_load_hfpipe_folders_in_any_import_order(folder, order):
    code = ORDERS[order].replace("FOLDER", repr(str(folder)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(),
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        "hfpipe.model.modeling_hfpipe", "hfpipe.model.configuration_hfpipe"]


def test_without_hfpipe_the_same_code_needs_trust_remote_code(folder):
    """Where hfpipe is not installed, the folder's own code loads it (with the flag, and only with it)."""
    code = LOAD.replace("FOLDER", repr(str(folder)))
    refused = ("import json\ntry:\n" + "\n".join("    " + line for line in code.strip().splitlines())
               + "\nexcept ValueError as e:\n    print(json.dumps(['refused', 'trust_remote_code' in str(e)]))")
    # transformers asks "Do you wish to run the custom code? [y/N]" and, with no answer, refuses
    assert run_without_hfpipe(refused, env={"HF_HUB_OFFLINE": "1"}).stdout.strip().endswith('["refused", true]')
    trusted = "import json\n" + code.replace("(FOLDER)", "(FOLDER, trust_remote_code=True)").replace(
        "FOLDER", repr(str(folder))).replace(f"({str(folder)!r})", f"({str(folder)!r}, trust_remote_code=True)")
    modules = json.loads(run_without_hfpipe(trusted, env={"HF_HUB_OFFLINE": "1"}).stdout.strip().splitlines()[-1])
    assert all(m.startswith("transformers_modules.") for m in modules), modules


def test_import_hfpipe_imports_neither_torch_nor_transformers():
    code = "import sys, hfpipe, hfpipe.cli\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=REPO,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"  # so `hfpipe --help` stays instant
