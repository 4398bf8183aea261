"""LR schedules as a function of training progress, and the budget that measures progress."""

import math
from types import SimpleNamespace

import pytest

from hfpipe.train.budget import Budget
from hfpipe.train.schedule import SCHEDULES, lr_factor


@pytest.mark.parametrize("schedule", ["linear", "cosine", "wsd", "constant"])
def test_warmup_rises_linearly_to_the_peak(schedule):
    assert lr_factor(schedule, 0.0, 0.1) == 0.0
    assert lr_factor(schedule, 0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(schedule, 0.1, 0.1) == pytest.approx(1.0)


def test_decays_end_at_min_ratio():
    for schedule in ("linear", "cosine", "wsd"):
        assert lr_factor(schedule, 1.0, 0.1, min_ratio=0.1) == pytest.approx(0.1), schedule
    assert lr_factor("constant", 1.0, 0.1) == 1.0


def test_shapes_between_warmup_and_end():
    # linear: halfway through the decay phase -> halfway down
    assert lr_factor("linear", 0.55, 0.1) == pytest.approx(0.5)
    # cosine: halfway through the decay phase -> (1 + cos(pi/2)) / 2 = 0.5, a quarter -> (1 + cos(pi/4)) / 2
    assert lr_factor("cosine", 0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 0.325, 0.1) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    # warmup-stable-decay: the peak until the last decay_fraction, then linear
    assert lr_factor("wsd", 0.79, 0.05, decay_fraction=0.2) == 1.0
    assert lr_factor("wsd", 0.9, 0.05, decay_fraction=0.2) == pytest.approx(0.5)
    # one-cycle: a triangle peaking at the middle
    assert lr_factor("onecycle", 0.25, 0.0) == pytest.approx(0.5)
    assert lr_factor("onecycle", 0.5, 0.0) == pytest.approx(1.0)
    assert lr_factor("onecycle", 0.75, 0.0) == pytest.approx(0.5)


def test_unknown_schedule_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match="train.schedule='step'.*" + ", ".join(SCHEDULES)):
        lr_factor("step", 0.5, 0.1)


def train_args(**kw):
    base = dict(max_steps=None, max_tokens=None, max_minutes=None, lr=1e-3, warmup_steps=None,
                warmup_fraction=0.1, schedule="linear", decay_fraction=0.2, min_lr_ratio=0.0)
    return SimpleNamespace(**{**base, **kw})


def test_budget_follows_whichever_budget_is_furthest_along():
    budget = Budget(train_args(max_steps=100, max_tokens=1000, max_minutes=1.0))
    assert budget.progress(10, 500, 0.0) == 0.5  # tokens lead
    assert budget.progress(80, 100, 6.0) == 0.8  # steps lead
    assert budget.progress(1, 1, 60.0) == 1.0  # the clock ran out
    # LR at 50% of a linear schedule with 10% warmup: (1 - (0.5 - 0.1) / 0.9) x peak
    assert budget.lr(10, 500, 0.0) == pytest.approx(1e-3 * (1 - 0.4 / 0.9))


def test_warmup_steps_override_the_fraction():
    budget = Budget(train_args(max_steps=100, warmup_steps=20))
    assert budget.lr(10, 0, 0.0) == pytest.approx(0.5e-3)
    assert budget.lr(20, 0, 0.0) == pytest.approx(1e-3)  # the peak right where warmup ends
    assert budget.lr(60, 0, 0.0) == pytest.approx(0.5e-3)  # halfway through the remaining 80 steps
    # with a token budget the warmup's share of the budget is estimated from the pace so far
    by_tokens = Budget(train_args(max_tokens=1000, warmup_steps=20))
    assert by_tokens.lr(20, 200, 0.0) == pytest.approx(1e-3)
