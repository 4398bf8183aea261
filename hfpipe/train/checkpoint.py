"""Training checkpoints: atomic, complete-or-absent, keep-last-N, exact resume.

A checkpoint is a folder `output_dir/checkpoints/step-00000100/` written by `accelerator.save_state`
(model weights as safetensors, optimizer, RNG states of every process; FSDP and DeepSpeed shard
their own state) plus `trainer_state.json` (step, tokens, elapsed time -- what the loop needs to
continue where it stopped). It is written under a temporary name and renamed only when every
process has finished writing, then marked with a `COMPLETE` file: a kill during a save leaves a
`*.tmp` folder that `latest_checkpoint` ignores and the next save removes.
"""

import json
import re
import shutil
from pathlib import Path

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """`train.resume`: "auto" (latest complete checkpoint, if any), "none", or a checkpoint path."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / COMPLETE).is_file():
        raise FileNotFoundError(
            f"train.resume={resume!r} is not a complete checkpoint folder (no {COMPLETE} marker); "
            f"complete ones: {[str(p) for p in list_checkpoints(output_dir)] or 'none'}"
        )
    return path


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, keep_last: int) -> Path:
    """Collective: every process must call it. Returns the final checkpoint path."""
    root = checkpoint_dir(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if accelerator.is_main_process:
        for stale in root.glob("*.tmp"):  # leftovers of a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # e.g. the final step coincides with a periodic save after a resume
            shutil.rmtree(final)
        tmp.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        tmp.rename(final)
        (final / COMPLETE).write_text(f"step {step}\n")
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore model, optimizer and RNG states in place; return the loop's saved state."""
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())
