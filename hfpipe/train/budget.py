"""How far training has gone, and when it ends: optimizer steps, tokens or minutes, whichever is set.

Both loops ask `budget_spent(budget, state, accelerator)` once per step; the learning rate follows
`Budget.lr`, a function of progress (schedule.py)."""

import torch

from .schedule import lr_factor
from .step import LoopState


class Budget:
    """Training progress in [0, 1] from whichever budgets are set: optimizer steps, tokens, minutes.

    With several budgets the first one exhausted ends training, and the LR schedule follows
    whichever is furthest along (Cramming's budget-aware schedule)."""

    def __init__(self, train, total_steps: int | None = None):
        self.max_steps = total_steps if total_steps is not None else train.max_steps
        self.max_tokens = train.max_tokens
        self.max_seconds = train.max_minutes * 60 if train.max_minutes else None
        self.train = train

    def progress(self, step: int, tokens: int, seconds: float) -> float:
        parts = []
        if self.max_steps:
            parts.append(step / self.max_steps)
        if self.max_tokens:
            parts.append(tokens / self.max_tokens)
        if self.max_seconds:
            parts.append(seconds / self.max_seconds)
        return max(parts) if parts else 0.0

    def lr(self, step: int, tokens: int, seconds: float) -> float:
        t = self.train
        p = self.progress(step, tokens, seconds)
        if t.warmup_steps is not None:  # warmup counted in steps; the decay starts where it ended
            if step < t.warmup_steps:
                return t.lr * step / max(t.warmup_steps, 1)
            warmup = t.warmup_steps * p / step if step else 0.0  # the fraction of the budget warmup took
        else:
            warmup = t.warmup_fraction
        return t.lr * lr_factor(t.schedule, p, warmup, decay_fraction=t.decay_fraction, min_ratio=t.min_lr_ratio)


def budget_spent(budget: Budget, state: LoopState, accelerator) -> bool:
    """True when training should end, the same answer on every process (collective: all must call it).

    Steps and tokens are already global; wall clocks are not. With a time budget every process first
    takes the slowest one's `state.elapsed`, so all stop at the same step and schedule the same lr."""
    if budget.max_seconds:
        clocks = accelerator.gather(torch.tensor([state.elapsed], dtype=torch.float64, device=accelerator.device))
        state.elapsed = clocks.max().item()
    return budget.progress(state.step, state.tokens, state.elapsed) >= 1.0
