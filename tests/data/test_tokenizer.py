"""Tokenizer training, save/load round trip, reuse, and its errors. Run: .venv/bin/pytest tests/test_tokenizer.py"""

from __future__ import annotations

import json
import pydoc_data.topics

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hfpipe.config import RecipeError, TokenizerArgs
from hfpipe.data.tokenizer import (
    ARGS_FILE,
    MissingMaskTokenError,
    get_tokenizer,
    load_tokenizer,
    train_tokenizer,
)

TOPICS = pydoc_data.topics.topics
DOCS = [TOPICS[name] for name in sorted(TOPICS)]
SAMPLES = [
    "The assert statement is a convenient way to insert debugging assertions into a program.",
    "Ünïcödé, numbers 12345 and   odd   spacing\nacross lines; don't split me!",
    "",
]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_train_save_and_autotokenizer_round_trip(kind, tmp_path):
    args = TokenizerArgs(type=kind, vocab_size=600)
    tokenizer = train_tokenizer(iter(DOCS), args, output_dir=tmp_path)
    assert tokenizer.is_fast
    assert 500 <= len(tokenizer) <= 600
    expected_specials = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in expected_specials} == expected_specials
    assert (tokenizer.pad_token_id, tokenizer.mask_token_id) == (0, 4)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in SAMPLES:
        ids = tokenizer(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids
        assert ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP] for every type
    assert loaded.mask_token == "[MASK]" and loaded.pad_token == "[PAD]"
    assert json.loads((tmp_path / ARGS_FILE).read_text())["type"] == kind


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_training_is_reproducible(kind):
    # The raw `tokenizers` trainers are not (hash-map order); train_tokenizer renumbers/rounds.
    first, second = (train_tokenizer(DOCS, TokenizerArgs(type=kind, vocab_size=600)) for _ in range(2))
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_lowercase_switch():
    lower = train_tokenizer(DOCS, TokenizerArgs(vocab_size=500, lowercase=True))
    cased = train_tokenizer(DOCS, TokenizerArgs(vocab_size=500, lowercase=False))
    assert lower.tokenize("The Python") == lower.tokenize("the python")
    assert cased.tokenize("The Python") != cased.tokenize("the python")


def test_training_streams_and_respects_max_training_documents():
    consumed = []

    def stream():
        for doc in DOCS:
            consumed.append(doc)
            yield doc

    train_tokenizer(stream(), TokenizerArgs(vocab_size=300, max_training_documents=10))
    assert len(consumed) in (10, 11)  # islice may pull one more item from the generator before stopping


def test_get_tokenizer_trains_saves_then_reuses(tmp_path):
    args = TokenizerArgs(vocab_size=400)
    first = get_tokenizer(args, lambda: iter(DOCS), tmp_path)
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()

    def must_not_train():
        raise AssertionError("texts_factory called although a matching tokenizer was saved")

    again = get_tokenizer(args, must_not_train, tmp_path)
    assert again(SAMPLES[0])["input_ids"] == first(SAMPLES[0])["input_ids"]
    other = get_tokenizer(TokenizerArgs(vocab_size=300), lambda: iter(DOCS), tmp_path)  # args differ: retrain
    assert len(other) <= 300
    by_name = get_tokenizer(TokenizerArgs(name_or_path=str(tmp_path / "tokenizer")), must_not_train, tmp_path)
    assert len(by_name) == len(other)


def test_tokenizer_without_mask_token_is_rejected_by_name(tmp_path):
    trained = train_tokenizer(DOCS, TokenizerArgs(vocab_size=300))
    no_mask = PreTrainedTokenizerFast(
        tokenizer_object=trained.backend_tokenizer, pad_token="[PAD]", unk_token="[UNK]"
    )
    folder = tmp_path / "no-mask-tok"
    no_mask.save_pretrained(str(folder))
    with pytest.raises(MissingMaskTokenError, match=r"tokenizer '.*no-mask-tok' has no mask token"):
        load_tokenizer(folder)


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer folder './nowhere/tok' does not exist"):
        load_tokenizer("./nowhere/tok")
    with pytest.raises(ValueError, match="training corpus is empty"):
        train_tokenizer(iter([]), TokenizerArgs(vocab_size=300))
    with pytest.raises(RecipeError, match=r"vocab_size: must be >= 300 \(byte-level BPE"):
        TokenizerArgs(type="bpe", vocab_size=100).validate()
    with pytest.raises(RecipeError, match="min_frequency: must be >= 1"):
        TokenizerArgs(min_frequency=0).validate()


# ----------------------------------------------------------------------------------------------
# Saved beside a model: model_max_length is the model's limit (issue 22 item 6), and AutoTokenizer
# needs trust_remote_code where hfpipe is not installed (item 7)
# ----------------------------------------------------------------------------------------------


def _saved_folder(tmp_path, max_positions: int = 64):
    """A tiny hfpipe MLM folder saved the way every run saves final/ (hub/export.py)."""
    from hfpipe import HfpipeConfig, HfpipeForMaskedLM
    from hfpipe.hub.export import save_model_folder

    tokenizer = train_tokenizer(iter(DOCS), TokenizerArgs(vocab_size=600))
    assert tokenizer.model_max_length > 1e29  # what a trained tokenizer says before saving
    config = HfpipeConfig.from_preset("bert-tiny", vocab_size=len(tokenizer), max_position_embeddings=max_positions)
    save_model_folder(HfpipeForMaskedLM(config), tokenizer, tmp_path / "final")
    return tmp_path / "final"


LONG_TEXT_CHECK = r"""
import json, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(FOLDER, trust_remote_code=True)
model = AutoModelForMaskedLM.from_pretrained(FOLDER, trust_remote_code=True).eval()
batch = tok(" ".join(["the assert statement"] * 200), truncation=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
print(json.dumps({"model_max_length": tok.model_max_length, "tokens": batch["input_ids"].shape[1],
                  "logits": list(logits.shape)}))
"""


def test_a_saved_tokenizer_truncates_to_the_models_positions_here_and_without_hfpipe(tmp_path):
    from fresh_env import run_without_hfpipe

    folder = _saved_folder(tmp_path, max_positions=64)
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 64
    code = LONG_TEXT_CHECK.replace("FOLDER", repr(str(folder)))
    fresh = json.loads(run_without_hfpipe(code, env={"HF_HUB_OFFLINE": "1"}).stdout.strip().splitlines()[-1])
    assert fresh == {"model_max_length": 64, "tokens": 64, "logits": [1, 64, len(AutoTokenizer.from_pretrained(
        str(folder), trust_remote_code=True))]}
    # and in the project's environment, where hfpipe is importable
    import subprocess
    import sys

    here = subprocess.run([sys.executable, "-c", "import hfpipe\n" + code], capture_output=True, text=True,
                          timeout=300)
    assert here.returncode == 0, here.stderr[-2000:]
    assert json.loads(here.stdout.strip().splitlines()[-1]) == fresh
