"""Write the model card (README.md) that travels with a pushed hfpipe model.

    from hfpipe.hub.model_card import write_model_card
    write_model_card("runs/sst2/final", config=model.config.to_dict(), recipe=to_dict(recipe),
                     results={"accuracy": 0.91}, task="text-classification", datasets=["glue"],
                     base_model="me/hfpipe-mini", repo_id="me/hfpipe-mini-sst2", revision="v1")

The card has two parts:
- YAML front matter the Hub reads (library_name, pipeline_tag, license, datasets, base_model, tags and
  a `model-index` with the measured results), built with huggingface_hub's ModelCardData so it follows
  the Hub's schema, and parsed back before writing. The model-index holds evaluation metrics only
  (never step, tokens or train_seconds: RUN_FACTS), on the dataset the recipe evaluated on: a Hub
  dataset by its id (pretraining's data.source; fine-tuning's task dataset, e.g. nyu-mll/glue sst2),
  an embedded corpus (`builtin:python-docs`) described as such, local files by their base name.
  `datasets:` lists the Hub datasets only.
- A body for people: the architecture options, the training data, the results, the run (steps,
  tokens, time), the training recipe, and a usage snippet with `trust_remote_code=True` and a pinned
  `revision=` -- because trust_remote_code runs this repository's Python code, users should pin a
  revision they have reviewed.

Secrets never reach the card: keys named like token/password/secret/api_key are dropped from the recipe,
and any value that looks like a Hugging Face token (or equals the current one) is redacted.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, get_token

from ..config.recipe import is_secret

# Pipeline tag per task alias and per head class: the Hub widget and `pipeline()` use this tag.
PIPELINE_TAGS = {
    "fill-mask": "fill-mask",
    "mlm": "fill-mask",
    "pretrain": "fill-mask",
    "text-classification": "text-classification",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "ner": "token-classification",
    "question-answering": "question-answering",
    "qa": "question-answering",
}
_HEAD_TAGS = {
    "ForMaskedLM": "fill-mask",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}
_AUTO_CLASS = {
    "fill-mask": "AutoModelForMaskedLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
_EXAMPLE_CALL = {
    "fill-mask": 'print(pipe("The capital of France is {mask}."))',
    "text-classification": 'print(pipe("A touching and funny film."))',
    "token-classification": 'print(pipe("Ada Lovelace was born in London."))',
}
ARCHITECTURE_FIELDS = (
    ("model_type", "model family"),
    ("position_embedding_type", "positions"),
    ("norm_type", "normalization"),
    ("norm_position", "norm placement (post = original BERT, pre = modern)"),
    ("hidden_act", "MLP activation"),
    ("token_mixer", "token mixer"),
    ("hidden_size", "hidden size"),
    ("num_hidden_layers", "layers"),
    ("num_attention_heads", "attention heads"),
    ("intermediate_size", "MLP width"),
    ("vocab_size", "vocabulary size"),
    ("max_position_embeddings", "max sequence length"),
    ("type_vocab_size", "segment types"),
    ("use_bias", "biases"),
)
_HF_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{20,}")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_DATASET_ID = re.compile(r"^[\w.-]+(?:/[\w.-]+)?$")
_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet")
RUN_FACTS = frozenset({
    "step", "steps", "best_step", "epoch", "tokens", "train_seconds", "skipped_steps", "eval_tokens",
    "trainable_parameters", "total_parameters", "num_processes",
})  # fmt: skip
"""Results that describe the run, not the model's quality (as do `train_*` and `final_train_*` keys):
shown in the card's text, never in the model-index."""
BUILTIN_DATASETS = {
    "builtin:python-docs": "the Python documentation: the standard library's docstrings and help() topics, "
    "embedded in hfpipe (data.source builtin:python-docs)",
    "builtin:pydocs": "hfpipe's built-in pydocs task: which standard-library package a docstring comes from, "
    "built from the embedded Python documentation",
}


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as the card names it."""

    id: str
    """The model-index dataset type: a Hub dataset id, an embedded corpus' name, or a file's base name."""
    name: str
    """What people read."""
    config: str | None = None
    split: str | None = None
    on_hub: bool = False
    """A Hub dataset id: listed under `datasets:` in the front matter."""


def is_evaluation_metric(key: str) -> bool:
    """Whether a results key is an evaluation metric (model-index) rather than a fact of the run."""
    return key not in RUN_FACTS and not key.startswith(("train_", "final_train"))


def write_model_card(
    folder: str | Path,
    *,
    config: dict,
    recipe: dict | None = None,
    results: dict | None = None,
    task: str | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    license: str = "apache-2.0",
    pipeline_tag: str | None = None,
) -> Path:
    """Write `folder/README.md` and return its path. `results` maps metric names to numbers; only the
    evaluation metrics among them go to the model-index. `datasets` (Hub ids) default to what `recipe`
    (a resolved recipe, `to_dict`) trained and evaluated on (`recipe_datasets`)."""
    folder = Path(folder)
    tag = pipeline_tag or _pipeline_tag(task, config)
    results = {k: v for k, v in (results or {}).items() if not is_secret(str(k))}
    metrics = {k: float(v) for k, v in results.items() if _is_number(v) and is_evaluation_metric(k)}
    refs = [DatasetRef(d, d, on_hub=True) for d in datasets] if datasets else recipe_datasets(recipe or {})
    evaluated_on = refs[0] if refs else DatasetRef("custom", "custom")
    hub_base = (
        base_model if base_model and _REPO_ID.match(base_model) and not Path(base_model).exists() else None
    )
    name = (repo_id or folder.name).split("/")[-1]
    eval_results = [
        EvalResult(
            task_type=tag,
            dataset_type=evaluated_on.id,
            dataset_name=evaluated_on.name,
            dataset_config=evaluated_on.config,
            dataset_split=evaluated_on.split,
            metric_type=metric,
            metric_name=metric,
            metric_value=value,
        )
        for metric, value in metrics.items()
    ]
    hub_datasets = list(dict.fromkeys(ref.id for ref in refs if ref.on_hub))
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=tag,
        license=license,
        datasets=hub_datasets or None,
        base_model=hub_base,
        tags=list(dict.fromkeys(["hfpipe", "custom_code", config.get("model_type", "hfpipe"), tag])),
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )
    body = _body(folder, name, config, recipe, results, refs, tag, base_model, repo_id, revision)
    text = _redact(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    _validate(text)
    path = folder / "README.md"
    ModelCard(text).save(path)
    return path


def _pipeline_tag(task: str | None, config: dict) -> str:
    if task is not None:
        key = task.lower().replace("_", "-")
        if key not in PIPELINE_TAGS:
            raise ValueError(f"task={task!r} has no pipeline tag; use one of {sorted(PIPELINE_TAGS)}")
        return PIPELINE_TAGS[key]
    for arch in config.get("architectures") or []:
        for suffix, tag in _HEAD_TAGS.items():
            if arch.endswith(suffix):
                return tag
    raise ValueError(
        f"Cannot tell the pipeline tag from config architectures {config.get('architectures')}: pass task= "
        f"(one of {sorted(PIPELINE_TAGS)}) or pipeline_tag=."
    )


def recipe_datasets(recipe: dict) -> list[DatasetRef]:
    """What a resolved recipe (`to_dict`) evaluated on, first, then what it trained on: the fine-tuning
    task's dataset (data.dataset_name, else the task's Hub dataset, or local files), or pretraining's
    data.validation_source / data.source and data.extra_sources."""
    data = recipe.get("data") or {}
    if "task" in recipe:
        return _task_datasets(recipe["task"], data)
    if not data.get("source"):
        return []
    split = data.get("validation_split")
    if split is None and not data.get("validation_source"):  # the builtin corpus' own split, or carved off
        builtin = data["source"].startswith("builtin:")
        split = "validation" if builtin else f"the {data.get('validation_fraction', 0.05):.0%} of documents held out"
    evaluated = _source_ref(data.get("validation_source") or data["source"], data.get("config_name"), split)
    trained = [_source_ref(data["source"], data.get("config_name"), None)]
    trained += [_source_ref(x["source"], x.get("config_name"), None) for x in data.get("extra_sources") or []]
    return list(dict.fromkeys([evaluated, *trained]))


def _source_ref(source: str, config: str | None, split: str | None) -> DatasetRef:
    if source in BUILTIN_DATASETS or source.startswith("builtin:"):
        return DatasetRef(source.removeprefix("builtin:"), BUILTIN_DATASETS.get(source, f"hfpipe's {source}"),
                          split=split)
    local = any(c in source for c in "*?[") or source.lower().endswith(_FILE_SUFFIXES) or Path(source).exists()
    if local or not _HUB_DATASET_ID.match(source):
        base = Path(source).name
        return DatasetRef(base, f"local file{'s' if any(c in base for c in '*?[') else ''} {base}", split=split)
    return DatasetRef(source, f"{source} {config}" if config else source, config, split, on_hub=True)


def _task_datasets(task: str, data: dict) -> list[DatasetRef]:
    from ..tasks.spec import get_task  # lazy: the tasks package pulls in datasets

    spec = get_task(task)
    if data.get("train_file") or data.get("validation_file"):
        files = [data.get("validation_file"), data.get("train_file")]
        return list(dict.fromkeys(DatasetRef(Path(f).name, f"{spec.name}: local file {Path(f).name}")
                                  for f in files if f))
    dataset = data.get("dataset_name") or spec.hub_dataset
    if dataset.startswith("builtin:"):
        return [_source_ref(dataset, None, "validation")]
    config = data.get("dataset_config") if data.get("dataset_name") else spec.hub_config
    split = dict(spec.hub_splits).get("validation")
    return [DatasetRef(dataset, f"{dataset} {config}" if config else dataset, config, split, on_hub=True)]


def _body(folder, name, config, recipe, results, refs, tag, base_model, repo_id, revision) -> str:
    repo = repo_id or f"<user>/{name}"
    pinned = revision or "main"
    params = _parameter_count(folder)
    lines = [f"# {name}", ""]
    lines.append(
        f"An encoder of the `{config.get('model_type', 'hfpipe')}` family for **{tag}**, trained with "
        "hfpipe (BERT-style encoders pretrained and fine-tuned the Hugging Face way)."
        + (f" {params:,} parameters." if params else "")
    )
    if base_model:
        lines += ["", f"Fine-tuned from `{base_model}`."]
    lines += ["", "## Architecture", "", "| option | value | meaning |", "|---|---|---|"]
    lines += [
        f"| `{key}` | `{config[key]}` | {meaning} |" for key, meaning in ARCHITECTURE_FIELDS if key in config
    ]
    if refs:
        evaluated, *trained = refs
        others = [ref for ref in trained if ref.id != evaluated.id]
        lines += ["", "## Training data", ""]
        lines.append(("Trained and evaluated on " if len(others) < len(trained) else "Evaluated on ") + evaluated.name
                     + (f" (evaluation: {evaluated.split})." if evaluated.split else "."))
        lines += [f"Trained on {ref.name}." for ref in others]
    metrics = {k: v for k, v in results.items()
               if is_evaluation_metric(k) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    facts = {k: v for k, v in results.items() if k not in metrics and _is_scalar(v)}
    lines += ["", "## Results", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append("No evaluation results were recorded for this model.")
    if facts:
        lines += ["", "## Training run", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in facts.items()]
    if recipe:
        recipe_yaml = yaml.safe_dump(_scrub(recipe), sort_keys=False, allow_unicode=True, width=110)
        lines += ["", "## Training recipe", "", "The resolved recipe this model was trained with:", ""]
        lines += ["```yaml", recipe_yaml.rstrip(), "```"]
    lines += [
        "",
        "## Usage",
        "",
        "This model ships its own modeling code (`configuration_hfpipe.py`, `modeling_hfpipe.py`), so it",
        "loads with plain transformers -- hfpipe does not need to be installed:",
        "",
        "```python",
        *_usage(tag, repo, pinned, _mask_token(folder)),
        "```",
        "",
        "The tokenizer gets `trust_remote_code=True` too: transformers 5's `AutoTokenizer` reads this",
        "config first and, without it, stops at the custom-code prompt (the tokenizer itself is plain `tokenizers`).",
        "",
        "> **Security note.** `trust_remote_code=True` downloads and runs the Python code in this",
        "> repository on your machine. Read `configuration_hfpipe.py` and `modeling_hfpipe.py`, then pin",
        "> `revision=` to the commit sha you reviewed (not a branch such as `main`, which can change):",
        f"> the snippet above uses `{pinned}`.",
        "",
    ]
    return "\n".join(lines)


def _usage(tag: str, repo: str, revision: str, mask: str) -> list[str]:
    """Python lines that load the model at a pinned revision and run it once."""
    auto = _AUTO_CLASS.get(tag, "AutoModel")
    pinned = f'revision="{revision}", trust_remote_code=True'
    load = [
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}", {pinned})',
        f'model = {auto}.from_pretrained("{repo}", {pinned})',
    ]
    if tag == "question-answering":  # transformers v5 removed the extractive question-answering pipeline
        return [
            "import torch",
            f"from transformers import AutoTokenizer, {auto}",
            "",
            *load,
            'question, context = "Where was Ada born?", "Ada Lovelace was born in London."',
            'inputs = tokenizer(question, context, return_tensors="pt")',
            "with torch.no_grad():",
            "    out = model(**inputs)",
            "not_context = torch.tensor([sid != 1 for sid in inputs.sequence_ids(0)])  # answer lies in the context",
            "start = out.start_logits[0].masked_fill(not_context, -1e9).argmax()",
            "end = start + out.end_logits[0, start:].masked_fill(not_context[start:], -1e9).argmax()",
            'print(tokenizer.decode(inputs["input_ids"][0, start : end + 1]))',
        ]
    return [
        f"from transformers import AutoTokenizer, {auto}, pipeline",
        "",
        *load,
        f'pipe = pipeline("{tag}", model="{repo}", {pinned})',
        _EXAMPLE_CALL[tag].replace("{mask}", mask),
    ]


def _scrub(value: Any) -> Any:
    """Drop secret-named keys at every depth (special tokens such as mask_token are kept)."""
    if isinstance(value, dict):
        return {str(k): _scrub(v) for k, v in value.items() if not is_secret(str(k))}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _redact(text: str) -> str:
    token = get_token()
    if token:
        text = text.replace(token, "<redacted>")
    return _HF_TOKEN_LIKE.sub("<redacted>", text)


def _validate(text: str) -> None:
    """The front matter must parse as YAML and its model-index must read back (the Hub rejects it otherwise)."""
    front = text.split("---\n", 2)[1]
    meta = yaml.safe_load(front)
    if not isinstance(meta, dict) or meta.get("library_name") != "transformers":
        raise ValueError(f"model card front matter did not parse back as expected: {meta!r}")
    data = ModelCard(text).data
    if "model-index" in meta and not data.eval_results:
        raise ValueError("model card model-index did not parse back into evaluation results")


def _mask_token(folder: Path) -> str:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get("mask_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                return value
    return "[MASK]"


def _parameter_count(folder: Path) -> int | None:
    """Parameters stored in model.safetensors, read from its JSON header (no torch needed)."""
    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    with path.open("rb") as stream:
        (size,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(size))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
