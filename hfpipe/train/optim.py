"""The optimizer both loops use, and how the loop sets its learning rate each step."""

import torch


def build_optimizer(model: torch.nn.Module, train) -> torch.optim.AdamW:
    """AdamW; norms, biases and other 1-D parameters get no weight decay (decaying a norm's scale
    towards 0 only fights the norm).

    The fused implementation (one kernel over all parameters; transformers' Trainer default since
    torch 2.8) where every parameter is a float on CPU or CUDA: torch's for-each AdamW spent ~72 ms of a
    22M-parameter step on CPU against ~15 ms fused (issue 23). Same update within float rounding
    (tests/train/test_step.py)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    params = decay + no_decay
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.adam_betas), eps=train.adam_eps,
                             fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The loop computes lr from training progress (Budget.lr) and sets it before each step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
