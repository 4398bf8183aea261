"""What `hfpipe ablate` measures on a trained model, beyond what pretraining logs.

    from hfpipe.teach.ablate.probes import mlm_metrics, extrapolation, batch_statistics, divergence
    mlm_metrics(model, batches, trained_length=64)   # {"loss", "accuracy", "tokens", "loss_beyond", ...}

Every number is computed on fixed-mask validation batches that are the same for every variant and
every seed (runs.eval_sets), so two cells differ only by their model:

  mlm_metrics       MLM loss and masked-token accuracy; with `trained_length`, also the loss on the
                    masked tokens that sit at positions the model never saw in training.
  extrapolation     mlm_metrics at longer rows (positions suite). A learned absolute table has no row
                    past its length: the length is refused, with the reason, instead of crashing.
  batch_statistics  the same rows scored three ways (norms suite): with the running statistics that
                    inference uses, and with the batch's own statistics at 64 rows and at 1 row per
                    batch -- what BatchNorm's dependence on the batch costs. LayerNorm and RMSNorm have
                    no batch statistics, so their three numbers agree.
  divergence        from the training loss logged at every step (norm-position suite): the first step
                    whose loss was not finite (train.on_nan=skip dropped its update), or climbed back
                    to where it started -- the untrained model's loss -- after the first 10% of steps.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.nn import functional as F

from ...model.modeling_hfpipe import LayerNorm, MaskedBatchNorm, RMSNorm


@torch.no_grad()
def mlm_metrics(model, batches: list[dict], trained_length: int | None = None) -> dict:
    """Masked-token loss and accuracy over `batches`, token-weighted. The model's modes are left as they
    are (batch_statistics puts only its norms in training mode); it needs sparse prediction on."""
    loss_sum = correct = count = beyond_sum = beyond = 0.0
    for batch in batches:
        selected = batch["labels"] != -100  # (B, T)
        if not selected.any():
            continue  # a single row may have no masked token
        out = model(**batch)
        labels = batch["labels"][selected]  # (B, T) -> (N,)
        losses = F.cross_entropy(out.logits.float(), labels, reduction="none")  # (N, V) -> (N,)
        loss_sum += losses.sum().item()
        correct += (out.logits.argmax(-1) == labels).sum().item()
        count += labels.numel()
        if trained_length is not None:
            past = batch["position_ids"][selected] >= trained_length  # (B, T) -> (N,)
            beyond_sum += losses[past].sum().item()
            beyond += past.sum().item()
    metrics = {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "tokens": int(count)}
    if trained_length is not None:
        metrics["loss_beyond"] = beyond_sum / beyond if beyond else None
        metrics["share_beyond"] = beyond / max(count, 1)
    return metrics


def refusal(config, length: int) -> str | None:
    """Why `config` cannot run rows of `length` tokens (None when it can)."""
    rows = config.max_position_embeddings
    if config.position_embedding_type == "absolute" and length > rows:
        return f"cannot extrapolate: the learned table has {rows} rows"
    return None


def extrapolation(model, eval_sets: dict[int, list[dict]], trained_length: int) -> dict[int, dict]:
    """{length: mlm_metrics or {"refused": reason}} for every evaluation length longer than the trained one."""
    results = {}
    for length, batches in sorted(eval_sets.items()):
        if length <= trained_length:
            continue
        reason = refusal(model.config, length)
        results[length] = {"refused": reason} if reason else mlm_metrics(model, batches, trained_length)
    return results


def batch_statistics(model, batches: list[dict]) -> dict[str, float]:
    """The same rows scored with running statistics (inference), and with batch statistics at the batches'
    own size and at one row per batch. Dropout stays off throughout; the model is not changed."""
    scored = copy.deepcopy(model).eval()
    results = {"running": mlm_metrics(scored, batches)["loss"]}
    for module in scored.modules():
        if isinstance(module, (LayerNorm, RMSNorm, MaskedBatchNorm)):
            module.train()  # batch statistics (BatchNorm); LayerNorm and RMSNorm have only one behaviour
    results["batch"] = mlm_metrics(scored, batches)["loss"]
    rows = [{k: v[i : i + 1] for k, v in batch.items()} for batch in batches for i in range(len(batch["labels"]))]
    results["single_row"] = mlm_metrics(scored, rows)["loss"]  # (B, T) -> B x (1, T)
    return results


def divergence(curve: list[list[float]], last_step: int) -> int | None:
    """The step where a run diverged, from its training loss [[step, loss]] logged at every step: the first
    step with no finite loss (skipped: no entry), or, after the first 10% of steps, with a loss at or above
    the first step's (a model that knows nothing predicts uniformly: back to the start). None if neither."""
    losses = {int(step): loss for step, loss in curve if math.isfinite(loss)}
    start = losses.get(1, math.inf)
    for step in range(1, last_step + 1):
        if step not in losses or (step > max(1, last_step // 10) and losses[step] >= start):
            return step
    return None


def peak_loss(curve: list[list[float]], last_step: int) -> float | None:
    """The highest training loss after the first 10% of steps (the warmup and the first drop)."""
    late = [loss for step, loss in curve if step > max(1, last_step // 10) and math.isfinite(loss)]
    return max(late) if late else None
