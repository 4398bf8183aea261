"""Fine-tuning batches (hfpipe/data/loader.py as hfpipe/train/finetune.py uses it): length-grouped,
deterministic, the same examples per step for 1 and N processes, padded to the micro-batch's longest row.

    python -m pytest -q tests/tasks/test_batching.py
"""

import random

import pytest

from hfpipe.data.loader import epoch_batches, micro_slices, pad_batch


def _lengths(n=4000, seed=0):
    rng = random.Random(seed)  # SST-2-like: mostly short sentences, a long tail
    return [min(64, 3 + int(rng.expovariate(1 / 11))) for _ in range(n)]


def _padded_tokens(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("group", [False, True])
def test_every_example_once_per_epoch_and_deterministic(group):
    lengths = _lengths(1000)
    first = epoch_batches(lengths, 32, seed=42, epoch=0, group_by_length=group)
    assert sorted(i for b in first for i in b) == list(range(1000))  # 1000 = 31 x 32 + 8: the tail is kept
    assert first == epoch_batches(lengths, 32, seed=42, epoch=0, group_by_length=group)
    assert first != epoch_batches(lengths, 32, seed=42, epoch=1, group_by_length=group)
    assert first != epoch_batches(lengths, 32, seed=43, epoch=0, group_by_length=group)


def test_a_tail_too_small_for_every_micro_batch_is_dropped():
    batches = epoch_batches(_lengths(65), 32, seed=0, epoch=0, group_by_length=True, min_size=4)
    assert [len(b) for b in batches] == [32, 32]


def test_length_grouping_pads_little():
    lengths = _lengths()
    real = sum(lengths)
    grouped = _padded_tokens(epoch_batches(lengths, 32, 42, 0, True), lengths)
    shuffled = _padded_tokens(epoch_batches(lengths, 32, 42, 0, False), lengths)
    assert grouped < 1.1 * real  # padding under 10% of the tokens computed
    assert shuffled > 2 * real  # random batches of short sentences: most of a batch is padding


def test_length_grouped_batches_are_still_shuffled():
    lengths = _lengths()
    batches = epoch_batches(lengths, 32, 42, 0, True)
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


@pytest.mark.parametrize("world, accum", [(2, 1), (1, 2), (2, 2)])
def test_n_processes_split_the_one_process_batch(world, accum):
    batch = epoch_batches(_lengths(256), 32, 42, 0, True)[3]
    parts = [micro_slices(batch, world, rank, accum) for rank in range(world)]
    assert sorted(i for p in parts for mb in p for i in mb) == sorted(batch)
    assert all(len(mb) == 32 // (world * accum) for p in parts for mb in p)


class _Tok:
    pad_token_id = 7


def test_pad_batch_pads_to_the_longest_row_with_ignored_labels():
    rows = [{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": [0, 1, 0]},
            {"input_ids": [4], "attention_mask": [1], "labels": [2]}]
    out = pad_batch(rows, _Tok())
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[0, 1, 0], [2, -100, -100]]
    sentence = pad_batch([{"input_ids": [1, 2], "attention_mask": [1, 1], "labels": 1},
                          {"input_ids": [3], "attention_mask": [1], "labels": 0}], _Tok())
    assert sentence["input_ids"].shape == (2, 2) and sentence["labels"].tolist() == [1, 0]
