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
"""The model variants that exist for `hfpipe ablate`: the padding-aware BatchNorm (norm_type="batchnorm")
and the fixed uniform token mixer (token_mixer="uniform") compute what their docstrings say.

    .venv/bin/pytest tests/model/test_ablation_variants.py -q
"""

import pytest
import torch
from torch import nn

from hfpipe import HfpipeConfig, HfpipeForMaskedLM, HfpipeModel
from hfpipe.model.modeling_hfpipe import HfpipeUniformMixer, MaskedBatchNorm, TokenLayout, make_norm

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
ATOL = 1e-5


def tiny(**overrides) -> HfpipeConfig:
    return HfpipeConfig(**{**TINY, **overrides})


def model_in_eval(model_class=HfpipeModel, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = model_class(tiny(**overrides))
    with torch.no_grad():  # move every parameter off its init (norm scales 1, biases 0)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return model.eval()


# ----------------------------------------------------------------------------------------------
# BatchNorm over the real tokens of the batch
# ----------------------------------------------------------------------------------------------


def test_batchnorm_training_statistics_are_those_of_the_real_tokens():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8)  # (B, T, C)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    norm = MaskedBatchNorm(8, eps=1e-5).train()
    reference = nn.BatchNorm1d(8, eps=1e-5).train()  # the same, run on the real tokens only
    out = norm(x, mask)
    expected = reference(x[mask])  # (real tokens, C)
    torch.testing.assert_close(out[mask], expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    torch.testing.assert_close(norm.running_var, reference.running_var)  # unbiased, momentum 0.1
    noisy = x.clone()
    noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)  # padding content never leaks in
    torch.testing.assert_close(norm(noisy, mask)[mask], out[mask], atol=ATOL, rtol=0)


def test_batchnorm_depends_on_the_batch_in_training_and_not_in_eval():
    model = model_in_eval(norm_type="batchnorm")
    ids = torch.randint(1, 100, (4, 7), generator=torch.Generator().manual_seed(1))
    model.train()  # dropout is 0: only the norms behave differently in training
    alone = model(ids[:1]).last_hidden_state[0]
    in_batch = model(ids).last_hidden_state[0]
    assert (alone - in_batch).abs().max() > 1e-2  # the other rows change row 0's output
    model.eval()
    torch.testing.assert_close(model(ids[:1]).last_hidden_state[0], model(ids).last_hidden_state[0],
                               atol=ATOL, rtol=0)


def test_batchnorm_padding_changes_nothing_on_real_tokens_in_training():
    model = model_in_eval(HfpipeForMaskedLM, norm_type="batchnorm").train()
    ids = torch.randint(1, 100, (2, 6), generator=torch.Generator().manual_seed(2))
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # (2, 9): 3 pads per row
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 3)], dim=1).long()
    plain = model(ids, attention_mask=torch.ones_like(ids)).logits
    with_pads = model(padded, attention_mask=mask).logits[:, :6]
    torch.testing.assert_close(with_pads, plain, atol=ATOL, rtol=0)


def test_batchnorm_running_statistics_survive_save_and_load(tmp_path):
    model = model_in_eval(HfpipeForMaskedLM, norm_type="batchnorm").train()
    model(torch.randint(1, 100, (4, 9)))  # one training-mode pass moves the running statistics
    norm = model.model.layers[0].mixer_norm
    assert not torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    model.save_pretrained(tmp_path)
    loaded = HfpipeForMaskedLM.from_pretrained(tmp_path).eval()
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(loaded.get_buffer(name), buffer, atol=0, rtol=0)
    ids = torch.randint(1, 100, (2, 5))
    torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, atol=0, rtol=0)


def test_fresh_batchnorm_starts_with_unit_statistics():
    norm = HfpipeModel(tiny(norm_type="batchnorm")).layers[1].mlp_norm
    assert torch.equal(norm.running_mean, torch.zeros(32)) and torch.equal(norm.running_var, torch.ones(32))
    assert torch.equal(norm.weight, torch.ones(32)) and torch.equal(norm.bias, torch.zeros(32))


@pytest.mark.parametrize("norm_type, cls", [("layernorm", nn.LayerNorm), ("rmsnorm", nn.RMSNorm)])
def test_per_token_norms_are_the_torch_modules_and_ignore_the_mask(norm_type, cls):
    norm = make_norm(tiny(norm_type=norm_type))
    assert isinstance(norm, cls)
    x = torch.randn(2, 4, 32)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(norm(x, mask), norm(x))
    assert set(norm.state_dict()) == set(cls(32).state_dict())  # BERT's names: conversion is unchanged


# ----------------------------------------------------------------------------------------------
# The uniform token mixer
# ----------------------------------------------------------------------------------------------


def test_uniform_mixer_averages_the_real_tokens_of_each_document():
    x = torch.randn(1, 6, 4)
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])  # documents: tokens 0-2, 3-4, 5 (padding)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    layout = TokenLayout(None, mask, torch.cumsum(positions == 0, dim=-1), None, positions, None)
    out, probs = HfpipeUniformMixer(tiny(), 0)(x, layout)
    assert probs is None
    first, second = x[0, :3].mean(0), x[0, 3:5].mean(0)
    torch.testing.assert_close(out[0, :3], first.expand(3, 4))
    torch.testing.assert_close(out[0, 3:5], second.expand(2, 4))


def test_uniform_model_ignores_padding_and_packing():
    model = model_in_eval(token_mixer="uniform")
    assert sum(p.numel() for p in model.layers[0].mixer.parameters()) == 0
    a = torch.randint(1, 100, (5,), generator=torch.Generator().manual_seed(3))
    b = torch.randint(1, 100, (4,), generator=torch.Generator().manual_seed(4))
    alone_a, alone_b = model(a[None]).last_hidden_state[0], model(b[None]).last_hidden_state[0]
    packed = torch.cat([a, b, torch.zeros(2, dtype=torch.long)])[None]  # (1, 11)
    positions = torch.cat([torch.arange(5), torch.arange(4), torch.zeros(2, dtype=torch.long)])[None]
    mask = torch.cat([torch.ones(9), torch.zeros(2)])[None].long()
    out = model(packed, attention_mask=mask, position_ids=positions).last_hidden_state[0]
    torch.testing.assert_close(out[:5], alone_a, atol=ATOL, rtol=0)
    torch.testing.assert_close(out[5:9], alone_b, atol=ATOL, rtol=0)


def test_uniform_mixer_sees_no_order_without_positions():
    model = model_in_eval(token_mixer="uniform", position_embedding_type="none")
    ids = torch.randint(1, 100, (1, 6), generator=torch.Generator().manual_seed(5))
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    out = model(ids).last_hidden_state
    torch.testing.assert_close(model(ids[:, order]).last_hidden_state, out[:, order], atol=ATOL, rtol=0)


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_uniform_mixer_rejects_positions_that_live_inside_attention(position):
    with pytest.raises(ValueError, match="token_mixer='uniform'"):
        tiny(token_mixer="uniform", position_embedding_type=position)
