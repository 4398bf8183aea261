"""hfpipe: pretrain and fine-tune BERT-style encoders the Hugging Face way.

`import hfpipe` registers the model family with transformers' Auto classes, so
`AutoModelForMaskedLM.from_config(HfpipeConfig(...))` and `AutoModel.from_pretrained(folder)` work
in-process; saved folders carry their own code and load anywhere with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

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

__version__ = "0.1.0"

_AUTO_CLASSES = {
    AutoModel: HfpipeModel,
    AutoModelForMaskedLM: HfpipeForMaskedLM,
    AutoModelForSequenceClassification: HfpipeForSequenceClassification,
    AutoModelForTokenClassification: HfpipeForTokenClassification,
    AutoModelForQuestionAnswering: HfpipeForQuestionAnswering,
    AutoModelForMultipleChoice: HfpipeForMultipleChoice,
}

AutoConfig.register(HfpipeConfig.model_type, HfpipeConfig, exist_ok=True)
HfpipeConfig.register_for_auto_class()  # save_pretrained copies the code files beside the weights
for _auto, _model in _AUTO_CLASSES.items():
    _auto.register(HfpipeConfig, _model, exist_ok=True)
    _model.register_for_auto_class(_auto.__name__)

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
