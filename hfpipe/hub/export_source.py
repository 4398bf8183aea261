"""The folder an export starts from: an hfpipe or BERT model folder, checked, then loaded with its head.

    from hfpipe.hub.export_source import load_source
    source = load_source("runs/tiny/final")     # source.model (eval, fp32), source.tokenizer, source.head

Shared by `hfpipe export onnx` and `hfpipe export sentence-transformers`. A BERT folder (config.json
model_type "bert") is converted in memory with `hfpipe.model.convert` first (hidden states equal to
~1e-6), so both exports handle one model family and write hfpipe configs. Anything else is refused with
one line naming the folder and what was found.
"""

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedConfig, PreTrainedModel

from ..model import modeling_hfpipe
from ..model.convert import ARCHITECTURES as BERT_ARCHITECTURES
from ..model.convert import ConversionError, convert_bert_model
from ..model.modeling_hfpipe import HfpipeModel

# head name (what `--head` takes) -> (hfpipe class, the output fields an export serves, in order)
HEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "base": ("HfpipeModel", ("last_hidden_state",)),
    "masked-lm": ("HfpipeForMaskedLM", ("logits",)),
    "sequence-classification": ("HfpipeForSequenceClassification", ("logits",)),
    "token-classification": ("HfpipeForTokenClassification", ("logits",)),
    "question-answering": ("HfpipeForQuestionAnswering", ("start_logits", "end_logits")),
    "multiple-choice": ("HfpipeForMultipleChoice", ("logits",)),
}
HEAD_OF_CLASS = {class_name: head for head, (class_name, _) in HEADS.items()}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


class ExportError(ValueError):
    """The folder cannot be exported as asked: not a model folder, not hfpipe or BERT, no tokenizer,
    a head it does not have, or an export that does not reproduce the PyTorch model."""


@dataclass
class SourceModel:
    folder: Path
    model: PreTrainedModel  # the folder's hfpipe model with its head, eval mode, fp32
    tokenizer: object  # the folder's tokenizer (a transformers fast tokenizer)
    head: str  # the folder's head: a key of HEADS

    @property
    def architecture(self) -> str:
        return type(self.model).__name__


def read_config(folder: Path) -> dict:
    """config.json of an hfpipe or BERT folder, or an ExportError naming the folder and what it holds."""
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder}: no config.json (point at a model folder, e.g. a run's final/)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{folder}: config.json is not valid JSON ({err})") from None
    model_type = config.get("model_type")
    if model_type not in ("hfpipe", "bert"):
        raise ExportError(f"{folder}: config.json says model_type {model_type!r}; "
                          "hfpipe exports hfpipe or BERT models")
    return config


def load_source(folder: str | Path) -> SourceModel:
    """Check `folder` and load its model (with the head config.json names) and its tokenizer."""
    folder = Path(folder)
    config = read_config(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ExportError(f"{folder}: no tokenizer ({', '.join(TOKENIZER_FILES)}); the export needs one")
    is_bert = config["model_type"] == "bert"
    architecture = (config.get("architectures") or ["BertModel" if is_bert else "HfpipeModel"])[0]
    known = BERT_ARCHITECTURES if is_bert else HEAD_OF_CLASS
    if architecture not in known:
        raise ExportError(f"{folder}: config.json names architecture {architecture!r}; "
                          f"hfpipe exports {', '.join(known)}")
    try:
        if is_bert:
            model = _convert_bert(folder, architecture)
        else:
            model = getattr(modeling_hfpipe, architecture).from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ConversionError) as err:  # weights missing or unreadable, a BERT we cannot convert
        raise ExportError(f"{folder}: {str(err).splitlines()[0]}") from None
    return SourceModel(folder, model.eval(), tokenizer, HEAD_OF_CLASS[type(model).__name__])


def _convert_bert(folder: Path, architecture: str) -> PreTrainedModel:
    """transformers' BERT class named by config.json, loaded and converted to the same hfpipe head."""
    import transformers

    bert = getattr(transformers, architecture).from_pretrained(folder, dtype=torch.float32,
                                                               attn_implementation="eager")
    return convert_bert_model(bert)


def backbone(model: PreTrainedModel) -> HfpipeModel:
    """The bare encoder of any hfpipe model: the model itself, or its head's `model`."""
    return model if isinstance(model, HfpipeModel) else model.model


def config_for(model: PreTrainedModel) -> PreTrainedConfig:
    """A copy of `model`'s config that describes exactly this module, for the exported folder: its class
    in `architectures` and, for a bare encoder taken from a head, whether it really has a pooler."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    if isinstance(model, HfpipeModel):
        config.add_pooling_layer = model.pooler is not None
    return config
