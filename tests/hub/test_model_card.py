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
