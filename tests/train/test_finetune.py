"""Fine-tuning end to end on small generated files in the formats of ../shared/data: the output
contract, best-checkpoint selection, early stopping, 1 vs 2 processes, NER and QA heads, and
starting from a transformers BERT checkpoint converted on the fly."""

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import launch
import pytest
import torch

from hfpipe import HfpipeConfig, HfpipeForMaskedLM
from hfpipe.config import FinetuneRecipe, load_recipe

REPO = Path(__file__).resolve().parents[2]
GOOD = "good great fine lovely superb".split()
BAD = "bad awful poor dull boring".split()
FILLER = "the film was a story with actors and music in it".split()


def sentence(rng: random.Random, positive: bool) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if positive else BAD))
    return " ".join(words)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny pretrained-looking hfpipe folder, and SST-2 / CoNLL / SQuAD files to fine-tune on."""
    from hfpipe.config import TokenizerArgs
    from hfpipe.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("ft")
    rng = random.Random(0)
    train = [(sentence(rng, i % 2 == 0), i % 2 == 0) for i in range(96)]
    dev = [(sentence(rng, i % 3 == 0), i % 3 == 0) for i in range(37)]  # odd size: uneven shards
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        (root / name).write_text("sentence\tlabel\n" + "".join(f"{s} \t{int(y)}\n" for s, y in rows))

    conll = ["-DOCSTART- -X- -X- O", ""]
    for i in range(24):
        conll += ["John NNP B-NP B-PER", "Smith NNP I-NP I-PER", "visited VBD B-VP O",
                  f"{'Paris' if i % 2 else 'Berlin'} NNP B-NP B-LOC", ". . O O", ""]
    (root / "ner.txt").write_text("\n".join(conll))

    articles = []
    for a in range(4):
        context = f"The capital of country {a} is city{a} . It has a river called river{a} ."
        qas = [{"id": f"q{a}-0", "question": f"What is the capital of country {a} ?",
                "answers": [{"text": f"city{a}", "answer_start": context.index(f"city{a}")}]},
               {"id": f"q{a}-1", "question": "What is the river called ?",
                "answers": [{"text": f"river{a}", "answer_start": context.index(f"river{a}")}]}]
        articles.append({"title": f"t{a}", "paragraphs": [{"context": context, "qas": qas}]})
    (root / "squad.json").write_text(json.dumps({"version": "1.1", "data": articles}))

    texts = [s for s, _ in train] + [line.split(" ")[0] for line in conll if line] + [
        p["context"] + " " + q["question"] for art in articles for p in art["paragraphs"] for q in p["qas"]]
    tokenizer = train_tokenizer(texts, TokenizerArgs(vocab_size=200, min_frequency=1))
    config = HfpipeConfig.from_preset("bert-tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model_dir = root / "pretrained"
    HfpipeForMaskedLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return root


def overrides(ws: Path, out: str, train: str = "train.tsv", dev: str = "dev.tsv", **extra) -> list[str]:
    items = {"output_dir": str(ws / out), "model.name_or_path": str(ws / "pretrained"),
             "data.train_file": str(ws / train), "data.validation_file": str(ws / dev),
             "train.batch_size": 8, "train.lr": 1e-3, "train.num_epochs": 2, "train.log_every_steps": 1,
             "train.resume": "none", "eval.batch_size": 8, **extra}
    return [f"{k}={v}" for k, v in items.items()]


def test_sst2_output_contract_and_best_checkpoint(workspace):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfpipe.train.finetune import finetune

    recipe = load_recipe(REPO / "recipes/finetune/glue/sst2.yaml", FinetuneRecipe,
                         overrides(workspace, "sst2", **{"train.eval_every_steps": 4}))
    results = finetune(recipe)
    out = workspace / "sst2"
    for name in ("resolved_recipe.yaml", "metrics.jsonl", "results.json", "final/config.json", "final/README.md"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["run"]["precision"] in ("no", "bf16") and saved["run"]["num_processes"] == 1
    assert saved["tokens"] > 0 and saved["train_tokens_per_sec"] > 0 and saved["train_mfu"] > 0
    # the log rows pretraining writes, from the same glue (train/loop.py)
    rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 25))
    assert all(r["grad_norm"] > 0 and 0 <= r["data_wait"] < 1 and r["mfu"] > 0 for r in rows)
    assert [r["tokens"] for r in rows] == sorted({r["tokens"] for r in rows})  # strictly increasing
    history = saved["history"]
    assert [h["step"] for h in history] == [4, 8, 12, 16, 20, 24]
    best = max(history, key=lambda h: h["accuracy"])  # first maximum wins: later ties do not replace it
    assert saved["best_step"] == best["step"] and saved["accuracy"] == best["accuracy"] == results["accuracy"]

    config = json.loads((out / "final/config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert "pipeline_tag: text-classification" in (out / "final/README.md").read_text()

    # the exported best model reproduces the best evaluation's accuracy on the dev file
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    model = AutoModelForSequenceClassification.from_pretrained(out / "final").eval()
    rows = [line.split("\t") for line in (workspace / "dev.tsv").read_text().splitlines()[1:]]
    batch = tokenizer([r[0] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model(**batch).logits.argmax(-1)
    accuracy = (preds == torch.tensor([int(r[1]) for r in rows])).float().mean().item()
    assert accuracy == pytest.approx(best["accuracy"], abs=1e-6)


def test_early_stopping_stops_after_patience(workspace):
    from hfpipe.train.finetune import finetune

    recipe = load_recipe(REPO / "recipes/finetune/glue/sst2.yaml", FinetuneRecipe, overrides(
        workspace, "early", **{"train.lr": 1e-9, "train.eval_every_steps": 1, "train.early_stopping_patience": 2,
                               "train.warmup_fraction": 0.0}))
    results = finetune(recipe)
    # lr ~ 0: the metric never improves after the first evaluation, so training stops at the third
    assert results["steps"] == 3 and len(results["history"]) == 3


def test_two_processes_give_the_same_metrics_as_one(workspace):
    common = {"train.num_epochs": "null", "train.max_steps": 3, "train.group_by_length": "false",
              "train.save_every_steps": 3,
              "train.mixed_precision": "no"}  # equal sums in another order: fp32 (bf16 rounds at ~1e-4)
    recipe = str(REPO / "recipes/finetune/glue/sst2.yaml")
    one = launch.run(launch.hfpipe_command("finetune", recipe,
                                           *overrides(workspace, "one", **common, **{"train.batch_size": 8})))
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch.run(launch.two_process_command("finetune", recipe,
                                                *overrides(workspace, "two", **common, **{"train.batch_size": 4})))
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((workspace / "one/results.json").read_text())
    r2 = json.loads((workspace / "two/results.json").read_text())
    assert r2["accuracy"] == r1["accuracy"]  # 37 dev rows, split 19/18: each counted exactly once
    assert r2["final_train_loss"] == pytest.approx(r1["final_train_loss"], rel=1e-4)
    # the token count (train.max_tokens' measure) is the whole global batch's, whatever the process count
    s1, s2 = (json.loads((workspace / out / "checkpoints/step-00000003/trainer_state.json").read_text())
              for out in ("one", "two"))
    assert s2["tokens"] == s1["tokens"] > 0


def test_ner_and_qa_heads_train_and_report_their_metrics(workspace):
    from hfpipe.train.finetune import finetune

    ner = finetune(load_recipe(REPO / "recipes/finetune/conll2003.yaml", FinetuneRecipe, overrides(
        workspace, "ner", train="ner.txt", dev="ner.txt", **{"train.num_epochs": 1})))
    assert {"f1", "precision", "recall"} <= ner.keys() and 0.0 <= ner["f1"] <= 1.0
    # the entity precision survives in results.json; the run's precision (bf16/no) lives under "run"
    saved = json.loads((workspace / "ner/results.json").read_text())
    assert isinstance(saved["precision"], float) and saved["precision"] == ner["precision"]
    assert saved["run"]["precision"] in ("no", "bf16")
    config = json.loads((workspace / "ner/final/config.json").read_text())
    assert config["id2label"]["1"] == "B-PER" and config["architectures"] == ["HfpipeForTokenClassification"]

    qa = finetune(load_recipe(REPO / "recipes/finetune/squad.yaml", FinetuneRecipe, overrides(
        workspace, "qa", train="squad.json", dev="squad.json",
        **{"train.num_epochs": 1, "data.max_length": 64, "data.doc_stride": 16})))
    assert {"exact_match", "f1"} <= qa.keys() and 0.0 <= qa["f1"] <= 100.0


def test_starts_from_a_transformers_bert_checkpoint(workspace, tmp_path):
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    from hfpipe.train.finetune import finetune

    tokenizer = PreTrainedTokenizerFast.from_pretrained(workspace / "pretrained")
    bert = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    from hfpipe import HfpipeForSequenceClassification
    from hfpipe.model.load import load_encoder

    converted = load_encoder(str(tmp_path / "bert"), HfpipeForSequenceClassification, num_labels=2)
    assert torch.equal(converted.model.embeddings.word_embeddings.weight, bert.bert.embeddings.word_embeddings.weight)
    assert torch.equal(converted.model.layers[1].mlp.down.weight, bert.bert.encoder.layer[1].output.dense.weight)
    items = overrides(workspace, "from-bert", **{"train.num_epochs": 1}) + [f"model.name_or_path={tmp_path / 'bert'}"]
    results = finetune(load_recipe(REPO / "recipes/finetune/glue/sst2.yaml", FinetuneRecipe, items))
    config = json.loads((workspace / "from-bert/final/config.json").read_text())
    assert config["model_type"] == "hfpipe" and config["hidden_size"] == 32
    assert 0.0 <= results["accuracy"] <= 1.0


def test_nan_loss_stops_fine_tuning_with_a_training_error(workspace):
    from hfpipe.train.finetune import build_model, finetune
    from hfpipe.train.step import TrainingError

    def broken(recipe, spec):  # every weight NaN: the very first loss is NaN
        model = build_model(recipe, spec)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        return model

    recipe = load_recipe(REPO / "recipes/finetune/glue/sst2.yaml", FinetuneRecipe, overrides(
        workspace, "nan", **{"train.num_epochs": "null", "train.max_steps": 3}))
    with pytest.raises(TrainingError, match=r"loss is nan at step 1; stopping\. The last good checkpoint is kept in "
                                            r".*nan/checkpoints\. Lower train\.lr"):
        finetune(recipe, model_factory=broken)


def test_resumed_fine_tune_continues_its_clock_and_token_count(workspace):
    from hfpipe.train.finetune import finetune

    def run(**extra):
        items = overrides(workspace, "clock", **{"train.num_epochs": "null", "train.max_steps": 4,
                                                 "train.save_every_steps": 2, "train.eval_every_steps": 2, **extra})
        return finetune(load_recipe(REPO / "recipes/finetune/glue/sst2.yaml", FinetuneRecipe, items))

    def crash_after_step_2(elapsed: float) -> None:  # as if killed after the step-2 checkpoint, clock at `elapsed`
        shutil.rmtree(checkpoints / "step-00000004")
        saved = json.loads((checkpoints / "step-00000002/trainer_state.json").read_text())
        (checkpoints / "step-00000002/trainer_state.json").write_text(json.dumps({**saved, "elapsed": elapsed}))

    full = run()
    checkpoints = workspace / "clock" / "checkpoints"
    end = json.loads((checkpoints / "step-00000004/trainer_state.json").read_text())
    crash_after_step_2(elapsed=1000.0)
    resumed = run(**{"train.resume": "auto"})
    again = json.loads((checkpoints / "step-00000004/trainer_state.json").read_text())
    assert again["elapsed"] > 1000.0  # the clock continued from the checkpoint
    assert again["tokens"] == end["tokens"] > 0
    assert resumed["final_train_loss"] == full["final_train_loss"] and resumed["history"] == full["history"]

    # the restored clock counts against a time budget: 1000 s already spent of 10 minutes, no step is taken
    crash_after_step_2(elapsed=1000.0)
    stopped = run(**{"train.resume": "auto", "train.max_minutes": 10})
    assert stopped["steps"] == 2 and [h["step"] for h in stopped["history"]] == [2]


def test_ctrl_c_saves_a_checkpoint_then_resume_finishes(workspace):
    """A real SIGINT to `hfpipe finetune`: the loop finishes its step, checkpoints, exits 130 and says so;
    the same command resumes from that checkpoint and ends with the closing line pretraining prints."""
    def args(max_steps: int, resume: str = "none") -> list[str]:
        return ["finetune", str(REPO / "recipes/finetune/glue/sst2.yaml"), *overrides(
            workspace, "interrupted", **{"train.num_epochs": "null", "train.max_steps": max_steps, "train.lr": 1e-4,
                                         "train.eval_every_steps": 1000, "train.resume": resume})]

    proc = subprocess.Popen(launch.hfpipe_command(*args(400)), cwd=REPO, env=launch.cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workspace / "interrupted" / "metrics.jsonl"
    deadline = time.time() + 240
    while (not metrics.exists() or metrics.read_text().count("\n") < 3) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "checkpoint saved" in stdout + stderr
    saved = [p for p in (workspace / "interrupted" / "checkpoints").glob("step-*") if (p / "COMPLETE").exists()]
    assert len(saved) == 1
    step = int(saved[0].name.split("-")[1])
    assert 3 <= step < 400

    finish = launch.run(launch.hfpipe_command(*args(step + 2, resume=str(saved[0]))))
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert f"resumed from {saved[0]} at step {step}" in finish.stdout + finish.stderr
    assert f"model in {workspace / 'interrupted' / 'final'}" in finish.stdout + finish.stderr
    assert json.loads((workspace / "interrupted" / "results.json").read_text())["steps"] == step + 2
