"""The built-in task `pydocs`: which standard-library package does this docstring come from? Offline.

    hfpipe finetune recipes/demo/pydocs.yaml model.name_or_path=runs/demo/pretrain/final

    from hfpipe.tasks.builtin import pydocs_splits, pydocs_heldout_documents
    splits = pydocs_splits()            # {"train": [{"text": ..., "label": 3}, ...], "validation": [...]}
    PYDOCS_LABELS[splits["train"][0]["label"]]   # e.g. 'logging'
    pydocs_heldout_documents()          # the corpus documents behind the validation split

Real text with real labels, built from the embedded corpus `builtin:python-docs` (hfpipe/data/corpus.py),
so fine-tuning runs on a fresh machine with nothing downloaded:

- Text: a docstring of the standard library; label: the top-level package of the module that
  defines it (`asyncio.tasks.Task.cancel` -> asyncio). Six packages with 100-250 docstrings each
  (Python 3.11): PYDOCS_LABELS, in the task table (tasks/spec.py). A docstring defined in two
  packages is dropped (it has no one label).
- No name gives the label away. Every word or dotted name that contains a label's name (any label's,
  so a mask does not say which: `XMLParser`, `asyncio.gather`, `HTTPServer`, `emails`) and every
  word with a part that is the code name of a label's submodule (`minidom`, `sax_handler`,
  `DOMImplementation`, `mock`, `mime`, ...: ALIASES) becomes `[name]`. Submodule names that are
  plain English words (`handlers`, `client`, `message`, `case`) stay: they are what the text is about.
- Held-out split: the ~25% of examples whose BLAKE2b hash of the masked text falls below a threshold
  (deterministic, independent of order; a text never moves). Texts identical after masking are kept
  once, so no validation text appears in training. Each split is ordered by that hash, which mixes
  the labels, so `data.max_train_examples=N` keeps a sample of every label.
- Pretraining on the corpus should leave the held-out texts out: `pydocs_heldout_documents()` gives
  the raw corpus documents behind the validation split (`hfpipe demo` removes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from .spec import PYDOCS_LABELS

if TYPE_CHECKING:
    import datasets

    from .spec import TaskSpec

ALIASES = ("cookiejar", "dom", "elementtree", "etree", "expat", "mime", "minidom", "mock", "pulldom", "sax")
"""Code names of the labels' submodules (xml.dom, xml.sax, xml.etree.ElementTree, email.mime,
unittest.mock, http.cookiejar), masked like the labels' own names wherever they are a word or a
part of an identifier (`DOMImplementation`, `sax_handler`)."""
MASK = "[name]"
HELDOUT_PER_MILLE = 250  # 25% of examples are held out, by hash

# Words, identifiers and dotted names (`asyncio.Task.cancel`), and the parts of an identifier
# (`DOMImplementation` -> DOM, Implementation; `sax_handler` -> sax, handler).
_WORD = re.compile(r"\w+(?:\.\w+)*")
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def mask_names(text: str) -> str:
    """`text` with every label name and submodule code name replaced by MASK (see the module doc)."""

    def mask(match: re.Match) -> str:
        word = match.group(0)
        lower = word.lower()
        if any(name in lower for name in PYDOCS_LABELS):
            return MASK
        parts = {part.lower() for part in _PART.findall(word)} | set(re.split(r"[._]", lower))
        if parts & set(ALIASES):
            return MASK
        return word

    return _WORD.sub(mask, text)


def _hash(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"hfpipe-pydocs").digest()
    return int.from_bytes(digest, "big")


def is_heldout(masked_text: str) -> bool:
    """The deterministic split: an example is held out when its hash falls in the first 25%."""
    return _hash(masked_text) % 1000 < HELDOUT_PER_MILLE


def label_of(module: str) -> str:
    """The package a defining module belongs to: `asyncio.tasks` -> asyncio, `_asyncio` -> asyncio."""
    return module.split(".")[0].lstrip("_")


@lru_cache(maxsize=4)
def _build(sources_path: str, mtime: float) -> tuple[dict[str, list[dict]], frozenset[str]]:
    """(splits, held-out raw documents) from the corpus' (module, text) pairs; cached per file version."""
    packages: dict[str, set[str]] = {}  # raw text -> every package that defines it
    with open(sources_path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            packages.setdefault(row["text"], set()).add(label_of(row["module"]))
    examples: dict[str, tuple[int, list[str]]] = {}  # masked text -> (label id, raw texts)
    ambiguous: set[str] = set()
    for raw, found in packages.items():
        if len(found) != 1 or (label := next(iter(found))) not in PYDOCS_LABELS:
            continue
        text = mask_names(raw)
        label_id = PYDOCS_LABELS.index(label)
        if text in examples and examples[text][0] != label_id:
            ambiguous.add(text)
        examples.setdefault(text, (label_id, []))[1].append(raw)
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    heldout: set[str] = set()
    for text in sorted(set(examples) - ambiguous, key=_hash):
        label_id, raws = examples[text]
        split = "validation" if is_heldout(text) else "train"
        splits[split].append({"text": text, "label": label_id})
        if split == "validation":
            heldout.update(raws)
    return splits, frozenset(heldout)


def _sources(cache_dir: str | os.PathLike | None) -> tuple[str, float]:
    from hfpipe.data.corpus import python_docs_sources

    path = python_docs_sources(cache_dir)
    return str(path), path.stat().st_mtime


def pydocs_splits(cache_dir: str | os.PathLike | None = None) -> dict[str, list[dict]]:
    """{"train": [...], "validation": [...]} of {"text": masked docstring, "label": id in PYDOCS_LABELS}."""
    splits, _ = _build(*_sources(cache_dir))
    return {
        split: [dict(row) for row in rows] for split, rows in splits.items()
    }  # copies: the cache stays intact


def pydocs_heldout_documents(cache_dir: str | os.PathLike | None = None) -> frozenset[str]:
    """The raw corpus documents (as in `builtin:python-docs`) behind the validation split."""
    return _build(*_sources(cache_dir))[1]


def load_builtin_task(spec: TaskSpec) -> datasets.DatasetDict:
    """A built-in task's splits as a DatasetDict with the task's columns (`text`, `label`)."""
    import datasets

    if spec.hub_dataset != "builtin:pydocs":
        raise ValueError(
            f"task {spec.name}: unknown built-in data {spec.hub_dataset!r}; built-in: builtin:pydocs"
        )
    splits = pydocs_splits()
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]},
                features=spec.features(),
            )
            for split, rows in splits.items()
        }
    )
