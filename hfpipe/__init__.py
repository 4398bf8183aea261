"""hfpipe: pretrain and fine-tune BERT-style encoders the Hugging Face way.

    from hfpipe import HfpipeConfig, HfpipeForMaskedLM
    model = AutoModelForMaskedLM.from_config(HfpipeConfig.from_preset("bert-tiny"))

`import hfpipe` is light (no torch, no transformers), so `hfpipe --help` is instant. The names below
load on first use, and loading any of them imports `hfpipe.model`, which registers the model family
with transformers' Auto classes: from then on `AutoModel.from_pretrained(folder)` works in-process.
The registration does not depend on import order: where transformers is already imported, `import
hfpipe` registers at once; where it is not, `import hfpipe` leaves a one-shot import hook that registers
as soon as `import transformers` finishes. So both `import hfpipe; from transformers import AutoModel`
(isort's order) and the reverse load `AutoModel.from_pretrained(folder)` without trust_remote_code.
Saved folders carry their own code and load anywhere with `trust_remote_code=True`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
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


def _register() -> None:
    """Register the model family with transformers' Auto classes (imports torch and hfpipe.model)."""
    try:
        importlib.import_module("hfpipe.model")
    except Exception as error:  # never break the user's `import transformers`
        warnings.warn(f"hfpipe could not register with transformers' Auto classes: {error}", stacklevel=2)


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """One shot: finds `transformers` like the rest of sys.meta_path would, and registers hfpipe's
    classes right after its `__init__` has run (the package is complete then, nothing half-imported)."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    """transformers' own loader, with the registration after it."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: transformers' loader answers
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _register()


if "transformers" in sys.modules:  # already paid for: register the Auto classes now
    _register()
elif not any(isinstance(finder, _RegisterAfterTransformers) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTransformers())

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
