"""`hfpipe export onnx`: every head runs in onnxruntime as in PyTorch, on batch shapes the export never saw.

    .venv/bin/pytest tests/hub/test_export_onnx.py -q

Each case saves a tiny model folder (a different architecture variant per head), runs the command, reads
the max abs diff it prints, then checks the serving folder independently: the tokenizer saved in OUT
feeds onnxruntime directly, and its outputs match the source folder's PyTorch model.
"""

import re

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import transformers
from fresh_env import run_without_hfpipe
from launch import hfpipe_command, run

from hfpipe import (
    HfpipeConfig,
    HfpipeForMaskedLM,
    HfpipeForMultipleChoice,
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
    HfpipeModel,
)
from hfpipe.cli import main
from hfpipe.config import TokenizerArgs
from hfpipe.data.tokenizer import train_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world", "tiny models export fast", "a dog"]
SMALL = dict(hidden_size=32, intermediate_size=48, num_attention_heads=2, max_position_embeddings=64)
MLM, SC, TC, QA, MC = (HfpipeForMaskedLM, HfpipeForSequenceClassification, HfpipeForTokenClassification,
                       HfpipeForQuestionAnswering, HfpipeForMultipleChoice)
SINUSOIDAL_RMS = dict(position_embedding_type="sinusoidal", norm_type="rmsnorm")

# name: (--head flag, None for the default; class saved in the folder; preset; overrides (one architecture
# variant per case); class exported; ONNX outputs)
CASES = {
    "default-base": (None, MLM, "modern-tiny", {}, HfpipeModel, ["last_hidden_state"]),
    "auto-masked-lm": ("auto", MLM, "modern-tiny", {}, MLM, ["logits"]),
    "sequence-classification": ("sequence-classification", SC, "bert-tiny", {}, SC, ["logits"]),
    "token-classification": ("auto", TC, "modern-tiny", {"position_embedding_type": "alibi"}, TC, ["logits"]),
    "question-answering": ("auto", QA, "bert-tiny", SINUSOIDAL_RMS, QA, ["start_logits", "end_logits"]),
    "multiple-choice": ("auto", MC, "bert-tiny", dict(token_mixer="pooling"), MC, ["logits"]),
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS * 10, TokenizerArgs(type="wordpiece", vocab_size=80, min_frequency=1))


def printed_diff(stdout: str) -> float:
    return float(re.search(r"max abs diff (\S+)", stdout).group(1))


def serve(out, texts, multiple_choice=False):
    """What a serving stack does: the folder's tokenizer, straight into onnxruntime."""
    encoded = transformers.AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="np")
    if multiple_choice:
        encoded = {k: v.reshape(len(texts) // 2, 2, -1) for k, v in encoded.items()}  # (B*K, T) -> (B, K, T)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    return encoded, dict(zip([o.name for o in session.get_outputs()], session.run(None, dict(encoded))))


@pytest.mark.parametrize("case", CASES)
def test_every_head_matches_pytorch_on_unseen_shapes(case, tokenizer, tmp_path, capsys):
    flag, saved_class, preset, overrides, exported_class, outputs = CASES[case]
    config = HfpipeConfig.from_preset(preset, vocab_size=len(tokenizer), num_labels=3, **SMALL, **overrides)
    torch.manual_seed(0)
    folder, out = tmp_path / "model", tmp_path / "onnx"
    saved_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    assert main(["export", "onnx", str(folder), str(out), *(["--head", flag] if flag else [])]) == 0
    stdout = capsys.readouterr().out
    diff = printed_diff(stdout)
    print(f"{case}: {exported_class.__name__} onnxruntime vs PyTorch max abs diff {diff:.2e}")
    assert diff <= 1e-4, stdout
    files = {p.name for p in out.iterdir()}
    assert {"model.onnx", "config.json", "configuration_hfpipe.py", "tokenizer.json"} <= files
    config = transformers.AutoConfig.from_pretrained(out, trust_remote_code=True)
    assert config.architectures == [exported_class.__name__]

    graph = onnx.load(out / "model.onnx").graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]  # the tokenizer's outputs
    assert [o.name for o in graph.output] == outputs
    axes = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    choices = ["num_choices"] if saved_class is MC else []
    assert axes == ["batch_size", *choices, "sequence_length"]

    encoded, got = serve(out, TEXTS, multiple_choice=saved_class is MC)
    reference = exported_class.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in encoded.items()})
    for name in outputs:
        assert got[name].shape == tuple(expected[name].shape)
        assert np.abs(got[name] - expected[name].numpy()).max() <= 1e-4, name


def test_exported_folder_serves_where_hfpipe_is_not_installed(tokenizer, tmp_path, capsys):
    """A user's serving machine: transformers' AutoTokenizer and onnxruntime only (`import hfpipe` fails
    there); the logits match the source folder's PyTorch model computed here."""
    config = HfpipeConfig.from_preset("bert-tiny", vocab_size=len(tokenizer), num_labels=3, **SMALL)
    torch.manual_seed(0)
    folder, out = tmp_path / "model", tmp_path / "onnx"
    SC(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert main(["export", "onnx", str(folder), str(out), "--head", "auto"]) == 0
    capsys.readouterr()
    code = f"""
import numpy as np, onnxruntime
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)
encoded = tok({TEXTS!r}, padding=True, return_tensors="np")
session = onnxruntime.InferenceSession({str(out / "model.onnx")!r}, providers=["CPUExecutionProvider"])
(logits,) = session.run(None, dict(encoded))
np.save({str(tmp_path / "served.npy")!r}, logits)
np.save({str(tmp_path / "input_ids.npy")!r}, encoded["input_ids"])
"""
    run_without_hfpipe(code, env={"HF_HUB_OFFLINE": "1"})
    served, input_ids = np.load(tmp_path / "served.npy"), np.load(tmp_path / "input_ids.npy")
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert np.array_equal(input_ids, encoded["input_ids"].numpy())  # the same tokens as here
    with torch.no_grad():
        expected = SC.from_pretrained(folder).eval()(**encoded).logits.numpy()
    assert served.shape == (len(TEXTS), 3)
    assert np.abs(served - expected).max() <= 1e-4


def test_bert_folder_is_converted_and_matches_transformers_bert(tmp_path, capsys):
    """A BERT folder (with token_type_ids) is converted to hfpipe, then exported: onnxruntime reproduces
    transformers' own BertModel, segments included."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(" ".join(TEXTS).split()))]
    tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    config = transformers.BertConfig(vocab_size=len(tokenizer), num_hidden_layers=2, **SMALL)
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    folder, out = tmp_path / "bert", tmp_path / "onnx"
    bert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    assert main(["export", "onnx", str(folder), str(out)]) == 0
    diff = printed_diff(capsys.readouterr().out)
    print(f"BERT -> hfpipe -> ONNX: onnxruntime vs PyTorch max abs diff {diff:.2e}")
    assert diff <= 1e-4

    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    encoded = tokenizer(TEXTS[:2], TEXTS[2:], padding=True, return_tensors="np")  # sentence pairs
    assert list(encoded) == ["input_ids", "token_type_ids", "attention_mask"]
    assert encoded["token_type_ids"].any()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == set(encoded)
    (got,) = session.run(["last_hidden_state"], dict(encoded))
    with torch.no_grad():
        expected = bert(**{k: torch.from_numpy(v) for k, v in encoded.items()}).last_hidden_state
    assert np.abs(got - expected.numpy()).max() <= 1e-4


def test_bad_folders_get_one_line_errors(tmp_path, capsys, tokenizer):
    (tmp_path / "empty").mkdir()
    gpt2, mlm, no_tokenizer = tmp_path / "gpt2", tmp_path / "mlm", tmp_path / "no-tokenizer"
    transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(gpt2)
    config = HfpipeConfig.from_preset("modern-tiny", vocab_size=len(tokenizer), **SMALL)
    HfpipeForMaskedLM(config).save_pretrained(mlm)
    tokenizer.save_pretrained(mlm)
    HfpipeModel(config).save_pretrained(no_tokenizer)
    capsys.readouterr()
    cases = [
        ([tmp_path / "empty"], f"{tmp_path / 'empty'}: no config.json"),
        ([tmp_path / "missing"], f"{tmp_path / 'missing'}: no such folder"),
        ([gpt2], f"{gpt2}: config.json says model_type 'gpt2'; hfpipe exports hfpipe or BERT models"),
        ([no_tokenizer], f"{no_tokenizer}: no tokenizer"),
        ([mlm, "--head", "question-answering"],
         f"{mlm}: holds a HfpipeForMaskedLM (masked-lm head), not a question-answering head"),
        ([mlm, "--head", "pooler"], "--head 'pooler': choose one of auto, base, masked-lm"),
    ]
    for args, message in cases:
        assert main(["export", "onnx", str(args[0]), str(tmp_path / "out"), *args[1:]]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1, errors  # one line
        assert errors[0].startswith(f"hfpipe export: error: {message}"), errors
    assert not (tmp_path / "out" / "model.onnx").exists()

    done = run(hfpipe_command("export", "onnx", str(gpt2), str(tmp_path / "out")))  # the real command line
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"hfpipe export: error: {gpt2}: config.json says model_type 'gpt2'; "
        "hfpipe exports hfpipe or BERT models")
