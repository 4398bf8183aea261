"""What leaves a run as a Hugging Face folder: final/ (weights, config with auto_map, code, tokenizer,
model card), fine-tuning's best/, checkpoint copies pushed while training, and the final push."""

import json
import shutil
from pathlib import Path

from ..config.recipe import to_dict
from .model_card import write_model_card
from .push import push_checkpoint, push_folder


def save_model_folder(model, tokenizer, folder: Path) -> None:
    """save_pretrained model and tokenizer into `folder`, atomically: a kill leaves the old folder whole."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def export_final(model, tokenizer, final_dir: Path, recipe, results: dict) -> None:
    """Pretraining's output: a self-contained Hugging Face folder with a fill-mask model card."""
    model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    write_model_card(final_dir, config=model.config.to_dict(), recipe=to_dict(recipe), results=results,
                     pipeline_tag="fill-mask", repo_id=recipe.hub.repo_id)


def export_best(best_dir: Path, final_dir: Path, recipe, spec, metrics: dict) -> None:
    """Fine-tuning's output: the best evaluation's model folder copied to final/, with its model card."""
    if final_dir.exists():
        shutil.rmtree(final_dir)
    shutil.copytree(best_dir, final_dir)
    config = json.loads((final_dir / "config.json").read_text())
    write_model_card(final_dir, config=config, recipe=to_dict(recipe), results=metrics, task=spec.name,
                     base_model=recipe.model.name_or_path, pipeline_tag=spec.pipeline_tag,
                     repo_id=recipe.hub.repo_id)


def push_checkpoint_to_hub(model, tokenizer, checkpoint: Path, recipe) -> None:
    """Push a loadable copy of this checkpoint (weights, code, tokenizer) to `hub.checkpoint_branch`."""
    folder = checkpoint / "hf"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    push_checkpoint(folder, recipe.hub.repo_id, recipe.hub.checkpoint_branch, private=recipe.hub.private)


def push_final(final_dir: Path, recipe) -> None:
    """`hub.push_to_hub`: upload final/ to `hub.repo_id`."""
    push_folder(final_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision,
                commit_message=recipe.hub.commit_message)
