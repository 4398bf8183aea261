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
"""Load an encoder for training: an hfpipe folder or Hub id, or a BERT checkpoint converted on the fly."""

from pathlib import Path

from transformers import AutoConfig


def load_encoder(name_or_path: str, hfpipe_class, **kwargs):
    """Load an hfpipe folder / Hub id into `hfpipe_class`, converting a BERT checkpoint on the fly.

    `kwargs` set config fields of the new model (num_labels, id2label, problem_type, ...)."""
    from .convert import ARCHITECTURES, convert_bert_model, hfpipe_config_from_bert

    path = Path(name_or_path)
    if not path.exists() and ("/" not in name_or_path or name_or_path.startswith((".", "/"))):
        raise FileNotFoundError(f"model.name_or_path={name_or_path!r}: no such folder (and it does not look like a Hub id)")
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    if config.model_type == "hfpipe":
        return hfpipe_class.from_pretrained(name_or_path, **kwargs)
    if config.model_type != "bert":
        raise ValueError(f"model.name_or_path={name_or_path!r} is a {config.model_type!r} model; hfpipe loads hfpipe or BERT checkpoints")
    import transformers

    arch = (config.architectures or ["BertModel"])[0]
    bert = getattr(transformers, arch if arch in ARCHITECTURES else "BertModel").from_pretrained(name_or_path)
    backbone = convert_bert_model(bert)
    hf_config = hfpipe_config_from_bert(config)
    for key, value in kwargs.items():  # num_labels, id2label, problem_type, ... for the new head
        setattr(hf_config, key, value)
    model = hfpipe_class(hf_config)
    source = backbone.state_dict()
    own = model.state_dict()
    # Copy every tensor whose name and shape match (the backbone, and the MLM head when both have one).
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith(("model.", "embeddings.")) for k in matched):
        prefix = "model." if hasattr(model, "model") else ""
        matched = {prefix + k: v for k, v in source.items() if prefix + k in own and own[prefix + k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return model
