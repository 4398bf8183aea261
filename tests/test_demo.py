"""The demo end to end (a few steps per stage) and its built-in task `pydocs`: real labels, a held-out
split disjoint from training and from the demo's pretraining text, no label name in any text.

    .venv/bin/pytest tests/test_demo.py -q
"""

import asyncio
import email.utils
import http.server
import inspect
import json
import logging.handlers
import re
import unittest
import xml.dom.minidom
from pathlib import Path

import pytest

from hfpipe.config import FinetuneRecipe, PretrainRecipe, TaskDataArgs, load_recipe
from hfpipe.data.corpus import MIN_WORDS, python_docs_files
from hfpipe.demo import demo, print_summary, recipe_path
from hfpipe.tasks import get_task, load_task_data
from hfpipe.tasks.builtin import (
    ALIASES,
    MASK,
    is_heldout,
    mask_names,
    pydocs_heldout_documents,
    pydocs_splits,
)
from hfpipe.tasks.spec import PYDOCS_LABELS

SHARED_SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
# One public function or method per label, looked up in this interpreter: its docstring must be an
# example with that label (if it is long enough to be in the corpus at all).
KNOWN = [
    (asyncio.gather, "asyncio"),
    (logging.getLogger, "logging"),
    (logging.handlers.RotatingFileHandler, "logging"),
    (email.utils.parseaddr, "email"),
    (email.message_from_string, "email"),
    (unittest.TestCase.assertRaises, "unittest"),
    (unittest.TestCase.assertEqual, "unittest"),
    (xml.dom.minidom.parse, "xml"),
    (http.server.BaseHTTPRequestHandler.send_response, "http"),
]


@pytest.fixture(scope="module")
def splits():
    spec = get_task("pydocs")
    raw = load_task_data(spec, TaskDataArgs())  # the task's loader, as `hfpipe finetune` calls it
    return {
        split: [{"text": t, "label": y} for t, y in zip(ds["text"], ds["label"])] for split, ds in raw.items()
    }


def test_pydocs_is_a_registered_offline_task(splits):
    spec = get_task("pydocs")
    assert (spec.kind, spec.main_metric, spec.label_names) == (
        "sequence_classification",
        "accuracy",
        PYDOCS_LABELS,
    )
    assert set(splits) == {"train", "validation"}
    assert splits == pydocs_splits()  # deterministic: built twice, the same examples in the same order
    for split, minimum in (("train", 60), ("validation", 15)):
        counts = [sum(r["label"] == i for r in splits[split]) for i in range(len(PYDOCS_LABELS))]
        assert min(counts) >= minimum, (split, dict(zip(PYDOCS_LABELS, counts)))
    # Ordered by hash, not by module: the first 60 training examples already cover every label.
    assert {r["label"] for r in splits["train"][:60]} == set(range(len(PYDOCS_LABELS)))


def test_pydocs_labels_are_the_defining_package(splits):
    label_of = {r["text"]: PYDOCS_LABELS[r["label"]] for rows in splits.values() for r in rows}
    checked = 0
    for obj, package in KNOWN:
        doc = inspect.cleandoc(obj.__doc__ or "")
        if len(doc.split()) >= MIN_WORDS:
            assert label_of.get(mask_names(doc)) == package, obj.__qualname__
            checked += 1
    assert checked >= 6


def test_pydocs_heldout_split_is_disjoint_and_fixed(splits):
    train, validation = ({r["text"] for r in splits[s]} for s in ("train", "validation"))
    assert not train & validation
    assert all(is_heldout(t) for t in validation) and not any(is_heldout(t) for t in train)
    assert 0.18 < len(validation) / (len(train) + len(validation)) < 0.32
    heldout = pydocs_heldout_documents()  # the raw corpus documents behind the validation split
    assert {mask_names(doc) for doc in heldout} == validation
    corpus_train = {json.loads(line)["text"] for line in python_docs_files()["train"].open(encoding="utf-8")}
    assert len(heldout & corpus_train) > 100  # the corpus holds them: the demo must remove them


def test_no_text_names_a_label(splits):
    for rows in splits.values():
        for r in rows:
            lower = r["text"].lower()
            assert not [name for name in PYDOCS_LABELS if name in lower], r
            assert not [a for a in ALIASES if re.search(rf"(?<![a-z]){a}(?![a-z])", lower)], (
                r
            )  # `dom`, `sax_`
    words = " ".join(r["text"] for rows in splits.values() for r in rows).split()
    assert sum(MASK in w for w in words) > 100  # names were there, and were masked


def test_mask_names():
    text = (
        "Use asyncio.gather(), xml.dom.minidom or JSON; see DOMImplementation, sax_handler and ElementTree."
    )
    assert mask_names(text) == f"Use {MASK}(), {MASK} or JSON; see {MASK}, {MASK} and {MASK}."
    plain = "A random domain; the message header; emailing is not e-mail; Mocking HTTPS logs."
    assert (
        mask_names(plain)
        == f"A random domain; the message header; {MASK} is not e-mail; Mocking {MASK} logs."
    )
    assert {"dom", "sax", "mock", "mime"} <= set(ALIASES)


@pytest.mark.parametrize("name", ["demo/pretrain.yaml", "demo/pydocs.yaml", "demo/sst2.yaml"])
def test_demo_recipes_validate(name):
    cls = PretrainRecipe if name.endswith("pretrain.yaml") else FinetuneRecipe
    recipe = load_recipe(recipe_path(name), cls)
    assert recipe.seed == 42 and recipe.train.resume == "auto"


@pytest.fixture
def tiny_sst2(tmp_path):
    """The first rows of the real GLUE SST-2 files, or None where ../shared/data/sst2 is absent."""
    if not (SHARED_SST2 / "train.tsv").is_file():
        return None
    folder = tmp_path / "sst2"
    folder.mkdir()
    for name, rows in (("train.tsv", 200), ("dev.tsv", 64)):
        lines = (SHARED_SST2 / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / name).write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return folder


@pytest.mark.timeout(300)
def test_quick_demo_runs_every_stage(tmp_path, tiny_sst2, capsys):
    out = tmp_path / "demo"
    summary = demo(out, quick=True, sst2_dir=tiny_sst2)

    assert json.loads((out / "summary.json").read_text()) == summary
    for row in [summary["finetune"]] + ([summary["sst2"]] if tiny_sst2 else []):
        assert 0.0 <= row["pretrained"] <= 1.0 and 0.0 <= row["from_scratch"] <= 1.0
    assert 0.15 < summary["finetune"]["majority_class"] < 0.4  # six classes, none dominant
    assert ("sst2" in summary) == (tiny_sst2 is not None)
    results = json.loads((out / "pydocs" / "pretrained" / "results.json").read_text())
    assert results["task"] == "pydocs" and round(results["accuracy"], 4) == summary["finetune"]["pretrained"]

    # The pretraining text holds none of the held-out docstrings, and everything else of the corpus.
    pretrain_docs = [json.loads(line)["text"] for line in (out / "data" / "pretrain.jsonl").open()]
    assert not set(pretrain_docs) & pydocs_heldout_documents()
    data = summary["pretraining_data"]
    assert data["train_documents"] == len(pretrain_docs) and data["removed_heldout_documents"] > 100

    # The control starts from the pretrained model's architecture and tokenizer, not its weights.
    scratch, pretrained = out / "random-init", out / "pretrain" / "final"
    assert json.loads((scratch / "tokenizer.json").read_text()) == json.loads(
        (pretrained / "tokenizer.json").read_text()
    )
    import torch
    from safetensors.torch import load_file

    a, b = load_file(scratch / "model.safetensors"), load_file(pretrained / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(
        a["model.embeddings.word_embeddings.weight"], b["model.embeddings.word_embeddings.weight"]
    )

    # Reloaded without hfpipe, through the Auto classes and the folder's own code.
    fill, classify = summary["reload"]["fill_mask"], summary["reload"]["classify"]
    assert fill["model_class"] == "HfpipeForMaskedLM" and fill["text"] == "Return the [MASK] of the list."
    assert len(fill["top"]) == 5 and all(0 < g["score"] <= 1 for g in fill["top"])
    assert classify["model_class"] == "HfpipeForSequenceClassification"
    assert classify["label"] in PYDOCS_LABELS and classify["true_label"] in PYDOCS_LABELS
    assert {"data", "tokenizer", "pretrain", "pydocs_pretrained", "pydocs_from_scratch", "reload",
            "total"} <= set(summary["seconds"])  # fmt: skip

    capsys.readouterr()
    print_summary(summary)
    table = capsys.readouterr().out
    pydocs_row = next(line for line in table.splitlines() if line.startswith("pydocs "))
    assert pydocs_row.split()[1:3] == [
        f"{summary['finetune'][k]:.4f}" for k in ("pretrained", "from_scratch")
    ]
    assert str(out / "summary.json") in table


def test_cli_passes_quick_and_output_dir():
    from hfpipe.cli import build_parser

    args = build_parser().parse_args(["demo", "--quick", "--output-dir", "elsewhere"])
    assert (args.quick, args.output_dir) == (True, "elsewhere")
    assert build_parser().parse_args(["demo"]).quick is False


def test_corpus_sources_cover_the_corpus_with_defining_modules():
    from hfpipe.data.corpus import python_docs_sources

    rows = [json.loads(line) for line in python_docs_sources().open(encoding="utf-8")]
    corpus = set()
    for split in python_docs_files().values():
        corpus |= {json.loads(line)["text"] for line in split.open(encoding="utf-8")}
    assert {r["text"] for r in rows} == corpus  # the same documents, each with the module defining it
    modules = {r["module"] for r in rows if r["text"] == inspect.cleandoc(asyncio.gather.__doc__)}
    assert modules == {"asyncio.tasks"}  # defined there, re-exported by asyncio: one source, not two
