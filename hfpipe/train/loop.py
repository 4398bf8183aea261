"""The glue around `train_step` that both loops share (pretrain.fit, finetune.fit): one copy, so the
two cannot drift. It owns the learning rate, the clock, the log row, the progress bar, Ctrl-C, and
the closing line; the loops keep what differs (where batches come from, evaluation, best model).

    with LoopGlue(accelerator, state, budget, log, desc="pretrain", ...) as glue:
        while not budget_spent(budget, state, accelerator):
            result = glue.step(model, optimizer, lambda: next(batches))   # lr -> batches -> step -> log
            ...evaluate / save...
            glue.check_interrupt()              # Ctrl-C: checkpoint, then KeyboardInterrupt
    done_line(accelerator, f"eval loss {loss:.4f}", final_dir)      # "done: ...; model in ..."

Every log row carries loss (mean of the window's finite losses), lr, grad_norm, tokens,
tokens_per_sec, mfu, data_wait, epoch and elapsed_sec.
"""

import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoint import checkpoint_dir
from .logs import BudgetBar, DataWait, MetricsLog, Throughput
from .optim import set_lr
from .step import LoopState, StepResult, train_step


class LoopGlue:
    """Context manager around a training loop; `step` runs one optimizer step and logs when due."""

    def __init__(self, accelerator, state: LoopState, budget, log: MetricsLog, *, desc: str, train,
                 out_dir: Path, save_checkpoint: Callable[[], Path], epoch: Callable[[], float],
                 flops_per_token: float | None = None, peak: float | None = None):
        self.accelerator, self.state, self.budget, self.log, self.train = accelerator, state, budget, log, train
        self.out_dir, self.save_checkpoint, self.epoch = Path(out_dir), save_checkpoint, epoch
        self.flops_per_token, self.peak = flops_per_token, peak
        self.desc = desc
        self.last_loss = float("nan")
        self.window: list[float] = []  # the finite losses since the last log row
        self.wait = DataWait(accelerator.print)

    def __enter__(self) -> "LoopGlue":
        self.interrupted = False
        self.previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        self.progress = BudgetBar(self.budget, self.state, desc=self.desc, enabled=self.accelerator.is_main_process)
        self.throughput = Throughput(self.state.tokens)
        self.start_time = time.perf_counter() - self.state.elapsed  # a resumed run continues its clock
        self.wait.reset()
        return self

    def _on_sigint(self, *_) -> None:
        self.interrupted = True  # acted on between steps (check_interrupt), never inside one

    def __exit__(self, kind, value, traceback) -> None:
        signal.signal(signal.SIGINT, self.previous_handler)
        self.progress.close()
        if kind is KeyboardInterrupt:
            self.accelerator.print(f"interrupted at step {self.state.step}: checkpoint saved in "
                                   f"{checkpoint_dir(self.out_dir)}; run the same command again to resume")

    def step(self, model, optimizer, next_batches: Callable[[], list[dict]], **step_kwargs) -> StepResult:
        """lr -> this step's micro-batches (timed as data_wait) -> train_step -> clock, bar, log row."""
        state, train = self.state, self.train
        lr = self.budget.lr(state.step, state.tokens, state.elapsed)
        set_lr(optimizer, lr)
        micro_batches = self.wait.timed(next_batches)
        result = train_step(model, optimizer, self.accelerator, micro_batches, state,
                            max_grad_norm=train.max_grad_norm, on_nan=train.on_nan,
                            checkpoints=checkpoint_dir(self.out_dir), **step_kwargs)
        state.elapsed = time.perf_counter() - self.start_time
        self.last_loss = result.loss
        if not result.skipped:
            self.window.append(result.loss)
        self.progress.update(state)
        if state.step % train.log_every_steps == 0 and self.window:
            self._log_row(lr, result)
        return result

    def _log_row(self, lr: float, result: StepResult) -> None:
        state = self.state
        rate = self.throughput.update(state.tokens)
        record = {"step": state.step, "loss": sum(self.window) / len(self.window), "lr": lr, "tokens": state.tokens,
                  "tokens_per_sec": rate, "epoch": round(self.epoch(), 4), "elapsed_sec": round(state.elapsed, 2),
                  "data_wait": round(self.wait.fraction(), 4)}
        if result.grad_norm is not None:
            record["grad_norm"] = float(result.grad_norm)  # the only read of the norm: when logging
        if self.peak and self.flops_per_token:
            record["mfu"] = rate * self.flops_per_token / self.peak
        if state.skipped:
            record["skipped_steps"] = state.skipped
        if self.accelerator.device.type == "cuda":
            record["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.log.write(record)
        self.accelerator.log(record, step=state.step)
        postfix = {"loss": f"{record['loss']:.4f}", "lr": f"{lr:.2e}", "tok_s": f"{rate:,.0f}",
                   "data_wait": f"{record['data_wait']:.0%}"}
        if "mfu" in record:
            postfix["mfu"] = f"{record['mfu']:.1%}"
        self.progress.set_postfix(**postfix)
        self.window = []

    def check_interrupt(self) -> None:
        """After a step's evaluation and saving: on Ctrl-C, save a checkpoint (collective) and stop."""
        if self.interrupted:
            self.save_checkpoint()
            raise KeyboardInterrupt

    def speed(self) -> dict:
        """For results.json: the whole run's mean tokens/s and, where a peak is known, its mfu (`train_`
        keys: facts of the run, never model-card metrics)."""
        rate = self.state.tokens / max(self.state.elapsed, 1e-9)
        out = {"train_tokens_per_sec": round(rate, 1)}
        if self.peak and self.flops_per_token:
            out["train_mfu"] = rate * self.flops_per_token / self.peak
        return out


def done_line(accelerator, summary: str, model_dir: Path) -> None:
    """The closing line both commands print: `done: <summary>; model in <folder>`."""
    accelerator.print(f"done: {summary}; model in {model_dir}")
