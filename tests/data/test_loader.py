"""The pretraining input pipeline: the same masked tensors for 0 or 2 DataLoader workers, for any split
of a global batch into processes and micro-batches, on resume, and from arrow, lists or a stream.
Run: .venv/bin/pytest tests/data/test_loader.py"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal

import numpy as np
import pytest
import torch
from datasets import Dataset

from hfpipe.config import MaskingArgs
from hfpipe.data.loader import (
    PretrainSteps,
    PretrainStream,
    StepSampler,
    StreamSampler,
    TokenIds,
    fixed_eval_batches,
    masked_batch,
    pretrain_steps,
    step_loader,
)
from hfpipe.data.packing import collate, row_features

VOCAB = 1000
IDS = TokenIds(pad_token_id=0, mask_token_id=4, vocab_size=VOCAB, special_ids=(0, 1, 2, 3, 4))
MASKING = MaskingArgs(whole_word=True, span=True, mean_span_length=2.0)  # every stream of draws in use


def _rows(n: int, seed: int = 0) -> Dataset:
    """n tokenized rows of 20-64 tokens ([CLS] ... [SEP], a [SEP] inside some), with word starts."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"input_ids": [], "position_ids": [], "special_tokens_mask": [], "word_starts": []}
    for _ in range(n):
        length = int(rng.integers(20, 65))
        ids = rng.integers(5, VOCAB, length)
        special = np.zeros(length, dtype=np.int8)
        ids[[0, -1]], special[[0, -1]] = (2, 3), 1
        if rng.random() < 0.5:  # two documents in the row: positions restart after the [SEP]
            ids[10], special[10] = 3, 1
        starts = (rng.random(length) < 0.6).astype(np.int8) | special
        columns["input_ids"].append(ids.tolist())
        columns["position_ids"].append(list(range(length)))
        columns["special_tokens_mask"].append(special.tolist())
        columns["word_starts"].append(starts.tolist())
    return Dataset.from_dict(columns, features=row_features(whole_word=True))


@pytest.fixture(scope="module")
def rows() -> Dataset:
    return _rows(40)


def _take(loader, n: int) -> list[list[dict]]:
    out = [next(loader) for _ in range(n)]
    loader.close()
    return out


def _assert_same_steps(a: list[list[dict]], b: list[list[dict]]) -> None:
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        assert len(step_a) == len(step_b)
        for mb_a, mb_b in zip(step_a, step_b):
            assert mb_a.keys() == mb_b.keys()
            for key in mb_a:
                assert mb_a[key].dtype == mb_b[key].dtype == torch.long and torch.equal(mb_a[key], mb_b[key]), key


def _steps(rows, world=2, rank=0, accum=2, micro=3, seed=7) -> PretrainSteps:
    sampler = StepSampler(len(rows), seed, micro, world, accum)
    return pretrain_steps(rows, sampler, IDS, MASKING, 0.3, seed, rank, accum)


def test_zero_and_two_workers_give_bit_identical_steps_and_leave_the_rng_alone(rows):
    rng_before = torch.get_rng_state()
    in_process = _take(step_loader(_steps(rows), 3, num_workers=0), 6)
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout's RNG (checkpointed) is untouched
    loader = step_loader(_steps(rows), 3, num_workers=2, prefetch_factor=2)
    workers = [next(loader) for _ in range(6)]
    assert loader.step == 8 and loader.epoch == pytest.approx(9 * 12 / 40)  # epoch reached after step 8
    loader.close()
    assert torch.equal(torch.get_rng_state(), rng_before)
    _assert_same_steps(in_process, workers)
    _assert_same_steps(in_process[:1], [_steps(rows)[3]["micro_batches"]])
    # Workers started by spawn or forkserver (Python 3.14's default) get a pickled copy: the same steps.
    _assert_same_steps(in_process[:1], [pickle.loads(pickle.dumps(_steps(rows)))[3]["micro_batches"]])
    first = in_process[0][0]
    assert first["input_ids"].shape == (3, first["attention_mask"].sum(1).max())  # (B, T): padded to its longest
    assert 0.15 < float((first["labels"] != -100).sum()) / float(first["attention_mask"].sum()) < 0.45


def test_a_rows_mask_does_not_depend_on_processes_micro_batches_or_padding(rows):
    """Global batch 12 of step 5 as 1 process x 1 micro-batch of 12, 2 processes x 2 micro-batches of 3,
    and 3 processes x 4 micro-batches of 1: every row (by global position) is identical."""

    def rows_by_position(world, accum, micro) -> dict[int, tuple]:
        out = {}
        for rank in range(world):
            sampler = StepSampler(len(rows), 7, micro, world, accum)
            steps = pretrain_steps(rows, sampler, IDS, MASKING, 0.3, 7, rank, accum)
            for a, mb in enumerate(steps[5]["micro_batches"]):
                for r, (g, _) in enumerate(sampler.micro_batch(5, a, rank)):
                    n = int(mb["attention_mask"][r].sum())
                    assert bool((mb["labels"][r, n:] == -100).all())
                    out[g] = tuple(mb[key][r, :n].tolist() for key in ("input_ids", "labels", "position_ids"))
        return out

    one = rows_by_position(1, 1, 12)
    assert sorted(one) == list(range(60, 72))
    assert rows_by_position(2, 2, 3) == one
    assert rows_by_position(3, 4, 1) == one


def test_workers_ignore_ctrl_c_so_the_loop_can_save_a_checkpoint(rows):
    """A terminal's Ctrl-C reaches every process of the group; a worker it killed would end the run
    before the training process could save its checkpoint."""
    expected = _take(step_loader(_steps(rows), 0, num_workers=0), 8)
    before = set(multiprocessing.active_children())
    loader = step_loader(_steps(rows), 0, num_workers=1, prefetch_factor=1)
    got = [next(loader)]
    (worker,) = set(multiprocessing.active_children()) - before
    os.kill(worker.pid, signal.SIGINT)
    got += [next(loader) for _ in range(7)]
    assert worker.is_alive()
    loader.close()
    _assert_same_steps(expected, got)


def test_resume_at_step_s_yields_the_uninterrupted_step_s(rows):
    uninterrupted = _take(step_loader(_steps(rows), 0, num_workers=0), 7)
    resumed = _take(step_loader(_steps(rows), 5, num_workers=0), 2)
    _assert_same_steps(uninterrupted[5:], resumed)


def _stream_steps(rows, start_step: int) -> PretrainStream:
    shard = rows.to_iterable_dataset(num_shards=4)
    sampler = StreamSampler(shard, 2, 1, 2, 0, start_step)  # 4 examples a step: 10 steps a pass
    return pretrain_steps(None, sampler, IDS, MASKING, 0.3, 7, 0, 2)


def test_streaming_steps_resume_exactly_and_use_one_worker_whatever_is_asked(rows, caplog):
    steps = _stream_steps(rows, 0)
    assert isinstance(steps, PretrainStream)
    loader = step_loader(steps, 0, num_workers=0)
    uninterrupted = [next(loader) for _ in range(13)]  # past the end of the stream: a second pass
    assert loader.epoch == 1.0
    loader.close()
    resumed = _take(step_loader(_stream_steps(rows, 9), 9, num_workers=0), 4)
    _assert_same_steps(uninterrupted[9:], resumed)
    with caplog.at_level(logging.WARNING, logger="hfpipe.data.loader"):
        loader = step_loader(pickle.loads(pickle.dumps(_stream_steps(rows, 9))), 9, num_workers=3)
    assert "data.num_workers=3: a streamed source is read by one worker" in caplog.text
    assert loader.num_workers == 1
    worker = [next(loader) for _ in range(4)]
    assert loader.epoch == 1.0  # the worker's passes reach the main process
    loader.close()
    _assert_same_steps(uninterrupted[9:], worker)
    # The stream's rows are the map-style rows: masked alike by global position.
    first = masked_batch(rows, [(0, 0), (1, 1)], IDS, MASKING, 0.3, 7, 0)
    _assert_same_steps([[first]], [[{k: v[:2] for k, v in uninterrupted[0][0].items()}]])


def test_a_stream_is_read_in_order_from_its_start_step(rows):
    sampler = StreamSampler(rows.to_iterable_dataset(), 2, 1, 2, 0, 3)
    with pytest.raises(ValueError, match=r"expected micro-batch \(3, 0\) \(step, accumulation index\), got \(0, 0\)"):
        sampler.micro_batch(0, 0, 0)
    sampler.micro_batch(3, 0, 0)
    with pytest.raises(ValueError, match=r"expected micro-batch \(3, 1\)"):
        sampler.micro_batch(4, 0, 0)
    steps = _stream_steps(rows, 2)
    with pytest.raises(ValueError, match="the stream sampler starts at step 2, the loader at 0"):
        _take(step_loader(steps, 0, num_workers=0), 1)


def test_masked_batch_reads_arrow_lists_and_examples_alike(rows):
    items = [(100 + j, i) for j, i in enumerate([3, 17, 8, 30])]
    from_arrow = masked_batch(rows, items, IDS, MASKING, 0.3, 1, 2)
    from_lists = masked_batch(list(rows), items, IDS, MASKING, 0.3, 1, 2)
    from_examples = masked_batch(None, [(g, rows[i]) for g, i in items], IDS, MASKING, 0.3, 1, 2)
    _assert_same_steps([[from_arrow]], [[from_lists]])
    _assert_same_steps([[from_arrow]], [[from_examples]])
    batch = collate([rows[i] for _, i in items], IDS.pad_token_id)
    assert torch.equal(from_arrow["position_ids"], batch["position_ids"])
    assert torch.equal(from_arrow["attention_mask"], batch["attention_mask"])
    chosen = from_arrow["labels"] != -100
    assert torch.equal(from_arrow["labels"][chosen], batch["input_ids"][chosen])
    assert torch.equal(from_arrow["input_ids"][~chosen], batch["input_ids"][~chosen])


def test_fixed_eval_batches_split_across_processes_without_changing_a_mask(rows):
    one = fixed_eval_batches(rows, IDS, masking=MASKING, mlm_probability=0.3, seed=7, batch_size=8, max_batches=None)
    assert len(one) == 5
    for rank in range(2):
        mine = fixed_eval_batches(rows, IDS, masking=MASKING, mlm_probability=0.3, seed=7, batch_size=8,
                                  max_batches=None, world=2, rank=rank)  # fmt: skip
        _assert_same_steps([mine], [one[rank::2]])
    streamed = fixed_eval_batches(rows.to_iterable_dataset(), IDS, masking=MASKING, mlm_probability=0.3, seed=7,
                                  batch_size=8, max_batches=2)  # fmt: skip
    _assert_same_steps([streamed], [one[:2]])
