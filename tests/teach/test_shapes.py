"""`hfpipe shapes` names every dimension change; `hfpipe attention` plots the model's real attentions.

.venv/bin/pytest tests/teach/test_shapes.py -q
"""

import argparse
import struct

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from hfpipe import HfpipeConfig, HfpipeForMaskedLM, HfpipeModel
from hfpipe.teach import attention_viz, shapes
from hfpipe.teach.shapes import format_shapes, trace_shapes


def trace(preset: str, model_class=HfpipeForMaskedLM, B: int = 2, T: int = 16, mask=None, **overrides):
    torch.manual_seed(0)
    model = model_class(HfpipeConfig.from_preset(preset, vocab_size=500, **overrides)).eval()
    ids = torch.randint(1, 500, (B, T))
    return model, trace_shapes(model, ids, mask)


def find(rows, path: str, op: str):
    matches = [r for r in rows if r.path == path and r.op == op]
    assert len(matches) == 1, f"{path} / {op}: {len(matches)} rows"
    return matches[0]


def test_bert_mini_trace_names_every_dimension_change():
    model, rows = trace("bert-mini")
    layer = "model.layers.0"
    expected = {  # (path, op): (shape, named)
        ("model.embeddings", "input ids"): ((2, 16), "(B=2, T=16)"),
        ("model.embeddings.word_embeddings", "token embedding"): ((2, 16, 256), "(B=2, T=16, C=256)"),
        ("model.embeddings.token_type_embeddings", "segment embedding"): ((2, 16, 256), None),
        ("model.embeddings.position_embeddings", "position embedding (learned)"): ((2, 16, 256), None),
        ("model.embeddings.norm", "embedding sum"): ((2, 16, 256), None),
        (f"{layer}.mixer.qkv", "qkv projection"): ((2, 16, 768), "(B=2, T=16, 3C=768)"),
        (f"{layer}.mixer.qkv", "q = split of qkv"): ((2, 16, 256), None),
        (f"{layer}.mixer", "q head split"): ((2, 4, 16, 64), "(B=2, H=4, T=16, D=64)"),
        (f"{layer}.mixer", "k head split"): ((2, 4, 16, 64), None),
        (f"{layer}.mixer", "v head split"): ((2, 4, 16, 64), None),
        (f"{layer}.mixer", "scores q @ k^T"): ((2, 4, 16, 16), "(B=2, H=4, T=16, T=16)"),
        (f"{layer}.mixer", "softmax"): ((2, 4, 16, 16), None),
        (f"{layer}.mixer", "weighted sum probs @ v"): ((2, 4, 16, 64), None),
        (f"{layer}.mixer", "swap heads back"): ((2, 16, 4, 64), "(B=2, T=16, H=4, D=64)"),
        (f"{layer}.mixer.out_proj", "head merge"): ((2, 16, 256), None),
        (f"{layer}.mixer.out_proj", "attention output projection"): ((2, 16, 256), None),
        (f"{layer}.mixer_norm", "residual: x + attention"): ((2, 16, 256), None),
        (f"{layer}.mixer_norm", "post-norm after attention"): ((2, 16, 256), None),
        (f"{layer}.mlp.up", "MLP up"): ((2, 16, 1024), "(B=2, T=16, I=1024)"),
        (f"{layer}.mlp.down", "activation GELU"): ((2, 16, 1024), None),
        (f"{layer}.mlp.down", "MLP down"): ((2, 16, 256), None),
        (f"{layer}.mlp_norm", "post-norm after MLP"): ((2, 16, 256), None),
        ("mlm_head.decoder", "MLM decoder to vocabulary"): ((2, 16, 500), "(B=2, T=16, V=500)"),
    }
    for (path, op), (shape, named) in expected.items():
        row = find(rows, path, op)
        assert row.shape == shape, (path, op, row.shape)
        if named:
            assert row.named == named
    assert (
        find(rows, f"{layer}.mixer", "q head split").note
        == "head split: view C=256 as H=4 x D=64, then swap T and H"
    )
    assert "H=4 x D=64 as C=256" in find(rows, f"{layer}.mixer.out_proj", "head merge").note
    # every layer is traced, in execution order, and the model's attention implementation is restored
    assert sum(r.op == "scores q @ k^T" for r in rows) == 4
    ops = [r.op for r in rows if r.path.startswith(layer + ".")]
    assert (
        ops.index("qkv projection") < ops.index("q head split") < ops.index("softmax") < ops.index("MLP up")
    )
    assert model.config._attn_implementation == "sdpa"


def test_modern_tiny_trace_shows_rotary_and_geglu():
    _, rows = trace("modern-tiny", HfpipeModel, B=3, T=8)
    assert find(rows, "layers.0.mlp.up", "MLP up").named == "(B=3, T=8, 2I=512)"  # gated: both halves
    assert find(rows, "layers.0.mlp.down", "activation GeGLU: GELU(gate) * value").shape == (3, 8, 256)
    assert find(rows, "layers.0.mixer", "rotary cos/sin").named == "(B=3, 1, T=8, D=64)"
    assert find(rows, "layers.0.mixer", "q head split").shape == (3, 2, 8, 64)
    assert find(rows, "pooler.dense", "pooler: first token").named == "(B=3, C=128)"
    assert not any(r.op == "segment embedding" for r in rows)  # type_vocab_size=0
    ops = [r.op for r in rows if r.path.startswith("layers.0")]
    assert ops[0] == "pre-norm before attention" and ops[-1] == "residual: x + MLP (layer output)"


def test_padding_mask_and_alibi_bias_shapes():
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    _, rows = trace("bert-tiny", HfpipeModel, T=6, mask=mask)
    assert find(rows, "layers.0.mixer", "attention mask (additive)").named == "(B=2, 1, T=6, T=6)"
    _, rows = trace("bert-tiny", HfpipeModel, T=6, position_embedding_type="alibi")
    assert find(rows, "layers.0.mixer", "attention mask (additive)").named == "(B=2, H=2, T=6, T=6)"


def test_pooling_mixer_trace():
    _, rows = trace("bert-tiny", HfpipeModel, T=6, token_mixer="pooling")
    assert find(rows, "layers.1.mixer", "pooling mixer").shape == (2, 6, 128)
    assert not any("head split" in r.op for r in rows)


def test_position_rows_come_from_the_position_scheme_module():
    _, rows = trace("bert-tiny", HfpipeModel, T=6, position_embedding_type="sinusoidal")
    row = find(rows, "embeddings.position_embeddings", "position embedding (sinusoidal)")
    assert row.named == "(B=2, T=6, C=128)" and "no parameters" in row.note
    assert find(rows, "embeddings.norm", "embedding sum").note == "token + segment + position, elementwise"
    for kind in ("rope", "alibi", "none"):  # these add no vector to the embeddings: no row
        _, rows = trace("bert-tiny", HfpipeModel, T=6, position_embedding_type=kind)
        assert not any(r.op.startswith("position embedding") for r in rows), kind
        assert find(rows, "embeddings.norm", "embedding sum").note == "token + segment, elementwise"


def test_trace_leaves_no_hooks_and_the_same_outputs():
    model, _ = trace("modern-tiny", HfpipeForMaskedLM, T=6)
    for path, module in model.named_modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, path
    ids = torch.randint(1, 500, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        trace_shapes(model, ids)
        assert torch.equal(model(input_ids=ids).logits, before)


def test_format_shapes_limits_layers():
    _, rows = trace("bert-mini", B=2, T=16)
    text = format_shapes(rows, max_layers=1)
    assert "model.layers.0.mixer" in text and "model.layers.1." not in text
    assert "layers 1-3 repeat these shapes" in text
    assert "(B=2, H=4, T=16, D=64)" in text and "head split: view C=256 as H=4 x D=64" in text
    assert "model.layers.3.mlp.up" in format_shapes(rows)


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hfpipe")
    module.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_shapes_cli_prints_named_shapes(capsys):
    args = parse(shapes, ["shapes", "--preset", "bert-mini", "--batch-size", "2", "--seq-len", "16"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "C=256 hidden" in out and "V=30522 vocabulary" in out
    for named in (
        "(B=2, H=4, T=16, D=64)",
        "(B=2, H=4, T=16, T=16)",
        "(B=2, T=16, I=1024)",
        "(B=2, T=16, V=30522)",
    ):
        assert named in out
    assert "model.layers.1." not in out  # --layers defaults to 1
    args = parse(
        shapes, ["shapes", "--preset", "modern-tiny", "--layers", "0", "--seq-len", "8", "--vocab-size", "64"]
    )
    args.func(args)
    out = capsys.readouterr().out
    assert "(B=2, T=8, 2I=512)" in out and "model.layers.1.mlp.up" in out and "(B=2, T=8, V=64)" in out


def test_shapes_cli_rejects_too_long_sequence():
    args = parse(shapes, ["shapes", "--preset", "bert-tiny", "--seq-len", "513"])
    with pytest.raises(ValueError, match="max_position_embeddings=512"):
        args.func(args)


# ----------------------------------------------------------------------------------------------
# Attention heatmaps
# ----------------------------------------------------------------------------------------------

WORDS = "the a cat dog sat on mat ran fast big red is".split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )  # fmt: skip


def tiny_model() -> HfpipeModel:
    torch.manual_seed(0)
    config = HfpipeConfig(
        vocab_size=32, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48
    )
    return HfpipeModel(config).eval()


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("layer, rows", [(None, 3), (1, 1), (-1, 1)])
def test_plot_attention_draws_the_model_attentions(tmp_path, layer, rows):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    text = "the cat sat on the mat"
    out = tmp_path / "attn.png"
    drawn = attention_viz.plot_attention(model, tokenizer, text, out, layer=layer)

    width, height = attention_viz.figure_size(rows, 2)
    assert out.stat().st_size > 1000
    assert png_size(out) == (round(width * attention_viz.DPI), round(height * attention_viz.DPI))
    with torch.no_grad():
        attentions = model(**tokenizer(text, return_tensors="pt"), output_attentions=True).attentions
    layers = range(3) if layer is None else [range(3)[layer]]
    expected = np.stack([attentions[i][0].numpy() for i in layers])  # (rows, H, T, T)
    assert drawn.shape == expected.shape == (rows, 2, 8, 8)  # [CLS] + 6 words + [SEP]
    np.testing.assert_allclose(drawn, expected, atol=1e-7)
    np.testing.assert_allclose(drawn.sum(-1), 1.0, atol=1e-5)


def test_plot_attention_rejects_bad_layer_and_pooling_model(tmp_path):
    with pytest.raises(ValueError, match="layer=3 is out of range"):
        attention_viz.plot_attention(tiny_model(), tiny_tokenizer(), "the cat", tmp_path / "a.png", layer=3)
    pooling = HfpipeModel(HfpipeConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       token_mixer="pooling"))  # fmt: skip
    with pytest.raises(ValueError, match="token_mixer='pooling'"):
        attention_viz.plot_attention(pooling, tiny_tokenizer(), "the cat", tmp_path / "a.png")


def test_attention_cli_writes_png(tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    out = tmp_path / "attn.png"
    args = parse(
        attention_viz, ["attention", str(folder), "a big red dog", "--out", str(out), "--layer", "0"]
    )
    assert args.func(args) == 0
    assert png_size(out) == (round(2 * attention_viz.CELL_INCHES * attention_viz.DPI),
                             round(attention_viz.figure_size(1, 2)[1] * attention_viz.DPI))  # fmt: skip
    assert "1 layer(s) x 2 heads, 6 tokens" in capsys.readouterr().out
    missing = parse(attention_viz, ["attention", str(tmp_path / "nowhere"), "text"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        missing.func(missing)
