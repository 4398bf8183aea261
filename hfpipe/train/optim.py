"""The optimizer both loops use, and how the loop sets its learning rate each step."""

import torch


def build_optimizer(model: torch.nn.Module, train) -> torch.optim.AdamW:
    """AdamW; norms, biases and other 1-D parameters get no weight decay (decaying a norm's scale
    towards 0 only fights the norm)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.adam_betas), eps=train.adam_eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The loop computes lr from training progress (Budget.lr) and sets it before each step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
