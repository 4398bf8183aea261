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
"""The hfpipe model family, registered with transformers' Auto classes when this package is imported.

    import hfpipe.model   # or any hfpipe name: `from hfpipe import HfpipeConfig`
    AutoModelForMaskedLM.from_config(HfpipeConfig.from_preset("bert-tiny"))
    AutoModel.from_pretrained("runs/demo/final")        # in-process, no trust_remote_code needed

Every hfpipe module that builds or loads a model imports from this package, so the registration runs
before any of them can use an Auto class. `configuration_hfpipe.py` and `modeling_hfpipe.py` stay
self-contained (they ship to the Hub as remote code); the registration lives here, not in them.
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

from .configuration_hfpipe import HfpipeConfig
from .modeling_hfpipe import (
    HfpipeForMaskedLM,
    HfpipeForMultipleChoice,
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
    HfpipeModel,
)

AUTO_CLASSES = {
    AutoModel: HfpipeModel,
    AutoModelForMaskedLM: HfpipeForMaskedLM,
    AutoModelForSequenceClassification: HfpipeForSequenceClassification,
    AutoModelForTokenClassification: HfpipeForTokenClassification,
    AutoModelForQuestionAnswering: HfpipeForQuestionAnswering,
    AutoModelForMultipleChoice: HfpipeForMultipleChoice,
}
"""transformers Auto class -> the hfpipe class it builds for `model_type: hfpipe`."""

AutoConfig.register(HfpipeConfig.model_type, HfpipeConfig, exist_ok=True)
HfpipeConfig.register_for_auto_class()  # save_pretrained copies the code files beside the weights
for _auto, _model in AUTO_CLASSES.items():
    _auto.register(HfpipeConfig, _model, exist_ok=True)
    _model.register_for_auto_class(_auto.__name__)
