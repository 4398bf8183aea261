"""Training checkpoints: atomic, complete-or-absent, verified before a resume, keep-last-N, exact resume.

A checkpoint is a folder `output_dir/checkpoints/step-00000100/` holding
  * what `accelerator.save_state` writes: model weights as safetensors, optimizer, RNG states of
    every process (FSDP and DeepSpeed shard their own state);
  * `trainer_state.json`: step, tokens, elapsed time -- what the loop needs to continue;
  * `resolved_recipe.yaml`: the recipe that trained it, which a resume compares with the new one;
  * `COMPLETE`, written last: a manifest with the size of every file save_state wrote.
All of it is written into `step-00000100.tmp/` and renamed in one step once COMPLETE is in it, so a
kill or an error during a save leaves a `*.tmp` folder that `list_checkpoints` ignores and the next
save removes. Before a resume `verify_checkpoint` reads the manifest and the safetensors headers: a
damaged newest checkpoint is skipped, with a warning, for the newest one that is whole. `train.keep_last` keeps the newest N, and also,
in a WSD run, the newest checkpoint of the stable phase (the one `hfpipe decay` needs).
"""

import errno
import json
import logging
import re
import shutil
import struct
from pathlib import Path

from ..config import save_recipe, to_yaml, yaml12
from .step import TrainingError

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
RECIPE_FILE = "resolved_recipe.yaml"
_NAME = re.compile(r"^step-(\d+)$")
# What a resume may change: the budget, the cadence of logs, evaluations and saves, resume itself, and
# output_dir (a checkpoint resumed by its path may come from another folder).
RESUMABLE_KEYS = frozenset({
    "output_dir", "train.max_steps", "train.max_tokens", "train.max_minutes", "train.num_epochs",
    "train.log_every_steps", "train.eval_every_steps", "train.save_every_steps", "train.keep_last", "train.resume",
})  # fmt: skip


class CheckpointError(TrainingError):
    """No checkpoint can be resumed as asked: damaged, or trained with another recipe."""


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (a COMPLETE marker), oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, keep_last: int,
                    recipe=None) -> Path:
    """Collective: every process must call it. Returns the final checkpoint path. `recipe` is saved in it."""
    root = checkpoint_dir(output_dir)
    final, tmp = root / f"step-{step:08d}", root / f"step-{step:08d}.tmp"
    if accelerator.is_main_process:
        remove_incomplete(output_dir)  # leftovers of a save that was killed or failed
        tmp.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        with _quiet_tied_weights(accelerator):
            accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        _finish_save(accelerator, output_dir, tmp, final, step, state, keep_last, recipe)
    except Exception as e:
        if not _disk_full(e, root):
            raise
        written = _folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)  # no *.tmp left behind; the older checkpoints are untouched
        previous = latest_checkpoint(output_dir)
        needed = max(_folder_bytes(previous) if previous else 0, written)
        free = shutil.disk_usage(root).free
        raise CheckpointError(
            f"the disk holding {root} is full: saving step-{step:08d} needs about {needed / 1e6:.1f} MB and "
            f"{free / 1e6:.1f} MB are free; free some space (or lower train.keep_last) and run the same command "
            f"again to resume from {previous.name if previous else 'the start'}"
        ) from None
    accelerator.wait_for_everyone()
    return final


def _finish_save(accelerator, output_dir, tmp: Path, final: Path, step: int, state: dict, keep_last: int, recipe):
    """The main process's part of a save: state, recipe and COMPLETE manifest, the rename, keep_last."""
    if accelerator.is_main_process:
        files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        if recipe is not None:
            save_recipe(recipe, tmp / RECIPE_FILE)
        (tmp / COMPLETE).write_text(json.dumps({"step": step, "files": files}, indent=2))
        if final.exists():  # e.g. the final step coincides with a periodic save after a resume
            shutil.rmtree(final)
        tmp.rename(final)  # the checkpoint appears whole, or not at all
        keep = newest_stable_phase(output_dir, recipe.train) if recipe is not None else None
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            if old != keep:  # the newest stable-phase one of a WSD run stays: `hfpipe decay` starts from it
                shutil.rmtree(old, ignore_errors=True)


class _TiedWeightsFilter(logging.Filter):
    """Drops accelerate's "Removed shared tensor {...} while saving" when every name is a tied weight the
    model declares (`_tied_weights_keys`: the MLM decoder is the embedding matrix); keeps any other."""

    def __init__(self, tied: set[str]):
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        found = re.search(r"Removed shared tensor \{(.*?)\}", record.getMessage())
        return not (found and {n.strip(" '\"") for n in found.group(1).split(",")} <= self.tied)


class _quiet_tied_weights:
    """`with _quiet_tied_weights(accelerator): accelerator.save_state(...)`: no warning for expected ties."""

    def __init__(self, accelerator):
        tied = set()
        for model in getattr(accelerator, "_models", []):
            keys = getattr(accelerator.unwrap_model(model), "_tied_weights_keys", None) or {}
            tied |= set(keys)
        self.logger, self.filter = logging.getLogger("accelerate.utils.other"), _TiedWeightsFilter(tied)

    def __enter__(self):
        self.logger.addFilter(self.filter)

    def __exit__(self, *exc):
        self.logger.removeFilter(self.filter)


def _disk_full(error: BaseException, root: Path) -> bool:
    """Whether a save failed for want of space: ENOSPC anywhere in the chain of errors (Python, safetensors'
    text), or under 1 MiB left on the disk (torch.save says only "iostream error" / "unexpected pos")."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(seen) or "StorageFull" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(root).free < 2**20
    except OSError:
        return False


def _folder_bytes(folder: Path | None) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder and folder.is_dir() else 0


def in_stable_phase(train, state: dict) -> bool:
    """Whether a checkpoint with this trainer state was saved in the stable phase of a WSD run (`train`):
    past the warmup (lr at its peak) and before the decay began."""
    from .budget import Budget

    if train.schedule != "wsd":
        return False
    budget = Budget(train)
    step, tokens, elapsed = state["step"], state.get("tokens", 0), state.get("elapsed", 0.0)
    return (budget.progress(step, tokens, elapsed) <= 1.0 - train.decay_fraction + 1e-9
            and budget.lr(step, tokens, elapsed) >= train.lr * (1 - 1e-6))


def newest_stable_phase(output_dir: str | Path, train) -> Path | None:
    """The newest complete checkpoint of the stable phase of a WSD run, which keep_last never deletes."""
    if train.schedule != "wsd":
        return None
    for path in reversed(list_checkpoints(output_dir)):
        try:
            state = json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        if in_stable_phase(train, state):
            return path
    return None


def remove_incomplete(output_dir: str | Path) -> list[Path]:
    """Delete what failed saves left: `*.tmp` folders and step folders without a COMPLETE marker."""
    root = checkpoint_dir(output_dir)
    stale = [p for p in root.glob("step-*") if p.is_dir() and not (p / COMPLETE).is_file()] if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


# ----------------------------------------------------------------------------------------------
# Choosing what to resume from: whole, and trained with the same recipe
# ----------------------------------------------------------------------------------------------


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """`train.resume`: `auto` or `force` (the newest checkpoint that verifies; a damaged newer one is
    skipped with a warning), `none`, or a checkpoint path. Raises CheckpointError when every
    checkpoint there is damaged: never resume from garbage, never silently start over."""
    if resume == "none":
        return None
    if resume not in ("auto", "force"):
        path = Path(resume)
        if not (path / COMPLETE).is_file():
            raise FileNotFoundError(
                f"train.resume={resume!r} is not a complete checkpoint folder (no {COMPLETE} marker); "
                f"complete ones: {[str(p) for p in list_checkpoints(output_dir)] or 'none'}"
            )
        if problem := verify_checkpoint(path):
            raise CheckpointError(f"train.resume={resume!r}: the checkpoint is damaged: {problem}")
        return path
    damaged = []
    for path in reversed(list_checkpoints(output_dir)):
        if problem := verify_checkpoint(path):
            damaged.append(f"{path.name}: {problem}")
            continue
        if damaged:
            logger.warning("skipping damaged checkpoint(s) (%s); resuming from %s instead", "; ".join(damaged), path)
        return path
    if damaged:
        raise CheckpointError(
            f"no checkpoint in {checkpoint_dir(output_dir)} can be resumed, all are damaged ({'; '.join(damaged)}); "
            "delete that folder to start over, or set a new output_dir"
        )
    return None


def find_resume(recipe) -> Path | None:
    """The checkpoint this run resumes from (`train.resume`), whole and, for `auto`, trained with this
    recipe. Call it before any compute and before output_dir/resolved_recipe.yaml is overwritten."""
    path = resolve_resume(recipe.train.resume, recipe.output_dir)
    if path is not None and recipe.train.resume == "auto":
        check_same_recipe(path, recipe, recipe.output_dir)
    return path


def verify_checkpoint(path: Path) -> str | None:
    """What is wrong with the checkpoint at `path`, or None when it looks loadable: every file in the
    COMPLETE manifest is there at its saved size, trainer_state.json parses, and every safetensors
    header parses and covers its file (a truncated copy fails this)."""
    try:
        manifest = json.loads((path / COMPLETE).read_text())
    except ValueError:
        manifest = None  # a checkpoint from before manifests: "step N"
    for name, size in (manifest.get("files", {}) if isinstance(manifest, dict) else {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} when it was saved"
    try:
        int(json.loads((path / STATE_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{STATE_FILE} is unreadable ({type(e).__name__}: {e})"
    for file in sorted(path.rglob("*.safetensors")):
        if problem := _safetensors_problem(file):
            return f"{file.relative_to(path)}: {problem}"
    return None


def _safetensors_problem(file: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes."""
    size = file.stat().st_size
    with file.open("rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes)"
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            return "truncated in its header"
        try:
            header = json.loads(stream.read(header_len))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "its header does not parse"
    if 8 + header_len + end > size:
        return f"truncated: {size} bytes, the header describes {8 + header_len + end}"
    return None


def check_same_recipe(checkpoint: Path, recipe, output_dir: str | Path) -> None:
    """Raise CheckpointError naming each key (budget and cadence keys aside) whose value in `recipe`
    differs from the recipe that trained `checkpoint`, old -> new, and the two ways on."""
    saved = checkpoint / RECIPE_FILE
    if not saved.is_file():  # a checkpoint from before recipes were saved in them: the run's own copy
        saved = Path(output_dir) / RECIPE_FILE
    if not saved.is_file():
        logger.warning("%s has no %s: cannot check that it was trained with this recipe", checkpoint, RECIPE_FILE)
        return
    old, new = _flat(yaml12.load(saved.read_text())), _flat(yaml12.load(to_yaml(recipe)))
    changed = [k for k in {**new, **old} if k not in RESUMABLE_KEYS and old.get(k, _ABSENT) != new.get(k, _ABSENT)]
    if changed:
        diffs = ", ".join(f"{k}: {_show(old.get(k, _ABSENT))} -> {_show(new.get(k, _ABSENT))}" for k in changed)
        raise CheckpointError(
            f"{checkpoint} was trained with a different recipe ({diffs}), so resuming would not run the new "
            "recipe; set train.resume=force to resume it anyway with the new values, or set a new output_dir "
            "to start a fresh run"
        )


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


_ABSENT = object()  # a key one of the two recipes does not have


def _show(value) -> str:
    return "(absent)" if value is _ABSENT else yaml12.dump(value, flow=True).strip()


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore model, optimizer and RNG states in place; return the loop's saved state."""
    try:
        accelerator.load_state(str(path))
    except Exception as e:  # a model of another shape (train.resume=force), a garbled optimizer file, ...
        detail = " ".join(line.strip() for line in str(e).splitlines()[:2])  # torch: a title, then the first problem
        raise CheckpointError(
            f"could not load checkpoint {path} ({type(e).__name__}: {detail}); the model and optimizer must match "
            "the checkpoint's (even with train.resume=force): set a new output_dir to start a fresh run"
        ) from e
    return json.loads((path / STATE_FILE).read_text())
