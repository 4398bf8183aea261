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
"""Saved hfpipe folders load with `trust_remote_code=True` on a machine where hfpipe is not installed.

    .venv/bin/pytest tests/model/test_remote_code.py -q

One subprocess (imports cost a few seconds) loads a folder per head with every Auto class, runs the
inputs saved here and prints the max abs difference from the outputs computed in this process.
"""

import json

import torch
from fresh_env import run_without_hfpipe

from hfpipe import (
    HfpipeConfig,
    HfpipeForMaskedLM,
    HfpipeForMultipleChoice,
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
    HfpipeModel,
)

# Auto class name -> (hfpipe class, output field compared)
HEADS = {
    "AutoModel": (HfpipeModel, "last_hidden_state"),
    "AutoModelForMaskedLM": (HfpipeForMaskedLM, "logits"),
    "AutoModelForSequenceClassification": (HfpipeForSequenceClassification, "logits"),
    "AutoModelForTokenClassification": (HfpipeForTokenClassification, "logits"),
    "AutoModelForQuestionAnswering": (HfpipeForQuestionAnswering, "end_logits"),
    "AutoModelForMultipleChoice": (HfpipeForMultipleChoice, "logits"),
}

SUBPROCESS = r"""
import json, torch, transformers
try:
    import hfpipe
    print("HFPIPE_IMPORTABLE")
except ImportError:
    print("HFPIPE_IMPORT_FAILED")
cases = json.loads(CASES)
config = transformers.AutoConfig.from_pretrained(cases["AutoModel"]["folder"], trust_remote_code=True)
print("CONFIG", type(config).__name__, type(config).__module__.split(".")[0])
for auto_name, case in cases.items():
    model = getattr(transformers, auto_name).from_pretrained(case["folder"], trust_remote_code=True).eval()
    data = torch.load(case["data"])
    with torch.no_grad():
        got = getattr(model(**data["inputs"]), case["output"])
    diff = (got - data["expected"]).abs().max().item()
    print("DIFF", auto_name, type(model).__name__, type(model).__module__.split(".")[0], repr(diff))
"""


def test_every_auto_class_loads_in_a_fresh_environment(tmp_path):
    config = HfpipeConfig.from_preset(
        "modern-tiny",
        vocab_size=120,
        hidden_size=32,
        intermediate_size=48,
        num_labels=3,
        max_position_embeddings=64,
    )
    ids = torch.randint(1, 120, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # one padded row
    cases = {}
    for auto_name, (model_class, output) in HEADS.items():
        torch.manual_seed(len(cases))
        model = model_class(config).eval()
        folder = tmp_path / auto_name
        model.save_pretrained(folder)
        inputs = dict(input_ids=ids * mask, attention_mask=mask)
        if model_class is HfpipeForMultipleChoice:
            inputs = {k: v[None].expand(2, 2, 7).contiguous() for k, v in inputs.items()}  # (B, K, T)
        with torch.no_grad():
            expected = getattr(model(**inputs), output)
        torch.save(dict(inputs=inputs, expected=expected), tmp_path / f"{auto_name}.pt")
        cases[auto_name] = dict(folder=str(folder), data=str(tmp_path / f"{auto_name}.pt"), output=output)

    code = SUBPROCESS.replace("CASES", repr(json.dumps(cases)))
    done = run_without_hfpipe(code, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    print(done.stdout)  # shown with pytest -s
    lines = done.stdout.splitlines()

    assert "HFPIPE_IMPORT_FAILED" in lines, done.stdout
    assert "CONFIG HfpipeConfig transformers_modules" in lines, done.stdout
    diffs = {}
    for line in lines:
        if line.startswith("DIFF "):
            _, auto_name, class_name, module, diff = line.split()
            assert class_name == HEADS[auto_name][0].__name__
            assert module == "transformers_modules"  # the folder's own code, not an installed package
            diffs[auto_name] = float(diff)
    assert set(diffs) == set(HEADS), done.stdout
    assert max(diffs.values()) < 1e-6, diffs
