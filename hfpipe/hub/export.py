"""What leaves a run as a Hugging Face folder: final/ (weights, config with auto_map, code, tokenizer,
model card), fine-tuning's best/, LoRA's adapter/ (and final/ merged), checkpoint copies pushed while
training, and the final push."""

import json
import shutil
from pathlib import Path

from ..config.recipe import to_dict
from ..data.tokenizer import save_tokenizer
from .model_card import write_model_card
from .push import push_checkpoint, push_folder


def save_model_folder(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """save_pretrained model and tokenizer into `folder`, atomically: a kill leaves the old folder whole.
    `state_dict`: the full weights when the model is sharded (FSDP, ZeRO-3), from train/distributed.py."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, state_dict=state_dict)
    save_tokenizer(tokenizer, tmp, model.config)  # model_max_length = the model's position limit
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def export_final(model, tokenizer, final_dir: Path, recipe, results: dict, state_dict: dict | None = None) -> None:
    """Pretraining's output: a self-contained Hugging Face folder with a fill-mask model card.
    `state_dict`: the full weights when the model is sharded (FSDP, ZeRO-3), from train/distributed.py."""
    model.save_pretrained(final_dir, state_dict=state_dict)
    save_tokenizer(tokenizer, final_dir, model.config)
    write_model_card(final_dir, config=model.config.to_dict(), recipe=to_dict(recipe), results=results,
                     pipeline_tag="fill-mask", repo_id=recipe.hub.repo_id)


def export_best(best_dir: Path, final_dir: Path, recipe, spec, metrics: dict) -> None:
    """Fine-tuning's output: the best evaluation's model folder copied to final/, with its model card."""
    _copy_folder(best_dir, final_dir)
    _write_finetune_card(final_dir, recipe, spec, metrics)


def export_best_adapter(model, tokenizer, best_dir: Path, out_dir: Path, recipe, spec, metrics: dict) -> None:
    """LoRA fine-tuning's output: adapter/, the best evaluation's adapter (best_dir), which
    `PeftModel.from_pretrained(base_model, adapter)` loads; and with `peft.merge`, final/: that adapter
    merged into the base weights, a plain self-contained hfpipe folder that loads without peft.

    `model` is the run's PeftModel: the best adapter is loaded into it and merged in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_dir, final_dir = out_dir / "adapter", out_dir / "final"
    _copy_folder(best_dir, adapter_dir)
    if not recipe.peft.merge:
        shutil.rmtree(final_dir, ignore_errors=True)  # no stale final/ from an earlier run
        return
    loaded = set_peft_model_state_dict(model, load_file(adapter_dir / "adapter_model.safetensors"))
    if loaded.unexpected_keys:
        raise RuntimeError(f"{adapter_dir} does not fit the run's model: {loaded.unexpected_keys[:5]}")
    save_model_folder(model.merge_and_unload(), tokenizer, final_dir)
    _write_finetune_card(final_dir, recipe, spec, metrics)


def _copy_folder(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def _write_finetune_card(final_dir: Path, recipe, spec, metrics: dict) -> None:
    config = json.loads((final_dir / "config.json").read_text())
    write_model_card(final_dir, config=config, recipe=to_dict(recipe), results=metrics, task=spec.name,
                     base_model=recipe.model.name_or_path, pipeline_tag=spec.pipeline_tag,
                     repo_id=recipe.hub.repo_id)


def push_checkpoint_to_hub(model, tokenizer, checkpoint: Path, recipe) -> None:
    """Push a loadable copy of this checkpoint (weights, code, tokenizer) to `hub.checkpoint_branch`."""
    folder = checkpoint / "hf"
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder, model.config)
    push_checkpoint(folder, recipe.hub.repo_id, recipe.hub.checkpoint_branch, private=recipe.hub.private)


def push_final(final_dir: Path, recipe) -> None:
    """`hub.push_to_hub`: upload final/ to `hub.repo_id`."""
    push_folder(final_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision,
                commit_message=recipe.hub.commit_message)
