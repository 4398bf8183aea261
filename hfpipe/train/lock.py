"""One run per output_dir: `hfpipe pretrain` / `finetune` hold OUTPUT_DIR/.lock while they run.

    claim_output_dir(recipe.output_dir)   # cli.py, before a run; released when the process exits

The lock is an `fcntl.flock` on the file, which the kernel drops when the process ends however it
ends: a crashed or killed run leaves no stuck lock. The file holds the holder's pid and command line,
so the refusal names the process to wait for or stop. A run that stops before writing anything
(a mistake found at setup) removes the folder it created, so the output folder is left as it was.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import sys
from pathlib import Path

LOCK_FILE = ".lock"
_held: dict[str, object] = {}  # output_dir -> open lock file, kept open (and locked) for the process' life


class RunLockError(RuntimeError):
    """Another live process is already training into this output_dir."""


def claim_output_dir(output_dir: str | Path) -> Path:
    """Create `output_dir` and lock it for this process, or raise RunLockError naming the process holding it.
    Claiming again from the same process is a no-op (e.g. `hfpipe decay` after its checks)."""
    out = Path(output_dir)
    key = str(out.resolve())
    if key in _held:
        return out / LOCK_FILE
    created = not out.exists()
    created_from = _first_missing(out)  # runs/finetune/sst2 may create runs/finetune too
    out.mkdir(parents=True, exist_ok=True)
    stream = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        stream.seek(0)
        holder = stream.read().strip() or "another process"
        stream.close()
        _remove_if_untouched(out, created, created_from)
        raise RunLockError(
            f"{out} is in use by a running hfpipe ({holder}): wait for it or stop it, or set another output_dir"
        ) from None
    stream.seek(0)
    stream.truncate()
    stream.write(f"pid {os.getpid()}: {' '.join(sys.argv)}"[:300])
    stream.flush()
    _held[key] = stream
    atexit.register(_remove_if_untouched, out, created, created_from)
    return out / LOCK_FILE


def _first_missing(out: Path) -> Path | None:
    """The outermost folder of `out`'s path that does not exist yet (None when `out` exists)."""
    missing = None
    for folder in [out, *out.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_if_untouched(out: Path, created: bool, created_from: Path | None = None) -> None:
    """A run that stopped before writing anything (a mistake found at setup) leaves no folder behind,
    nor the empty parent folders it created."""
    if created and out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_FILE]:
        (out / LOCK_FILE).unlink(missing_ok=True)
        out.rmdir()
        if created_from is not None and created_from != out:
            for folder in out.parents:
                if not folder.is_dir() or any(folder.iterdir()):
                    break
                folder.rmdir()
                if folder == created_from:
                    break


def release_output_dir(output_dir: str | Path) -> None:
    """Give the lock back before the process ends (tests; the kernel does it at exit otherwise)."""
    stream = _held.pop(str(Path(output_dir).resolve()), None)
    if stream is not None:
        stream.close()
