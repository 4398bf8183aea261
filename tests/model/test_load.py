"""Loading a model folder for training: quiet for what is expected, one line for what is not (issue 22, 15).

    .venv/bin/pytest tests/model/test_load.py -q
"""

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from hfpipe.model.configuration_hfpipe import HfpipeConfig
from hfpipe.model.load import ModelPathError, check_model_path, load_encoder
from hfpipe.model.modeling_hfpipe import HfpipeForMaskedLM, HfpipeForSequenceClassification
from hfpipe.train import checkpoint as ckpt


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log():
    """What transformers logs (its loggers do not propagate to caplog's root handler)."""
    handler, root = Records(), logging.getLogger("transformers")
    root.addHandler(handler)
    yield handler.messages
    root.removeHandler(handler)


@pytest.fixture
def mlm_folder(tmp_path):
    model = HfpipeForMaskedLM(HfpipeConfig.from_preset("bert-tiny", vocab_size=64))
    model.save_pretrained(tmp_path / "mlm")
    return tmp_path / "mlm"


def test_a_fresh_head_and_the_tied_decoder_load_without_a_word(mlm_folder, caplog, transformers_log):
    with caplog.at_level(logging.INFO):
        model = load_encoder(str(mlm_folder), HfpipeForSequenceClassification, num_labels=3)
        load_encoder(str(mlm_folder), HfpipeForMaskedLM)
    assert model.classifier.out_features == 3
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not [m for m in transformers_log if "LOAD REPORT" in m]
    HfpipeForSequenceClassification.from_pretrained(mlm_folder, num_labels=3)  # what transformers alone says
    assert [m for m in transformers_log if "LOAD REPORT" in m]


def test_a_missing_encoder_weight_is_one_warning_line_naming_it(mlm_folder, caplog, transformers_log):
    weights = load_file(mlm_folder / "model.safetensors")
    del weights["model.layers.1.mlp.fc2.weight" if "model.layers.1.mlp.fc2.weight" in weights else sorted(
        k for k in weights if k.startswith("model.layers.1."))[0]]
    gone = sorted(set(load_file(mlm_folder / "model.safetensors")) - set(weights))[0]
    save_file(weights, mlm_folder / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        load_encoder(str(mlm_folder), HfpipeForSequenceClassification, num_labels=2)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"loading {mlm_folder}: 1 weight(s) missing from the checkpoint, initialized at random: {gone}"]
    assert not [m for m in transformers_log if "LOAD REPORT" in m]


def test_a_model_path_that_is_a_file_or_a_typo(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelPathError, match="is a file"):
        check_model_path(str(tmp_path / "f"))
    with pytest.raises(ModelPathError, match="no such folder"):
        check_model_path(str(tmp_path / "typo"))
    check_model_path("org/name")  # a Hub id: left to transformers


def test_saving_the_tied_decoder_does_not_warn_but_another_shared_tensor_does(tmp_path, caplog):
    from accelerate import Accelerator

    accelerator = Accelerator()
    model = HfpipeForMaskedLM(HfpipeConfig.from_preset("bert-tiny", vocab_size=64))
    accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    with caplog.at_level(logging.WARNING):
        ckpt.save_checkpoint(accelerator, tmp_path, 1, {"step": 1}, keep_last=1)
    assert not [r for r in caplog.records if "Removed shared tensor" in r.getMessage()]
    assert ckpt.verify_checkpoint(tmp_path / "checkpoints/step-00000001") is None
    keep = ckpt._TiedWeightsFilter({"mlm_head.decoder.weight"})
    record = logging.LogRecord("accelerate.utils.other", logging.WARNING, "", 0,
                               "[RANK 0] Removed shared tensor {'a.weight'} while saving.", None, None)
    assert keep.filter(record)  # an undeclared shared tensor is still reported
