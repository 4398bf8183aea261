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
"""The hfpipe model family on tiny configs: every option trains, padding and packing change nothing,
backends agree, heads compute the losses they claim, and save/load is exact.

    .venv/bin/pytest tests/model/test_modeling.py -q

Sizes are tiny (C=32, H=2, 2 layers, V=100): the file takes ~45 s of CPU on 2 cores, a third of it
FlexAttention compiling its CPU kernel (two flex tests).
"""

import itertools
import json

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from hfpipe import (
    HfpipeConfig,
    HfpipeForMaskedLM,
    HfpipeForMultipleChoice,
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
    HfpipeModel,
)
from hfpipe.model.configuration_hfpipe import (
    HIDDEN_ACTS,
    NORM_POSITIONS,
    NORM_TYPES,
    POSITION_EMBEDDING_TYPES,
    TOKEN_MIXERS,
)

TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
ATOL = 1e-5
# position types that act inside attention cannot go with the pooling mixer (the config rejects them)
ATTENTION_ONLY_POSITIONS = ("rope", "alibi")
POSITION_MIXERS = [("attention", p) for p in POSITION_EMBEDDING_TYPES] + [
    ("pooling", p) for p in POSITION_EMBEDDING_TYPES if p not in ATTENTION_ONLY_POSITIONS
]


def tiny(**overrides) -> HfpipeConfig:
    return HfpipeConfig(**{**TINY, **overrides})


def build(model_class, attn: str = "sdpa", seed: int = 0, **overrides):
    """A tiny model in eval mode with every parameter moved off its init (so norms are not 1/0)."""
    torch.manual_seed(seed)
    model = model_class(tiny(**overrides))
    randomize_(model, seed)
    if model.config.token_mixer == "attention":
        model.set_attn_implementation(attn)
    return model.eval()


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))


def random_ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows of the given real lengths: (input_ids, attention_mask), pad id 0."""
    T = max(lengths)
    ids = random_ids(len(lengths), T, seed=seed)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def assert_trains(model, loss: torch.Tensor) -> None:
    """Finite loss, and every parameter gets a finite gradient that is not all zeros."""
    assert torch.isfinite(loss), f"loss is {loss}"
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


# ----------------------------------------------------------------------------------------------
# Config: validation and presets
# ----------------------------------------------------------------------------------------------

ENUMERATED = {
    "position_embedding_type": POSITION_EMBEDDING_TYPES,
    "norm_type": NORM_TYPES,
    "norm_position": NORM_POSITIONS,
    "hidden_act": HIDDEN_ACTS,
    "token_mixer": TOKEN_MIXERS,
}


@pytest.mark.parametrize("field", list(ENUMERATED))
def test_config_rejects_unknown_choice_naming_field_and_allowed_values(field):
    with pytest.raises(ValueError) as err:
        tiny(**{field: "bogus"})
    message = str(err.value)
    assert field in message and "'bogus'" in message
    for allowed in ENUMERATED[field]:
        assert allowed in message


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=30, num_attention_heads=4), "num_attention_heads"),
        (dict(hidden_size=30, num_attention_heads=10, position_embedding_type="rope"), "rope"),
        (dict(hidden_size=33, num_attention_heads=3, position_embedding_type="sinusoidal"), "hidden_size"),
        (dict(pool_size=4), "pool_size"),
        (dict(pool_size=0), "pool_size"),
        (dict(type_vocab_size=-1), "type_vocab_size"),
        (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
        (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob"),
    ],
)
def test_config_rejects_impossible_values_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny(**overrides)


@pytest.mark.parametrize("position", ATTENTION_ONLY_POSITIONS)
def test_pooling_mixer_rejects_positions_that_live_inside_attention(position):
    with pytest.raises(ValueError, match="position_embedding_type") as err:
        tiny(token_mixer="pooling", position_embedding_type=position)
    assert "token_mixer='pooling'" in str(err.value)


PRESET_SIZES = {  # name: (layers, hidden, heads, intermediate)
    "bert-tiny": (2, 128, 2, 512),
    "bert-mini": (4, 256, 4, 1024),
    "bert-small": (4, 512, 8, 2048),
    "bert-medium": (8, 512, 8, 2048),
    "bert-base": (12, 768, 12, 3072),
    "bert-large": (24, 1024, 16, 4096),
    "modern-tiny": (2, 128, 2, 256),
    "modern-small": (8, 512, 8, 768),
    "modern-base": (22, 768, 12, 1152),
    "modern-large": (28, 1024, 16, 2624),
}


@pytest.mark.parametrize("name", list(PRESET_SIZES))
def test_presets_have_documented_sizes_and_architecture(name):
    config = HfpipeConfig.from_preset(name, vocab_size=1000)
    sizes = (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    )
    assert sizes == PRESET_SIZES[name]
    assert config.vocab_size == 1000
    if name.startswith("bert-"):
        assert (config.position_embedding_type, config.norm_position, config.hidden_act) == (
            "absolute",
            "post",
            "gelu",
        )
        assert config.use_bias and config.type_vocab_size == 2 and not config.final_norm
    else:
        assert (config.position_embedding_type, config.norm_position, config.hidden_act) == (
            "rope",
            "pre",
            "geglu",
        )
        assert not config.use_bias and config.type_vocab_size == 0 and config.final_norm


def test_from_preset_unknown_name_lists_the_presets():
    with pytest.raises(ValueError, match="bert-huge") as err:
        HfpipeConfig.from_preset("bert-huge")
    assert "bert-mini" in str(err.value) and "modern-base" in str(err.value)


def test_config_json_holds_exactly_the_architecture_fields(tmp_path):
    """What config.json holds for a preset: the fields, their values and nothing else, whatever shape
    HfpipeConfig's constructor takes; `auto_map` is written for the saved folder only."""
    config = HfpipeConfig.from_preset("modern-tiny", vocab_size=1000)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved.pop("transformers_version")
    assert set(saved.pop("auto_map")) >= {"AutoConfig", "AutoModel", "AutoModelForMaskedLM"}
    assert not hasattr(config, "auto_map")  # in memory the config is a plain in-library config
    assert saved == {
        "vocab_size": 1000, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 256, "hidden_act": "geglu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "classifier_dropout": None, "max_position_embeddings": 512,
        "type_vocab_size": 0, "initializer_range": 0.02, "norm_eps": 1e-12, "position_embedding_type": "rope",
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "norm_type": "layernorm", "norm_position": "pre", "token_mixer": "attention",
        "pool_size": 3, "use_bias": False, "embedding_norm": True, "final_norm": True,
        "tie_word_embeddings": True, "add_pooling_layer": True, "sparse_prediction": False, "pad_token_id": 0,
        "model_type": "hfpipe",
    }  # fmt: skip


def test_config_equality_compares_the_architecture():
    assert tiny() == tiny()
    assert tiny(hidden_size=64) != tiny()  # before the fields were declared, these compared equal
    assert tiny(position_embedding_type="rope") != tiny()


# ----------------------------------------------------------------------------------------------
# Forward/backward over the option matrix
# ----------------------------------------------------------------------------------------------

SWITCHES = ("use_bias", "type_vocab_size", "embedding_norm", "final_norm", "tie_word_embeddings")


def switches_from_bits(bits: int) -> dict:
    values = [(bits >> i) & 1 for i in range(len(SWITCHES))]
    out = {name: bool(v) for name, v in zip(SWITCHES, values)}
    out["type_vocab_size"] = 2 * values[1]
    return out


ALL_COMBOS = list(itertools.product(*ENUMERATED.values()))
VALID_COMBOS = [c for c in ALL_COMBOS if not (c[4] != "attention" and c[0] in ATTENTION_ONLY_POSITIONS)]
REJECTED_COMBOS = [c for c in ALL_COMBOS if c not in VALID_COMBOS]


def run_mlm_step(overrides: dict, seed: int = 0, sparse: bool = True) -> None:
    model = build(HfpipeForMaskedLM, seed=seed, sparse_prediction=sparse, **overrides).train()
    ids, mask = padded_batch([9, 6], seed=seed)
    labels = torch.full_like(ids, -100)
    labels[:, ::2] = ids[:, ::2]  # labels on real and padded positions alike are allowed
    token_type_ids = (torch.arange(9) >= 4).long().expand(2, 9)
    out = model(ids, attention_mask=mask, token_type_ids=token_type_ids, labels=labels)
    if sparse:  # logits at the labelled positions only
        assert out.logits.shape == (int((labels != -100).sum()), TINY["vocab_size"])
    else:
        assert out.logits.shape == (2, 9, TINY["vocab_size"])
    assert_trains(model, out.loss)
    decoder, embedding = model.mlm_head.decoder.weight, model.model.embeddings.word_embeddings.weight
    assert (decoder.data_ptr() == embedding.data_ptr()) == overrides["tie_word_embeddings"]


@pytest.mark.parametrize("combo", VALID_COMBOS, ids=["-".join(c) for c in VALID_COMBOS])
def test_forward_backward_every_enumerated_combination(combo):
    """All 198 valid combinations of the 5 enumerated fields; the 5 switches and sparse prediction vary
    with the index."""
    index = VALID_COMBOS.index(combo)
    overrides = dict(zip(ENUMERATED, combo), **switches_from_bits(index))
    run_mlm_step(overrides, sparse=index % 2 == 0)


@pytest.mark.parametrize("combo", REJECTED_COMBOS, ids=["-".join(c) for c in REJECTED_COMBOS])
def test_rejected_combinations_raise_naming_the_field(combo):
    with pytest.raises(ValueError, match="position_embedding_type"):
        tiny(**dict(zip(ENUMERATED, combo)))


BASES = {
    "bert": dict(
        position_embedding_type="absolute", norm_type="layernorm", norm_position="post", hidden_act="gelu"
    ),
    "modern": dict(
        position_embedding_type="rope", norm_type="rmsnorm", norm_position="pre", hidden_act="swiglu"
    ),
    "pooling": dict(
        position_embedding_type="sinusoidal", token_mixer="pooling", norm_position="pre", hidden_act="geglu"
    ),
}


@pytest.mark.parametrize("bits", range(2 ** len(SWITCHES)))
@pytest.mark.parametrize("base", list(BASES))
def test_forward_backward_every_switch_combination(base, bits):
    """The full product of the 5 on/off switches on three architectures (sparse prediction on for an
    even number of switches on)."""
    run_mlm_step({**BASES[base], **switches_from_bits(bits)}, seed=bits, sparse=bin(bits).count("1") % 2 == 0)


def test_switches_change_the_modules():
    plain = HfpipeModel(
        tiny(use_bias=False, type_vocab_size=0, embedding_norm=False, final_norm=True, norm_type="rmsnorm")
    )
    assert plain.embeddings.token_type_embeddings is None
    assert isinstance(plain.embeddings.norm, torch.nn.Identity)
    assert isinstance(plain.final_norm, torch.nn.RMSNorm)
    assert plain.layers[0].mixer.qkv.bias is None and plain.layers[0].mlp.up.bias is None
    gated = HfpipeModel(tiny(hidden_act="geglu"))
    assert gated.layers[0].mlp.up.out_features == 2 * TINY["intermediate_size"]


@pytest.mark.parametrize(
    "model_class, kwargs",
    [
        (HfpipeForSequenceClassification, dict(labels=torch.tensor([0, 2]))),
        (HfpipeForTokenClassification, dict(labels=torch.tensor([[0, 1, 2, 1, -100, -100]] * 2))),
        (
            HfpipeForQuestionAnswering,
            dict(start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4])),
        ),
    ],
)
@pytest.mark.parametrize("base", ["bert", "modern"])
def test_every_head_trains(model_class, kwargs, base):
    model = build(model_class, num_labels=3, **BASES[base]).train()
    ids, mask = padded_batch([6, 4])
    assert_trains(model, model(ids, attention_mask=mask, **kwargs).loss)


def test_multiple_choice_head_trains():
    model = build(HfpipeForMultipleChoice).train()
    ids = random_ids(2, 3, 5)  # (B, K, T)
    out = model(ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([2, 0]))
    assert out.logits.shape == (2, 3)
    assert_trains(model, out.loss)


def test_too_long_input_names_max_position_embeddings():
    model = build(HfpipeModel)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(random_ids(1, 65))


# ----------------------------------------------------------------------------------------------
# Padding and packing change nothing on real positions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mixer, position", POSITION_MIXERS)
def test_padding_invariance(mixer, position, attn):
    model = build(HfpipeModel, attn, token_mixer=mixer, position_embedding_type=position)
    ids = random_ids(1, 7, seed=1)
    alone = model(ids)
    for pad in (1, 5):
        other = random_ids(1, 7 + pad, seed=2)
        batch = torch.cat([F.pad(ids, (0, pad)), other])  # row 0 padded with id 0
        mask = torch.ones_like(batch)
        mask[0, 7:] = 0
        out = model(batch, attention_mask=mask)
        torch.testing.assert_close(
            out.last_hidden_state[0, :7], alone.last_hidden_state[0], atol=ATOL, rtol=0
        )
        torch.testing.assert_close(out.pooler_output[0], alone.pooler_output[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(
            out.last_hidden_state[1], model(other).last_hidden_state[0], atol=ATOL, rtol=0
        )


def packed_row(docs: list[torch.Tensor], pad: int, pad_positions: str):
    """One row holding every document back to back, then `pad` padding tokens."""
    ids = torch.cat([*docs, torch.zeros(pad, dtype=torch.long)])
    positions = [torch.arange(len(d)) for d in docs]
    if pad_positions == "zeros":
        positions.append(torch.zeros(pad, dtype=torch.long))
    else:  # padding continues the last document's positions
        positions.append(torch.arange(len(docs[-1]), len(docs[-1]) + pad))
    mask = torch.ones_like(ids)
    mask[len(ids) - pad :] = 0
    return ids, torch.cat(positions), mask


@pytest.mark.parametrize("pad, pad_positions", [(0, "zeros"), (4, "zeros"), (4, "continue")])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mixer, position", POSITION_MIXERS)
def test_packed_documents_equal_documents_alone(mixer, position, attn, pad, pad_positions):
    model = build(HfpipeModel, attn, token_mixer=mixer, position_embedding_type=position)
    docs = [random_ids(5, seed=3), random_ids(7, seed=4)]
    ids, positions, mask = packed_row(docs, pad, pad_positions)
    single = random_ids(len(ids), seed=5)  # row 1: one document filling the row
    batch_ids = torch.stack([ids, single])
    batch_positions = torch.stack([positions, torch.arange(len(ids))])
    batch_mask = torch.stack([mask, torch.ones_like(mask)])
    packed = model(batch_ids, attention_mask=batch_mask, position_ids=batch_positions).last_hidden_state
    start = 0
    for doc in docs:
        alone = model(doc[None]).last_hidden_state[0]
        torch.testing.assert_close(packed[0, start : start + len(doc)], alone, atol=ATOL, rtol=0)
        start += len(doc)
    torch.testing.assert_close(packed[1], model(single[None]).last_hidden_state[0], atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# Attention backends and optional outputs
# ----------------------------------------------------------------------------------------------


def padded_and_packed_inputs() -> dict[str, dict]:
    ids, mask = padded_batch([12, 7, 3], seed=6)
    packed_ids, positions, packed_mask = packed_row(
        [random_ids(4, seed=7), random_ids(6, seed=8)], 2, "zeros"
    )
    return {
        "padded": dict(input_ids=ids, attention_mask=mask),
        "packed": dict(
            input_ids=packed_ids[None], attention_mask=packed_mask[None], position_ids=positions[None]
        ),
    }


@pytest.mark.parametrize("position", POSITION_EMBEDDING_TYPES)
def test_eager_and_sdpa_agree(position):
    model = build(HfpipeModel, "eager", position_embedding_type=position)
    for name, inputs in padded_and_packed_inputs().items():
        real = inputs["attention_mask"].bool()
        model.set_attn_implementation("eager")
        eager = model(**inputs).last_hidden_state
        model.set_attn_implementation("sdpa")
        sdpa = model(**inputs).last_hidden_state
        torch.testing.assert_close(sdpa[real], eager[real], atol=ATOL, rtol=0, msg=name)


@pytest.fixture
def fresh_compile():
    """Flex attention compiles on first use. A second compile with new shapes would mark them dynamic,
    and torch 2.13's CPU flex template fails to build dynamic kernels (C++ error 'cur_kvSplitSize4'
    not declared): start each flex test from a clean compile cache so it compiles static shapes."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()

@torch.no_grad()  # FlexAttention has no backward on CPU (torch raises NotImplementedError)
def test_flex_attention_agrees_with_eager(fresh_compile):
    """Flex compiles its kernel with torch.compile even on CPU: measured ~7 s for the first call in a
    process and ~5 s for each new mask function, so one position type (rope) covers padded and packed."""
    model = build(HfpipeModel, "eager", position_embedding_type="rope")
    for name, inputs in padded_and_packed_inputs().items():
        real = inputs["attention_mask"].bool()
        model.set_attn_implementation("eager")
        eager = model(**inputs).last_hidden_state
        model.set_attn_implementation("flex_attention")
        flex = model(**inputs).last_hidden_state
        torch.testing.assert_close(flex[real], eager[real], atol=ATOL, rtol=0, msg=name)


@torch.no_grad()
def test_flex_attention_accepts_broadcast_position_ids(fresh_compile):
    model = build(HfpipeModel, "eager", position_embedding_type="rope")
    ids, mask = padded_batch([6, 4])
    eager = model(ids, attention_mask=mask, position_ids=torch.arange(6)[None]).last_hidden_state
    model.set_attn_implementation("flex_attention")
    flex = model(ids, attention_mask=mask, position_ids=torch.arange(6)[None]).last_hidden_state
    torch.testing.assert_close(flex[mask.bool()], eager[mask.bool()], atol=ATOL, rtol=0)


def test_flex_attention_refuses_alibi_naming_it():
    model = build(HfpipeModel, "flex_attention", position_embedding_type="alibi")
    with pytest.raises(ValueError, match="alibi"), torch.no_grad():
        model(random_ids(1, 4))


def test_set_attn_implementation_reaches_every_layer():
    model = build(HfpipeForMaskedLM, "sdpa")
    ids, mask = padded_batch([8, 5])
    sdpa = model(ids, attention_mask=mask).logits
    model.set_attn_implementation("eager")
    layers = model.model.layers
    assert [layer.mixer.config._attn_implementation for layer in layers] == ["eager"] * len(layers)
    torch.testing.assert_close(
        model(ids, attention_mask=mask).logits[mask.bool()], sdpa[mask.bool()], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_output_attentions_and_hidden_states(attn):
    model = build(HfpipeModel, attn, position_embedding_type="alibi")
    ids, mask = padded_batch([8, 5])
    plain = model(ids, attention_mask=mask)
    out = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    L, H = TINY["num_hidden_layers"], TINY["num_attention_heads"]
    assert len(out.attentions) == L and len(out.hidden_states) == L + 1
    real = mask.bool()
    for probs in out.attentions:
        assert probs.shape == (2, H, 8, 8)
        row_sums = probs.sum(-1)  # (B, H, T)
        torch.testing.assert_close(row_sums.permute(0, 2, 1)[real], torch.ones(int(real.sum()), H))
        assert (probs[1, :, :, 5:] == 0).all()  # padded keys get exactly zero weight
    for hidden in out.hidden_states:
        assert hidden.shape == (2, 8, TINY["hidden_size"])
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    torch.testing.assert_close(out.last_hidden_state[real], plain.last_hidden_state[real], atol=ATOL, rtol=0)


def test_output_attentions_never_cross_packed_documents():
    model = build(HfpipeModel, "sdpa")
    inputs = padded_and_packed_inputs()["packed"]
    probs = model(**inputs, output_attentions=True).attentions[0][0]  # (H, T, T)
    assert (
        (probs[:, :4, 4:] == 0).all() and (probs[:, 4:10, :4] == 0).all() and (probs[:, :10, 10:] == 0).all()
    )


# ----------------------------------------------------------------------------------------------
# Heads: the losses they claim
# ----------------------------------------------------------------------------------------------


def test_sparse_prediction_loss_equals_full_logits_loss():
    model = build(HfpipeForMaskedLM, sparse_prediction=True)
    ids, mask = padded_batch([10, 7], seed=9)
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    labels[chosen] = random_ids(int(chosen.sum()), seed=10)
    sparse = model(ids, attention_mask=mask, labels=labels)
    full = model(ids, attention_mask=mask).logits
    assert full.shape == (2, 10, TINY["vocab_size"])
    assert sparse.logits.shape == (int(chosen.sum()), TINY["vocab_size"])
    torch.testing.assert_close(sparse.logits, full[chosen], atol=1e-6, rtol=0)
    expected = F.cross_entropy(full[chosen], labels[chosen])
    assert abs(sparse.loss.item() - expected.item()) < 1e-6

    model.sparse_prediction = False  # the default: BertForMaskedLM's (B, T, V) logits, the same loss
    dense = model(ids, attention_mask=mask, labels=labels)
    assert torch.equal(dense.logits, full)
    assert abs(dense.loss.item() - sparse.loss.item()) < 1e-6


@pytest.mark.parametrize(
    "num_labels, problem_type, labels, loss_fn",
    [
        (3, "single_label_classification", torch.tensor([0, 2, 1]), F.cross_entropy),
        (
            3,
            "multi_label_classification",
            torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1]]),
            F.binary_cross_entropy_with_logits,
        ),
        (
            1,
            "regression",
            torch.tensor([0.5, -1.0, 2.0]),
            lambda logits, y: F.mse_loss(logits.squeeze(-1), y),
        ),
    ],
)
def test_sequence_classification_problem_types(num_labels, problem_type, labels, loss_fn):
    model = build(HfpipeForSequenceClassification, num_labels=num_labels)
    ids, mask = padded_batch([6, 4, 5])
    out = model(ids, attention_mask=mask, labels=labels)
    assert model.config.problem_type == problem_type  # inferred from num_labels and the label dtype
    assert out.logits.shape == (3, num_labels)
    assert abs(out.loss.item() - loss_fn(out.logits, labels).item()) < 1e-6


def test_token_classification_and_qa_and_multiple_choice_losses():
    ids, mask = padded_batch([6, 4])
    tagger = build(HfpipeForTokenClassification, num_labels=4)
    tags = torch.tensor([[0, 1, 2, 3, 1, 0], [3, 2, 1, 0, -100, -100]])
    out = tagger(ids, attention_mask=mask, labels=tags)
    keep = tags != -100
    assert abs(out.loss.item() - F.cross_entropy(out.logits[keep], tags[keep]).item()) < 1e-6

    reader = build(HfpipeForQuestionAnswering)
    start, end = torch.tensor([1, 0]), torch.tensor([4, 3])
    out = reader(ids, attention_mask=mask, start_positions=start, end_positions=end)
    expected = (F.cross_entropy(out.start_logits, start) + F.cross_entropy(out.end_logits, end)) / 2
    assert out.start_logits.shape == out.end_logits.shape == (2, 6)
    assert abs(out.loss.item() - expected.item()) < 1e-6

    chooser = build(HfpipeForMultipleChoice)
    choices = random_ids(2, 4, 5)  # (B, K, T)
    out = chooser(choices, labels=torch.tensor([3, 1]))
    pooled = chooser.model(choices.view(8, 5)).pooler_output
    expected_logits = chooser.classifier(pooled).view(2, 4)
    torch.testing.assert_close(out.logits, expected_logits)
    assert abs(out.loss.item() - F.cross_entropy(expected_logits, torch.tensor([3, 1])).item()) < 1e-6


# ----------------------------------------------------------------------------------------------
# save_pretrained -> AutoModel*.from_pretrained
# ----------------------------------------------------------------------------------------------

HEADS = [
    (HfpipeModel, AutoModel, "last_hidden_state"),
    (HfpipeForMaskedLM, AutoModelForMaskedLM, "logits"),
    (HfpipeForSequenceClassification, AutoModelForSequenceClassification, "logits"),
    (HfpipeForTokenClassification, AutoModelForTokenClassification, "logits"),
    (HfpipeForQuestionAnswering, AutoModelForQuestionAnswering, "start_logits"),
    (HfpipeForMultipleChoice, AutoModelForMultipleChoice, "logits"),
]


def head_inputs(model_class) -> dict:
    if model_class is HfpipeForMultipleChoice:
        ids, mask = padded_batch([6, 4, 5, 3])
        return dict(input_ids=ids.view(2, 2, 6), attention_mask=mask.view(2, 2, 6))
    ids, mask = padded_batch([6, 4])
    return dict(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("model_class, auto_class, output", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_save_load_round_trip(tmp_path, model_class, auto_class, output, tie):
    model = build(model_class, num_labels=3, tie_word_embeddings=tie, **BASES["modern"])
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "hfpipe"
    assert set(config["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice",
    }  # fmt: skip
    assert (tmp_path / "configuration_hfpipe.py").is_file() and (tmp_path / "modeling_hfpipe.py").is_file()
    assert type(AutoConfig.from_pretrained(tmp_path)) is HfpipeConfig

    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    state = loaded.state_dict()
    for key, tensor in saved.items():  # nothing was re-initialized after loading
        assert torch.equal(state[key], tensor), key
    assert set(state) - set(saved) <= {"mlm_head.decoder.weight"}  # the tied copy is not saved twice
    inputs = head_inputs(model_class)
    assert torch.equal(getattr(loaded(**inputs), output), getattr(model(**inputs), output))

    if model_class is HfpipeForMaskedLM:
        decoder, embedding = loaded.mlm_head.decoder.weight, loaded.model.embeddings.word_embeddings.weight
        assert (decoder.data_ptr() == embedding.data_ptr()) == tie
        assert torch.equal(decoder, model.mlm_head.decoder.weight)


def test_auto_model_from_masked_lm_folder_loads_the_backbone(tmp_path):
    mlm = build(HfpipeForMaskedLM)
    mlm.save_pretrained(tmp_path)
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    assert type(backbone) is HfpipeModel
    for key, tensor in mlm.model.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], tensor), key
    ids, mask = padded_batch([6, 4])
    assert torch.equal(
        backbone(ids, attention_mask=mask).last_hidden_state,
        mlm.model(ids, attention_mask=mask).last_hidden_state,
    )


# ----------------------------------------------------------------------------------------------
# Gradient checkpointing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["bert", "modern"])
def test_gradient_checkpointing_gives_the_same_gradients(base):
    ids, mask = padded_batch([8, 6], seed=11)
    labels = torch.where(torch.arange(8) % 3 == 0, ids, -100)

    def gradients(checkpointing: bool) -> tuple[dict, int]:
        model = build(HfpipeForMaskedLM, **BASES[base]).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        calls = []
        # a pre-hook: non-reentrant recomputation stops early, once the last saved tensor is rebuilt
        model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)

    plain, plain_calls = gradients(False)
    checkpointed, checkpointed_calls = gradients(True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the layer really was recomputed in backward
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=0, msg=name)
