"""LoRA fine-tuning through the real peft library, on a tiny model and a tiny SST-2-like file: what
trains, what the run saves (adapter/ and final/ merged), and the errors for bad input.

    .venv/bin/pytest -q tests/train/test_lora.py
"""

import json
import random
import sys
from pathlib import Path

import peft  # a test extra: pip install -e ".[test]"
import pytest
import torch
from fresh_env import run_without_hfpipe

from hfpipe import HfpipeConfig, HfpipeForMaskedLM, HfpipeForSequenceClassification
from hfpipe.config import FinetuneRecipe, RecipeError, from_dict, load_recipe
from hfpipe.config.finetune_recipe import PeftArgs

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes/finetune/glue/sst2-lora.yaml"
GOOD, BAD = "good great fine lovely superb".split(), "bad awful poor dull boring".split()
FILLER = "the film was a story with actors and music in it".split()


def sentence(rng: random.Random, positive: bool) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if positive else BAD))
    return " ".join(words)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny pretrained-looking hfpipe folder and SST-2 train / dev files."""
    from hfpipe.config import TokenizerArgs
    from hfpipe.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("lora")
    rng = random.Random(0)
    train = [(sentence(rng, i % 2 == 0), i % 2 == 0) for i in range(96)]
    dev = [(sentence(rng, i % 3 == 0), i % 3 == 0) for i in range(37)]
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        (root / name).write_text("sentence\tlabel\n" + "".join(f"{s} \t{int(y)}\n" for s, y in rows))
    tokenizer = train_tokenizer([s for s, _ in train], TokenizerArgs(vocab_size=200, min_frequency=1))
    config = HfpipeConfig.from_preset("bert-tiny", vocab_size=len(tokenizer),
                                      pad_token_id=tokenizer.pad_token_id,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    HfpipeForMaskedLM(config).save_pretrained(root / "pretrained")
    tokenizer.save_pretrained(root / "pretrained")
    return root


def lora_recipe(ws: Path, out: str, **extra) -> FinetuneRecipe:
    items = {"output_dir": str(ws / out), "model.name_or_path": str(ws / "pretrained"),
             "data.train_file": str(ws / "train.tsv"), "data.validation_file": str(ws / "dev.tsv"),
             "train.batch_size": 8, "train.lr": 5e-3, "train.num_epochs": 2, "train.eval_every_steps": 4,
             "train.log_every_steps": 1, "train.resume": "none", "eval.batch_size": 8, **extra}
    return load_recipe(RECIPE, FinetuneRecipe, [f"{k}={v}" for k, v in items.items()])


def dev_batch(ws: Path, tokenizer):
    rows = [line.split("\t") for line in (ws / "dev.tsv").read_text().splitlines()[1:]]
    batch = tokenizer([r[0] for r in rows], padding=True, return_tensors="pt")
    return batch, torch.tensor([int(r[1]) for r in rows])


def test_lora_trains_adapters_and_head_only_and_saves_adapter_and_merged_final(workspace):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfpipe.tasks import get_task
    from hfpipe.train.finetune import build_model, finetune
    from hfpipe.train.lora import add_lora

    recipe = lora_recipe(workspace, "sst2")
    results = finetune(recipe)
    out = workspace / "sst2"
    saved = json.loads((out / "results.json").read_text())
    assert saved["trainable_parameters"] == results["trainable_parameters"]
    assert saved["trainable_parameters"] < 0.1 * saved["total_parameters"]

    # the same model, built as the run builds it: only LoRA matrices and the head (pooler, classifier) train
    model = add_lora(build_model(recipe, get_task("sst2")), recipe.peft, "sequence_classification")
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == saved["trainable_parameters"]
    assert sum(p.numel() for p in model.parameters()) == saved["total_parameters"]
    assert all(".lora_" in n or ".modules_to_save." in n for n in trainable), sorted(trainable)
    def owners(marker: str) -> set[str]:  # the module that holds each trainable tensor
        return {n.split(marker)[0].rsplit(".", 1)[-1] for n in trainable if marker in n}

    assert owners(".lora_") == {"qkv", "out_proj"}
    assert owners(".modules_to_save.") == {"pooler", "classifier"}

    # adapter/: what PeftModel.from_pretrained loads
    adapter_files = {p.name for p in (out / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter_files
    assert json.loads((out / "adapter/adapter_config.json").read_text())["task_type"] == "SEQ_CLS"

    # final/: a plain self-contained folder with its code; no adapter files in it
    files = {p.name for p in (out / "final").iterdir()}
    assert {"config.json", "model.safetensors", "modeling_hfpipe.py", "configuration_hfpipe.py",
            "README.md"} <= files
    assert not any(name.startswith("adapter") for name in files)
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    final = AutoModelForSequenceClassification.from_pretrained(out / "final", trust_remote_code=True).eval()

    # the frozen weights are the pretrained ones; the adapted ones moved
    base_weights, merged = load_file(workspace / "pretrained/model.safetensors"), final.state_dict()
    name = "model.embeddings.word_embeddings.weight"
    assert torch.equal(merged[name], base_weights[name])
    assert torch.equal(merged["model.layers.0.mlp.up.weight"], base_weights["model.layers.0.mlp.up.weight"])
    qkv = "model.layers.0.mixer.qkv.weight"
    assert not torch.allclose(merged[qkv], base_weights[qkv])

    # base + adapter gives final/'s logits, and final/ scores the best evaluation's accuracy
    base = AutoModelForSequenceClassification.from_pretrained(workspace / "pretrained", num_labels=2)
    with_adapter = peft.PeftModel.from_pretrained(base, out / "adapter").eval()
    batch, labels = dev_batch(workspace, tokenizer)
    with torch.no_grad():
        logits, adapter_logits = final(**batch).logits, with_adapter(**batch).logits
    torch.testing.assert_close(adapter_logits, logits, atol=1e-5, rtol=0)
    stranger = stranger_logits(out / "final", workspace / "dev.tsv")
    torch.testing.assert_close(stranger, logits, atol=1e-5, rtol=0)
    best = max(saved["history"], key=lambda h: h["accuracy"])
    assert saved["best_step"] == best["step"]
    assert (logits.argmax(-1) == labels).float().mean().item() == pytest.approx(best["accuracy"], abs=1e-6)


STRANGER = """
import json, sys
sys.modules["peft"] = None  # neither hfpipe nor peft: a stranger's machine
from transformers import AutoModelForSequenceClassification, AutoTokenizer
import torch
final, dev = FINAL, DEV
sentences = [line.split("\\t")[0] for line in open(dev).read().splitlines()[1:]]
tokenizer = AutoTokenizer.from_pretrained(final, trust_remote_code=True)
batch = tokenizer(sentences, padding=True, return_tensors="pt")
model = AutoModelForSequenceClassification.from_pretrained(final, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    print("LOGITS", json.dumps(model(**batch).logits.tolist()))
"""


def stranger_logits(final: Path, dev: Path) -> torch.Tensor:
    """final/'s logits on the dev sentences, computed where neither hfpipe nor peft can be imported."""
    done = run_without_hfpipe(STRANGER.replace("FINAL", repr(str(final))).replace("DEV", repr(str(dev))),
                              env={"HF_HUB_OFFLINE": "1"})
    line = next((x for x in done.stdout.splitlines() if x.startswith("LOGITS ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-2000:]
    return torch.tensor(json.loads(line.removeprefix("LOGITS ")))


def test_full_fine_tuning_reports_every_parameter_trainable(workspace):
    from hfpipe.train.finetune import finetune

    results = finetune(lora_recipe(workspace, "full", **{"peft.method": "none", "train.num_epochs": 1}))
    assert results["trainable_parameters"] == results["total_parameters"] > 0
    assert not (workspace / "full/adapter").exists()
    assert (workspace / "full/final/model.safetensors").is_file()


def test_merge_false_writes_the_adapter_and_no_final(workspace):
    from hfpipe.train.finetune import finetune

    (workspace / "nomerge/final").mkdir(parents=True)  # left by an earlier run: must not pass for this one's
    finetune(lora_recipe(workspace, "nomerge", **{"peft.merge": "false", "train.num_epochs": 1}))
    assert (workspace / "nomerge/adapter/adapter_model.safetensors").is_file()
    assert not (workspace / "nomerge/final").exists()


def tiny_classifier() -> HfpipeForSequenceClassification:
    return HfpipeForSequenceClassification(HfpipeConfig.from_preset("bert-tiny", vocab_size=50, num_labels=2))


def test_target_modules_that_match_nothing_list_the_linear_names():
    from hfpipe.train.lora import add_lora

    args = PeftArgs(method="lora", target_modules=["query", "qkv", "value"])
    with pytest.raises(RecipeError) as err:
        add_lora(tiny_classifier(), args, "sequence_classification")
    assert err.value.key == "peft.target_modules"
    assert str(err.value) == ("peft.target_modules: no module is named 'query', 'value'; the model's Linear "
                              "modules are: qkv, out_proj, up, down, dense, classifier")


def test_modules_to_save_that_match_nothing_is_an_error():
    from hfpipe.train.lora import add_lora

    args = PeftArgs(method="lora", modules_to_save=["head"])
    with pytest.raises(RecipeError, match=r"^peft.modules_to_save: no module is named 'head'; .*classifier$"):
        add_lora(tiny_classifier(), args, "sequence_classification")


def test_without_peft_the_error_says_how_to_install_it(monkeypatch):
    from hfpipe.train.lora import add_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(RecipeError, match=r"^peft.method: .*pip install peft"):
        add_lora(tiny_classifier(), PeftArgs(method="lora"), "sequence_classification")


@pytest.mark.parametrize("key, value, message", [
    ("r", 0, "peft.r: must be >= 1, got 0"),
    ("alpha", 0, "peft.alpha: must be > 0, got 0"),
    ("dropout", 1.0, r"peft.dropout: must be in \[0, 1\), got 1.0"),
    ("target_modules", [], "peft.target_modules: must name at least one module"),
    ("modules_to_save", ["classifier", "classifier"], "peft.modules_to_save: has duplicates"),
])
def test_peft_section_rejects_bad_values(key, value, message):
    with pytest.raises(RecipeError, match="^" + message):
        from_dict(FinetuneRecipe, {"task": "sst2", "model": {"name_or_path": "x"},
                                   "peft": {"method": "lora", key: value}})


def test_the_lora_recipe_validates_and_pushes_only_a_merged_final():
    recipe = load_recipe(RECIPE, FinetuneRecipe)
    assert (recipe.peft.method, recipe.peft.r, recipe.peft.merge) == ("lora", 8, True)
    with pytest.raises(RecipeError, match="peft.merge: must be true with hub.push_to_hub"):
        load_recipe(RECIPE, FinetuneRecipe, ["peft.merge=false", "hub.push_to_hub=true", "hub.repo_id=me/x"])
    with pytest.raises(RecipeError, match="hub.push_checkpoints: not with peft.method=lora"):
        load_recipe(RECIPE, FinetuneRecipe, ["hub.push_checkpoints=true", "hub.repo_id=me/x"])
