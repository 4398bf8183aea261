"""Run Python code in a subprocess where hfpipe cannot be imported -- a user's machine, for tests.

    from fresh_env import run_without_hfpipe      # tests/ is on sys.path under pytest
    done = run_without_hfpipe("from transformers import AutoModel; AutoModel.from_pretrained(p, ...)",
                              env={"HF_HUB_OFFLINE": "1"})
    print(done.stdout)

Why: a pushed model must load with `trust_remote_code=True` for people who never installed hfpipe.
hfpipe is installed editable in this venv, so the subprocess blocks it explicitly: a `sys.meta_path`
finder placed first refuses `hfpipe` and `hfpipe.*`, the repo root is dropped from `sys.path`, and
the code only runs after checking that `import hfpipe` really fails. It runs with the same Python
(the venv's), in a temporary working directory, with PYTHONPATH removed and, unless `env` sets it,
HF_MODULES_CACHE (where transformers copies remote code) in a fresh temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = '''\
import importlib.abc, os, sys

class _BlockHfpipe(importlib.abc.MetaPathFinder):
    """Refuse hfpipe: this subprocess stands for a machine where it is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "hfpipe" or name.startswith("hfpipe."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: fresh environment)", name=name)
        return None

sys.meta_path.insert(0, _BlockHfpipe())
_root = os.path.realpath(REPO_ROOT)
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != _root]
try:
    import hfpipe
except ImportError:
    pass
else:
    raise SystemExit(f"fresh environment is broken: hfpipe was importable from {hfpipe.__file__}")
del _BlockHfpipe, _root
'''


def run_without_hfpipe(
    code: str, *, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `code` with the venv's Python where `import hfpipe` fails; raise (with output) if it fails."""
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="fresh-env-") as scratch:
        full_env.setdefault("HF_MODULES_CACHE", str(Path(scratch) / "modules"))
        prelude = _PRELUDE.replace("REPO_ROOT", repr(str(REPO_ROOT)))
        done = subprocess.run(
            [sys.executable, "-c", prelude + "\n" + code],
            env=full_env,
            cwd=str(cwd or scratch),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"fresh-environment subprocess failed with exit code {done.returncode}\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        )
    return done
