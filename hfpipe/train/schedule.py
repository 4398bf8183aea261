"""Learning-rate schedules, as a multiplier of the peak learning rate.

A schedule is a function of training *progress* in [0, 1], not of raw step counts. Progress is
measured in optimizer steps of the global batch (or tokens, or wall-clock minutes -- whichever
budget the recipe sets, as in Cramming), so the schedule is the same whatever the number of
processes or gradient-accumulation steps: the bug class where an example's scheduler is stepped
once per micro-batch or per process cannot happen here.

    factor = lr_factor("cosine", progress=0.5, warmup=0.06)
"""

import math

SCHEDULES = ("linear", "cosine", "wsd", "onecycle", "constant")


def lr_factor(
    schedule: str,
    progress: float,
    warmup: float,
    *,
    decay_fraction: float = 0.2,
    min_ratio: float = 0.0,
) -> float:
    """Multiplier in [min_ratio, 1] of the peak LR at `progress` (0 = start, 1 = end of budget).

    warmup: fraction of the budget spent rising linearly from 0 to the peak (ignored by onecycle).
    decay_fraction: warmup-stable-decay only -- the final fraction of the budget spent decaying.
    min_ratio: the floor every decaying schedule ends at.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
    p = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":  # triangle: up over the first half, down over the second
        up = p / 0.5 if p < 0.5 else (1.0 - p) / 0.5
        return min_ratio + (1.0 - min_ratio) * up if p >= 0.5 else up
    if warmup > 0 and p < warmup:
        return p / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":  # warmup, stable at the peak, then linear decay over the last decay_fraction
        start = 1.0 - decay_fraction
        if p < start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * (p - start) / max(decay_fraction, 1e-12)
    q = (p - warmup) / max(1.0 - warmup, 1e-12)  # progress through the decay phase
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * q
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * q))  # cosine
