"""Push model folders to the Hugging Face Hub and download them back, with errors that say what to do.

    from hfpipe.hub.push import push_folder, push_checkpoint, download
    result = push_folder("runs/mlm/final", "me/hfpipe-mini", revision="v1")   # -> PushResult
    print(result.commit_url if result.changed else "no changes: nothing uploaded")
    push_checkpoint("runs/mlm/checkpoints/step-1000", "me/hfpipe-mini", branch="step-1000")
    path = download("me/hfpipe-mini", revision="v1")                           # -> local snapshot dir

What a push guarantees, and why:
- Only safetensors weights travel. Pickled files (*.bin, *.pt, *.pkl, optimizer / RNG state) run
  arbitrary code when someone loads them, so a folder holding one is refused before any network call.
- The folder must be a complete model folder (config.json, safetensors weights, the code files its
  `auto_map` names), so what lands on the Hub loads with `AutoModel...(trust_remote_code=True)`.
- Pushing an unchanged folder uploads nothing and makes no commit: local files are hashed and compared
  with the remote tree first (git blob sha1 for regular files, sha256 for LFS/Xet ones).
- The local folder is only read, never written. Any network or server failure becomes a `HubError`
  naming the step, the endpoint and what to try; rerunning the same push is safe.
- The token comes from `token=`, else `HF_TOKEN`, else the saved `hf auth login`; it is never logged.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

logger = logging.getLogger(__name__)

# Pickle-based formats: loading one can execute arbitrary code, so they never go to the Hub.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib", "*.npy", "*.npz")
# Training state (optimizer, scheduler, sampler, grad-scaler and RNG state, as accelerate's save_state
# writes them): only useful for resuming, usually pickled. push_folder refuses it; push_checkpoint leaves it out.
TRAINING_STATE_PATTERNS = (
    "optimizer*",
    "scheduler*",
    "sampler*",
    "scaler*",
    "rng_state*",
    "random_states*",
    "custom_checkpoint*",
)
# Resume bookkeeping of hfpipe checkpoints (hfpipe/checkpoint.py): harmless JSON, meaningless on the Hub.
CHECKPOINT_BOOKKEEPING = ("trainer_state.json", "COMPLETE")
# Files upload_folder never sends (its own DEFAULT_IGNORE_PATTERNS): skipped when hashing too.
_ALWAYS_IGNORED_DIRS = (".git", ".cache/huggingface")


class HubError(RuntimeError):
    """A push could not complete (network, server, permissions). The local folder is untouched."""


class ModelFolderError(ValueError):
    """The folder is not something we push: incomplete, or holding pickled files."""


@dataclass(frozen=True)
class PushResult:
    """What a push did. `changed=False` means nothing was uploaded and no commit was made."""

    repo_id: str
    revision: str
    commit_sha: str
    commit_url: str
    changed: bool
    uploaded: tuple[str, ...]  # files whose content differed from the remote (all of them if new)

    def __str__(self) -> str:
        return self.commit_url


# --- local checks --------------------------------------------------------------------------------
def list_folder_files(folder: Path, ignore_patterns: tuple[str, ...] = ()) -> list[str]:
    """Relative POSIX paths of the files a push would send, sorted."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(rel == d or rel.startswith(d + "/") or f"/{d}/" in f"/{rel}" for d in _ALWAYS_IGNORED_DIRS):
            continue
        if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(Path(rel).name, pat) for pat in ignore_patterns):
            continue
        files.append(rel)
    return files


def check_model_folder(folder: str | Path, ignore_patterns: tuple[str, ...] = ()) -> list[str]:
    """Raise ModelFolderError unless `folder` is a complete, pickle-free model folder; return its files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a directory: pass the folder written by save_pretrained.")
    files = list_folder_files(folder, ignore_patterns)
    pickles = [f for f in files if any(fnmatch.fnmatch(Path(f).name, pat) for pat in PICKLE_PATTERNS)]
    pickles += [f for f in files if f not in pickles and _is_training_state(f)]
    if pickles:
        raise ModelFolderError(
            f"Refusing to push {folder}: it holds pickled or training-state files, which can run arbitrary "
            f"code when loaded: {', '.join(pickles)}. Weights go to the Hub only as safetensors: save the model "
            "with model.save_pretrained(folder) (writes model.safetensors), and push the exported model folder "
            "(e.g. output_dir/final), not a training checkpoint; use push_checkpoint() for checkpoints."
        )
    if "config.json" not in files:
        raise ModelFolderError(
            f"{folder} has no config.json: it is not a model folder (use save_pretrained)."
        )
    if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
        raise ModelFolderError(
            f"{folder} has no model.safetensors (nor model.safetensors.index.json): save the weights with "
            "model.save_pretrained(folder)."
        )
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{folder / 'config.json'} is not valid JSON: {err}") from err
    for auto_class, targets in (config.get("auto_map") or {}).items():
        for target in targets if isinstance(targets, list) else [targets]:  # AutoTokenizer maps to a pair
            _check_code_file(folder, files, auto_class, target)
    if not any(f.startswith("tokenizer") for f in files):
        logger.warning("%s has no tokenizer files: AutoTokenizer and pipelines will not load it.", folder)
    return files


def _check_code_file(folder: Path, files: list[str], auto_class: str, target: str | None) -> None:
    """An auto_map entry "module.Class" (or "repo--module.Class") needs module.py beside config.json."""
    if target is not None and "--" not in target:  # "repo--module.Class" lives in another repo
        module = target.rsplit(".", 1)[0] + ".py"
        if module not in files:
            raise ModelFolderError(
                f"{folder / 'config.json'} maps {auto_class} to {target}, but {module} is missing from the "
                "folder, so trust_remote_code loading would fail. Save with the hfpipe model's save_pretrained, "
                "which copies the code files."
            )


def _is_training_state(rel: str) -> bool:
    return any(fnmatch.fnmatch(Path(rel).name, pat) for pat in TRAINING_STATE_PATTERNS)


def _file_hashes(path: Path) -> tuple[str, str]:
    """(git blob sha1, sha256) of a file: what the Hub reports for regular and for LFS/Xet files."""
    git, sha256 = hashlib.sha1(b"blob %d\0" % path.stat().st_size), hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            git.update(block)
            sha256.update(block)
    return git.hexdigest(), sha256.hexdigest()


# --- push ----------------------------------------------------------------------------------------
def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    create_branch: bool = True,
    ignore_patterns: tuple[str, ...] = (),
) -> PushResult:
    """Push a saved model folder to `repo_id` (created if missing) on branch `revision` (default main).

    `create_branch=True` creates the branch from main when it does not exist yet. `private` applies
    when the repo is created (an existing repo keeps its visibility). Files matching `ignore_patterns`
    (globs on the relative path or on the file name) stay local. Returns a PushResult; its
    `changed` is False when the remote already held every file (then nothing is uploaded).
    """
    folder = Path(folder)
    files = check_model_folder(folder, ignore_patterns)
    token = token or get_token()
    if not token:
        raise HubError(
            "No Hugging Face token found: pass token=..., set the HF_TOKEN environment variable, or run "
            "`hf auth login`. The token needs write access to the repo's namespace."
        )
    revision = revision or constants.DEFAULT_REVISION
    api = HfApi(token=token)
    step = "creating the repo"
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision != constants.DEFAULT_REVISION and create_branch:
            step = f"creating branch '{revision}'"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "comparing local files with the remote tree"
        changed = _changed_files(api, repo_id, revision, folder, files)
        if not changed:
            sha = api.repo_info(repo_id, revision=revision).sha
            logger.info("%s@%s already holds every file of %s: nothing to upload.", repo_id, revision, folder)
            url = f"{api.endpoint}/{repo_id}/commit/{sha}"
            return PushResult(repo_id, revision, sha, url, changed=False, uploaded=())
        step = f"uploading {len(changed)} file(s)"
        logger.info(
            "Uploading %d file(s) of %s to %s@%s: %s", len(changed), folder, repo_id, revision, changed
        )
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} with hfpipe",
            allow_patterns=[glob.escape(rel) for rel in files],  # exactly the files checked above
        )
    except Exception as err:
        hub_error = _as_hub_error(err, step, folder, repo_id, revision, api.endpoint)
        if hub_error is None:
            raise
        raise hub_error from err
    return PushResult(repo_id, revision, info.oid, info.commit_url, changed=True, uploaded=tuple(changed))


def push_checkpoint(
    folder: str | Path, repo_id: str, branch: str, *, token: str | None = None, private: bool = False
) -> PushResult:
    """Push the model inside a training checkpoint to `branch` (created from main if missing).

    Optimizer, scheduler and RNG state stay local (they are pickles and only matter for resuming);
    the checkpoint folder must hold a save_pretrained model at its top level.
    """
    return push_folder(
        folder,
        repo_id,
        private=private,
        revision=branch,
        commit_message=f"Checkpoint {Path(folder).name}",
        token=token,
        create_branch=True,
        ignore_patterns=TRAINING_STATE_PATTERNS + CHECKPOINT_BOOKKEEPING,
    )


def _changed_files(api: HfApi, repo_id: str, revision: str, folder: Path, files: list[str]) -> list[str]:
    """The local files whose content is not already at the same path on the remote revision."""
    remote = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, revision=revision, recursive=True)
        if hasattr(entry, "blob_id")  # files only, not folders
    }
    changed = []
    for rel in files:
        entry = remote.get(rel)
        if entry is None:
            changed.append(rel)
            continue
        git_sha1, sha256 = _file_hashes(folder / rel)
        same = entry.lfs.sha256 == sha256 if entry.lfs else entry.blob_id == git_sha1
        if not same:
            changed.append(rel)
    return changed


def _as_hub_error(
    err: Exception, step: str, folder: Path, repo_id: str, revision: str, endpoint: str
) -> HubError | None:
    """A HubError that says what failed, where, that nothing local changed, and what to try
    (None for errors that are not about the Hub or the network: those propagate unchanged)."""
    where = _request_line(err) or endpoint
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status is not None and status >= 500:
        reason = f"the Hub answered HTTP {status} (a server error)"
        hint = "This is usually temporary: wait a moment and run the same push again."
    elif isinstance(err, HfHubHTTPError) and status in (401, 403):
        reason = f"the Hub refused the request (HTTP {status})"
        hint = (
            f"Check that your token (token=, HF_TOKEN or `hf auth login`) has write access to the "
            f"'{repo_id.split('/')[0]}' namespace."
        )
    elif isinstance(err, RevisionNotFoundError):
        reason = f"branch '{revision}' does not exist"
        hint = "Create it first, or push with create_branch=True."
    elif isinstance(err, HfHubHTTPError):
        reason = f"the Hub answered HTTP {status}: {err.server_message or err}"
        hint = "Check the repo id and the message above."
    elif _is_network_error(err):
        reason = f"could not reach {endpoint} ({type(err).__name__}: {err})"
        hint = f"Check your network connection, proxy settings and HF_ENDPOINT (now {endpoint}), then push again."
    else:
        return None
    return HubError(
        f"Push of {folder} to {repo_id}@{revision} failed while {step} ({where}): {reason}.\n"
        f"Nothing local was modified: {folder} is exactly as before, and rerunning the push is safe "
        f"(files already on the Hub are skipped). {hint}"
    )


def _request_line(err: Exception) -> str | None:
    """'METHOD URL' of the request that failed, when the error carries it."""
    for holder in (err, getattr(err, "response", None)):
        try:
            request = getattr(holder, "request", None)  # httpx raises RuntimeError when it is unset
        except RuntimeError:
            request = None
        if request is not None:
            return f"{request.method} {request.url}"
    return None


def _is_network_error(err: Exception) -> bool:
    """Connection refused, DNS failure, timeouts -- from httpx/httpx2 (the Hub client) or the OS."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in ("TransportError", "TimeoutException") for cls in type(err).__mro__)


# --- download ------------------------------------------------------------------------------------
def download(
    repo_id: str,
    *,
    revision: str | None = None,
    filename: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download one file (`filename`) or the whole repo snapshot; returns the local path.

    A missing repo, revision or file raises huggingface_hub's own error (RepositoryNotFoundError,
    RevisionNotFoundError, EntryNotFoundError) with a hint on what to check appended.
    """
    try:
        if filename is not None:
            return Path(
                hf_hub_download(repo_id, filename, revision=revision, token=token, cache_dir=cache_dir)
            )
        return Path(snapshot_download(repo_id, revision=revision, token=token, cache_dir=cache_dir))
    except RepositoryNotFoundError as err:
        _explain(
            err,
            f"hfpipe: repo '{repo_id}' was not found on {constants.ENDPOINT}. Check the id (namespace/name), "
            "that it was pushed (`hfpipe push DIR --repo-id ID`), and, for a private repo, that your token "
            "(HF_TOKEN or `hf auth login`) can read it.",
        )
        raise
    except RevisionNotFoundError as err:
        _explain(
            err,
            f"hfpipe: repo '{repo_id}' has no revision '{revision}'. List its branches with "
            "HfApi().list_repo_refs(repo_id).",
        )
        raise
    except EntryNotFoundError as err:
        _explain(
            err,
            f"hfpipe: '{filename}' is not in {repo_id}@{revision or 'main'}. List the files with "
            "HfApi().list_repo_files(repo_id); a complete hfpipe model has config.json, model.safetensors, "
            "configuration_hfpipe.py, modeling_hfpipe.py and tokenizer files.",
        )
        raise


def _explain(err: Exception, hint: str) -> None:
    if hasattr(err, "append_to_message"):
        err.append_to_message("\n" + hint)
    else:
        err.args = (f"{err.args[0] if err.args else ''}\n{hint}",) + tuple(err.args[1:])
