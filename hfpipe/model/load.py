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
"""Load an encoder for training: an hfpipe folder or Hub id, or a BERT checkpoint converted on the fly.

`check_model_path` and `check_positions` read only files (no torch): the CLI calls them before the model
code is imported, so a mistyped path or a too long data.max_length is refused in one line at once."""

import json
from pathlib import Path


class ModelPathError(ValueError):
    """model.name_or_path names no model hfpipe can load, or the model cannot take the recipe's lengths."""


def _looks_like_hub_id(name: str) -> bool:
    """`org/name` or `name`: no leading `.`, `/` or `~`, at most one slash (transformers' rule for repo ids)."""
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and "\\" not in name


def check_model_path(name_or_path: str | None, key: str = "model.name_or_path") -> None:
    """Raise ModelPathError when `name_or_path` is neither a model folder (with config.json) nor a Hub id."""
    if name_or_path is None:
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
            raise ModelPathError(
                f"{key}={name_or_path!r} is a folder but not a model (no config.json; it holds {found}): "
                "point it at a model folder such as RUN/final"
            )
        return
    if path.exists():
        raise ModelPathError(f"{key}={name_or_path!r} is a file: point it at a model folder (with config.json)")
    if not _looks_like_hub_id(name_or_path) or (path.parent != Path(".") and path.parent.is_dir()):
        hint = f" (the folder {path.parent} exists)" if path.parent.is_dir() and path.parent != Path(".") else ""
        raise ModelPathError(f"{key}={name_or_path!r}: no such folder{hint}: check the path")


def check_positions(name_or_path: str | None, max_length: int, key: str = "data.max_length") -> None:
    """Raise ModelPathError when `max_length` is above the local model's max_position_embeddings."""
    config = Path(name_or_path or "") / "config.json"
    if name_or_path is None or not config.is_file():
        return  # a Hub id: its config is checked when the model loads
    positions = json.loads(config.read_text()).get("max_position_embeddings")
    if positions is not None and max_length > positions:
        raise ModelPathError(
            f"{key}={max_length} is above the model's {positions} positions ({config}): set {key}<={positions}"
        )


def load_quietly(hfpipe_class, name_or_path: str, **kwargs):
    """`from_pretrained` without transformers' LOAD REPORT table for what is expected (a fresh task head or
    pooler, the tied decoder, an MLM head left behind when fine-tuning); one warning line names the rest:
    encoder weights missing from the checkpoint, or encoder weights the model does not know."""
    import logging

    def no_table(record: logging.LogRecord) -> bool:  # its WARNING is a multi-line table with escape codes
        return "LOAD REPORT" not in record.getMessage()

    report = logging.getLogger("transformers.modeling_utils")  # (not its level: at >= WARNING it warns more)
    report.addFilter(no_table)
    try:
        model, info = hfpipe_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    finally:
        report.removeFilter(no_table)
    fresh_head = hfpipe_class.__name__ != "HfpipeForMaskedLM"  # a task head starts from random values

    def expected(key: str) -> bool:
        return (key.startswith("model.pooler.") or key == "mlm_head.decoder.weight"
                or (fresh_head and not key.startswith("model.")))

    missing = sorted(k for k in info["missing_keys"] if not expected(k))
    unknown = sorted(k for k in info["unexpected_keys"] if k.startswith("model."))
    if missing or unknown:
        parts = [f"{len(missing)} weight(s) missing from the checkpoint, initialized at random: "
                 + ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")] if missing else []
        if unknown:
            parts.append(f"{len(unknown)} weight(s) of the checkpoint not used: " + ", ".join(unknown[:4])
                         + (" ..." if len(unknown) > 4 else ""))
        logging.getLogger(__name__).warning("loading %s: %s", name_or_path, "; ".join(parts))
    return model


def load_encoder(name_or_path: str, hfpipe_class, **kwargs):
    """Load an hfpipe folder / Hub id into `hfpipe_class`, converting a BERT checkpoint on the fly.

    `kwargs` set config fields of the new model (num_labels, id2label, problem_type, ...)."""
    from transformers import AutoConfig

    from .convert import ARCHITECTURES, convert_bert_model, hfpipe_config_from_bert

    check_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as e:  # a Hub id that is not there (or offline), a config that does not parse
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelPathError(f"model.name_or_path={name_or_path!r}: no such folder, and not a loadable Hub model ({first})") from e
    if config.model_type == "hfpipe":
        return load_quietly(hfpipe_class, name_or_path, **kwargs)
    if config.model_type != "bert":
        raise ModelPathError(f"model.name_or_path={name_or_path!r} is a {config.model_type!r} model; hfpipe loads hfpipe or BERT checkpoints")
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
