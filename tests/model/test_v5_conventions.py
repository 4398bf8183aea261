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
"""The transformers v5 conventions of the model file (issue 20): recorded outputs, attention backends,
standard RoPE parameters, the pooler's bias and the in-memory config's auto_map.

    .venv/bin/pytest tests/model/test_v5_conventions.py -q
"""

import json

import pytest
import torch

from hfpipe import HfpipeConfig, HfpipeForMaskedLM, HfpipeModel
from hfpipe.model.modeling_hfpipe import RotaryPositions

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny(**overrides) -> HfpipeConfig:
    return HfpipeConfig(**{**TINY, **overrides})


def build(model_class, attn: str = "sdpa", **overrides):
    torch.manual_seed(0)
    model = model_class(tiny(**overrides))
    if model.config.token_mixer == "attention":
        model.set_attn_implementation(attn)
    return model.eval()


IDS = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


@torch.no_grad()
@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_hidden_states_are_recorded_by_the_capture_hooks(norm_position):
    model = build(HfpipeModel, norm_position=norm_position, final_norm=norm_position == "pre")
    out = model(IDS, attention_mask=MASK, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)  # after the final norm, as BERT
    embedded = model.embeddings(IDS, None, torch.arange(6).expand(2, 6), None, MASK.bool())
    assert torch.equal(out.hidden_states[0], embedded)
    assert model(IDS, attention_mask=MASK).hidden_states is None
    selected = model(IDS, attention_mask=MASK, output_hidden_states=[-1]).hidden_states  # v5 index selection
    assert selected[:-1] == (None, None) and torch.equal(selected[-1], out.last_hidden_state)


@torch.no_grad()
def test_attentions_from_sdpa_fall_back_to_eager_and_say_so_once(caplog):
    sdpa, eager = build(HfpipeForMaskedLM, attn="sdpa"), build(HfpipeForMaskedLM, attn="eager")
    with caplog.at_level("WARNING"):
        got = sdpa(IDS, attention_mask=MASK, output_attentions=True)
        sdpa(IDS, attention_mask=MASK, output_attentions=True)
    expected = eager(IDS, attention_mask=MASK, output_attentions=True)
    assert sdpa.config._attn_implementation == "sdpa"  # the model's backend is left as it was
    assert len(got.attentions) == 2 and got.attentions[0].shape == (2, 2, 6, 6)
    for a, b in zip(got.attentions, expected.attentions, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(got.logits, sdpa(IDS, attention_mask=MASK).logits, atol=1e-5)
    messages = [r.getMessage() for r in caplog.records if "cannot return attention weights" in r.getMessage()]
    assert len(messages) <= 1  # warning_once: at most once per process (0 if an earlier test logged it)


@torch.no_grad()
def test_attentions_are_empty_for_a_model_without_attention():
    model = build(HfpipeModel, token_mixer="pooling")
    assert model(IDS, attention_mask=MASK, output_attentions=True).attentions == ()


def test_rope_parameters_replace_rope_theta_and_old_configs_still_load(tmp_path):
    assert tiny(position_embedding_type="rope").rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    old = tiny(position_embedding_type="rope").to_dict()
    old.pop("rope_parameters")
    old["rope_theta"] = 500.0  # a config.json saved before rope_parameters
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = HfpipeConfig.from_pretrained(tmp_path)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 500.0}
    rope = RotaryPositions(config)
    assert torch.equal(rope.inv_freq, 1.0 / 500.0 ** (torch.arange(0, 16, 2).float() / 16))


@torch.no_grad()
def test_linear_rope_scaling_stretches_positions_and_inv_freq_is_a_buffer():
    default = RotaryPositions(tiny(position_embedding_type="rope"))
    linear = RotaryPositions(tiny(position_embedding_type="rope", rope_parameters={"rope_type": "linear", "factor": 2.0}))
    positions = torch.arange(0, 20, 2)[None]  # (1, 10): even positions
    cos2, sin2 = linear.rotary(positions, torch.float32)
    cos1, sin1 = default.rotary(positions // 2, torch.float32)  # position p under factor 2 = p / 2 unscaled
    assert torch.allclose(cos2, cos1, atol=1e-6) and torch.allclose(sin2, sin1, atol=1e-6)
    model = HfpipeModel(tiny(position_embedding_type="rope"))
    assert "embeddings.position_embeddings.inv_freq" in dict(model.named_buffers())
    assert not any("inv_freq" in k for k in model.state_dict())  # rebuilt from the config, never saved
    assert model.to(torch.bfloat16).embeddings.position_embeddings.inv_freq.dtype == torch.bfloat16


def test_rope_scaled_model_loads_back_with_its_scaling(tmp_path):
    model = HfpipeModel(tiny(position_embedding_type="rope", rope_parameters={"rope_type": "linear", "factor": 4.0}))
    model.save_pretrained(tmp_path)
    loaded = HfpipeModel.from_pretrained(tmp_path)
    assert loaded.config.rope_parameters["factor"] == 4.0
    assert torch.equal(loaded.positions.inv_freq, model.positions.inv_freq)
    assert torch.equal(loaded.positions.inv_freq, RotaryPositions.compute_inv_freq(model.config)[0])


@pytest.mark.parametrize("use_bias", [True, False])
def test_pooler_bias_follows_use_bias(use_bias):
    model = HfpipeModel(tiny(use_bias=use_bias))
    assert (model.pooler.dense.bias is not None) == use_bias


def test_auto_map_only_in_saved_config(tmp_path):
    model = HfpipeForMaskedLM(tiny())
    assert "auto_map" not in model.config.to_dict()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForMaskedLM"] == "modeling_hfpipe.HfpipeForMaskedLM"
    assert saved["auto_map"]["AutoModelForTokenClassification"] == "modeling_hfpipe.HfpipeForTokenClassification"
