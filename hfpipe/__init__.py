"""hfpipe: pretrain and fine-tune BERT-style encoders the Hugging Face way.

    from hfpipe import HfpipeConfig, HfpipeForMaskedLM
    model = AutoModelForMaskedLM.from_config(HfpipeConfig.from_preset("bert-tiny"))

`import hfpipe` is light (no torch, no transformers), so `hfpipe --help` is instant. The names below
load on first use, and loading any of them imports `hfpipe.model`, which registers the model family
with transformers' Auto classes: from then on `AutoModel.from_pretrained(folder)` works in-process.
Where transformers is already imported, `import hfpipe` registers at once (it costs nothing more), so
`from transformers import AutoModel; import hfpipe; AutoModel.from_pretrained(folder)` works as before.
Saved folders carry their own code and load anywhere with `trust_remote_code=True`.
"""

import importlib
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "HfpipeConfig",
    "HfpipePreTrainedModel",
    "HfpipeModel",
    "HfpipeForMaskedLM",
    "HfpipeForSequenceClassification",
    "HfpipeForTokenClassification",
    "HfpipeForQuestionAnswering",
    "HfpipeForMultipleChoice",
]

_MODULE = {name: "modeling_hfpipe" for name in __all__} | {"PRESETS": "configuration_hfpipe",
                                                            "HfpipeConfig": "configuration_hfpipe"}
"""Top-level name -> its module in hfpipe.model."""


def __getattr__(name: str):
    if name not in _MODULE:
        raise AttributeError(f"module 'hfpipe' has no attribute {name!r}")
    module = importlib.import_module(f"hfpipe.model.{_MODULE[name]}")  # hfpipe.model registers Auto classes
    value = globals()[name] = getattr(module, name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if "transformers" in sys.modules:  # already paid for: register the Auto classes now
    importlib.import_module("hfpipe.model")

if TYPE_CHECKING:  # what editors and type checkers see
    from .model.configuration_hfpipe import PRESETS, HfpipeConfig
    from .model.modeling_hfpipe import (
        HfpipeForMaskedLM,
        HfpipeForMultipleChoice,
        HfpipeForQuestionAnswering,
        HfpipeForSequenceClassification,
        HfpipeForTokenClassification,
        HfpipeModel,
        HfpipePreTrainedModel,
    )
