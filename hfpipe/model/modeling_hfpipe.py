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
"""The hfpipe encoder: BERT and its modern variants in one readable transformers v5 model.

    from hfpipe import HfpipeConfig, HfpipeForMaskedLM
    model = HfpipeForMaskedLM(HfpipeConfig.from_preset("bert-mini", vocab_size=8192))

Read top to bottom: helpers (norms) -> position schemes -> embeddings -> attention masks -> token
mixers (attention, pooling, uniform) -> MLP -> layer -> PreTrainedModel -> base model -> task heads.
This file imports only torch, transformers and its sibling configuration file, so the pair ships to
the Hub as remote code unchanged.

Shape legend (every reshape, transpose, split and merge below carries one of these comments):
    B  batch size                 T  tokens per row (sequence length)
    C  hidden size                H  attention heads             D  head dim = C / H
    I  MLP intermediate size      V  vocabulary size             L  number of labels
    N  positions with an MLM label (sparse prediction)           K  choices (multiple choice)
    P  max_position_embeddings (rows of the learned position table)

The four questions of the tutorial this grew from, answered where they are in the code:
  * What are Q, K and V and where do they come from?  `HfpipeSelfAttention.forward`: three learned
    linear maps of the same hidden states. Q asks, K is matched against Q to score every pair of
    tokens, V is what gets mixed by those scores.
  * Is there a better positional encoding?  `position_embedding_type`, one `Positions` class each,
    side by side: learned absolute (BERT), fixed sinusoidal, rotary (RoPE: rotates Q and K so their
    dot product sees only relative distance), ALiBi (a distance penalty added to the scores) or none.
    `hfpipe ablate positions` trains each and tests them on longer inputs than they were trained on.
  * Why LayerNorm and not BatchNorm?  `make_norm`: a token's features are normalized over its own
    C features, so the result never depends on the other rows in the batch, on padding, or on
    batch size -- train and inference behave the same, one sequence at a time. `MaskedBatchNorm`
    is here to be measured against it (`hfpipe ablate norms`); where the norm sits, before or after
    each branch, is `norm_position` (`hfpipe ablate norm-position`).
  * Which dimension change is which operation?  The shape comments, and `hfpipe shapes`.
  (And the MetaFormer claim that attention can be replaced: `hfpipe ablate mixer`; docs/walkthrough.md
  follows one sentence through this file.)

Padding-free (packed) input: several documents may share one row. Pass `position_ids` that restart
at 0 at each document's first token; attention then never crosses a document boundary and
positions restart per document. `attention_mask` (B, T) marks padding as usual.
"""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.loss.loss_utils import fixed_cross_entropy
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_hfpipe import HfpipeConfig

logger = logging.get_logger(__name__)

# ----------------------------------------------------------------------------------------------
# Helpers: norms, activations, and where the tokens sit
# ----------------------------------------------------------------------------------------------


# Every norm in this file is called as `norm(x, token_mask)`, x (..., C) and token_mask (B, T) or None.
# LayerNorm and RMSNorm take their statistics over the C features of one token, so they never look at
# the mask -- that is the answer to "why not BatchNorm?" in one signature. Only BatchNorm needs it.


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (BERT's norm, same weights and names), called with the token mask it does not need."""

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (no mean, no bias: x / rms(x) * weight), called with the token mask it does not need."""

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class NoNorm(nn.Identity):
    """Where a norm is switched off (embedding_norm / final_norm false): x unchanged."""

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


class MaskedBatchNorm(nn.Module):
    """"batchnorm": BatchNorm over the real tokens of the batch. It exists for one experiment
    (`hfpipe ablate norms`: why LayerNorm and not BatchNorm?), not for real models.

    Training: each feature is normalized with the mean and variance over every real token of the batch
    (padding left out, so at least padding does not leak in), so a token's output depends on the other
    sentences in its batch. Evaluation: running averages of those statistics, collected during training
    as nn.BatchNorm1d does (momentum 0.1, unbiased variance) -- a different function from the one trained.
    """

    momentum = 0.1

    def __init__(self, hidden_size: int, eps: float, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias else None
        self.register_buffer("running_mean", torch.zeros(hidden_size))  # (C,)
        self.register_buffer("running_var", torch.ones(hidden_size))  # (C,)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            mean, var = self.batch_statistics(x, token_mask)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight  # (..., C) with (C,) broadcast
        return y + self.bias if self.bias is not None else y

    def batch_statistics(self, x: torch.Tensor, token_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and (biased) variance over the real tokens; updates the running averages."""
        flat = x.reshape(-1, x.shape[-1]).float()  # (B, T, C) -> (B*T, C), or (N, C) as it is
        if token_mask is None:
            real = flat.new_ones(flat.shape[0], 1)  # (B*T, 1): every row counts
        else:
            real = token_mask.reshape(-1, 1).to(flat.dtype)  # (B, T) -> (B*T, 1): 1 for real tokens
        count = real.sum().clamp(min=1)
        mean = (flat * real).sum(0) / count  # (B*T, C) -> (C,)
        var = ((flat - mean) ** 2 * real).sum(0) / count  # (B*T, C) -> (C,)
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(unbiased, self.momentum)
        return mean.to(x.dtype), var.to(x.dtype)


def make_norm(config: HfpipeConfig, enabled: bool = True) -> nn.Module:
    """The norm of `config.norm_type` over the C features (NoNorm where `enabled` is False)."""
    if not enabled:
        return NoNorm()
    if config.norm_type == "rmsnorm":
        return RMSNorm(config.hidden_size, eps=config.norm_eps)
    if config.norm_type == "batchnorm":  # eps at least nn.BatchNorm1d's 1e-5: a feature constant over a
        # small batch would be multiplied by 1e6 with BERT's 1e-12
        return MaskedBatchNorm(config.hidden_size, eps=max(config.norm_eps, 1e-5), bias=config.use_bias)
    return LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.use_bias)


# hidden_act -> the nonlinearity. "geglu" and "swiglu" are gated (Shazeer, 2020): the MLP applies the
# nonlinearity to one half of its up projection and multiplies the other half by it.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "geglu": F.gelu, "swiglu": F.silu}
GATED_ACTS = ("geglu", "swiglu")


def make_activation(config: HfpipeConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The nonlinearity of `config.hidden_act`, shared by the MLP and the MLM head: GELU or SiLU."""
    return ACTIVATIONS[config.hidden_act]


def default_position_ids(batch_size: int, seq_len: int, device) -> torch.Tensor:
    return torch.arange(seq_len, device=device).expand(batch_size, seq_len)  # (B, T)


def document_ids_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Packed rows: a new document starts wherever the position restarts at 0."""
    return torch.cumsum(position_ids == 0, dim=-1)  # (B, T)


@dataclass
class TokenLayout:
    """Where the tokens sit, computed once per forward pass and shared by every layer."""

    attention_mask: object  # what the attention backend wants: None, an additive (B, 1|H, T, T) tensor, or a flex BlockMask
    token_mask: torch.Tensor | None  # (B, T) bool, True for real tokens; None without an attention_mask
    document_ids: torch.Tensor | None  # (B, T) packed document index of each token; None for one document per row
    rotary: tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin), each (B, 1, T, D), for RoPE
    position_ids: torch.Tensor | None  # (B, T) as given, passed on to attention backends that use it (flash varlen)
    positions: "Positions"  # the model's position scheme: attention asks it to rotate q and k
    attention_backend: str = "eager"  # config._attn_implementation, or "eager" where attention weights are asked for


# ----------------------------------------------------------------------------------------------
# Positions: one class per position_embedding_type, all with the same interface
# ----------------------------------------------------------------------------------------------


class Positions(nn.Module):
    """A position scheme: how the model learns where each token sits. One subclass per
    `position_embedding_type`, each acting in one place only (or nowhere):

        forward(position_ids, dtype) -> (B, T, C) added to the token embeddings      absolute, sinusoidal
        rotary(position_ids, dtype)  -> (cos, sin), computed once per forward pass   rope
        rotate(q, k, layout)         -> q and k rotated by position, in every layer  rope
        bias(position_ids)           -> (B, H, T, T) added to the attention scores   alibi

    Where a scheme does not act these return None (rotate: q and k unchanged). `position_ids` (B, T)
    restart at 0 at each packed document. The model keeps its scheme at `embeddings.position_embeddings`,
    BERT's name for its learned table.
    """

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        return None

    def rotary(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def rotate(self, q: torch.Tensor, k: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def bias(self, position_ids: torch.Tensor) -> torch.Tensor | None:
        return None


class NoPositions(Positions):
    """"none": no position information at all. Attention then sees a bag of tokens: the encoder is
    permutation-equivariant (`hfpipe lessons positions` shows it)."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()


class AbsolutePositions(nn.Embedding, Positions):
    """"absolute" (BERT): a learned vector per position, added to the token embedding.

    An nn.Embedding: its (P, C) table is `embeddings.position_embeddings.weight`, as in BERT. It has no
    row beyond P = max_position_embeddings, so longer inputs are refused."""

    def __init__(self, config: HfpipeConfig):
        super().__init__(config.max_position_embeddings, config.hidden_size)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        T = position_ids.shape[-1]
        if T > self.num_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings={self.num_embeddings}; "
                "truncate the input (tokenizer truncation / data.block_size) or use a longer model"
            )
        return super().forward(position_ids)  # (B, T) -> (B, T, C): one table row per position


class SinusoidalPositions(Positions):
    """"sinusoidal" (Vaswani et al., 2017): fixed sin/cos waves of the position, added to the token
    embedding. Feature 2i is sin(p / 10000^(2i/C)), feature 2i+1 the cosine. No parameters."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        # sin/cos have a per-feature RMS of 1/sqrt(2), ~35x the 0.02-std token embeddings at init: scaled
        # to the token embeddings' init std so position does not drown out the token (Vaswani et al.
        # instead multiply the token embeddings by sqrt(C)).
        self.scale = config.initializer_range * math.sqrt(2)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        C = self.hidden_size
        inv_freq = 1.0 / 10000 ** (torch.arange(0, C, 2, device=position_ids.device).float() / C)  # (C/2,)
        angles = position_ids[..., None].float() * inv_freq  # (B, T, 1) * (C/2,) -> (B, T, C/2)
        waves = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, T, C/2, 2) -> (B, T, C)
        return self.scale * waves.to(dtype)


class RotaryPositions(Positions):
    """"rope" (Su et al., 2021): rotate each feature pair of Q and K by an angle proportional to the
    position, in every layer. Rotating q by angle i*w and k by j*w leaves q.k depending on i - j only.

    The frequencies follow transformers' standard `config.rope_parameters`, as in every v5 model:
    `rope_type` "default" is theta^(-2i/D); the scaling types ("linear", "dynamic", "yarn", "longrope",
    "llama3") stretch them to extend a trained model's context. They are computed once into the
    `inv_freq` buffer (not saved: rebuilt from the config), which moves with the model.
    """

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        self.config = config  # read by transformers' rope functions and dynamic_rope_update
        self.rope_type = config.rope_parameters["rope_type"]
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        inv_freq, self.attention_scaling = self.compute_inv_freq(config)  # (D/2,), float
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_inv_freq(config: HfpipeConfig) -> tuple[torch.Tensor, float]:
        """Feature pair i turns at theta^(-2i/D) per position ("default"), or as the rope type rescales it."""
        rope_type = config.rope_parameters["rope_type"]
        if rope_type != "default":
            return ROPE_INIT_FUNCTIONS[rope_type](config)
        D, theta = config.head_dim, config.rope_parameters["rope_theta"]
        return 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float) / D), 1.0  # (D/2,)

    def rotary(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of every position's angles, each (B, 1, T, D); computed once per forward."""
        return self.cos_sin(position_ids.new_empty(0, dtype=dtype), position_ids)  # the empty x carries the dtype

    @dynamic_rope_update  # "dynamic" and "longrope" recompute inv_freq for inputs longer than trained on
    def cos_sin(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids[..., None].float() * self.inv_freq  # (B, T, 1) * (D/2,) -> (B, T, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (B, T, D/2) -> (B, T, D)
        cos, sin = angles.cos() * self.attention_scaling, angles.sin() * self.attention_scaling
        return cos.to(x.dtype)[:, None], sin.to(x.dtype)[:, None]  # (B, T, D) -> (B, 1, T, D): broadcast over heads

    def rotate(self, q: torch.Tensor, k: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = layout.rotary  # (B, 1, T, D) each
        return self.apply_rotary(q, cos, sin), self.apply_rotary(k, cos, sin)  # (B, H, T, D) each, rotated

    @staticmethod
    def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate each feature pair (x_i, x_{i+D/2}) of Q or K by its position's angle."""
        x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D) -> 2 x (B, H, T, D/2)
        rotated_half = torch.cat([-x2, x1], dim=-1)  # 2 x (B, H, T, D/2) -> (B, H, T, D)
        return x * cos + rotated_half * sin


class AlibiPositions(Positions):
    """"alibi" (Press et al., 2021): no vectors at all; head h adds -slope_h * |i - j| to the score of
    query i against key j, so far-away keys are penalized, more steeply in some heads."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads

    def bias(self, position_ids: torch.Tensor) -> torch.Tensor:
        distance = (position_ids[:, None, :] - position_ids[:, :, None]).abs()  # (B, 1, T) - (B, T, 1) -> (B, T, T)
        slopes = self.slopes(self.num_heads).to(position_ids.device, torch.float32)  # (H,)
        return -slopes[None, :, None, None] * distance[:, None]  # (1, H, 1, 1) * (B, 1, T, T) -> (B, H, T, T)

    @staticmethod
    def slopes(num_heads: int) -> torch.Tensor:
        """Head h's slope is 2^(-8(h+1)/H) (interpolated if H is not a power of 2)."""

        def geometric(n: int) -> list[float]:
            return [2 ** (-8 * (i + 1) / n) for i in range(n)]

        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = geometric(closest) + geometric(2 * closest)[0::2][: num_heads - closest]
        return torch.tensor(slopes)  # (H,)


POSITIONS: dict[str, type[Positions]] = {
    "absolute": AbsolutePositions,
    "sinusoidal": SinusoidalPositions,
    "rope": RotaryPositions,
    "alibi": AlibiPositions,
    "none": NoPositions,
}


def make_positions(config: HfpipeConfig) -> Positions:
    """The scheme named by `config.position_embedding_type`, built once; forward passes never branch on the name."""
    kind = config.position_embedding_type
    if kind not in POSITIONS:
        raise ValueError(f"position_embedding_type={kind!r} must be one of {', '.join(POSITIONS)}")
    return POSITIONS[kind](config)


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------


class HfpipeEmbeddings(nn.Module):
    """token + segment + position embeddings -> norm -> dropout.

    `position_embeddings` holds the model's position scheme, whichever it is (BERT's name for its table);
    only absolute and sinusoidal positions add a vector here, rope and alibi act inside attention."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size > 0 else None
        )
        self.position_embeddings = make_positions(config)  # the position scheme, whichever it is
        self.norm = make_norm(config, enabled=config.embedding_norm)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds=None, token_mask=None) -> torch.Tensor:
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T) -> (B, T, C)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(position_ids)
            x = x + self.token_type_embeddings(token_type_ids)  # (B, T) -> (B, T, C)
        positions = self.position_embeddings(position_ids, x.dtype)  # (B, T) -> (B, T, C), or None: no vector
        if positions is not None:
            x = x + positions
        return self.dropout(self.norm(x, token_mask))


# ----------------------------------------------------------------------------------------------
# Attention masks: one builder per kind of attention backend
# ----------------------------------------------------------------------------------------------
# Every builder applies the same rule: a query attends to the real (not padded) keys of its own
# document; a padded query may look anywhere in its row, which keeps its softmax finite (its output is
# never used). The scheme's score bias (ALiBi) rides along where the backend takes one.


def additive_mask(config: HfpipeConfig, x: torch.Tensor, token_mask, document_ids, bias) -> torch.Tensor | None:
    """eager and sdpa: a float (B, 1|H, T, T) added to the scores: 0 (or the bias) where a query may
    look, the dtype's most negative number where it may not."""
    B, T, _ = x.shape
    allowed = None
    if token_mask is not None:
        allowed = token_mask[:, None, None, :]  # (B, T) -> (B, 1, 1, T): real keys
    if document_ids is not None:
        same = document_ids[:, None, :, None] == document_ids[:, None, None, :]  # (B, 1, T, 1) vs (B, 1, 1, T) -> (B, 1, T, T)
        if token_mask is not None:
            same = same | ~token_mask[:, None, :, None]  # padded queries: (B, T) -> (B, 1, T, 1)
        allowed = same if allowed is None else same & allowed  # (B, 1, T, T)
    if allowed is None and bias is None:
        return None  # attend everywhere: lets sdpa pick its fastest kernel
    mask = torch.zeros(B, 1, T, T, device=x.device) if bias is None else bias
    if allowed is not None:
        mask = mask.masked_fill(~allowed, torch.finfo(x.dtype).min)  # (B, 1 or H, T, T)
    return mask.to(x.dtype)


def flex_mask(config: HfpipeConfig, x: torch.Tensor, token_mask, document_ids, bias):
    """flex_attention (a BlockMask) and the flash kernels: transformers builds the mask from the
    padding and a mask function. Neither takes an additive score bias here."""
    if bias is not None:
        raise ValueError(
            f"position_embedding_type={config.position_embedding_type!r} needs an additive score bias, which "
            f"attn_implementation={config._attn_implementation!r} does not take here; use 'sdpa' or 'eager'"
        )
    same_document = None
    if document_ids is not None:
        pad_query = ~token_mask if token_mask is not None else None

        def same_document(b, h, q, kv):  # scalar indices of one (row, head, query, key)
            ok = document_ids[b, q] == document_ids[b, kv]
            return ok | pad_query[b, q] if pad_query is not None else ok

    padding = token_mask.long() if token_mask is not None else None
    return create_bidirectional_mask(config, inputs_embeds=x, attention_mask=padding, and_mask_function=same_document)


# attn_implementation -> mask builder; any other backend (a registered custom one) gets the additive mask
ATTENTION_MASKS: dict[str, Callable] = {
    "eager": additive_mask,
    "sdpa": additive_mask,
    "flex_attention": flex_mask,
    "flash_attention_2": flex_mask,
    "flash_attention_3": flex_mask,
}


# ----------------------------------------------------------------------------------------------
# Token mixers: how information moves between tokens
# ----------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out; `sdpa`, `flex_attention` and `flash_attention_2` compute the same thing fused."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, D) @ (B, H, D, T) -> (B, H, T, T)
    if attention_mask is not None:
        scores = scores + attention_mask  # -inf-like where a query may not look; ALiBi distance penalties
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, H, T, T): each row sums to 1
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value)  # (B, H, T, T) @ (B, H, T, D) -> (B, H, T, D): weighted sum of values
    return out.transpose(1, 2).contiguous(), probs  # (B, H, T, D) -> (B, T, H, D), the layout every backend returns


class HfpipeSelfAttention(nn.Module):
    """Multi-head self-attention. Where Q, K and V come from: three linear maps of the same x."""

    is_causal = False  # an encoder: every token sees every other token of its document

    def __init__(self, config: HfpipeConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5  # 1/sqrt(D) keeps score variance ~1 whatever D is
        # Q, K and V projections computed as one matmul (faster), split right after.
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.use_bias)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        H, D = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).split(C, dim=-1)  # (B, T, C) -> (B, T, 3C) -> 3 x (B, T, C)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, T, H, D) -> (B, H, T, D): head split
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        q, k = layout.positions.rotate(q, k, layout)  # RoPE rotates q and k by position; other schemes: as is

        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(layout.attention_backend, eager_attention_forward)
        out, probs = attention(
            self,
            q,
            k,
            v,
            layout.attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            position_ids=layout.position_ids,
        )  # out: (B, T, H, D); probs: (B, H, T, T) from eager, None from fused backends
        out = out.reshape(B, T, C)  # (B, T, H, D) -> (B, T, C): head merge
        # probs are recorded as `attentions` (HfpipePreTrainedModel._can_record_outputs)
        return self.out_proj(out), probs


class HfpipePoolingMixer(nn.Module):
    """PoolFormer (Yu et al., 2022): mix by averaging each token's window, minus the token itself.

    Padding-aware and document-aware: the average runs over real tokens of the same document only.
    No parameters -- MetaFormer's point is how far the rest of the block gets without attention.
    """

    def __init__(self, config: HfpipeConfig, layer_idx: int):
        super().__init__()
        self.radius = config.pool_size // 2

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, None]:
        B, T, C = x.shape
        r = self.radius
        real = layout.token_mask if layout.token_mask is not None else x.new_ones(B, T, dtype=torch.bool)
        docs = layout.document_ids if layout.document_ids is not None else x.new_zeros(B, T, dtype=torch.long)
        x_pad = F.pad(x, (0, 0, r, r))  # (B, T, C) -> (B, T + 2r, C)
        real_pad = F.pad(real, (r, r), value=False)  # (B, T) -> (B, T + 2r)
        docs_pad = F.pad(docs, (r, r), value=-1)  # (B, T) -> (B, T + 2r)
        total = torch.zeros_like(x)
        count = x.new_zeros(B, T, 1)
        for offset in range(2 * r + 1):  # neighbour t - r + offset of every token t
            ok = real_pad[:, offset : offset + T] & (docs_pad[:, offset : offset + T] == docs)  # (B, T)
            ok = ok[..., None].to(x.dtype)  # (B, T) -> (B, T, 1)
            total = total + x_pad[:, offset : offset + T] * ok  # (B, T, C)
            count = count + ok
        return total / count.clamp(min=1) - x, None


class HfpipeUniformMixer(nn.Module):
    """"uniform": every token receives the plain average of the real tokens of its document -- what
    attention computes when every score is equal (and V and the output projection are the identity).

    The weights are fixed, the same for every token and every sentence: a baseline that tells how much of
    attention's gain comes from mixing at all and how much from choosing *what* to mix. No parameters.
    Unlike PoolFormer it does not subtract x: in a post-norm layer, norm(x + mean - x) would make every
    token of a document identical after the first layer.
    """

    def __init__(self, config: HfpipeConfig, layer_idx: int):
        super().__init__()

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, None]:
        B, T, C = x.shape
        real = layout.token_mask if layout.token_mask is not None else x.new_ones(B, T, dtype=torch.bool)
        docs = layout.document_ids if layout.document_ids is not None else x.new_zeros(B, T, dtype=torch.long)
        same = docs[:, :, None] == docs[:, None, :]  # (B, T, 1) vs (B, 1, T) -> (B, T, T): same document
        allowed = (same & real[:, None, :]).to(x.dtype)  # (B, T, T) & (B, 1, T): real keys of my document
        weights = allowed / allowed.sum(-1, keepdim=True).clamp(min=1)  # (B, T, T): each row sums to 1
        return weights @ x, None  # (B, T, T) @ (B, T, C) -> (B, T, C)


# token_mixer -> the module that moves information between tokens
TOKEN_MIXERS: dict[str, type[nn.Module]] = {
    "attention": HfpipeSelfAttention,
    "pooling": HfpipePoolingMixer,
    "uniform": HfpipeUniformMixer,
}


# ----------------------------------------------------------------------------------------------
# MLP and layer
# ----------------------------------------------------------------------------------------------


class HfpipeMLP(nn.Module):
    """Per-token feed-forward: C -> I -> C with GELU (BERT), or gated GELU/SiLU (GeGLU/SwiGLU)."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        self.gated = config.hidden_act in GATED_ACTS
        self.act = make_activation(config)
        up_size = 2 * config.intermediate_size if self.gated else config.intermediate_size
        self.up = nn.Linear(config.hidden_size, up_size, bias=config.use_bias)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)  # (B, T, C) -> (B, T, I), or (B, T, 2I) when gated
        if self.gated:
            gate, value = h.chunk(2, dim=-1)  # (B, T, 2I) -> 2 x (B, T, I)
            h = self.act(gate) * value
        else:
            h = self.act(h)
        return self.down(h)  # (B, T, I) -> (B, T, C)


class HfpipeLayer(GradientCheckpointingLayer):
    """One encoder layer: token mixer and MLP, each a residual branch with a norm before or after it."""

    def __init__(self, config: HfpipeConfig, layer_idx: int):
        super().__init__()
        self.mixer = TOKEN_MIXERS[config.token_mixer](config, layer_idx)
        self.mixer_norm = make_norm(config)
        self.mlp = HfpipeMLP(config)
        self.mlp_norm = make_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.pre_norm = config.norm_position == "pre"

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        real = layout.token_mask  # (B, T) or None: only BatchNorm looks at it
        if self.pre_norm:  # x + f(norm(x)): the residual stream itself is never normalized
            mixed, _ = self.mixer(self.mixer_norm(x, real), layout)  # _: attention weights, recorded by a hook
            x = x + self.dropout(mixed)
            x = x + self.dropout(self.mlp(self.mlp_norm(x, real)))
        else:  # BERT: norm(x + f(x))
            mixed, _ = self.mixer(x, layout)
            x = self.mixer_norm(x + self.dropout(mixed), real)
            x = self.mlp_norm(x + self.dropout(self.mlp(x)), real)
        return x  # recorded as one of `hidden_states` (HfpipePreTrainedModel._can_record_outputs)


# ----------------------------------------------------------------------------------------------
# Pretrained-model plumbing and the base model
# ----------------------------------------------------------------------------------------------


class HfpipePreTrainedModel(PreTrainedModel):
    config_class = HfpipeConfig
    config: HfpipeConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HfpipeEmbeddings", "HfpipeLayer"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # What `output_hidden_states` / `output_attentions` return, recorded by hooks that `@capture_outputs` on
    # HfpipeModel.forward installs: every layer's output (after the embeddings' output, the first layer's
    # input), and the weights (index 1 of its output) of every attention module.
    _can_record_outputs = {
        "hidden_states": HfpipeLayer,
        "attentions": OutputRecorder(HfpipeSelfAttention, index=1),
    }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' from_pretrained; a local BERT checkpoint folder (config.json says model_type "bert")
        is also accepted and converted in memory, as `hfpipe convert bert` would (that needs hfpipe installed).

        Not through transformers' checkpoint-conversion mapping: a mapping registered for "hfpipe" is also
        reversed by save_pretrained, so every hfpipe folder would be saved with BERT's tensor names, and
        a mapping renames tensors but cannot turn BERT's config.json into an HfpipeConfig."""
        config_file = Path(str(pretrained_model_name_or_path)) / "config.json"
        if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "bert":
            try:  # only this path needs hfpipe itself (in a try, so remote code does not require it)
                from hfpipe.model.convert import load_bert_as  # noqa: PLC0415
            except ImportError as err:
                raise ImportError(f"{pretrained_model_name_or_path} is a BERT checkpoint: reading it as "
                                  f"{cls.__name__} needs hfpipe installed (pip install hfpipe)") from err
            return load_bert_as(cls, pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Every weight's init, in one place: N(0, initializer_range) for Linear and Embedding weights,
        zeros for biases and the padding embedding, ones for norm scales. `transformers.initialization`
        skips tensors already loaded from a checkpoint, so loading never re-initializes weights."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm, MaskedBatchNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
            if isinstance(module, MaskedBatchNorm):  # running statistics start as those of N(0, 1)
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
        elif isinstance(module, RotaryPositions):  # not saved: rebuilt from config.rope_parameters
            inv_freq, _ = module.compute_inv_freq(module.config)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)


class HfpipePooler(nn.Module):
    """BERT's pooler: Linear + tanh on the first ([CLS]) token."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))  # (B, T, C) -> (B, C)


class HfpipeModel(HfpipePreTrainedModel):
    """The bare encoder: embeddings -> layers -> optional final norm (-> optional pooler)."""

    def __init__(self, config: HfpipeConfig, add_pooling_layer: bool | None = None):
        super().__init__(config)
        self.embeddings = HfpipeEmbeddings(config)
        self.layers = nn.ModuleList([HfpipeLayer(config, i) for i in range(config.num_hidden_layers)])
        self.final_norm = make_norm(config, enabled=config.final_norm)
        if add_pooling_layer is None:
            add_pooling_layer = config.add_pooling_layer
        self.pooler = HfpipePooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    @property
    def positions(self) -> Positions:
        """The position scheme; it lives in the embeddings, under BERT's name for the position table."""
        return self.embeddings.position_embeddings

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _layout(self, attention_mask, position_ids, positions, x: torch.Tensor, output_attentions: bool) -> TokenLayout:
        """Padding, packed documents, the attention backend and the position scheme's rotation and bias, once
        for all layers.

        `position_ids` is what the caller passed (None: one document per row), `positions` what the model uses.
        No branch looks at the mask's values (an all-ones mask is applied like any other, with the same
        result): torch.export, ONNX and torch.compile trace one graph for every batch."""
        token_mask = attention_mask.bool() if attention_mask is not None else None
        document_ids = document_ids_from_positions(position_ids) if position_ids is not None else None
        backend = self.config._attn_implementation
        if output_attentions and backend != "eager" and self.config.token_mixer == "attention":
            logger.warning_once(f"output_attentions=True: attn_implementation={backend!r} cannot return attention "
                                "weights, so this forward pass (and any other that asks for them) runs eager attention")
            backend = "eager"  # only the eager path materializes the (B, H, T, T) probabilities
        mask = None
        if self.config.token_mixer == "attention":
            build_mask = ATTENTION_MASKS.get(backend, additive_mask)
            mask = build_mask(self.config, x, token_mask, document_ids, self.positions.bias(positions))
        rotary = self.positions.rotary(positions, x.dtype)
        return TokenLayout(mask, token_mask, document_ids, rotary, position_ids, self.positions, backend)

    @capture_outputs  # fills `hidden_states` / `attentions` from the hooks of `_can_record_outputs`
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        B, T = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        if position_ids is not None:
            position_ids = position_ids.expand(B, T)  # (1, T) broadcasts to every row
        positions = position_ids if position_ids is not None else default_position_ids(B, T, device)  # (B, T)

        token_mask = attention_mask.bool() if attention_mask is not None else None  # (B, T): for BatchNorm
        x = self.embeddings(input_ids, token_type_ids, positions, inputs_embeds, token_mask)  # (B, T) -> (B, T, C)
        output_attentions = kwargs.get("output_attentions", self.config.output_attentions)
        layout = self._layout(attention_mask, position_ids, positions, x, output_attentions)
        for layer in self.layers:
            x = layer(x, layout)  # (B, T, C) -> (B, T, C)
        x = self.final_norm(x, layout.token_mask)  # like BERT, hidden_states[-1] is this final output
        return BaseModelOutputWithPooling(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
        )


# ----------------------------------------------------------------------------------------------
# Task heads: thin classes over the shared backbone, returning the standard ModelOutputs
# ----------------------------------------------------------------------------------------------


class HfpipeMLMHead(nn.Module):
    """BERT's MLM head: Linear -> activation -> norm -> decoder to the vocabulary (tied to the embeddings)."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.act = make_activation(config)
        self.norm = make_norm(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(x)), token_mask))  # (..., C) -> (..., V)


class HfpipeForMaskedLM(HfpipePreTrainedModel):
    """Masked-language modelling, BERT's way: (B, T, V) logits, and with `labels` the cross-entropy over
    the positions whose label is not -100.

    With sparse prediction on, the head runs only where labels != -100 (at 15-30% masking most of a
    full head's compute would be thrown away), and `logits` is then (N, V) in the order of
    `labels[labels != -100]`. `self.sparse_prediction` starts as `config.sparse_prediction` (default
    False); hfpipe's pretraining sets it on the module for its own steps, so the folder it saves keeps
    the config's value and behaves like BertForMaskedLM wherever it goes."""

    _tied_weights_keys = {"mlm_head.decoder.weight": "model.embeddings.word_embeddings.weight"}

    def __init__(self, config: HfpipeConfig):
        super().__init__(config)
        self.model = HfpipeModel(config, add_pooling_layer=False)
        self.mlm_head = HfpipeMLMHead(config)
        self.sparse_prediction = config.sparse_prediction
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        hidden = outputs.last_hidden_state  # (B, T, C)
        token_mask = attention_mask.bool() if attention_mask is not None else None  # (B, T): for BatchNorm
        if labels is not None and self.sparse_prediction:
            selected = labels != -100  # (B, T)
            hidden = hidden[selected]  # (B, T, C) -> (N, C): only positions that have a label
            labels = labels[selected]  # (B, T) -> (N,)
            token_mask = None  # every row left is a labelled token
        logits = self.mlm_head(hidden, token_mask)  # (B, T, C) -> (B, T, V), or (N, C) -> (N, V)
        loss = None
        if labels is not None:  # mean over the labelled tokens, or their sum / Trainer's num_items_in_batch
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                              attentions=outputs.attentions)


def sequence_classification_loss(model: HfpipePreTrainedModel, logits: torch.Tensor, labels: torch.Tensor,
                                 **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
    """transformers' sequence-classification loss: MSE (regression), cross-entropy (single-label) or BCE
    (multi-label), the problem type inferred from num_labels and the label dtype as transformers does.

    Its cross-entropy divides the summed loss by Trainer's `num_items_in_batch` (the labels of all the
    accumulated micro-batches); its MSE and BCE are means over this batch only, so they are rescaled here
    to the same sum / num_items_in_batch, and gradient accumulation is exact for all three."""
    config = model.config
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    single_label = config.problem_type == "single_label_classification"
    labels = labels if single_label else labels.float()
    loss = model.loss_function(labels=labels, pooled_logits=logits.float(), config=config, **kwargs)
    num_items = kwargs.get("num_items_in_batch")
    if num_items is not None and not single_label:
        loss = loss * labels.numel() / num_items  # this batch's mean -> its share of the accumulated sum
    return loss


def _classifier_dropout(config: HfpipeConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


class HfpipeForSequenceClassification(HfpipePreTrainedModel):
    """Pooled [CLS] -> dropout -> Linear(C, L). `config.problem_type` picks regression / single- / multi-label."""

    def __init__(self, config: HfpipeConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HfpipeModel(config, add_pooling_layer=True)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B, C) -> (B, L)
        loss = sequence_classification_loss(self, logits, labels, **kwargs) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


class HfpipeForTokenClassification(HfpipePreTrainedModel):
    """Every token -> dropout -> Linear(C, L) (NER). Labels of -100 are ignored."""

    def __init__(self, config: HfpipeConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HfpipeModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (B, T, C) -> (B, T, L)
        loss = None
        if labels is not None:  # cross-entropy over the (B*T, L) logits, -100 ignored
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                     attentions=outputs.attentions)


class HfpipeForQuestionAnswering(HfpipePreTrainedModel):
    """Extractive QA: every token -> Linear(C, 2) -> start and end logits of the answer span."""

    def __init__(self, config: HfpipeConfig):
        super().__init__(config)
        self.model = HfpipeModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> QuestionAnsweringModelOutput:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        logits = self.qa_outputs(outputs.last_hidden_state)  # (B, T, C) -> (B, T, 2)
        start_logits, end_logits = logits.unbind(dim=-1)  # (B, T, 2) -> 2 x (B, T)
        loss = None
        if start_positions is not None and end_positions is not None:
            # the mean of the start and end cross-entropies; positions outside the row (answer cut off) are ignored
            loss = self.loss_function(start_logits.float(), end_logits.float(), start_positions, end_positions,
                                      **kwargs)
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits.contiguous(),
                                            end_logits=end_logits.contiguous(),
                                            hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class HfpipeForMultipleChoice(HfpipePreTrainedModel):
    """Each (context, choice) pair encoded separately -> pooled -> Linear(C, 1) -> softmax over the K choices."""

    def __init__(self, config: HfpipeConfig):
        super().__init__(config)
        self.model = HfpipeModel(config, add_pooling_layer=True)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MultipleChoiceModelOutput:
        first = input_ids if input_ids is not None else inputs_embeds
        K = first.shape[1]

        def flat(t):  # (B, K, T, ...) -> (B*K, T, ...)
            return t.reshape(-1, *t.shape[2:]) if t is not None else None

        outputs = self.model(input_ids=flat(input_ids), attention_mask=flat(attention_mask),
                             token_type_ids=flat(token_type_ids), position_ids=flat(position_ids),
                             inputs_embeds=flat(inputs_embeds), return_dict=True, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B*K, C) -> (B*K, 1)
        logits = logits.view(-1, K)  # (B*K, 1) -> (B, K)
        loss = None
        if labels is not None:  # transformers has no loss_type for multiple choice: its cross-entropy directly
            loss = fixed_cross_entropy(logits.float(), labels, **kwargs)
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                         attentions=outputs.attentions)


__all__ = [
    "HfpipePreTrainedModel",
    "HfpipeModel",
    "HfpipeForMaskedLM",
    "HfpipeForSequenceClassification",
    "HfpipeForTokenClassification",
    "HfpipeForQuestionAnswering",
    "HfpipeForMultipleChoice",
]
