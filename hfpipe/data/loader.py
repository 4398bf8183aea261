"""Which examples make up each micro-batch, and how they become tensors, for both training loops.

The rule both loops keep: a step's global batch is a pure function of (seed, optimizer step), ordered
(accumulation step, process, row); each process takes its own slice. So 1 process x batch 2b and
2 processes x batch b see the same examples, and a resumed run sees what the uninterrupted one saw.

Pretraining (rows packed by data/packing.py, masked by data/masking.py):
    StepSampler / StreamSampler  -> example indices of every micro-batch
    masked_batch                 -> collated, each row masked with its own (seed, step, position) generator
    fixed_eval_batches           -> the validation rows masked once, for the whole run
Fine-tuning (features from tasks/):
    epoch_batches -> micro_slices -> pad_batch
"""

import numpy as np
import torch
from datasets import IterableDataset

from .masking import make_generator, mask_tokens
from .packing import collate
from .sources import DataSourceError

EVAL_SEED_OFFSET = 1_000_003  # eval masks use their own stream, fixed for the whole run
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # fine-tuning features the model reads

# ----------------------------------------------------------------------------------------------
# Pretraining
# ----------------------------------------------------------------------------------------------


class StepSampler:
    """Example indices of every micro-batch, as a pure function of (seed, step).

    Global position g = step * global_batch + j, where j orders the global batch as
    (accumulation step, process, row). Epoch e = g // N uses its own seeded permutation."""

    def __init__(self, num_examples: int, seed: int, micro_batch: int, world: int, accum: int):
        if num_examples == 0:
            raise DataSourceError("the tokenized training set is empty: check data.source and data.block_size")
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
                raise DataSourceError("this process's shard of the streamed training data is empty") from None

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


def fixed_eval_batches(val_set, tokenizer, *, masking, mlm_probability: float, seed: int, batch_size: int,
                       max_batches: int | None, world: int = 1, rank: int = 0) -> list[dict]:
    """This process's share of the validation batches, masked once with the run's eval seed: the same
    positions at every evaluation, on resume and in any number of processes (batch i is process
    i % world's, so each is evaluated exactly once). `max_batches` None takes every row."""
    limit = None if max_batches is None else max_batches * batch_size
    if isinstance(val_set, IterableDataset):  # streamed: the first `limit` rows, materialized once
        val_set = list(val_set.take(limit)) if limit is not None else list(val_set)
    rows = len(val_set) if limit is None else min(len(val_set), limit)
    batches = []
    for start in range(0, rows, batch_size):
        if (start // batch_size) % world == rank:
            items = [(g, g) for g in range(start, min(start + batch_size, rows))]
            batches.append(masked_batch(val_set, items, tokenizer, masking, mlm_probability,
                                        seed + EVAL_SEED_OFFSET, 0))
    return batches


# ----------------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------------


def epoch_batches(
    lengths: list[int], global_batch: int, seed: int, epoch: int, group_by_length: bool, min_size: int = 1
) -> list[list[int]]:
    """The epoch's global batches as lists of example indices: shuffled with (seed, epoch); with
    length grouping, sorted by length inside windows of 50 batches, then the batch order shuffled
    (so padding is small but every batch is still random)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group_by_length:
        window = 50 * global_batch
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s : s + window], key=lambda i: -lengths[i])]
    batches = [order[s : s + global_batch] for s in range(0, len(order), global_batch)]
    if batches and len(batches[-1]) < min_size:  # too small to give every micro-batch a row
        batches.pop()
    if group_by_length:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def micro_slices(batch: list[int], world: int, rank: int, accum: int) -> list[list[int]]:
    """This process's micro-batches of a global batch, ordered (accumulation step, process)."""
    parts = np.array_split(np.array(batch, dtype=np.int64), world * accum)
    return [parts[a * world + rank].tolist() for a in range(accum)]


def pad_batch(rows: list[dict], tokenizer) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest row of this micro-batch."""
    out: dict[str, torch.Tensor] = {}
    T = max(len(r["input_ids"]) for r in rows)
    for key in MODEL_INPUTS:
        if key not in rows[0]:
            continue
        pad = tokenizer.pad_token_id if key == "input_ids" else 0
        out[key] = torch.tensor([r[key] + [pad] * (T - len(r[key])) for r in rows])  # (B, T)
    if "labels" in rows[0]:
        first = rows[0]["labels"]
        if isinstance(first, list):  # token classification: one label per token, -100 on padding
            out["labels"] = torch.tensor([r["labels"] + [-100] * (T - len(r["labels"])) for r in rows])  # (B, T)
        else:
            out["labels"] = torch.tensor([r["labels"] for r in rows])  # (B,)
    for key in ("start_positions", "end_positions"):
        if key in rows[0]:
            out[key] = torch.tensor([r[key] for r in rows])  # (B,)
    return out
