"""Masked-language-model pretraining: the loop, in one readable function.

    hfpipe pretrain recipes/pretrain/tiny.yaml [section.key=value ...]
    accelerate launch -m hfpipe pretrain recipes/pretrain/tiny.yaml        # any number of processes

What makes the numbers trustworthy:
  * Data order is a function of (seed, optimizer step): the global batch of step s is the same
    examples whatever the number of processes or accumulation steps; each process takes its slice.
  * Masks are a function of (seed, step, example position): the same in 1 or N processes, on resume.
  * The loss is normalized by the number of masked tokens in the whole global batch (all
    micro-batches, all processes), so 2 processes x batch b compute the same gradient as
    1 process x batch 2b -- not an average of per-micro-batch means.
  * The LR schedule is a function of progress in optimizer steps (or tokens, or minutes).
  * Checkpoints restore model, optimizer, RNG and loop state; resume is exact.
"""

import json
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..config.recipe import save_recipe, to_dict
from ..data.masking import default_mlm_probability, make_generator, mask_tokens
from ..data.sources import collate, iter_texts, load_text_datasets, shard_for_process, tokenize_dataset
from ..data.tokenizer import get_tokenizer
from ..model.configuration_hfpipe import PRESETS, HfpipeConfig
from ..model.modeling_hfpipe import HfpipeForMaskedLM
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .training import (
    Budget,
    MetricsLog,
    Throughput,
    build_optimizer,
    load_encoder,
    mlm_flops_per_token,
    peak_flops,
    plot_curves,
    set_lr,
)

EVAL_SEED_OFFSET = 1_000_003  # eval masks use their own stream, fixed for the whole run


class TrainingError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# Batches: which examples, and how they are masked, at each step
# ----------------------------------------------------------------------------------------------


class StepSampler:
    """Example indices of every micro-batch, as a pure function of (seed, step).

    Global position g = step * global_batch + j, where j orders the global batch as
    (accumulation step, process, row). Epoch e = g // N uses its own seeded permutation."""

    def __init__(self, num_examples: int, seed: int, micro_batch: int, world: int, accum: int):
        if num_examples == 0:
            raise TrainingError("the tokenized training set is empty: check data.source and data.block_size")
        self.n, self.seed = num_examples, seed
        self.micro, self.world, self.accum = micro_batch, world, accum
        self.global_batch = micro_batch * world * accum
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch in memory
        return self._perms[epoch]

    def micro_batch(self, step: int, accum_index: int, rank: int) -> list[tuple[int, int]]:
        """[(global position, example index)] for one process's micro-batch."""
        start = step * self.global_batch + (accum_index * self.world + rank) * self.micro
        out = []
        for g in range(start, start + self.micro):
            out.append((g, int(self._perm(g // self.n)[g % self.n])))
        return out

    def epoch(self, step: int) -> float:
        return step * self.global_batch / self.n


class StreamSampler:
    """`data.streaming: true`: each process reads its own shard of the stream in order, passing over
    it again when it ends. Step s takes the next micro-batches; resuming at step s replays the stream
    past the examples already consumed (exact, and O(consumed) reads -- the price of not indexing)."""

    def __init__(self, shard, micro_batch: int, world: int, accum: int, rank: int, start_step: int):
        self.shard, self.micro, self.world, self.accum, self.rank = shard, micro_batch, world, accum, rank
        self.global_batch = micro_batch * world * accum
        self.passes = 0
        self._iter = iter(shard)
        for _ in range(start_step * micro_batch * accum):
            self._next()

    def _next(self) -> dict:
        try:
            return next(self._iter)
        except StopIteration:
            self.passes += 1
            if hasattr(self.shard, "set_epoch"):
                self.shard.set_epoch(self.passes)
            self._iter = iter(self.shard)
            try:
                return next(self._iter)
            except StopIteration:
                raise TrainingError("this process's shard of the streamed training data is empty") from None

    def micro_batch(self, step: int, accum_index: int, rank: int) -> list[tuple[int, dict]]:
        """[(global position, example)]: the next micro-batch of this process's stream."""
        start = step * self.global_batch + (accum_index * self.world + rank) * self.micro
        return [(start + i, self._next()) for i in range(self.micro)]

    def epoch(self, step: int) -> float:
        return float(self.passes)


def masked_batch(dataset, items, tokenizer, masking, mlm_probability: float, seed: int, step: int):
    """Collate examples and mask each row with its own generator (seed, step, global position).

    `items` are (global position, example index into `dataset`) -- or (global position, example)
    pairs when streaming, with `dataset` None."""
    rows = [dataset[i] for _, i in items] if dataset is not None else [example for _, example in items]
    batch = collate(rows, pad_token_id=tokenizer.pad_token_id)
    vocab_size, special_ids = len(tokenizer), tokenizer.all_special_ids
    inputs, labels = [], []
    for row, (g, _) in enumerate(items):
        word_starts = batch["word_starts"][row : row + 1] if "word_starts" in batch else None
        x, y = mask_tokens(
            batch["input_ids"][row : row + 1],
            special_tokens_mask=batch["special_tokens_mask"][row : row + 1],
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=vocab_size,
            args=masking,
            mlm_probability=mlm_probability,
            generator=make_generator(seed, step, g),
            word_starts=word_starts,
            special_token_ids=special_ids,  # random replacements are never [UNK], [CLS], ...
        )
        inputs.append(x)
        labels.append(y)
    return {
        "input_ids": torch.cat(inputs),  # (B, T)
        "attention_mask": batch["attention_mask"],  # (B, T)
        "position_ids": batch["position_ids"],  # (B, T), restarting per packed document
        "labels": torch.cat(labels),  # (B, T), -100 where not masked
    }


# ----------------------------------------------------------------------------------------------
# Evaluation on fixed masks
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, accelerator, eval_batches: list[dict]) -> dict:
    """MLM loss, masked-token accuracy and perplexity over this process's share of the fixed eval
    batches, summed over processes (each batch belongs to exactly one process: no duplicates)."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, correct, count
    for batch in eval_batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        out = model(**batch)
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
# The run
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
    return model


def pretrain(recipe) -> dict:
    """Run (or resume) pretraining as the recipe says; returns the final metrics."""
    train, out_dir = recipe.train, Path(recipe.output_dir)
    report_to = [t for t in recipe.tracking.report_to if _tracker_available(t)]
    accelerator = Accelerator(
        mixed_precision=train.mixed_precision,
        log_with=report_to or None,
        project_dir=str(out_dir),
    )
    main = accelerator.is_main_process
    set_seed(recipe.seed)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out_dir / "resolved_recipe.yaml")

    # --- tokenizer and data (the main process builds caches first; the others then read them) ---
    world, rank = accelerator.num_processes, accelerator.process_index
    streaming = recipe.data.streaming
    with accelerator.main_process_first():
        train_texts, val_texts = load_text_datasets(recipe.data, seed=recipe.seed)
        tokenizer = get_tokenizer(recipe.tokenizer, lambda: iter_texts(train_texts), out_dir)
        whole_word = recipe.masking.whole_word
        if streaming:  # each process reads and tokenizes only its own share of the stream
            train_texts = shard_for_process(train_texts, rank, world)
        train_set = tokenize_dataset(train_texts, tokenizer, recipe.data, whole_word=whole_word)
        val_set = tokenize_dataset(val_texts, tokenizer, recipe.data, whole_word=whole_word)
    if streaming and train.num_epochs:
        raise TrainingError("train.num_epochs needs a known dataset length; with data.streaming=true "
                            "set train.max_steps, train.max_tokens or train.max_minutes")

    set_seed(recipe.seed)  # again: tokenizer training and data loading above may consume random numbers
    model = build_model(recipe, tokenizer)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    mlm_probability = recipe.masking.mlm_probability or default_mlm_probability(recipe.model.preset)
    optimizer = build_optimizer(model, train)
    if train.compile:
        model = torch.compile(model, dynamic=True)
    model, optimizer = accelerator.prepare(model, optimizer)

    accum = train.gradient_accumulation_steps

    # --- resume ---
    step, tokens, elapsed, skipped = 0, 0, 0.0, 0
    resume_from = resolve_resume(train.resume, out_dir)
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        step, tokens, elapsed, skipped = state["step"], state["tokens"], state["elapsed"], state.get("skipped", 0)
        accelerator.print(f"resumed from {resume_from} at step {step}")

    if streaming:
        sampler = StreamSampler(train_set, train.batch_size, world, accum, rank, step)
        train_source = None  # micro_batch() yields the examples themselves
    else:
        sampler = StepSampler(len(train_set), recipe.seed, train.batch_size, world, accum)
        train_source = train_set
    max_steps = train.max_steps
    if train.num_epochs:
        epoch_steps = math.ceil(train.num_epochs * len(train_set) / sampler.global_batch)
        max_steps = min(max_steps, epoch_steps) if max_steps else epoch_steps
    budget = Budget(train, total_steps=max_steps)

    # Fixed evaluation masks: built once, the same positions at every evaluation and on resume.
    limit = None if recipe.eval.max_batches is None else recipe.eval.max_batches * recipe.eval.batch_size
    if streaming:  # the first `limit` validation rows, materialized once
        val_set = list(val_set.take(limit)) if limit is not None else list(val_set)
    eval_rows = len(val_set) if limit is None else min(len(val_set), limit)
    eval_batches = []
    for start in range(0, eval_rows, recipe.eval.batch_size):
        items = [(g, g) for g in range(start, min(start + recipe.eval.batch_size, eval_rows))]
        if (start // recipe.eval.batch_size) % world == rank:
            eval_batches.append(masked_batch(val_set, items, tokenizer, recipe.masking, mlm_probability,
                                             recipe.seed + EVAL_SEED_OFFSET, 0))
    log = MetricsLog(out_dir / "metrics.jsonl", main, step if resume_from else None)
    if report_to:
        accelerator.init_trackers(recipe.tracking.project_name, config=_flat(to_dict(recipe)))

    unwrapped = accelerator.unwrap_model(model)
    flops_per_token = mlm_flops_per_token(unwrapped.config, recipe.data.block_size, mlm_probability)
    peak = peak_flops(accelerator.device, recipe.tracking.peak_tflops)
    throughput = Throughput()
    throughput.last_tokens = tokens
    interrupted = {"flag": False}
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.update(flag=True))

    def checkpoint_state():
        return {"step": step, "tokens": tokens, "elapsed": elapsed, "skipped": skipped, "epoch": sampler.epoch(step)}

    progress = tqdm(total=max_steps, initial=step, disable=not main, desc="pretrain", dynamic_ncols=True)
    window_loss, window_steps, last_eval = 0.0, 0, {}
    model.train()
    start_time = time.perf_counter() - elapsed
    try:
        while not _done(budget, step, tokens, elapsed, accelerator):
            # ---- one optimizer step over the global batch ----
            lr = budget.lr(step, tokens, elapsed)
            set_lr(optimizer, lr)
            micro_batches = [
                masked_batch(train_source, sampler.micro_batch(step, a, rank), tokenizer, recipe.masking,
                             mlm_probability, recipe.seed, step)
                for a in range(accum)
            ]
            counts = torch.tensor([(mb["labels"] != -100).sum() for mb in micro_batches], dtype=torch.float64)
            local_tokens = sum(int(mb["attention_mask"].sum()) for mb in micro_batches)
            stats = accelerator.reduce(
                torch.tensor([counts.sum().item(), local_tokens], dtype=torch.float64, device=accelerator.device),
                reduction="sum",
            )
            global_masked, global_tokens = stats[0].clamp(min=1), int(stats[1].item())
            step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            for a, mb in enumerate(micro_batches):
                mb = {k: v.to(accelerator.device) for k, v in mb.items()}
                sync = a == len(micro_batches) - 1
                with accelerator.no_sync(model) if not sync else nullcontext():
                    out = model(**mb)
                    # Sum of this micro-batch's token losses over the global masked count; x world
                    # because DDP averages gradients over processes.
                    weight = counts[a].item() / global_masked.item()
                    accelerator.backward(out.loss * weight * world)
                step_loss += out.loss.detach().double() * weight
            step_loss = accelerator.reduce(step_loss, reduction="sum")
            loss_value = step_loss.item()

            if not math.isfinite(loss_value):
                optimizer.zero_grad(set_to_none=True)
                if train.on_nan == "stop":
                    raise TrainingError(
                        f"loss is {loss_value} at step {step + 1}; stopping. The last good checkpoint is kept in "
                        f"{out_dir / 'checkpoints'}. Lower train.lr, enable clipping, or set train.on_nan=skip."
                    )
                skipped += 1
                accelerator.print(f"warning: non-finite loss at step {step + 1}; update skipped ({skipped} so far)")
            else:
                grad_norm = None
                if train.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), train.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                window_loss += loss_value
                window_steps += 1
            step += 1
            tokens += global_tokens
            elapsed = time.perf_counter() - start_time
            progress.update(1)

            # ---- logging, evaluation, checkpoints ----
            if step % train.log_every_steps == 0 and window_steps:
                rate = throughput.update(tokens)
                record = {"step": step, "loss": window_loss / window_steps, "lr": lr, "tokens": tokens,
                          "tokens_per_sec": rate, "epoch": round(sampler.epoch(step), 4), "elapsed_sec": round(elapsed, 2)}
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                if peak:
                    record["mfu"] = rate * flops_per_token / peak
                if skipped:
                    record["skipped_steps"] = skipped
                log.write(record)
                accelerator.log(record, step=step)
                progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}")
                window_loss, window_steps = 0.0, 0
            if train.eval_every_steps and step % train.eval_every_steps == 0:
                last_eval = evaluate(model, accelerator, eval_batches)
                log.write({"step": step, **last_eval})
                accelerator.log(last_eval, step=step)
            if train.save_every_steps and step % train.save_every_steps == 0:
                saved = save_checkpoint(accelerator, out_dir, step, checkpoint_state(), train.keep_last)
                if recipe.hub.push_checkpoints and main:
                    push_checkpoint_to_hub(accelerator.unwrap_model(model), tokenizer, saved, recipe)
            if interrupted["flag"]:
                save_checkpoint(accelerator, out_dir, step, checkpoint_state(), train.keep_last)
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        progress.close()
        accelerator.print(f"interrupted at step {step}: checkpoint saved in {out_dir / 'checkpoints'}; "
                          "run the same command again to resume")
        raise
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    progress.close()

    # ---- the end: final evaluation, checkpoint, self-contained model folder ----
    final_eval = evaluate(model, accelerator, eval_batches)
    log.write({"step": step, **final_eval})
    save_checkpoint(accelerator, out_dir, step, checkpoint_state(), train.keep_last)
    results = {"step": step, "tokens": tokens, "train_seconds": round(elapsed, 2), "skipped_steps": skipped,
               "final_train_loss": loss_value, **final_eval}
    if main:
        final_dir = out_dir / "final"
        export_final(accelerator.unwrap_model(model), tokenizer, final_dir, recipe, results)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        if recipe.tracking.plot:
            plot_curves(out_dir / "metrics.jsonl", out_dir / "loss_curve.png", f"pretraining: {recipe.model.preset}")
        accelerator.print(f"done: eval loss {final_eval['eval_loss']:.4f}, accuracy {final_eval['eval_accuracy']:.4f}; "
                          f"model in {final_dir}")
    accelerator.wait_for_everyone()
    if recipe.hub.push_to_hub and main:
        from ..hub.push import push_folder

        push_folder(out_dir / "final", recipe.hub.repo_id, private=recipe.hub.private,
                    revision=recipe.hub.revision, commit_message=recipe.hub.commit_message)
    accelerator.end_training()
    return results


def export_final(model, tokenizer, final_dir: Path, recipe, results: dict) -> None:
    """A self-contained Hugging Face folder: weights, config with auto_map, code, tokenizer, card."""
    from ..hub.model_card import write_model_card

    model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    write_model_card(final_dir, config=model.config.to_dict(), recipe=to_dict(recipe), results=results,
                     pipeline_tag="fill-mask", repo_id=recipe.hub.repo_id)


def push_checkpoint_to_hub(model, tokenizer, checkpoint: Path, recipe) -> None:
    """Push a loadable copy of this checkpoint (weights, code, tokenizer) to `hub.checkpoint_branch`."""
    from ..hub.push import push_checkpoint

    folder = checkpoint / "hf"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    push_checkpoint(folder, recipe.hub.repo_id, recipe.hub.checkpoint_branch, private=recipe.hub.private)


def _done(budget: Budget, step: int, tokens: int, elapsed: float, accelerator) -> bool:
    done = budget.progress(step, tokens, elapsed) >= 1.0
    if budget.max_seconds:  # wall clocks differ between processes: all stop when any one's budget is spent
        flag = torch.tensor([float(done)], device=accelerator.device)
        done = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return done


def _tracker_available(name: str) -> bool:
    import importlib.util

    module = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}[name]
    return importlib.util.find_spec(module) is not None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
