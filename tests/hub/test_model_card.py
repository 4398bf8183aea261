"""The model card: Hub front matter that parses into the Hub's schema, and a body people can act on."""

from __future__ import annotations

import re

import pytest
import yaml
from huggingface_hub import ModelCard

from hfpipe import HfpipeConfig, HfpipeForMaskedLM
from hfpipe.hub.model_card import ARCHITECTURE_FIELDS, write_model_card

HEADS = {
    "HfpipeForMaskedLM": ("fill-mask", "AutoModelForMaskedLM"),
    "HfpipeForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "HfpipeForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "HfpipeForQuestionAnswering": ("question-answering", "AutoModelForQuestionAnswering"),
}


def config_dict(architecture: str = "HfpipeForMaskedLM", preset: str = "modern-tiny") -> dict:
    config = HfpipeConfig.from_preset(preset, vocab_size=120).to_dict()
    return {**config, "architectures": [architecture]}


def split_card(text: str) -> tuple[dict, str]:
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def python_block(body: str) -> str:
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


@pytest.mark.parametrize("architecture", list(HEADS))
def test_front_matter_follows_the_hub_schema(tmp_path, architecture):
    tag, _ = HEADS[architecture]
    results = {"accuracy": 0.8125, "eval_loss": 0.4375}
    path = write_model_card(
        tmp_path, config=config_dict(architecture), results=results, datasets=["glue"], repo_id="me/tiny"
    )
    meta, _ = split_card(path.read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == tag
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["glue"]
    assert "hfpipe" in meta["tags"] and "base_model" not in meta
    (entry,) = meta["model-index"]
    assert entry["name"] == "tiny"
    (result,) = entry["results"]
    assert result["task"]["type"] == tag and result["dataset"]["type"] == "glue"
    assert {m["type"]: m["value"] for m in result["metrics"]} == results
    # huggingface_hub reads the model-index back into evaluation results, as the Hub does.
    parsed = ModelCard.load(path).data
    assert {r.metric_type: r.metric_value for r in parsed.eval_results} == results


def test_fine_tuned_card_names_its_base_model_but_not_local_paths(tmp_path):
    card = write_model_card(
        tmp_path, config=config_dict("HfpipeForSequenceClassification"), base_model="me/hfpipe-mini"
    )
    meta, body = split_card(card.read_text())
    assert meta["base_model"] == "me/hfpipe-mini" and "Fine-tuned from `me/hfpipe-mini`" in body

    local = tmp_path / "runs" / "pretrain" / "final"
    local.mkdir(parents=True)
    card = write_model_card(
        tmp_path, config=config_dict("HfpipeForSequenceClassification"), base_model=str(local)
    )
    meta, body = split_card(card.read_text())
    assert "base_model" not in meta  # the Hub only accepts repo ids there
    assert f"Fine-tuned from `{local}`" in body


def test_body_has_architecture_recipe_results_and_pinned_usage(tmp_path):
    config = config_dict("HfpipeForMaskedLM", preset="modern-tiny")
    recipe = {"task": "sst2", "train": {"lr": 2.0e-5, "max_steps": 100}, "hub": {"repo_id": "me/tiny"}}
    card = write_model_card(
        tmp_path,
        config=config,
        recipe=recipe,
        results={"perplexity": 12.5},
        repo_id="me/tiny",
        revision="0a1b2c3",
    )
    _, body = split_card(card.read_text())
    for key, _ in ARCHITECTURE_FIELDS:
        assert f"| `{key}` | `{config[key]}` |" in body, key
    assert "| `position_embedding_type` | `rope` |" in body and "| `norm_position` | `pre` |" in body
    recipe_block = re.search(r"```yaml\n(.*?)```", body, re.S).group(1)
    assert yaml.safe_load(recipe_block) == recipe
    assert "| perplexity | 12.5 |" in body
    code = python_block(body)
    compile(code, "usage", "exec")
    pinned = 'revision="0a1b2c3", trust_remote_code=True'
    assert f'AutoTokenizer.from_pretrained("me/tiny", {pinned})' in code
    assert f'AutoModelForMaskedLM.from_pretrained("me/tiny", {pinned})' in code
    assert f'pipeline("fill-mask", model="me/tiny", {pinned})' in code
    assert "[MASK]" in code
    assert "runs the Python code in this" in body and "pin" in body and "commit sha you reviewed" in body
    # every from_pretrained in the snippet, the tokenizer's included, passes the flag; the card says why
    assert code.count("from_pretrained(") == code.count("trust_remote_code=True") - 1  # + the pipeline
    assert "The tokenizer gets `trust_remote_code=True` too: transformers 5's `AutoTokenizer` reads" in body


def test_question_answering_usage_works_without_the_removed_pipeline(tmp_path):
    card = write_model_card(tmp_path, config=config_dict("HfpipeForQuestionAnswering"), repo_id="me/qa")
    code = python_block(split_card(card.read_text())[1])
    compile(code, "usage", "exec")
    assert "pipeline(" not in code  # transformers v5 has no extractive question-answering pipeline
    assert (
        'AutoModelForQuestionAnswering.from_pretrained("me/qa", revision="main", trust_remote_code=True)'
        in code
    )


def test_parameter_count_comes_from_the_safetensors_header(tmp_path):
    model = HfpipeForMaskedLM(HfpipeConfig.from_preset("bert-tiny", vocab_size=120))
    model.save_pretrained(tmp_path)
    stored = sum(p.numel() for p in model.parameters())  # tied embeddings counted once, as saved
    card = write_model_card(tmp_path, config=model.config.to_dict(), task="mlm")
    assert f" {stored:,} parameters." in card.read_text()


def test_secrets_never_reach_the_card(tmp_path, monkeypatch):
    token = "hf_SecretTokenValue0123456789abcdefgh"
    monkeypatch.setenv("HF_TOKEN", token)
    recipe = {
        "hub": {"repo_id": "me/tiny", "token": token, "hub_token": "x-secret-1"},
        "tracking": {"wandb": {"api_key": "x-secret-2"}, "password": "x-secret-3"},
        "note": f"pasted by mistake: {token}",
        "tokenizer": {"mask_token": "[MASK]"},
    }
    card = write_model_card(
        tmp_path, config=config_dict(), recipe=recipe, results={"hub_token": 1.0, "acc": 0.5}
    )
    text = card.read_text()
    assert token not in text and "hf_Secret" not in text
    assert not any(f"x-secret-{i}" in text for i in (1, 2, 3))
    assert "api_key" not in text and "password" not in text and "hub_token" not in text
    assert "mask_token: '[MASK]'" in text  # special tokens are not secrets
    assert "<redacted>" in text


def test_unknown_task_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"task='translation' has no pipeline tag; use one of"):
        write_model_card(tmp_path, config=config_dict(), task="translation")
    with pytest.raises(ValueError, match="Cannot tell the pipeline tag"):
        write_model_card(tmp_path, config={**config_dict(), "architectures": ["HfpipeModel"]})


# --- issue 12: evaluation metrics only, and the dataset the recipe names ------------------------------------

PRETRAIN_RESULTS = {"step": 6, "tokens": 768, "train_seconds": 12.5, "skipped_steps": 0, "final_train_loss": 4.25,
                    "eval_loss": 3.5, "eval_accuracy": 0.125, "eval_perplexity": 33.1, "eval_tokens": 64}


def model_index(path) -> tuple[dict, dict]:
    """(the front matter, its one model-index result) of the card at `path`."""
    meta, _ = split_card(path.read_text())
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    return meta, result


def pretrain_recipe(**data) -> dict:
    from hfpipe.config import DataArgs, PretrainRecipe, to_dict

    return to_dict(PretrainRecipe(data=DataArgs(**data)))


def finetune_recipe(task: str, **data) -> dict:
    from hfpipe.config import FinetuneRecipe, ModelArgs, TaskDataArgs, to_dict

    return to_dict(FinetuneRecipe(task=task, model=ModelArgs(name_or_path="me/base"), data=TaskDataArgs(**data)))


def test_model_index_holds_evaluation_metrics_only_and_the_run_goes_in_the_text(tmp_path):
    card = write_model_card(tmp_path, config=config_dict(), recipe=pretrain_recipe(), results=PRETRAIN_RESULTS)
    _, result = model_index(card)
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        "eval_loss": 3.5, "eval_accuracy": 0.125, "eval_perplexity": 33.1}
    parsed = ModelCard.load(card).data
    assert {r.metric_type for r in parsed.eval_results} == {"eval_loss", "eval_accuracy", "eval_perplexity"}
    _, body = split_card(card.read_text())
    results, run = body.split("## Results")[1].split("## Training run")
    assert "| eval_accuracy | 0.125 |" in results and "step" not in results and "tokens" not in results
    for row in ("| step | 6 |", "| tokens | 768 |", "| train_seconds | 12.5 |", "| final_train_loss | 4.25 |",
                "| eval_tokens | 64 |"):
        assert row in run.split("## Training recipe")[0], row


@pytest.mark.parametrize(("data", "dataset", "hub"), [
    ({}, {"type": "python-docs", "split": "validation"}, None),
    ({"source": "Salesforce/wikitext", "config_name": "wikitext-103-raw-v1", "validation_split": "validation"},
     {"type": "Salesforce/wikitext", "name": "Salesforce/wikitext wikitext-103-raw-v1",
      "config": "wikitext-103-raw-v1", "split": "validation"}, ["Salesforce/wikitext"]),
    ({"source": "/home/me/corpora/wiki.train.txt", "validation_fraction": 0.1},
     {"type": "wiki.train.txt", "name": "local file wiki.train.txt", "split": "the 10% of documents held out"}, None),
    ({"source": "/data/shards/*.jsonl", "extra_sources": [{"source": "wikitext"}]},
     {"type": "*.jsonl", "name": "local files *.jsonl"}, ["wikitext"]),
])  # fmt: skip
def test_pretraining_card_names_its_dataset(tmp_path, data, dataset, hub):
    card = write_model_card(tmp_path, config=config_dict(), recipe=pretrain_recipe(**data), results=PRETRAIN_RESULTS)
    meta, result = model_index(card)
    assert dataset.items() <= result["dataset"].items()
    assert meta.get("datasets") == hub  # only Hub ids go under datasets:
    front = card.read_text().split("---\n")[1]
    assert "/home/me" not in front and "/data/shards" not in front  # files by their base name
    if not data:
        assert "builtin:python-docs" in result["dataset"]["name"] and "embedded" in result["dataset"]["name"]
        assert "Trained and evaluated on the Python documentation" in card.read_text()


@pytest.mark.parametrize(("task", "data", "dataset"), [
    ("sst2", {}, {"type": "nyu-mll/glue", "name": "nyu-mll/glue sst2", "config": "sst2", "split": "validation"}),
    ("mnli", {}, {"type": "nyu-mll/glue", "config": "mnli", "split": "validation_matched"}),
    ("conll2003", {}, {"type": "lhoestq/conll2003", "split": "validation"}),
    ("squad", {}, {"type": "rajpurkar/squad", "split": "validation"}),
    ("sst2", {"dataset_name": "stanfordnlp/sst2"}, {"type": "stanfordnlp/sst2", "name": "stanfordnlp/sst2"}),
])  # fmt: skip
def test_fine_tuning_card_names_the_tasks_dataset(tmp_path, task, data, dataset):
    card = write_model_card(tmp_path, config=config_dict("HfpipeForSequenceClassification"),
                            recipe=finetune_recipe(task, **data), results={"accuracy": 0.75})
    meta, result = model_index(card)
    assert dataset.items() <= result["dataset"].items()
    assert meta["datasets"] == [dataset["type"]]
    parsed = ModelCard.load(card).data.eval_results[0]  # as the Hub reads it back
    assert (parsed.dataset_type, parsed.dataset_name) == (dataset["type"], result["dataset"]["name"])


def test_fine_tuning_on_local_files_names_them_by_base_name(tmp_path):
    recipe = finetune_recipe("sst2", train_file="/home/me/sst2/train.tsv", validation_file="/home/me/sst2/dev.tsv")
    card = write_model_card(tmp_path, config=config_dict("HfpipeForSequenceClassification"), recipe=recipe,
                            results={"accuracy": 0.75})
    meta, result = model_index(card)
    assert result["dataset"] == {"name": "sst2: local file dev.tsv", "type": "dev.tsv"}
    assert "datasets" not in meta
    assert "Evaluated on sst2: local file dev.tsv." in card.read_text()
    assert "Trained on sst2: local file train.tsv." in card.read_text()
