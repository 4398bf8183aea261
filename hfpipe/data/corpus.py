"""The embedded default corpus `builtin:python-docs`: real English that every Python carries.

    from hfpipe.data.corpus import python_docs_files, python_docs_sources
    files = python_docs_files()          # {"train": Path(...jsonl), "validation": Path(...jsonl)}
    sources = python_docs_sources()      # Path(...jsonl) of {"module": "json.decoder", "text": ...}

or, in a recipe, `data.source: builtin:python-docs` (hfpipe.data.sources loads these files with `datasets`).

What it is. Two parts of the running interpreter's own documentation, so a fresh machine with
nothing downloaded can still pretrain on real prose:

1. `pydoc_data.topics.topics`: the language reference and library topics that `help()` shows
   (one document per topic: "assert", "class", "formatstrings", ...).
2. The docstrings of the standard library: every module (and submodule of every package) is
   imported, sorted by name, and its module docstring plus the docstrings of the classes,
   functions and methods it defines become documents, one per docstring.

Rules that keep it deterministic and safe:
- Collection runs in a separate interpreter (`python -I -S`: no site-packages, no user site,
  no PYTHON* environment variables), so importing the standard library cannot disturb the
  caller and only the standard library is seen.
- Modules with side effects are never imported (`antigravity` opens a browser, `this` prints,
  GUI toolkits, the test suites); a module that fails to import, or writes to stdout/stderr
  while being imported, is skipped.
- Docstrings are cleaned with `inspect.cleandoc`, documents of fewer than `MIN_WORDS` words are
  dropped, exact duplicates are removed (first occurrence wins), and the order is fixed: topics
  by name, then modules by dotted name, then members by name.
- Each docstring also keeps the dotted name of the module that *defines* it (`obj.__module__`,
  so `json.loads` re-exported elsewhere still says `json`; topics say `pydoc_data.topics`).
  `python_docs_sources()` caches these (module, text) pairs, deduplicated per pair: the labels of
  the `pydocs` fine-tuning task (hfpipe/tasks/builtin.py). The corpus itself ignores them.
- The validation split is the ~5% of documents whose BLAKE2b hash of the text falls below a
  threshold: it does not depend on order or seed, and a document never moves between splits.

Size, measured with CPython 3.11.7 on Linux (it varies a little between Python versions and
builds): 5,906 documents (5,609 train / 297 validation), 1.98 MB of UTF-8 text, 298,963
whitespace-separated words (the 79 pydoc topics are 0.46 MB of it); the training split is 0.44 M
tokens with the default 8192-word WordPiece tokenizer. Collection takes about 0.4 s; the result is
cached as two JSON-lines files under `cache_dir()`, keyed by the Python version and platform, so
later runs only read them (and `sources.jsonl` beside them).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

NAME = "python-docs"
MIN_WORDS = 8
VALIDATION_PER_MILLE = 50  # 5% of documents, by hash
BUILD_VERSION = 1  # bump when the collection rules change, to invalidate old caches

# Never imported: side effects (browser, printing, GUI, sound), test suites, or the interpreter's
# own entry points. Any dotted module with one of these components is skipped too.
SKIP_COMPONENTS = frozenset(
    {
        "antigravity",
        "this",
        "__hello__",
        "__phello__",
        "__main__",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "test",
        "tests",
        "idle_test",
        "pydoc_data",
        "ensurepip",
        "venv",
        "lib2to3",
        "msilib",
        "winsound",
        "winreg",
        "msvcrt",
        "_winapi",
        "ossaudiodev",
        "xxlimited",
        "xxlimited_35",
    }
)


def cache_dir(base: str | os.PathLike | None = None) -> Path:
    """Where the collected corpus is cached: `base`, else $HFPIPE_CACHE, else ~/.cache/hfpipe."""
    if base is not None:
        return Path(base)
    if os.environ.get("HFPIPE_CACHE"):
        return Path(os.environ["HFPIPE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hfpipe"


def is_validation(text: str) -> bool:
    """Deterministic split: a document is in validation when its hash falls in the first 5%."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 1000 < VALIDATION_PER_MILLE


def python_docs_files(base: str | os.PathLike | None = None) -> dict[str, Path]:
    """Return {"train": path, "validation": path} of the corpus as JSON lines ({"text": ...}).

    Collects the corpus on the first call (a few seconds) and reuses the cached files afterwards.
    """
    files = _cache_files(base)
    if not all(files[split].exists() for split in ("train", "validation")):
        _write_cache(files)
    return {split: files[split] for split in ("train", "validation")}


def python_docs_sources(base: str | os.PathLike | None = None) -> Path:
    """Return the path of the (module, docstring) pairs as JSON lines ({"module": ..., "text": ...}).

    Every docstring of the corpus (pydoc topics included, as module `pydoc_data.topics`) with the
    dotted name of the module that defines it, in corpus order; a text defined in two modules has
    two lines. Collected and cached like `python_docs_files`.
    """
    files = _cache_files(base)
    if not files["sources"].exists():
        _write_cache(files)
    return files["sources"]


def _cache_files(base: str | os.PathLike | None) -> dict[str, Path]:
    key = f"{NAME}-v{BUILD_VERSION}-py{platform.python_version()}-{sys.platform}"
    folder = cache_dir(base) / key
    return {name: folder / f"{name}.jsonl" for name in ("train", "validation", "sources")}


def _write_cache(files: dict[str, Path]) -> None:
    sourced = collect_sourced_documents()
    documents = _unique(text for _, text in sourced)
    rows = {
        "train": [{"text": text} for text in documents if not is_validation(text)],
        "validation": [{"text": text} for text in documents if is_validation(text)],
        "sources": [{"module": module, "text": text} for module, text in _unique(sourced)],
    }
    files["train"].parent.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[name])
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file


def _unique(items):
    """The items in order, each once (first occurrence wins)."""
    return list(dict.fromkeys(items))


def collect_documents() -> list[str]:
    """Collect the corpus in a fresh, isolated interpreter and return its documents in order."""
    return _unique(text for _, text in collect_sourced_documents())


def collect_sourced_documents() -> list[tuple[str, str]]:
    """Every (defining module, cleaned docstring) pair, in corpus order, duplicates kept."""
    command = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--collect"]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"collecting builtin:{NAME} failed (exit {result.returncode}): {result.stderr[-2000:]}"
        )
    documents = [(module, text) for module, text in json.loads(result.stdout)]
    if not documents:
        raise RuntimeError(f"builtin:{NAME} collected no documents with {sys.executable}")
    return documents


# ---------------------------------------------------------------------------------------------
# Everything below runs inside the isolated collector interpreter (`python -I -S corpus.py`).


def _module_names() -> list[str]:
    """Every importable standard-library module name, packages walked recursively, sorted."""
    import pkgutil

    names = []
    pending = sorted(n for n in sys.stdlib_module_names if not n.startswith("_"))
    while pending:
        name = pending.pop(0)
        if SKIP_COMPONENTS.intersection(name.split(".")):
            continue
        module = _quiet_import(name)
        if module is None:
            continue
        names.append(name)
        if hasattr(module, "__path__"):
            children = pkgutil.iter_modules(module.__path__, prefix=name + ".")
            pending.extend(sorted(c.name for c in children if not c.name.rsplit(".", 1)[1].startswith("_")))
    return sorted(names)


def _quiet_import(name: str):
    """Import `name`; None if it fails or writes anything to stdout/stderr while importing."""
    import contextlib
    import importlib
    import io
    import warnings

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - ImportError, SystemExit, platform errors: all mean "skip"
        return None
    return None if sink.getvalue() else module


def _docstrings(module) -> list[tuple[str, str]]:
    """(defining module, docstring): the module's own, then its classes/functions and their members,
    sorted by name. A class or function names the module that defines it (`obj.__module__`)."""
    import inspect

    found = [(module.__name__, module.__doc__)]
    for _, obj in sorted(vars(module).items()):
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        defined_in = getattr(obj, "__module__", None) or ""
        owner = defined_in.split(".")[0]
        if owner not in sys.stdlib_module_names and owner.lstrip("_") not in sys.stdlib_module_names:
            continue
        found.append((defined_in, obj.__doc__))
        if inspect.isclass(obj):
            for _, member in sorted(vars(obj).items()):
                member = getattr(member, "__func__", member)  # classmethod / staticmethod
                if inspect.isroutine(member) or isinstance(member, property):
                    found.append((defined_in, member.__doc__))
    return [(name, doc) for name, doc in found if isinstance(doc, str)]


def _collect() -> list[tuple[str, str]]:
    """(module, text) for every docstring long enough, in corpus order; duplicates kept."""
    import inspect
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    raw = [("pydoc_data.topics", topics[name]) for name in sorted(topics)]
    for name in _module_names():
        raw.extend(_docstrings(sys.modules[name]))
    documents = []
    for module, doc in raw:
        text = inspect.cleandoc(doc).strip()
        if len(text.split()) >= MIN_WORDS:
            documents.append((module, text))
    return documents


if __name__ == "__main__" and sys.argv[1:] == ["--collect"]:
    import contextlib
    import io
    import warnings

    real_stdout = sys.stdout
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn when their attributes are read
        docs = _collect()  # stray prints go to the StringIO, not into the JSON
    real_stdout.write(json.dumps(docs, ensure_ascii=False))
