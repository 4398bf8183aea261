"""Where a figure came from: every results file under bench/results/ carries this block.

    from provenance import provenance, write_results
    write_results(path, results, argv=sys.argv, dirty_ok=args.dirty, load_before=load_before)

A figure is only worth publishing when a reader can re-make it: the commit it measured (a dirty tree
is refused unless `--dirty` is given, and then the file says so), the date, the machine (CPU model and
the flags that decide bf16 speed: AVX512-BF16 and AMX), the core count, the library versions, the load
average before and after the run, and the exact command.
"""

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The CPU flags that decide which precision is fast here (bf16 autocast is ~5x fp32 with AMX, ~10x slower
# than fp32 with AVX2 only).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


class DirtyTreeError(RuntimeError):
    """The working tree has uncommitted changes to tracked files: a figure from it names no commit."""


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def git_state() -> dict:
    """{'commit', 'dirty': [paths changed but not committed]} (untracked files and bench/results/ ignored)."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        status = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": []}
    dirty = [line[3:] for line in status.splitlines() if line.strip() and not line[3:].startswith("bench/results/")]
    return {"commit": commit, "dirty": dirty}


def cpu_info() -> dict:
    """CPU model, the speed-relevant flags present, and core counts (Linux /proc/cpuinfo; elsewhere what
    platform says)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "flags": [f for f in SPEED_FLAGS if f in flags], "logical_cores": os.cpu_count(),
            "usable_cores": affinity, "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags)}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "peft"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # not installed: say so rather than fail the benchmark
            out[name] = None
    return out


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def provenance(argv: list[str] | None = None, *, dirty_ok: bool = False, load_before=None) -> dict:
    """The provenance block. Raises DirtyTreeError on uncommitted changes unless `dirty_ok`."""
    git = git_state()
    if git["dirty"] and not dirty_ok:
        raise DirtyTreeError(
            f"uncommitted changes in {', '.join(git['dirty'][:5])}{' ...' if len(git['dirty']) > 5 else ''}: "
            "commit first (a figure must name the commit it measured), or pass --dirty to record it as such"
        )
    argv = list(sys.argv if argv is None else argv)
    return {
        "commit": git["commit"],
        "dirty": git["dirty"] or False,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**cpu_info(), "platform": platform.platform()},
        "versions": versions(),
        "load_before": load_before,
        "load_after": load_average(),
        "command": shlex.join(["python", *[os.path.relpath(a, REPO) if a.startswith(str(REPO)) else a
                                          for a in argv]]),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
                if k in os.environ},
    }


def write_results(path: Path, results: dict, *, argv: list[str] | None = None, dirty_ok: bool = False,
                  load_before=None) -> dict:
    """Write `results` with its provenance to `path` (JSON); returns what was written."""
    out = {"provenance": provenance(argv, dirty_ok=dirty_ok, load_before=load_before), **results}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out
