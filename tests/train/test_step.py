"""The one training step (hfpipe/train/step.py), in one process on a tiny MLM model: accumulation is
exact, the NaN policy and clipping do what they say, tokens and skips are counted; and the
agreed budget check.

    .venv/bin/pytest -q tests/train/test_step.py
"""

import math
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from hfpipe import HfpipeConfig, HfpipeForMaskedLM
from hfpipe.train.budget import Budget, budget_spent
from hfpipe.train.step import LoopState, TrainingError, train_step

T, VOCAB = 16, 50


def tiny_model(seed: int = 0) -> HfpipeForMaskedLM:
    config = HfpipeConfig.from_preset("bert-tiny", vocab_size=VOCAB, hidden_size=32, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=T, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return HfpipeForMaskedLM(config)


def mlm_batch(rows: int, masked_per_row: int, seed: int, padding: int = 0) -> dict[str, torch.Tensor]:
    """`rows` rows of T tokens, the last `padding` of each padded, `masked_per_row` labelled tokens each."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (rows, T), generator=g)  # (B, T)
    attention_mask = torch.ones(rows, T, dtype=torch.long)  # (B, T)
    attention_mask[:, T - padding :] = 0
    labels = torch.full((rows, T), -100)  # (B, T)
    labels[:, 1 : 1 + masked_per_row] = torch.randint(5, VOCAB, (rows, masked_per_row), generator=g)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def cat(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def step(model, micro_batches, state=None, lr=0.1, **kwargs):
    """One train_step with plain SGD (an update proportional to the gradient, unlike Adam's)."""
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=len(micro_batches))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    kwargs = {"max_grad_norm": None, "on_nan": "stop", "checkpoints": "run/checkpoints", **kwargs}
    return train_step(model, optimizer, accelerator, micro_batches, state or LoopState(), **kwargs)


def params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def test_two_micro_batches_of_b_equal_one_batch_of_2b():
    # uneven masked counts (2 vs 8 tokens per row): a mean of the two micro-batch means would differ
    small, large = mlm_batch(4, 2, seed=1), mlm_batch(4, 8, seed=2, padding=3)
    accumulated, whole = tiny_model(), tiny_model()
    a = step(accumulated, [small, large])
    b = step(whole, [cat(small, large)])
    assert torch.allclose(params(accumulated), params(whole), atol=1e-6, rtol=0)
    assert a.loss == pytest.approx(b.loss, rel=1e-6)
    assert a.targets == b.targets == 4 * 2 + 4 * 8
    assert a.tokens == b.tokens == 4 * T + 4 * (T - 3)  # real tokens: padding excluded

    with torch.no_grad():  # the property has teeth: the mean of micro-batch means is another number
        fresh = tiny_model()
        mean_of_means = (fresh(**small).loss + fresh(**large).loss).item() / 2
    assert abs(mean_of_means - a.loss) > 1e-3


def test_step_advances_the_loop_state():
    state = LoopState(step=7, tokens=100, elapsed=3.5)
    result = step(tiny_model(), [mlm_batch(2, 3, seed=1, padding=4)], state)
    assert (state.step, state.tokens, state.elapsed, state.skipped) == (8, 100 + 2 * (T - 4), 3.5, 0)
    assert not result.skipped and math.isfinite(result.loss)
    assert LoopState.from_dict(state.to_dict()) == state
    # a fine-tuning checkpoint written before `tokens`/`elapsed` were saved still resumes
    assert LoopState.from_dict({"step": 4, "best": None}) == LoopState(step=4)


def nan_loss(model, batch):
    return model(**batch).loss * float("nan")


def test_on_nan_stop_raises_training_error_naming_step_and_checkpoints():
    with pytest.raises(TrainingError) as err:
        step(tiny_model(), [mlm_batch(2, 3, seed=1)], LoopState(step=41), loss_fn=nan_loss, checkpoints="out/checkpoints")
    assert str(err.value) == (
        "loss is nan at step 42; stopping. The last good checkpoint is kept in out/checkpoints. "
        "Lower train.lr, enable clipping, or set train.on_nan=skip."
    )


def test_on_nan_skip_leaves_params_unchanged_and_counts_the_skip(capsys):
    model = tiny_model()
    before = params(model)
    state = LoopState()
    result = step(model, [mlm_batch(2, 3, seed=1)], state, loss_fn=nan_loss, on_nan="skip")
    assert torch.equal(params(model), before)
    assert all(p.grad is None for p in model.parameters())  # no stale gradient leaks into the next step
    assert result.skipped and math.isnan(result.loss) and result.grad_norm is None
    assert (state.step, state.skipped, state.tokens) == (1, 1, 2 * T)
    assert "non-finite loss at step 1; update skipped (1 so far)" in capsys.readouterr().out


def test_clipping_bounds_the_update():
    batch = [mlm_batch(4, 4, seed=3)]
    free, clipped = tiny_model(), tiny_model()
    start = params(free)
    unclipped = step(free, batch, lr=1.0)
    result = step(clipped, batch, lr=1.0, max_grad_norm=1e-3)
    assert unclipped.grad_norm is None
    assert result.grad_norm.item() > 0.1  # the norm before clipping
    # SGD with lr 1: the update is the gradient, so its norm is the (clipped) gradient norm
    assert (params(free) - start).norm().item() == pytest.approx(result.grad_norm.item(), rel=1e-4)
    assert (params(clipped) - start).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_budget_spent_by_steps_tokens_or_minutes():
    def train_args(**kw):
        return SimpleNamespace(**{"max_steps": None, "max_tokens": None, "max_minutes": None, **kw})

    accelerator = Accelerator(cpu=True)
    assert not budget_spent(Budget(train_args(max_steps=3)), LoopState(step=2), accelerator)
    assert budget_spent(Budget(train_args(max_steps=3)), LoopState(step=3), accelerator)
    assert budget_spent(Budget(train_args(max_steps=3, max_tokens=500)), LoopState(step=1, tokens=500), accelerator)
    assert not budget_spent(Budget(train_args(max_minutes=1.0)), LoopState(step=9, elapsed=59.0), accelerator)
    assert budget_spent(Budget(train_args(max_minutes=1.0)), LoopState(step=9, elapsed=60.0), accelerator)


def test_fused_adamw_trains_as_the_default_implementation():
    """build_optimizer's fused AdamW (one kernel; transformers' Trainer default) follows torch's for-each
    AdamW: the same losses over 8 steps within float rounding, and the parameters within 1e-5."""
    from hfpipe.train.optim import build_optimizer

    train = SimpleNamespace(lr=1e-2, weight_decay=0.01, adam_betas=(0.9, 0.98), adam_eps=1e-6)
    runs = {}
    for fused in (True, False):
        model = tiny_model()
        optimizer = build_optimizer(model, train)
        assert optimizer.defaults["fused"] is True
        if not fused:  # the same groups, for-each implementation
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
            optimizer = torch.optim.AdamW(groups, lr=train.lr, betas=train.adam_betas, eps=train.adam_eps,
                                          foreach=True)
            assert not optimizer.param_groups[0]["fused"]
        accelerator = Accelerator(cpu=True)
        model, optimizer = accelerator.prepare(model, optimizer)
        state, losses = LoopState(), []
        for s in range(8):
            result = train_step(model, optimizer, accelerator, [mlm_batch(4, 3, seed=s)], state,
                                max_grad_norm=1.0, on_nan="stop", checkpoints="run/checkpoints")
            losses.append(result.loss)
        runs[fused] = losses, params(model)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    assert runs[True][0][-1] < runs[True][0][0]  # it trained
    assert torch.allclose(runs[True][1], runs[False][1], atol=1e-5)
