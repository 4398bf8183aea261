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
"""transformers' Trainer, run_mlm's evaluation and torch.export drive hfpipe models as they drive BERT.

    .venv/bin/pytest tests/model/test_trainer.py -q -s      # -s prints the measured differences

Exact gradient accumulation (the heads normalise by Trainer's `num_items_in_batch`), (B, T)
predictions from run_mlm's `preprocess_logits_for_metrics`, tuples with `return_dict=False`,
`torch.export` with dynamic batch and sequence dims, and -- as a stranger would run it, where hfpipe
is not installed -- a folder loaded with `trust_remote_code=True` training under Trainer.
Tiny models on CPU: the file takes ~40 s on 2 cores, half of it the fresh-environment subprocess.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fresh_env import run_without_hfpipe
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from hfpipe import (
    HfpipeConfig,
    HfpipeForMaskedLM,
    HfpipeForMultipleChoice,
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
    HfpipeModel,
)

REPO = Path(__file__).resolve().parents[2]
TINY = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
T = 12  # tokens per row in the hand-made datasets


def tiny_model(model_class, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return model_class(HfpipeConfig(**{**TINY, **overrides}))


def sgd_args(tmp_path: Path, batch_size: int, accumulation: int) -> TrainingArguments:
    """One plain SGD step: constant lr, no clipping, no weight decay, nothing logged or saved."""
    return TrainingArguments(
        output_dir=str(tmp_path / f"b{batch_size}x{accumulation}"), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd", learning_rate=1.0,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip


def rows_with_labels(kind: str, n: int = 8, seed: int = 0) -> list[dict]:
    """`n` right-padded rows of random length; labels on a different number of tokens per row, so the
    mean over all targets differs from the mean of per-micro-batch means."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(4, T + 1, (1,), generator=g))
        mask = (torch.arange(T) < length).long()
        ids = torch.randint(5, TINY["vocab_size"], (T,), generator=g) * mask
        row = dict(input_ids=ids, attention_mask=mask)
        if kind in ("mlm", "tags"):  # MLM targets or NER tags on a share of the real tokens that varies by row
            chosen = (torch.rand(T, generator=g) < (i % 4 + 1) / 5) & mask.bool()
            chosen[0] = True
            tags = torch.randint(0, 3, (T,), generator=g)
            row["labels"] = torch.where(chosen, ids if kind == "mlm" else tags, -100)
        elif kind == "regression":
            row["labels"] = torch.randn((), generator=g)
        elif kind == "multi-label":
            row["labels"] = (torch.rand(3, generator=g) < 0.5).float()
        else:  # single-label classification
            row["labels"] = torch.randint(0, 3, (), generator=g)
        rows.append(row)
    return rows


def train_one_step(model, rows, tmp_path, batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
    trainer = Trainer(model=model, args=sgd_args(tmp_path, batch_size, accumulation), train_dataset=rows)
    trainer.train()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# (head, its extra config, the dataset kind)
ACCUMULATION_CASES = {
    "masked-lm": (HfpipeForMaskedLM, {}, "mlm"),
    "masked-lm-sparse": (HfpipeForMaskedLM, {"sparse_prediction": True}, "mlm"),
    "token-classification": (HfpipeForTokenClassification, {"num_labels": 3}, "tags"),
    "sequence-classification": (HfpipeForSequenceClassification, {"num_labels": 3}, "classes"),
    "regression": (HfpipeForSequenceClassification, {"num_labels": 1}, "regression"),
    "multi-label": (HfpipeForSequenceClassification, {"num_labels": 3}, "multi-label"),
}


@pytest.mark.parametrize("case", list(ACCUMULATION_CASES))
def test_trainer_accumulation_gives_the_update_of_one_big_batch(tmp_path, case):
    """SGD, one optimizer step: 4 rows x 2 accumulation steps update the weights as 8 rows x 1 do."""
    model_class, overrides, kind = ACCUMULATION_CASES[case]
    model = tiny_model(model_class, **overrides)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = rows_with_labels(kind)
    big = train_one_step(copy.deepcopy(model), rows, tmp_path, batch_size=8, accumulation=1)
    accumulated = train_one_step(copy.deepcopy(model), rows, tmp_path, batch_size=4, accumulation=2)
    update = max((big[n] - before[n]).abs().max().item() for n in before)
    diff = max((accumulated[n] - big[n]).abs().max().item() for n in before)
    print(f"Trainer 4x2 vs 8x1, SGD lr 1, {case}: max abs param diff {diff:.1e} (update {update:.1e})")
    assert update > 1e-3  # the step really moved the weights
    assert diff < 2e-6


# ----------------------------------------------------------------------------------------------
# run_mlm's evaluation: DataCollatorForLanguageModeling + preprocess_logits_for_metrics + accuracy
# ----------------------------------------------------------------------------------------------

WORDS = "the a cat dog sat on mat ran fast slow big small red blue is was and of to in".split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style word-level tokenizer over the words above, built without downloads."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")  # fmt: skip


def preprocess_logits_for_metrics(logits, labels):  # run_mlm.py's, verbatim
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def compute_metrics(eval_preds):  # run_mlm.py's, with numpy's accuracy instead of evaluate.load("accuracy")
    preds, labels = eval_preds
    labels = labels.reshape(-1)
    preds = preds.reshape(-1)
    mask = labels != -100
    return {"accuracy": float((preds[mask] == labels[mask]).mean())}


def test_trainer_evaluate_and_predict_as_run_mlm_does(tmp_path):
    """10 sentences in batches of 4 (the last one short): predictions are (B, T) like the labels, and
    each labelled prediction is the argmax of the model's logits on the very batch the collator made."""
    tokenizer = tiny_tokenizer()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 11))) for _ in range(10)]
    rows = [dict(tokenizer(text, return_special_tokens_mask=True)) for text in texts]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.4, seed=0)
    batches = []

    def collate(examples):  # records what the model saw
        batch = collator(examples)
        batches.append({k: v.clone() for k, v in batch.items()})
        return batch

    model = tiny_model(HfpipeForMaskedLM, vocab_size=len(tokenizer)).eval()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True,
                             disable_tqdm=True)  # fmt: skip
    trainer = Trainer(model=model, args=args, eval_dataset=rows, data_collator=collate,
                      compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics)  # fmt: skip
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and np.isfinite(metrics["eval_loss"])

    batches.clear()
    out = trainer.predict(rows)
    width = max(b["input_ids"].shape[1] for b in batches)
    assert out.predictions.shape == out.label_ids.shape == (10, width)
    expected_preds, expected_labels = [], []
    with torch.no_grad():
        for batch in batches:
            labels = batch.pop("labels")
            preds = model(**batch).logits.argmax(-1)  # (B, T)
            expected_preds.append(preds[labels != -100])
            expected_labels.append(labels[labels != -100])
    labelled = out.label_ids != -100
    np.testing.assert_array_equal(out.label_ids[labelled], torch.cat(expected_labels).numpy())
    np.testing.assert_array_equal(out.predictions[labelled], torch.cat(expected_preds).numpy())
    accuracy = (torch.cat(expected_preds) == torch.cat(expected_labels)).double().mean().item()
    assert out.metrics["test_accuracy"] == pytest.approx(accuracy)


def test_sparse_prediction_is_opt_in_and_pretraining_turns_it_on_for_its_steps_only(tmp_path):
    """A plain model returns (B, T, V) logits with labels, as BertForMaskedLM; pretraining's
    build_model predicts only labelled positions, and the folder it saves says sparse_prediction false."""
    from hfpipe.config import PretrainRecipe, load_recipe
    from hfpipe.train.pretrain import build_model

    rows = rows_with_labels("mlm", n=2)
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    dense = tiny_model(HfpipeForMaskedLM).eval()
    assert dense(**batch).logits.shape == (2, T, TINY["vocab_size"])

    tokenizer = tiny_tokenizer()
    recipe = load_recipe(REPO / "recipes/pretrain/tiny.yaml", PretrainRecipe)
    model = build_model(recipe, tokenizer).eval()
    assert model.sparse_prediction and not model.config.sparse_prediction
    batch["input_ids"] = batch["input_ids"] % len(tokenizer)
    batch["labels"] = torch.where(batch["labels"] == -100, -100, batch["input_ids"])
    assert model(**batch).logits.shape == (int((batch["labels"] != -100).sum()), model.config.vocab_size)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["sparse_prediction"] is False


# ----------------------------------------------------------------------------------------------
# return_dict=False: tuples from every head, the loss first
# ----------------------------------------------------------------------------------------------


def head_batch(model_class) -> dict:
    rows = rows_with_labels("tags", n=2)
    batch = {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}
    if model_class in (HfpipeForMaskedLM, HfpipeForTokenClassification):
        batch["labels"] = torch.stack([r["labels"] for r in rows])
    elif model_class is HfpipeForSequenceClassification:
        batch["labels"] = torch.tensor([2, 0])
    elif model_class is HfpipeForQuestionAnswering:
        batch.update(start_positions=torch.tensor([1, 0]), end_positions=torch.tensor([3, 2]))
    elif model_class is HfpipeForMultipleChoice:
        batch = {k: v[None].expand(2, 2, T).contiguous() for k, v in batch.items()}  # (B, K, T)
        batch["labels"] = torch.tensor([1, 0])
    return batch


HEADS = [HfpipeModel, HfpipeForMaskedLM, HfpipeForSequenceClassification, HfpipeForTokenClassification,
         HfpipeForQuestionAnswering, HfpipeForMultipleChoice]  # fmt: skip


@pytest.mark.parametrize("model_class", HEADS, ids=[h.__name__ for h in HEADS])
@torch.no_grad()
def test_return_dict_false_returns_tuples_loss_first(model_class):
    model = tiny_model(model_class, num_labels=3).eval()
    batch = head_batch(model_class)
    expected = model(**batch)
    fields = [v for v in expected.values() if v is not None]
    if model_class is not HfpipeModel:
        assert list(expected)[0] == "loss"
    for got in (model(**batch, return_dict=False), tiny_model(model_class, num_labels=3, return_dict=False).eval()(**batch)):
        assert isinstance(got, tuple) and len(got) == len(fields)
        for a, b in zip(got, fields):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# torch.export: no data-dependent branch on the default path
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["absolute", "rope", "alibi"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@torch.no_grad()
def test_torch_export_with_dynamic_batch_and_sequence(attn, position):
    model = tiny_model(HfpipeModel, position_embedding_type=position).eval()
    model.set_attn_implementation(attn)
    rows = rows_with_labels("tags", n=2)
    example = {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=TINY["max_position_embeddings"])
    dims = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    exported = torch.export.export(model, args=(), kwargs=example, dynamic_shapes=dims)

    unseen = rows_with_labels("tags", n=3, seed=7)  # another batch size, another length, padded rows
    inputs = {k: torch.stack([r[k] for r in unseen])[:, :9] for k in ("input_ids", "attention_mask")}
    inputs["attention_mask"][0] = 1  # one unpadded row
    got = exported.module()(**inputs)
    expected = model(**inputs)
    real = inputs["attention_mask"].bool()
    diff = (got.last_hidden_state - expected.last_hidden_state)[real].abs().max().item()
    assert got.last_hidden_state.shape == (3, 9, TINY["hidden_size"])
    assert diff < 1e-5, diff
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@torch.no_grad()
def test_an_all_ones_mask_gives_exactly_the_output_of_no_mask(attn):
    """The mask is applied whatever its values (no shortcut for an all-ones mask, which export could not
    trace): adding zeros to the scores changes nothing, to the bit."""
    model = tiny_model(HfpipeForMaskedLM).eval()
    model.set_attn_implementation(attn)
    ids = torch.randint(5, TINY["vocab_size"], (3, 10), generator=torch.Generator().manual_seed(3))
    assert torch.equal(model(ids, attention_mask=torch.ones_like(ids)).logits, model(ids).logits)


# ----------------------------------------------------------------------------------------------
# A stranger's machine: hfpipe not installed, the folder's own code under Trainer
# ----------------------------------------------------------------------------------------------

FRESH = r"""
import copy, torch, transformers
from transformers import AutoModelForMaskedLM, Trainer, TrainingArguments
model = AutoModelForMaskedLM.from_pretrained(FOLDER, trust_remote_code=True)
print("MODULE", type(model).__module__.split(".")[0])
rows = torch.load(ROWS)
before = {n: p.detach().clone() for n, p in model.named_parameters()}
def step(batch_size, accumulation):
    m = copy.deepcopy(model)
    args = TrainingArguments(output_dir=OUT + f"/{batch_size}x{accumulation}", per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd", learning_rate=1.0,
                             lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    Trainer(model=m, args=args, train_dataset=rows).train()
    return {n: p.detach() for n, p in m.named_parameters()}
big, accumulated = step(8, 1), step(4, 2)
print("UPDATE", max((big[n] - before[n]).abs().max().item() for n in before))
print("DIFF", max((accumulated[n] - big[n]).abs().max().item() for n in before))
with torch.no_grad():
    out = model(**{k: torch.stack([r[k] for r in rows[:2]]) for k in rows[0]})
print("LOGITS", *out.logits.shape)
"""


def test_trainer_accumulation_in_a_fresh_environment(tmp_path):
    tiny_model(HfpipeForMaskedLM).save_pretrained(tmp_path / "model")
    torch.save(rows_with_labels("mlm"), tmp_path / "rows.pt")
    code = (FRESH.replace("FOLDER", repr(str(tmp_path / "model"))).replace("ROWS", repr(str(tmp_path / "rows.pt")))
            .replace("OUT", repr(str(tmp_path / "out"))))  # fmt: skip
    done = run_without_hfpipe(code, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    values = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line[:1].isupper()}
    print(f"fresh environment, Trainer 4x2 vs 8x1: max abs param diff {float(values['DIFF'][0]):.1e} "
          f"(update {float(values['UPDATE'][0]):.1e})")
    assert values["MODULE"] == ["transformers_modules"], done.stdout
    assert float(values["UPDATE"][0]) > 1e-3 and float(values["DIFF"][0]) < 2e-6, done.stdout
    assert values["LOGITS"] == ["2", str(T), str(TINY["vocab_size"])], done.stdout  # (B, T, V) with labels
