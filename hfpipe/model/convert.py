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
"""Import a transformers BERT checkpoint into hfpipe.

    hfpipe convert bert SRC OUT          # SRC: a BERT folder (config.json + weights) or Hub id

The result uses hfpipe's `bert-*` options (post-norm LayerNorm, learned absolute positions, GELU,
biases, segment embeddings) and reproduces BERT's hidden states and head logits to ~1e-6 in fp32.
BERT's separate query/key/value projections become hfpipe's fused `qkv` (concatenated along the
output dimension); every other tensor is a rename.
"""

import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig

from .configuration_hfpipe import HfpipeConfig
from .modeling_hfpipe import (
    HfpipeForMaskedLM,
    HfpipeForMultipleChoice,
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
    HfpipeModel,
)

# BERT architecture name -> (transformers class name, hfpipe class)
ARCHITECTURES = {
    "BertModel": HfpipeModel,
    "BertForMaskedLM": HfpipeForMaskedLM,
    "BertForPreTraining": HfpipeForMaskedLM,  # the next-sentence head is dropped
    "BertForSequenceClassification": HfpipeForSequenceClassification,
    "BertForTokenClassification": HfpipeForTokenClassification,
    "BertForQuestionAnswering": HfpipeForQuestionAnswering,
    "BertForMultipleChoice": HfpipeForMultipleChoice,
}

# Renames applied to a BERT state-dict key with its "bert." prefix removed. Q/K/V are fused separately.
_RENAMES = [
    (r"^embeddings\.LayerNorm\.", "embeddings.norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.mixer.out_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.mixer_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp.up."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp.down."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.mlp_norm."),
]
_HEAD_RENAMES = [
    (r"^cls\.predictions\.transform\.dense\.", "mlm_head.dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "mlm_head.norm."),
    (r"^cls\.predictions\.decoder\.weight$", "mlm_head.decoder.weight"),
    (r"^cls\.predictions\.(decoder\.)?bias$", "mlm_head.decoder.bias"),
]
_DROPPED = re.compile(r"^cls\.seq_relationship\.|position_ids$|token_type_ids$")


class ConversionError(ValueError):
    pass


def hfpipe_config_from_bert(bert: BertConfig) -> HfpipeConfig:
    """The hfpipe config that computes exactly what this BERT config computes, or a clear error."""
    if bert.hidden_act != "gelu":
        raise ConversionError(f"BERT hidden_act={bert.hidden_act!r} is not supported; hfpipe's BERT options use exact 'gelu'")
    position_type = getattr(bert, "position_embedding_type", "absolute") or "absolute"
    if position_type != "absolute":
        raise ConversionError(f"BERT position_embedding_type={position_type!r} is not supported (only 'absolute')")
    if getattr(bert, "is_decoder", False):
        raise ConversionError("BERT is_decoder=True (a causal BERT) is not supported; hfpipe is an encoder")
    extra = {k: getattr(bert, k) for k in ("id2label", "label2id", "problem_type") if getattr(bert, k, None) is not None}
    return HfpipeConfig.from_preset(
        "bert-base",
        vocab_size=bert.vocab_size,
        hidden_size=bert.hidden_size,
        num_hidden_layers=bert.num_hidden_layers,
        num_attention_heads=bert.num_attention_heads,
        intermediate_size=bert.intermediate_size,
        hidden_dropout_prob=bert.hidden_dropout_prob,
        attention_probs_dropout_prob=bert.attention_probs_dropout_prob,
        classifier_dropout=getattr(bert, "classifier_dropout", None),
        max_position_embeddings=bert.max_position_embeddings,
        type_vocab_size=bert.type_vocab_size,
        initializer_range=bert.initializer_range,
        norm_eps=bert.layer_norm_eps,
        pad_token_id=bert.pad_token_id if bert.pad_token_id is not None else 0,
        tie_word_embeddings=getattr(bert, "tie_word_embeddings", True),
        **extra,
    )


def convert_bert_state_dict(state_dict: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename BERT tensors to hfpipe's layout, fusing each layer's query/key/value into `qkv`.

    Keys come back without a base-model prefix for backbone tensors ("embeddings.", "layers.", "pooler.")
    and with their head name for heads ("mlm_head.", "classifier.", "qa_outputs.")."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str, str], torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if _DROPPED.search(key):
            continue
        key = key.removeprefix("bert.")
        m = re.match(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$", key)
        if m:
            qkv[(int(m.group(1)), m.group(3), m.group(2))] = tensor
            continue
        for pattern, repl in _RENAMES + _HEAD_RENAMES:
            if re.match(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        out[key] = tensor
    for layer in range(num_layers):
        for kind in ("weight", "bias"):
            parts = [qkv.pop((layer, kind, name), None) for name in ("query", "key", "value")]
            if any(p is None for p in parts):
                raise ConversionError(f"layer {layer}: missing attention.self.query/key/value.{kind} in the BERT checkpoint")
            out[f"layers.{layer}.mixer.qkv.{kind}"] = torch.cat(parts, dim=0)  # 3 x (C, ...) -> (3C, ...)
    return out


def convert_bert_model(bert_model) -> torch.nn.Module:
    """An in-memory transformers BERT model -> the equivalent hfpipe model (same head)."""
    name = type(bert_model).__name__
    if name not in ARCHITECTURES:
        raise ConversionError(f"cannot convert {name}; supported: {', '.join(ARCHITECTURES)}")
    config = hfpipe_config_from_bert(bert_model.config)
    hfpipe_class = ARCHITECTURES[name]
    has_pooler = getattr(getattr(bert_model, "bert", bert_model), "pooler", None) is not None
    if hfpipe_class is HfpipeModel:
        config.add_pooling_layer = has_pooler
    model = hfpipe_class(config)
    converted = convert_bert_state_dict(bert_model.state_dict(), config.num_hidden_layers)
    prefix = "" if hfpipe_class is HfpipeModel else "model."
    head_keys = ("mlm_head.", "classifier.", "qa_outputs.")
    state = {(k if k.startswith(head_keys) else prefix + k): v for k, v in converted.items()}
    if hfpipe_class is not HfpipeModel and model.model.pooler is None:  # e.g. BertForPreTraining -> MLM
        state = {k: v for k, v in state.items() if ".pooler." not in k}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if config.tie_word_embeddings and "mlm_head.decoder.weight" in missing:
        missing.remove("mlm_head.decoder.weight")  # tied to the word embeddings
    if missing or unexpected:
        raise ConversionError(f"converting {name}: missing tensors {missing}, unexpected tensors {unexpected}")
    model.load_state_dict(state, strict=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def convert_bert(src: str | Path, out: str | Path, *, architecture: str | None = None) -> Path:
    """Convert a BERT checkpoint folder (or Hub id) to an hfpipe folder with its tokenizer.

    `architecture` overrides the class in SRC's config.json (e.g. "BertForMaskedLM")."""
    import transformers

    src_path = Path(src)
    if src_path.exists() and not (src_path / "config.json").is_file():
        raise FileNotFoundError(f"{src_path} has no config.json: point SRC at a BERT checkpoint folder")
    bert_config = BertConfig.from_pretrained(str(src))
    if bert_config.model_type != "bert":
        raise ConversionError(f"{src} is a {bert_config.model_type!r} checkpoint, not BERT")
    arch = architecture or (bert_config.architectures or ["BertModel"])[0]
    if arch not in ARCHITECTURES:
        raise ConversionError(f"{src}: architecture {arch!r} is not supported; choose one of {', '.join(ARCHITECTURES)}")
    bert_model = getattr(transformers, arch).from_pretrained(str(src), attn_implementation="eager")
    model = convert_bert_model(bert_model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    try:
        AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
    except (OSError, ValueError) as err:  # a weights-only folder: the model is still usable
        print(f"note: no tokenizer copied from {src} ({err.__class__.__name__})")
    return out


def load_bert_as(hfpipe_class: type, src: str | Path, **kwargs) -> torch.nn.Module:
    """`HfpipeFor<Task>.from_pretrained(bert_folder)`: the BERT checkpoint in SRC, converted in memory to
    `hfpipe_class` (nothing written). `kwargs` go to transformers' BERT `from_pretrained` (num_labels, ...)."""
    import transformers

    bert_name = {hfpipe: bert for bert, hfpipe in ARCHITECTURES.items() if bert != "BertForPreTraining"}.get(hfpipe_class)
    if bert_name is None:
        raise ConversionError(f"{hfpipe_class.__name__} has no BERT counterpart; use one of "
                              f"{', '.join(c.__name__ for c in ARCHITECTURES.values())}")
    kwargs.pop("attn_implementation", None)  # BERT is read in eager fp32; the hfpipe model keeps its default
    bert_model = getattr(transformers, bert_name).from_pretrained(str(src), attn_implementation="eager", **kwargs)
    return convert_bert_model(bert_model)
