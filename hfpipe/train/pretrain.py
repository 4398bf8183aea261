"""Masked-language-model pretraining: setup, the loop (fit), evaluate, finish.

    hfpipe pretrain recipes/pretrain/tiny.yaml [section.key=value ...]
    accelerate launch -m hfpipe pretrain recipes/pretrain/tiny.yaml        # any number of processes

What makes the numbers trustworthy:
  * Data order is a function of (seed, optimizer step): the global batch of step s is the same
    examples whatever the number of processes or accumulation steps; each process takes its slice
    (data/loader.py).
  * Masks are a function of (seed, step, example position): the same in 1 or N processes, on resume.
  * The loss is normalized by the number of masked tokens in the whole global batch (all
    micro-batches, all processes), so 2 processes x batch b compute the same gradient as
    1 process x batch 2b -- not an average of per-micro-batch means (train/step.py).
  * The LR schedule is a function of progress in optimizer steps (or tokens, or minutes).
  * Checkpoints restore model, optimizer, RNG and loop state; resume is exact.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import PreTrainedTokenizerBase

from ..config import PretrainRecipe, save_recipe, to_dict
from ..data.loader import (
    StepLoader,
    StepSampler,
    StreamSampler,
    fixed_eval_batches,
    pretrain_steps,
    step_loader,
)
from ..data.masking import default_mlm_probability
from ..data.sources import iter_texts, load_text_datasets, shard_for_process, tokenize_dataset
from ..data.tokenizer import get_tokenizer
from ..hub.export import export_final, push_checkpoint_to_hub, push_final
from ..model.configuration_hfpipe import PRESETS, HfpipeConfig
from ..model.load import load_encoder
from ..model.modeling_hfpipe import HfpipeForMaskedLM
from .budget import Budget, budget_spent
from .checkpoint import find_resume, load_checkpoint, save_checkpoint
from .distributed import describe, full_state_dict, make_accelerator
from .logs import MetricsLog, flat_config, mlm_flops_per_token, peak_flops, plot_curves, require_trackers
from .loop import LoopGlue, done_line
from .optim import build_optimizer
from .step import LoopState, TrainingError


@dataclass
class Run:
    """What `setup` builds for `fit`, `evaluate` and `finish`."""

    recipe: PretrainRecipe
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    tokenizer: PreTrainedTokenizerBase
    sampler: StepSampler | StreamSampler
    train_source: Any  # the dataset StepSampler indexes; None when streaming (the sampler yields examples)
    eval_batches: list[tuple[dict, bool]]  # this process's share of the fixed-mask validation batches, and
    # whether each counts: padding copies (False) give every rank the same number of forward passes
    mlm_probability: float
    budget: Budget
    log: MetricsLog
    state: LoopState
    last_loss: float = math.nan
    batches: StepLoader | None = None  # the training batches, from fit's start
    glue: LoopGlue | None = None  # fit's loop glue: finish prints its closing line

    @property
    def out_dir(self) -> Path:
        return Path(self.recipe.output_dir)

    def epoch(self) -> float:
        """Passes over the training data so far (streaming: only the loader's reading worker knows)."""
        return self.batches.epoch if self.batches is not None else self.sampler.epoch(self.state.step)

    def checkpoint_state(self) -> dict:
        return {**self.state.to_dict(), "epoch": self.epoch()}

    def save_checkpoint(self) -> Path:
        """Collective: a resumable checkpoint of this step (with the recipe that trained it)."""
        return save_checkpoint(self.accelerator, self.out_dir, self.state.step, self.checkpoint_state(),
                               self.recipe.train.keep_last, recipe=self.recipe)


def pretrain(recipe) -> dict:
    """Run (or resume) pretraining as the recipe says; returns the final metrics."""
    run = setup(recipe)
    fit(run)
    return finish(run)


# ----------------------------------------------------------------------------------------------
# Setup: tokenizer, data, model, optimizer, resume, batches
# ----------------------------------------------------------------------------------------------


def build_model(recipe, tokenizer) -> HfpipeForMaskedLM:
    args = recipe.model
    if args.name_or_path:
        model = load_encoder(args.name_or_path, HfpipeForMaskedLM, **args.config_overrides)
    else:
        overrides = {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "max_position_embeddings": max(recipe.data.block_size, PRESETS[args.preset].get("max_position_embeddings", 512)),
            **args.config_overrides,
        }
        model = HfpipeForMaskedLM(HfpipeConfig.from_preset(args.preset, **overrides))
    if len(tokenizer) > model.config.vocab_size:
        raise TrainingError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )
    model.set_attn_implementation(args.attn_implementation)
    # Logits only at the masked positions, for training and evaluation alike (the same loss, a fraction
    # of the head's compute). Set on the module, not the config: final/ behaves like BertForMaskedLM.
    model.sparse_prediction = True
    return model


def load_data(recipe, accelerator, out_dir: Path):
    """The tokenizer, and the tokenized train and validation sets (this process's shard when streaming).
    The main process builds the caches first; the others then read them."""
    world, rank = accelerator.num_processes, accelerator.process_index
    whole_word = recipe.masking.whole_word
    with accelerator.main_process_first():
        train_texts, val_texts = load_text_datasets(recipe.data, seed=recipe.seed)
        tokenizer = get_tokenizer(recipe.tokenizer, lambda: iter_texts(train_texts), out_dir)
        if recipe.data.streaming:  # each process reads and tokenizes only its own share of the stream
            train_texts = shard_for_process(train_texts, rank, world)
        train_set = tokenize_dataset(train_texts, tokenizer, recipe.data, whole_word=whole_word)
        val_set = tokenize_dataset(val_texts, tokenizer, recipe.data, whole_word=whole_word)
    if recipe.data.streaming and recipe.train.num_epochs:
        raise TrainingError("train.num_epochs needs a known dataset length; with data.streaming=true "
                            "set train.max_steps, train.max_tokens or train.max_minutes")
    return tokenizer, train_set, val_set


def equal_eval_batches(recipe, val_set, tokenizer, mlm_probability: float, accelerator) -> list[tuple[dict, bool]]:
    """This process's share of the fixed-mask validation batches, padded with uncounted copies so every
    rank runs the same number of forward passes (under FSDP and ZeRO-3 they are collective: a rank with
    one batch more would wait forever for the others)."""
    def batches(world: int, rank: int, max_batches: int | None) -> list[dict]:
        return fixed_eval_batches(val_set, tokenizer, masking=recipe.masking, mlm_probability=mlm_probability,
                                  seed=recipe.seed, batch_size=recipe.eval.batch_size, max_batches=max_batches,
                                  world=world, rank=rank)

    mine = [(batch, True) for batch in batches(accelerator.num_processes, accelerator.process_index,
                                                recipe.eval.max_batches)]
    counts = accelerator.gather(torch.tensor([len(mine)], device=accelerator.device))  # (world,)
    missing = int(counts.max()) - len(mine)
    if missing:
        padding = mine[0][0] if mine else batches(1, 0, 1)[0]
        mine += [(padding, False)] * missing
    return mine


def setup(recipe) -> Run:
    train, out_dir = recipe.train, Path(recipe.output_dir)
    # Before any compute, and before resolved_recipe.yaml is overwritten: a tracker that is not installed,
    # a damaged checkpoint, or one trained with another recipe stops the run here.
    report_to, resume_from = require_trackers(recipe.tracking.report_to), find_resume(recipe)
    accelerator = make_accelerator(recipe, report_to=report_to, project_dir=out_dir)  # checks the launch
    world, rank, accum = accelerator.num_processes, accelerator.process_index, train.gradient_accumulation_steps
    set_seed(recipe.seed)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out_dir / "resolved_recipe.yaml")
    if report_to:  # started now, so a tracker that cannot start fails before any compute
        accelerator.init_trackers(recipe.tracking.project_name, config=flat_config(to_dict(recipe)))
    tokenizer, train_set, val_set = load_data(recipe, accelerator, out_dir)

    set_seed(recipe.seed)  # again: tokenizer training and data loading above may consume random numbers
    model = build_model(recipe, tokenizer)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    mlm_probability = recipe.masking.mlm_probability or default_mlm_probability(recipe.model.preset)
    optimizer = build_optimizer(model, train)
    if train.compile:
        model = torch.compile(model, dynamic=True)
    model, optimizer = accelerator.prepare(model, optimizer)

    state = LoopState()
    if resume_from is not None:
        state = LoopState.from_dict(load_checkpoint(accelerator, resume_from))
        accelerator.print(f"resumed from {resume_from} at step {state.step}")

    if recipe.data.streaming:
        sampler, train_source = StreamSampler(train_set, train.batch_size, world, accum, rank, state.step), None
    else:
        sampler, train_source = StepSampler(len(train_set), recipe.seed, train.batch_size, world, accum), train_set
    max_steps = train.max_steps
    if train.num_epochs:
        epoch_steps = math.ceil(train.num_epochs * len(train_set) / sampler.global_batch)
        max_steps = min(max_steps, epoch_steps) if max_steps else epoch_steps
    eval_batches = equal_eval_batches(recipe, val_set, tokenizer, mlm_probability, accelerator)
    log = MetricsLog(out_dir / "metrics.jsonl", accelerator.is_main_process, state.step if resume_from else None)
    return Run(recipe, accelerator, model, optimizer, tokenizer, sampler, train_source, eval_batches,
               mlm_probability, Budget(train, total_steps=max_steps), log, state)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def train_batches(run: Run) -> StepLoader:
    """Every step's micro-batches from run.state.step on: read, collated and masked in DataLoader worker
    processes (data.num_workers) ahead of the loop; the same batches for any number of workers."""
    recipe, accelerator = run.recipe, run.accelerator
    steps = pretrain_steps(run.train_source, run.sampler, run.tokenizer, recipe.masking, run.mlm_probability,
                           recipe.seed, accelerator.process_index, recipe.train.gradient_accumulation_steps)
    return step_loader(steps, run.state.step, num_workers=recipe.data.num_workers,
                       pin_memory=accelerator.device.type == "cuda")


def fit(run: Run) -> None:
    """Train until the budget is spent: lr -> batches -> step -> log / evaluate / save (train/loop.py).
    Ctrl-C saves a checkpoint first; the same command then resumes."""
    recipe, train, accelerator, state = run.recipe, run.recipe.train, run.accelerator, run.state
    config = accelerator.unwrap_model(run.model).config
    run.batches = train_batches(run)
    glue = LoopGlue(accelerator, state, run.budget, run.log, desc="pretrain", train=train, out_dir=run.out_dir,
                    save_checkpoint=run.save_checkpoint, epoch=run.epoch,
                    flops_per_token=mlm_flops_per_token(config, recipe.data.block_size, run.mlm_probability),
                    peak=peak_flops(accelerator.device, recipe.tracking.peak_tflops, accelerator.mixed_precision))
    run.model.train()
    try:
        with glue:
            while not budget_spent(run.budget, state, accelerator):
                glue.step(run.model, run.optimizer, lambda: next(run.batches))
                run.last_loss = glue.last_loss
                if train.eval_every_steps and state.step % train.eval_every_steps == 0:
                    metrics = evaluate(run)
                    run.log.write({"step": state.step, **metrics})
                    accelerator.log(metrics, step=state.step)
                if train.save_every_steps and state.step % train.save_every_steps == 0:
                    saved = run.save_checkpoint()
                    if recipe.hub.push_checkpoints and accelerator.is_main_process:
                        push_checkpoint_to_hub(accelerator.unwrap_model(run.model), run.tokenizer, saved, recipe)
                glue.check_interrupt()
    finally:
        run.batches.close()  # stops the DataLoader workers
    run.glue = glue


@torch.no_grad()
def evaluate(run: Run) -> dict:
    """MLM loss, masked-token accuracy and perplexity over this process's share of the fixed eval
    batches, summed over processes (each batch counts on exactly one process: no duplicates)."""
    model, accelerator = run.model, run.accelerator
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, correct, count
    for batch, counted in run.eval_batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        out = model(**batch)
        if not counted:  # padding: the forward pass keeps the ranks in step; its numbers are not counted
            continue
        labels = batch["labels"][batch["labels"] != -100]  # (N,)
        totals[0] += out.loss.double() * labels.numel()
        totals[1] += (out.logits.argmax(-1) == labels).sum()
        totals[2] += labels.numel()
    totals = accelerator.reduce(totals, reduction="sum")
    model.train()
    loss = (totals[0] / totals[2].clamp(min=1)).item()
    return {
        "eval_loss": loss,
        "eval_accuracy": (totals[1] / totals[2].clamp(min=1)).item(),
        "eval_perplexity": math.exp(min(loss, 50.0)),
        "eval_tokens": int(totals[2].item()),
    }


# ----------------------------------------------------------------------------------------------
# The end: final evaluation, checkpoint, self-contained model folder
# ----------------------------------------------------------------------------------------------


def finish(run: Run) -> dict:
    recipe, accelerator, state, out_dir = run.recipe, run.accelerator, run.state, run.out_dir
    final_eval = evaluate(run)
    run.log.write({"step": state.step, **final_eval})
    run.save_checkpoint()
    # Metrics at the top level, how the run was executed under "run": a metric never overwrites a setting.
    results = {"step": state.step, "tokens": state.tokens, "train_seconds": round(state.elapsed, 2),
               "skipped_steps": state.skipped, "final_train_loss": run.last_loss, **final_eval,
               **(run.glue.speed() if run.glue else {}), "run": describe(accelerator)}
    state_dict = full_state_dict(accelerator, run.model)  # collective: gathered from FSDP/ZeRO shards
    if accelerator.is_main_process:
        final_dir = out_dir / "final"
        card_facts = {**results["run"], **{k: v for k, v in results.items() if k != "run"}}  # metrics win
        export_final(accelerator.unwrap_model(run.model), run.tokenizer, final_dir, recipe, card_facts,
                     state_dict=state_dict)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        if recipe.tracking.plot:
            plot_curves(out_dir / "metrics.jsonl", out_dir / "loss_curve.png", f"pretraining: {recipe.model.preset}")
        done_line(accelerator, f"eval loss {final_eval['eval_loss']:.4f}, accuracy {final_eval['eval_accuracy']:.4f}",
                  final_dir)
    accelerator.wait_for_everyone()
    if recipe.hub.push_to_hub and accelerator.is_main_process:
        push_final(out_dir / "final", recipe)
    accelerator.end_training()
    return results
