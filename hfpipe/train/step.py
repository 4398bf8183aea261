"""THE training step: one optimizer step over the global batch, for pretraining, fine-tuning and the
benchmarks alike (a figure a benchmark measures is a figure of the real loop).

    result = train_step(model, optimizer, accelerator, micro_batches, state,
                        max_grad_norm=train.max_grad_norm, on_nan=train.on_nan, checkpoints=out_dir / "checkpoints")

It owns gradient accumulation, the loss normalisation over the whole global batch, the NaN policy,
clipping, the optimizer step and the global token count. The loop owns what comes before (the
learning rate, the batches) and after (logs, evaluation, checkpoints). This is the only place under
hfpipe/ that runs a backward pass.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


class TrainingError(RuntimeError):
    """The run cannot go on, and the message says what to change (the CLI prints it, no traceback)."""


@dataclass
class LoopState:
    """Where a loop stands; saved in every checkpoint's trainer_state.json so a resume continues it."""

    step: int = 0
    """Optimizer steps taken (skipped ones included)."""
    tokens: int = 0
    """Real (non-padding) input tokens trained on, summed over all processes."""
    elapsed: float = 0.0
    """Wall-clock seconds of training; a resumed run continues this clock."""
    skipped: int = 0
    """Steps whose update was dropped because the loss was not finite (train.on_nan=skip)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "LoopState":
        """From trainer_state.json; fine-tuning checkpoints older than `tokens`/`elapsed` start them at 0."""
        return cls(step=saved["step"], tokens=saved.get("tokens", 0), elapsed=saved.get("elapsed", 0.0),
                   skipped=saved.get("skipped", 0))


@dataclass
class StepResult:
    loss: float
    """The global batch's loss: the mean over every counted target of every process (NaN/inf if skipped)."""
    tokens: int
    """Real input tokens in the global batch (all processes)."""
    targets: int
    """What the loss averaged over in the global batch: masked tokens, labelled tokens or rows."""
    grad_norm: torch.Tensor | None
    """The gradient norm before clipping (None without clipping or when skipped). A 0-d tensor: read it
    only when logging, so the step does not wait for the device."""
    skipped: bool


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    """What a micro-batch's loss is averaged over: labelled tokens (MLM, NER) or rows (everything else)."""
    labels = batch.get("labels")
    if labels is not None and labels.dim() == 2 and labels.dtype == torch.long:
        return int((labels != -100).sum())
    return int(batch["input_ids"].shape[0])


def train_step(
    model,
    optimizer: torch.optim.Optimizer,
    accelerator,
    micro_batches: list[dict[str, torch.Tensor]],
    state: LoopState,
    *,
    max_grad_norm: float | None,
    on_nan: str,
    checkpoints: Path,
    loss_fn: Callable | None = None,
) -> StepResult:
    """One optimizer step over this process's `micro_batches` (all processes call it together);
    advances `state` (step, tokens, skipped).

    `loss_fn(model, batch) -> mean loss over the batch's targets` replaces `model(**batch).loss`
    (the benchmark's full-logits variant computes BERT's loss through this same step)."""
    world, device, accum = accelerator.num_processes, accelerator.device, len(micro_batches)
    if accum != accelerator.gradient_accumulation_steps:
        raise ValueError(f"train_step got {accum} micro-batches but the Accelerator accumulates "
                         f"{accelerator.gradient_accumulation_steps}: make it with gradient_accumulation_steps={accum}")

    # Every process needs the global counts before its first backward: they set the weights.
    counts = [count_targets(mb) for mb in micro_batches]
    local = [sum(counts), sum(int(mb["attention_mask"].sum()) for mb in micro_batches)]
    totals = accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=device), reduction="sum")
    global_targets, global_tokens = int(totals[0].item()), int(totals[1].item())

    step_loss = torch.zeros((), dtype=torch.float64, device=device)
    for a, mb in enumerate(micro_batches):
        mb = {k: v.to(device, non_blocking=True) for k, v in mb.items()}
        # accelerate's protocol: gradients sync (DDP all-reduce, FSDP reduce-scatter, DeepSpeed's step) only
        # on the last micro-batch, so every backend syncs and steps exactly once per optimizer step.
        with accelerator.accumulate(model):
            loss = model(**mb).loss if loss_fn is None else loss_fn(model, mb)
            # Each target counts once in the whole global batch (not a mean of micro-batch means), so
            # 2 processes x batch b give 1 process x batch 2b's gradient. x world undoes the backends'
            # average over processes; x accum undoes accelerate's (and DeepSpeed's) division by accum.
            weight = counts[a] / max(global_targets, 1)
            accelerator.backward(loss * (weight * world * accum))
        step_loss += loss.detach().double() * weight
    loss_value = accelerator.reduce(step_loss, reduction="sum").item()  # the same on every process

    grad_norm, skipped = None, not math.isfinite(loss_value)
    if skipped:
        optimizer.zero_grad(set_to_none=True)  # no update from a non-finite loss
        if on_nan == "stop":
            raise TrainingError(
                f"loss is {loss_value} at step {state.step + 1}; stopping. The last good checkpoint is kept in "
                f"{checkpoints}. Lower train.lr, enable clipping, or set train.on_nan=skip."
            )
        state.skipped += 1
        accelerator.print(f"warning: non-finite loss at step {state.step + 1}; update skipped ({state.skipped} so far)")
    else:
        if max_grad_norm:  # bounds the update when a batch's gradient spikes (DeepSpeed: clipped in its
            # step, configured by train/distributed.py; this returns the norm it measured)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()  # a no-op under DeepSpeed, whose engine stepped in the last backward
        optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.tokens += global_tokens
    return StepResult(loss=loss_value, tokens=global_tokens, targets=global_targets, grad_norm=grad_norm,
                      skipped=skipped)
