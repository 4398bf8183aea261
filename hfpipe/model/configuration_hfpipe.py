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
"""HfpipeConfig: the architecture of an hfpipe encoder, saved as config.json.

    from hfpipe import HfpipeConfig
    config = HfpipeConfig.from_preset("modern-small", vocab_size=8192)

One class covers BERT and its modern descendants. The variants are a few enumerated fields
(`position_embedding_type`, `norm_type`, `norm_position`, `hidden_act`, `token_mixer`); every
other field is a size, a switch or a rate. Impossible values fail here, at construction time, with
a message naming the field and its allowed values -- not deep inside a forward pass.

This file imports only transformers: it ships to the Hub as remote code beside modeling_hfpipe.py.
"""

from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

POSITION_EMBEDDING_TYPES = ("absolute", "sinusoidal", "rope", "alibi", "none")
NORM_TYPES = ("layernorm", "rmsnorm", "batchnorm")
NORM_POSITIONS = ("post", "pre")
HIDDEN_ACTS = ("gelu", "geglu", "swiglu")
TOKEN_MIXERS = ("attention", "pooling", "uniform")

# Written into every saved config.json (not into configs in memory) so that each Auto class loads the
# folder with trust_remote_code=True where hfpipe is not installed (`register_for_auto_class` alone would
# record only the saving class).
AUTO_MAP = {
    "AutoConfig": "configuration_hfpipe.HfpipeConfig",
    "AutoModel": "modeling_hfpipe.HfpipeModel",
    "AutoModelForMaskedLM": "modeling_hfpipe.HfpipeForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_hfpipe.HfpipeForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_hfpipe.HfpipeForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_hfpipe.HfpipeForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_hfpipe.HfpipeForMultipleChoice",
}

# The original BERT architecture at the sizes of Google's BERT miniatures (Turc et al., 2019) and
# BERT-base/large (Devlin et al., 2019): post-norm LayerNorm, learned absolute positions, GELU MLP
# with 4x width, biases everywhere, segment embeddings, 15% masking.
_BERT = dict(
    position_embedding_type="absolute",
    norm_type="layernorm",
    norm_position="post",
    hidden_act="gelu",
    use_bias=True,
    type_vocab_size=2,
    embedding_norm=True,
    final_norm=False,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
# The lessons of Cramming (Geiping & Goldstein, 2022) and ModernBERT (Warner et al., 2024):
# pre-norm for stable high learning rates, rotary positions, gated GELU MLP, no biases,
# no segment embeddings, no dropout for short pretraining budgets, a final norm.
_MODERN = dict(
    position_embedding_type="rope",
    norm_type="layernorm",
    norm_position="pre",
    hidden_act="geglu",
    use_bias=False,
    type_vocab_size=0,
    embedding_norm=True,
    final_norm=True,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _bert(layers: int, hidden: int) -> dict:
    return dict(_BERT, num_hidden_layers=layers, hidden_size=hidden,
                num_attention_heads=hidden // 64, intermediate_size=4 * hidden)


PRESETS: dict[str, dict] = {
    "bert-tiny": _bert(2, 128),
    "bert-mini": _bert(4, 256),
    "bert-small": _bert(4, 512),
    "bert-medium": _bert(8, 512),
    "bert-base": _bert(12, 768),
    "bert-large": _bert(24, 1024),
    # GeGLU's intermediate size counts the value half only; ModernBERT-base uses 1152 with 768 hidden.
    "modern-tiny": dict(_MODERN, num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256),
    "modern-small": dict(_MODERN, num_hidden_layers=8, hidden_size=512, num_attention_heads=8, intermediate_size=768),
    "modern-base": dict(_MODERN, num_hidden_layers=22, hidden_size=768, num_attention_heads=12, intermediate_size=1152),
    "modern-large": dict(_MODERN, num_hidden_layers=28, hidden_size=1024, num_attention_heads=16, intermediate_size=2624),
}


def _check_choice(field: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"HfpipeConfig.{field}={value!r} is not supported; allowed values: {', '.join(allowed)}")


class HfpipeConfig(PreTrainedConfig):
    r"""Configuration of an hfpipe encoder (`model_type="hfpipe"`).

    Args:
        vocab_size: number of token ids the embedding table holds.
        hidden_size: width C of the residual stream.
        num_hidden_layers: number of encoder layers.
        num_attention_heads: number of heads H; the head dim is D = C / H.
        intermediate_size: width of the MLP's hidden layer (for GLU variants: of each of the two halves).
        hidden_act: MLP type: "gelu" (BERT: Linear -> GELU -> Linear), "geglu" or "swiglu"
            (gated: GELU(xW) * xV or SiLU(xW) * xV, Shazeer 2020).
        hidden_dropout_prob: dropout on embeddings and on every residual branch.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        classifier_dropout: dropout before classification heads (None = hidden_dropout_prob).
        max_position_embeddings: longest sequence (learned absolute positions need a table this long;
            sinusoidal/rope/alibi extrapolate, but the value still bounds the recipes' block size).
        type_vocab_size: number of segment ids (BERT: 2); 0 removes segment embeddings.
        initializer_range: std of the normal init of every Linear and Embedding weight.
        norm_eps: epsilon of every norm (BERT: 1e-12).
        position_embedding_type: "absolute" (learned table, BERT), "sinusoidal" (fixed, Vaswani 2017),
            "rope" (rotary, Su 2021), "alibi" (linear attention bias, Press 2021) or "none".
        rope_parameters: transformers' standard RoPE settings, as for every v5 model: `rope_type`
            ("default", or a context-extension scaling: "linear", "dynamic", "yarn", "longrope", "llama3")
            and `rope_theta` (base of the rotary frequencies, 10000), plus that type's own keys (`factor`,
            ...). A saved config's old top-level `rope_theta` is moved here on load.
        norm_type: "layernorm" or "rmsnorm" (per token), or "batchnorm" (over the real tokens of the batch,
            padding left out): the experiment behind "why LayerNorm and not BatchNorm?"
            (`hfpipe ablate norms`), not a choice for real models.
        norm_position: "post" (BERT: x = norm(x + f(x))) or "pre" (x = x + f(norm(x))).
        token_mixer: "attention", or "pooling" (PoolFormer: average pooling minus identity,
            MetaFormer, Yu 2022), or "uniform" (every token gets the plain average of its document,
            what attention computes when every score is equal) -- baselines that show how much
            attention buys (`hfpipe ablate mixer`).
        pool_size: window of the pooling token mixer (odd).
        use_bias: biases in Linear layers and norms.
        embedding_norm: normalize the summed embeddings (BERT does).
        final_norm: normalize the last hidden state (needed with pre-norm).
        tie_word_embeddings: share the MLM decoder weight with the input embedding.
        add_pooling_layer: the BERT pooler (Linear + tanh on the first token) used by classifiers.
        sparse_prediction: given labels, the MLM head computes logits only where labels != -100 and
            returns them as (N, V) (ModernBERT's option, off as there): at 15-30% masking that skips most
            of the head's compute. Off, logits are (B, T, V) as BertForMaskedLM's. hfpipe's pretraining
            turns it on for its own steps (`HfpipeForMaskedLM.sparse_prediction`), not in the config.
    """

    model_type = "hfpipe"

    # transformers v5 makes every config class a keyword-only dataclass: these fields are its __init__.
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    norm_eps: float = 1e-12
    position_embedding_type: str = "absolute"
    rope_parameters: RopeParameters | dict | None = None
    norm_type: str = "layernorm"
    norm_position: str = "post"
    token_mixer: str = "attention"
    pool_size: int = 3
    use_bias: bool = True
    embedding_norm: bool = True
    final_norm: bool = False
    tie_word_embeddings: bool = True
    add_pooling_layer: bool = True
    sparse_prediction: bool = False
    pad_token_id: int = 0

    def __post_init__(self, **kwargs):
        """Runs after the fields are set: check them, then hand the generic kwargs (num_labels, id2label,
        auto_map, an old config's rope_theta, ...) to PreTrainedConfig, which fills `rope_parameters`."""
        self._check_fields()
        super().__post_init__(**kwargs)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save config.json with `AUTO_MAP` in it (and any auto_map entries of its own), so the folder loads
        as remote code where hfpipe is not installed; the config in memory is left as it was."""
        auto_map = getattr(self, "auto_map", None)
        self.auto_map = {**AUTO_MAP, **(auto_map or {})}
        try:
            super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if auto_map is None:
                del self.auto_map
            else:
                self.auto_map = auto_map

    def _check_fields(self) -> None:
        _check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("hidden_act", self.hidden_act, HIDDEN_ACTS)
        _check_choice("token_mixer", self.token_mixer, TOKEN_MIXERS)
        C, H, position = self.hidden_size, self.num_attention_heads, self.position_embedding_type
        if C % H != 0:
            raise ValueError(
                f"HfpipeConfig.hidden_size={C} must be divisible by "
                f"num_attention_heads={H} (head dim = hidden_size / num_attention_heads)"
            )
        if position == "rope" and (C // H) % 2:
            raise ValueError("HfpipeConfig.position_embedding_type='rope' needs an even head dim "
                             f"(hidden_size / num_attention_heads = {C // H})")
        if position == "sinusoidal" and C % 2:
            raise ValueError(f"HfpipeConfig.position_embedding_type='sinusoidal' needs an even hidden_size, got {C}")
        if self.token_mixer != "attention" and position in ("rope", "alibi"):
            raise ValueError(
                f"HfpipeConfig.position_embedding_type={position!r} acts inside attention, "
                f"so it has no effect with token_mixer={self.token_mixer!r}; use 'absolute', 'sinusoidal' or 'none'"
            )
        if self.pool_size < 1 or self.pool_size % 2 == 0:
            raise ValueError(f"HfpipeConfig.pool_size must be a positive odd number, got {self.pool_size}")
        if self.type_vocab_size < 0:
            raise ValueError(
                f"HfpipeConfig.type_vocab_size must be >= 0 (0 = no segment embeddings), got {self.type_vocab_size}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"HfpipeConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HfpipeConfig":
        """A named architecture (see `PRESETS`), with any field overridden: `from_preset("bert-mini", vocab_size=8192)`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


__all__ = ["HfpipeConfig", "PRESETS", "AUTO_MAP"]
