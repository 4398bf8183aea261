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
"""Position schemes, attention-mask builders and the activation helper of modeling_hfpipe.py.

    .venv/bin/pytest tests/model/test_positions.py -q

Each position scheme is one `Positions` class resolved once from `POSITIONS`; the masks are built by
one function per kind of backend. The `reference_*` functions below are the formulas and the eager
mask exactly as modeling_hfpipe.py computed them before that split: the new code must reproduce them
bit for bit, and the weight names checkpoints and BERT conversion rely on must not move.
"""

import math

import pytest
import torch
from torch.nn import functional as F

from hfpipe import HfpipeConfig, HfpipeForMaskedLM, HfpipeModel
from hfpipe.model.configuration_hfpipe import HIDDEN_ACTS, POSITION_EMBEDDING_TYPES
from hfpipe.model.modeling_hfpipe import (
    ATTENTION_MASKS,
    POSITIONS,
    AbsolutePositions,
    AlibiPositions,
    NoPositions,
    RotaryPositions,
    SinusoidalPositions,
    TokenLayout,
    additive_mask,
    flex_mask,
    make_activation,
    make_positions,
)

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=48, max_position_embeddings=64)  # fmt: skip


def tiny(**overrides) -> HfpipeConfig:
    return HfpipeConfig(**{**TINY, **overrides})


# ----------------------------------------------------------------------------------------------
# One class per scheme, resolved once
# ----------------------------------------------------------------------------------------------


def test_registry_has_one_class_per_position_type_and_the_model_uses_it():
    assert list(POSITIONS) == list(POSITION_EMBEDDING_TYPES)
    expected = {"absolute": AbsolutePositions, "sinusoidal": SinusoidalPositions, "rope": RotaryPositions,
                "alibi": AlibiPositions, "none": NoPositions}  # fmt: skip
    for kind, scheme_class in expected.items():
        model = HfpipeModel(tiny(position_embedding_type=kind))
        assert type(model.positions) is scheme_class is POSITIONS[kind]
        assert model.positions is model.embeddings.position_embeddings  # one instance, held once


def test_unknown_scheme_names_the_allowed_ones():
    config = tiny()
    config.position_embedding_type = "learned"  # past the config's own check
    with pytest.raises(ValueError, match="'learned' must be one of absolute, sinusoidal, rope, alibi, none"):
        make_positions(config)


def test_each_scheme_acts_in_exactly_its_one_place():
    positions = torch.tensor([[0, 1, 2, 0, 1]])  # (1, T): two packed documents
    q, k = torch.randn(2, 1, 2, 5, 16).unbind(0)  # (B, H, T, D) each
    acted = {}
    for kind in POSITION_EMBEDDING_TYPES:
        scheme = make_positions(tiny(position_embedding_type=kind))
        rotary = scheme.rotary(positions, torch.float32)
        layout = TokenLayout(None, None, None, rotary, positions, scheme)
        rotated_q, rotated_k = scheme.rotate(q, k, layout)
        places = {
            "embed": scheme(positions, torch.float32) is not None,
            "rotate": not (torch.equal(rotated_q, q) and torch.equal(rotated_k, k)),
            "bias": scheme.bias(positions) is not None,
        }
        acted[kind] = [place for place, used in places.items() if used]
    assert acted == {"absolute": ["embed"], "sinusoidal": ["embed"], "rope": ["rotate"], "alibi": ["bias"],
                     "none": []}  # fmt: skip


# The state dict of a 1-layer HfpipeForMaskedLM with BERT's switches, in order, before the refactor.
BERT_MLM_KEYS = [
    "model.embeddings.word_embeddings.weight", "model.embeddings.token_type_embeddings.weight",
    "model.embeddings.position_embeddings.weight", "model.embeddings.norm.weight", "model.embeddings.norm.bias",
    "model.layers.0.mixer.qkv.weight", "model.layers.0.mixer.qkv.bias",
    "model.layers.0.mixer.out_proj.weight", "model.layers.0.mixer.out_proj.bias",
    "model.layers.0.mixer_norm.weight", "model.layers.0.mixer_norm.bias",
    "model.layers.0.mlp.up.weight", "model.layers.0.mlp.up.bias",
    "model.layers.0.mlp.down.weight", "model.layers.0.mlp.down.bias",
    "model.layers.0.mlp_norm.weight", "model.layers.0.mlp_norm.bias",
    "mlm_head.dense.weight", "mlm_head.dense.bias", "mlm_head.norm.weight", "mlm_head.norm.bias",
    "mlm_head.decoder.weight", "mlm_head.decoder.bias",
]  # fmt: skip


SCHEME_MIXERS = [(kind, "attention") for kind in POSITION_EMBEDDING_TYPES] + [
    (kind, "pooling") for kind in POSITION_EMBEDDING_TYPES if kind not in ("rope", "alibi")  # act in attention
]


@pytest.mark.parametrize("kind, mixer", SCHEME_MIXERS)
def test_weight_names_are_unchanged_for_every_scheme(kind, mixer):
    model = HfpipeForMaskedLM(tiny(position_embedding_type=kind, token_mixer=mixer))
    expected = [
        key for key in BERT_MLM_KEYS
        if (kind == "absolute" or ".position_embeddings." not in key) and (mixer == "attention" or ".mixer." not in key)
    ]  # fmt: skip
    assert list(model.state_dict()) == expected
    if kind == "absolute":
        assert model.model.embeddings.position_embeddings.weight.shape == (64, 32)  # (P, C)
    else:  # the parameter-free schemes add no tensors, not even buffers
        assert not list(model.model.positions.state_dict())


# ----------------------------------------------------------------------------------------------
# Parity with the formulas and the mask as they were before the split
# ----------------------------------------------------------------------------------------------


def reference_sinusoidal(position_ids: torch.Tensor, dim: int) -> torch.Tensor:
    inv_freq = 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim)
    angles = position_ids[..., None].float() * inv_freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def reference_rotary(position_ids: torch.Tensor, head_dim: int, theta: float, dtype):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = position_ids[..., None].float() * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def reference_apply_rotary(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def reference_alibi_slopes(num_heads: int) -> torch.Tensor:
    def geometric(n):
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    return torch.tensor(geometric(closest) + geometric(2 * closest)[0::2][: num_heads - closest])


def reference_eager_mask(config, token_mask, document_ids, positions, x):
    """HfpipeModel._attention_mask's eager/sdpa branch before the split, verbatim."""
    B, T, _ = x.shape
    pad_query = ~token_mask if token_mask is not None else None
    allowed = None
    if token_mask is not None:
        allowed = token_mask[:, None, None, :]
    if document_ids is not None:
        same = document_ids[:, None, :, None] == document_ids[:, None, None, :]
        if pad_query is not None:
            same = same | pad_query[:, None, :, None]
        allowed = same if allowed is None else same & allowed
    bias = None
    if config.position_embedding_type == "alibi":
        distance = (positions[:, None, :] - positions[:, :, None]).abs()
        slopes = reference_alibi_slopes(config.num_attention_heads).to(x.device, torch.float32)
        bias = -slopes[None, :, None, None] * distance[:, None]
    if allowed is None and bias is None:
        return None
    mask = torch.zeros(B, 1, T, T, device=x.device) if bias is None else bias
    if allowed is not None:
        mask = mask.masked_fill(~allowed, torch.finfo(x.dtype).min)
    return mask.to(x.dtype)


PACKED = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])  # (B=2, T=10)
REAL = torch.tensor([[1] * 8 + [0] * 2, [1] * 10]).bool()  # row 0 ends in 2 padding tokens


@pytest.mark.parametrize("heads", [2, 3, 6])
def test_position_formulas_are_bit_identical_to_the_reference(heads):
    config = tiny(hidden_size=12 * heads, num_attention_heads=heads, rope_theta=500.0)
    sinusoidal = SinusoidalPositions(config)(PACKED, torch.bfloat16)
    expected = config.initializer_range * math.sqrt(2) * reference_sinusoidal(PACKED, 12 * heads).to(torch.bfloat16)
    assert torch.equal(sinusoidal, expected)

    rope = RotaryPositions(config)
    cos, sin = rope.rotary(PACKED, torch.float32)  # (B, 1, T, D) each
    ref_cos, ref_sin = reference_rotary(PACKED, 12, 500.0, torch.float32)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin) and cos.shape == (2, 1, 10, 12)
    q, k = torch.randn(2, 2, heads, 10, 12).unbind(0)
    rotated = rope.rotate(q, k, TokenLayout(None, None, None, (cos, sin), PACKED, rope))
    assert torch.equal(rotated[0], reference_apply_rotary(q, cos, sin))
    assert torch.equal(rotated[1], reference_apply_rotary(k, cos, sin))

    assert torch.equal(AlibiPositions.slopes(heads), reference_alibi_slopes(heads))


INPUTS = {  # name: (token_mask, position_ids given by the caller)
    "plain": (None, None),
    "padded": (REAL, None),
    "packed": (None, PACKED),
    "packed and padded": (REAL, PACKED),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("kind", POSITION_EMBEDDING_TYPES)
def test_additive_mask_is_bit_identical_to_the_pre_split_mask(kind, inputs, dtype):
    model = HfpipeModel(tiny(position_embedding_type=kind, num_attention_heads=4))
    token_mask, position_ids = INPUTS[inputs]
    x = torch.zeros(2, 10, 32, dtype=dtype)
    positions = position_ids if position_ids is not None else torch.arange(10).expand(2, 10)
    layout = model._layout(token_mask, position_ids, positions, x, output_attentions=True)  # eager
    document_ids = layout.document_ids
    expected = reference_eager_mask(model.config, token_mask, document_ids, positions, x)
    if expected is None:
        assert layout.attention_mask is None
    else:
        assert layout.attention_mask.dtype == dtype and torch.equal(layout.attention_mask, expected)
    if kind == "alibi":
        assert layout.attention_mask.shape == (2, 4, 10, 10)  # the bias rides in the mask: one per head


def test_mask_builder_per_backend():
    assert ATTENTION_MASKS["eager"] is ATTENTION_MASKS["sdpa"] is additive_mask
    assert ATTENTION_MASKS["flex_attention"] is ATTENTION_MASKS["flash_attention_2"] is flex_mask
    real = REAL[:1]  # (1, T): one padded row
    mask = additive_mask(tiny(), torch.zeros(1, 10, 32), real, None, None)  # (1, 1, T, T)
    assert (mask[0, 0, :, :8] == 0).all() and (mask[0, 0, :, 8:] == torch.finfo(torch.float32).min).all()


def test_flex_mask_refuses_a_score_bias_naming_the_scheme():
    config = tiny(position_embedding_type="alibi")
    config._attn_implementation = "flex_attention"
    bias = AlibiPositions(config).bias(PACKED)
    with pytest.raises(ValueError, match="position_embedding_type='alibi' needs an additive score bias"):
        flex_mask(config, torch.zeros(2, 10, 32), None, None, bias)


# ----------------------------------------------------------------------------------------------
# One activation helper
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", HIDDEN_ACTS)
def test_activation_helper_is_the_only_source_of_nonlinearities(act):
    config = tiny(hidden_act=act)
    expected = {"gelu": F.gelu, "geglu": F.gelu, "swiglu": F.silu}[act]
    assert make_activation(config) is expected
    model = HfpipeForMaskedLM(config)
    mlp = model.model.layers[0].mlp
    assert mlp.act is expected and model.mlm_head.act is expected
    assert mlp.gated == (act != "gelu") and mlp.up.out_features == (2 * 48 if act != "gelu" else 48)
