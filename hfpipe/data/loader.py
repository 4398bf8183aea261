"""Which examples make up each micro-batch, and how they become tensors, for both training loops.

The rule both loops keep: a step's global batch is a pure function of (seed, optimizer step), ordered
(accumulation step, process, row); each process takes its own slice. So 1 process x batch 2b and
2 processes x batch b see the same examples, and a resumed run sees what the uninterrupted one saw.

Pretraining (rows packed by data/packing.py, masked by data/masking.py):
    StepSampler / StreamSampler  -> example indices (or examples) of every micro-batch
    masked_batch                 -> one batched read, vectorised collation, every row masked with its own
                                    (seed, step, global position) key, the whole batch at once
    pretrain_steps + step_loader -> each optimizer step's micro-batches, built ahead of the loop in
                                    DataLoader worker processes (data.num_workers); the same tensors for
                                    any number of workers
    fixed_eval_batches           -> the validation rows masked once, for the whole run

    steps = pretrain_steps(train_source, sampler, tokenizer, masking, mlm_probability, seed, rank, accum)
    batches = step_loader(steps, state.step, num_workers=2, pin_memory=device.type == "cuda")
    micro_batches = next(batches)        # [accum dicts of (B, T) tensors]; batches.epoch for logs
Fine-tuning (features from tasks/):
    epoch_batches -> micro_slices -> pad_batch
"""

import itertools
import logging
import signal
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch
import torch.utils.data
from datasets import Dataset, IterableDataset

from ..config import MaskingArgs
from .masking import mask_tokens, row_keys
from .packing import PAD_VALUES, collate_columns
from .sources import DataSourceError

logger = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_003  # eval masks use their own stream, fixed for the whole run
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # fine-tuning features the model reads
ROW_COLUMNS = ("input_ids", *PAD_VALUES)  # what masked_batch reads of a tokenized row

# ----------------------------------------------------------------------------------------------
# Pretraining: which examples
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
        positions = torch.arange(start, start + self.micro)
        epochs = positions // self.n
        indices = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():  # one epoch, or two where the micro-batch straddles them
            here = epochs == epoch
            indices[here] = self._perm(epoch)[positions[here] % self.n]
        return list(zip(positions.tolist(), indices.tolist()))

    def epoch(self, step: int) -> float:
        return step * self.global_batch / self.n


class StreamSampler:
    """`data.streaming: true`: each process reads its own shard of the stream in order, passing over
    it again when it ends. Step s takes the next micro-batches; resuming at step s replays the stream
    past the examples already consumed (exact, and O(consumed) reads -- the price of not indexing).

    Stateful, so micro-batches must be asked for in order, starting at `start_step`. The stream is
    opened, and the replay done, at the first request: in the process that reads it (a DataLoader
    worker when data.num_workers > 0)."""

    def __init__(self, shard, micro_batch: int, world: int, accum: int, rank: int, start_step: int):
        self.shard, self.micro, self.world, self.accum, self.rank = shard, micro_batch, world, accum, rank
        self.global_batch = micro_batch * world * accum
        self.start_step = start_step
        self.passes = 0
        self._iter = None
        self._next_request = (start_step, 0)

    def _next(self) -> dict:
        if self._iter is None:
            self._iter = iter(self.shard)
            for _ in range(self.start_step * self.micro * self.accum):
                self._next()
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
        if (step, accum_index) != self._next_request:
            raise ValueError(f"a stream is read in order: expected micro-batch {self._next_request} (step, "
                             f"accumulation index), got {(step, accum_index)}")
        self._next_request = (step, accum_index + 1) if accum_index + 1 < self.accum else (step + 1, 0)
        start = step * self.global_batch + (accum_index * self.world + rank) * self.micro
        return [(start + i, self._next()) for i in range(self.micro)]

    def epoch(self, step: int) -> float:
        return float(self.passes)


# ----------------------------------------------------------------------------------------------
# Pretraining: examples -> masked tensors
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenIds:
    """What masking needs of a tokenizer, read once (len(tokenizer) and all_special_ids are not free,
    and a worker process need not carry the tokenizer)."""

    pad_token_id: int
    mask_token_id: int | None
    vocab_size: int
    special_ids: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer) -> "TokenIds":
        if isinstance(tokenizer, TokenIds):
            return tokenizer
        return cls(tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer), tuple(tokenizer.all_special_ids))


_arrow_view: tuple = (lambda: None, None)  # (weak reference to a Dataset, its arrow-formatted view)


def _as_arrow(dataset: Dataset) -> Dataset:
    """`dataset.with_format("arrow")` (a gather then returns one pyarrow Table), kept for the last dataset
    seen: making the view costs about as much as reading a micro-batch."""
    global _arrow_view
    if dataset.format["type"] == "arrow":
        return dataset
    if _arrow_view[0]() is not dataset:
        _arrow_view = (weakref.ref(dataset), dataset.with_format("arrow"))
    return _arrow_view[1]


def read_rows(dataset, items) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The rows of `items` as flat columns and row lengths (what `collate_columns` takes).

    `items` are (global position, example index into `dataset`) -- or (global position, example)
    pairs with `dataset` None. A `datasets.Dataset` is read in one gather of its arrow table."""
    if isinstance(dataset, Dataset):
        table = _as_arrow(dataset)[[i for _, i in items]]
        names = [name for name in ROW_COLUMNS if name in table.column_names]
        lists = {name: table.column(name).combine_chunks() for name in names}
        lengths = pc.list_value_length(lists["input_ids"]).to_numpy().astype(np.int64)
        return {name: lists[name].flatten().to_numpy() for name in names}, lengths
    rows = [dataset[i] for _, i in items] if dataset is not None else [example for _, example in items]
    names = [name for name in ROW_COLUMNS if name in rows[0]]
    lengths = np.fromiter((len(r["input_ids"]) for r in rows), dtype=np.int64, count=len(rows))
    return {name: np.concatenate([np.asarray(r[name], dtype=np.int64) for r in rows]) for name in names}, lengths


def masked_batch(dataset, items, tokenizer, masking: MaskingArgs, mlm_probability: float, seed: int, step: int):
    """Read, collate and mask one micro-batch: row r is masked with the key of (seed, step, its global
    position), so its mask does not depend on the other rows, the micro-batch split, the number of
    processes or workers (data/masking.py, "Randomness").

    `items` are (global position, example index into `dataset`) -- or (global position, example)
    pairs when streaming, with `dataset` None. `tokenizer` may be a `TokenIds`."""
    ids = TokenIds.of(tokenizer)
    columns, lengths = read_rows(dataset, items)
    batch = collate_columns(columns, lengths, ids.pad_token_id)
    inputs, labels = mask_tokens(
        batch["input_ids"],
        special_tokens_mask=batch["special_tokens_mask"],
        mask_token_id=ids.mask_token_id,
        vocab_size=ids.vocab_size,
        args=masking,
        mlm_probability=mlm_probability,
        keys=row_keys(seed, step, [g for g, _ in items]),  # (B, 2)
        word_starts=batch.get("word_starts") if masking.whole_word else None,
        special_token_ids=ids.special_ids,  # random replacements are never [UNK], [CLS], ...
    )
    return {
        "input_ids": inputs,  # (B, T)
        "attention_mask": batch["attention_mask"],  # (B, T)
        "position_ids": batch["position_ids"],  # (B, T), restarting per packed document
        "labels": labels,  # (B, T), -100 where not masked
    }


def fixed_eval_batches(val_set, tokenizer, *, masking, mlm_probability: float, seed: int, batch_size: int,
                       max_batches: int | None, world: int = 1, rank: int = 0) -> list[dict]:
    """This process's share of the validation batches, masked once with the run's eval seed: the same
    positions at every evaluation, on resume and in any number of processes (batch i is process
    i % world's, so each is evaluated exactly once). `max_batches` None takes every row."""
    limit = None if max_batches is None else max_batches * batch_size
    if isinstance(val_set, IterableDataset):  # streamed: the first `limit` rows, materialized once
        val_set = list(val_set.take(limit)) if limit is not None else list(val_set)
    elif isinstance(val_set, Dataset):
        val_set = val_set.with_format("arrow")  # a gather returns one pyarrow Table
    rows = len(val_set) if limit is None else min(len(val_set), limit)
    ids = TokenIds.of(tokenizer)
    batches = []
    for start in range(0, rows, batch_size):
        if (start // batch_size) % world == rank:
            items = [(g, g) for g in range(start, min(start + batch_size, rows))]
            batches.append(masked_batch(val_set, items, ids, masking, mlm_probability, seed + EVAL_SEED_OFFSET, 0))
    return batches


# ----------------------------------------------------------------------------------------------
# Pretraining: every step's micro-batches, prepared ahead in DataLoader workers
# ----------------------------------------------------------------------------------------------


class _StepMaker:
    """What both step datasets share: step -> this process's `accum` masked micro-batches."""

    def __init__(self, source, sampler, tokenizer, masking: MaskingArgs, mlm_probability: float, seed: int,
                 rank: int, accum: int):
        if isinstance(source, Dataset):
            source = source.with_format("arrow")  # a gather returns one pyarrow Table
        self.source, self.sampler, self.ids = source, sampler, TokenIds.of(tokenizer)
        self.masking, self.mlm_probability, self.seed = masking, mlm_probability, seed
        self.rank, self.accum = rank, accum

    def step(self, step: int) -> dict:
        in_worker = torch.utils.data.get_worker_info() is not None
        micro_batches = []
        for a in range(self.accum):
            batch = masked_batch(self.source, self.sampler.micro_batch(step, a, self.rank), self.ids, self.masking,
                                 self.mlm_probability, self.seed, step)
            micro_batches.append(_ByValue(batch) if in_worker else batch)
        return {"step": step, "epoch": self.sampler.epoch(step + 1), "micro_batches": micro_batches}


class _ByValue:
    """A worker's micro-batch, sent to the training process as one int64 block through the pipe.

    Tensors would each travel through a shared-memory file whose descriptor the training process
    fetches over a socket: about 0.5 ms per tensor on a 2-core machine, paid by the process that
    receives (the training loop, or its pin-memory thread). One numpy block pickles by value and
    costs a copy. Unpickled, it is the dict of (B, T) tensors again (views of the block)."""

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.names, self.block = list(batch), torch.stack(list(batch.values())).numpy()  # (K, B, T)

    def __reduce__(self):
        return _from_block, (self.names, self.block)


def _from_block(names: list[str], block) -> dict[str, torch.Tensor]:
    return dict(zip(names, torch.from_numpy(block).unbind(0)))  # K x (B, T)


class PretrainSteps(_StepMaker, torch.utils.data.Dataset):
    """Map-style: item `step` is this process's micro-batches of that optimizer step, a pure function of
    (seed, step, rank, world, accum) -- so any worker may build any step."""

    def __getitem__(self, step: int) -> dict:
        return self.step(step)


class PretrainStream(_StepMaker, torch.utils.data.IterableDataset):
    """Streaming (`StreamSampler`): steps start_step, start_step + 1, ... in order, from one reader.

    At most one worker: the stream is a sequence only one reader can walk. N workers would each need
    the whole stream (reading it N times, skipping the others' examples) or a shard of it each (and
    then which examples a step sees would depend on the number of workers). One worker still builds
    the batches ahead of the loop, overlapped with compute."""

    start_step = 0  # set by step_loader

    def __iter__(self) -> Iterator[dict]:
        if self.start_step != self.sampler.start_step:
            raise ValueError(f"the stream sampler starts at step {self.sampler.start_step}, the loader at "
                             f"{self.start_step}: make both from the same step")
        for step in itertools.count(self.start_step):
            yield self.step(step)


def pretrain_steps(source, sampler, tokenizer, masking: MaskingArgs, mlm_probability: float, seed: int,
                   rank: int, accum: int) -> PretrainSteps | PretrainStream:
    """The step dataset for `step_loader`: `PretrainSteps` over `source` indexed by a `StepSampler`, or
    `PretrainStream` for a `StreamSampler` (then `source` is None)."""
    kind = PretrainStream if isinstance(sampler, StreamSampler) else PretrainSteps
    return kind(source, sampler, tokenizer, masking, mlm_probability, seed, rank, accum)


class _StepsFrom(torch.utils.data.Sampler):
    """start, start + 1, ...: the steps a map-style PretrainSteps is asked for, without end."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


class StepLoader:
    """Iterator over optimizer steps: `next()` -> this process's `accum` micro-batches (dicts of
    (B, T) tensors), for steps start_step, start_step + 1, ... without end.

    `step` is the step `next()` last returned and `epoch` the data epoch reached once it is trained
    (`sampler.epoch(step + 1)`, what logs and checkpoints record: under streaming only the reading
    worker knows how many passes it made). `num_workers` is the number of workers in use.
    `close()` stops the workers."""

    def __init__(self, loader: torch.utils.data.DataLoader, start_step: int):
        self.num_workers, self.step, self.epoch = loader.num_workers, start_step - 1, 0.0
        self._iter = iter(loader)  # starts the workers

    def __iter__(self) -> "StepLoader":
        return self

    def __next__(self) -> list[dict]:
        item = next(self._iter)
        if item["step"] != self.step + 1:  # DataLoader keeps order; this guards the contract
            raise RuntimeError(f"step loader out of order: expected step {self.step + 1}, got {item['step']}")
        self.step, self.epoch = item["step"], float(item["epoch"])
        return item["micro_batches"]

    def close(self) -> None:
        self._iter = iter(())  # the DataLoader iterator shuts its workers down when released


def step_loader(steps: PretrainSteps | PretrainStream, start_step: int, *, num_workers: int = 0,
                pin_memory: bool = False, prefetch_factor: int = 2) -> StepLoader:
    """Every step's micro-batches from `start_step` on, through `torch.utils.data.DataLoader`.

    num_workers=0 builds each step in this process when asked, through the same code. With workers,
    each holds a copy of `steps` and builds whole steps (`prefetch_factor` ahead each, pinned when
    `pin_memory`); the DataLoader hands them back in step order, so the tensors are identical for any
    number of workers. A streamed source uses at most 1 worker (see PretrainStream): asking for more
    logs a warning and uses 1. The DataLoader draws its worker seeds from a private generator: the
    training process's RNG (dropout, checkpointed for exact resume) is not touched. Workers ignore
    Ctrl-C (the terminal sends it to every process): the training process handles it, saving a
    checkpoint with its batches still coming."""
    if isinstance(steps, PretrainStream):
        if num_workers > 1:
            logger.warning("data.num_workers=%d: a streamed source is read by one worker (its order is "
                           "sequential), so 1 worker builds the batches", num_workers)
            num_workers = 1
        steps.start_step, sampler = start_step, None
    else:
        sampler = _StepsFrom(start_step)
    workers = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers > 0 else {}
    loader = torch.utils.data.DataLoader(
        steps, batch_size=None, sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0), worker_init_fn=_ignore_ctrl_c, **workers,
    )  # fmt: skip
    return StepLoader(loader, start_step)


def _ignore_ctrl_c(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
