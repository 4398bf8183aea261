"""What a run reports: metrics.jsonl, the progress bar, throughput and model-FLOPs utilization, trackers,
the loss plot."""

import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import RecipeError
from ..model.configuration_hfpipe import HfpipeConfig

# ----------------------------------------------------------------------------------------------
# metrics.jsonl and the loss curve
# ----------------------------------------------------------------------------------------------


class MetricsLog:
    """`output_dir/metrics.jsonl`: one JSON object per logged step (main process only)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path = path
        self.enabled = enabled
        if enabled and resume_step is not None and path.exists():
            # Drop entries logged after the checkpoint we resume from: they will be logged again.
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif enabled and resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path, title: str) -> Path | None:
    """Training loss (and eval loss where logged) against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path) if Path(metrics_path).exists() else []
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


# ----------------------------------------------------------------------------------------------
# The progress bar: elapsed, total and ETA in the budget's own unit
# ----------------------------------------------------------------------------------------------


class BudgetBar:
    """A tqdm bar over the training budget (train/budget.py), so it shows elapsed, total and ETA for
    every kind: optimizer steps, tokens, or the seconds of a time budget; with several budgets, the
    percent of the one furthest along (the one that ends training first, at a steady pace)."""

    FORMATS = {
        "steps": {"unit": "step"},
        "tokens": {"unit": "tok", "unit_scale": True},
        "seconds": {"bar_format": "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"},
        "percent": {"bar_format": "{l_bar}{bar}| {n:.1f}/{total:.0f}% of the budget [{elapsed}<{remaining}{postfix}]"},
    }

    def __init__(self, budget, state, *, desc: str, enabled: bool, file=None):
        limits = {"steps": budget.max_steps, "tokens": budget.max_tokens, "seconds": budget.max_seconds}
        limits = {kind: limit for kind, limit in limits.items() if limit}
        self.kind = next(iter(limits)) if len(limits) == 1 else "percent"
        self.budget, self.total = budget, limits.get(self.kind, 100)
        self.bar = tqdm(total=self.total, initial=self.position(state), desc=desc, disable=not enabled,
                        dynamic_ncols=True, file=file, **self.FORMATS[self.kind])

    def position(self, state) -> float:
        """Where `state` (a LoopState) stands, in the bar's unit."""
        spent = {"steps": state.step, "tokens": state.tokens, "seconds": state.elapsed}.get(self.kind)
        if spent is None:
            spent = 100 * self.budget.progress(state.step, state.tokens, state.elapsed)
        return min(spent, self.total)

    def update(self, state) -> None:
        self.bar.update(self.position(state) - self.bar.n)

    def set_postfix(self, **values) -> None:
        self.bar.set_postfix(**values)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------------------------
# Throughput and model-FLOPs utilization
# ----------------------------------------------------------------------------------------------


class Throughput:
    """Tokens per second over the window since the last call."""

    def __init__(self, tokens: int = 0):
        self.last_time = time.perf_counter()
        self.last_tokens = tokens

    def update(self, tokens: int) -> float:
        now = time.perf_counter()
        rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_tokens = now, tokens
        return rate


class DataWait:
    """How long the loop waits for its next batch: `data_wait`, the fraction of each logging window
    spent getting batches (`timed(fetch)`). Above 10% the input pipeline, not the model, sets the pace:
    warn once (not for the first window, which includes starting the DataLoader workers)."""

    WARN_ABOVE = 0.10

    def __init__(self, warn: Callable[[str], None]):
        self.warn, self.warned = warn, False
        self.reset()

    def reset(self) -> None:
        self.waited, self.window_start, self.windows = 0.0, time.perf_counter(), 0

    def timed(self, fetch: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        item = fetch()
        self.waited += time.perf_counter() - start
        return item

    def fraction(self) -> float:
        """The window's data_wait (and a new window starts); warns the first time it exceeds 10%."""
        now = time.perf_counter()
        fraction = self.waited / max(now - self.window_start, 1e-9)
        self.waited, self.window_start, self.windows = 0.0, now, self.windows + 1
        if fraction > self.WARN_ABOVE and not self.warned and self.windows > 1:
            self.warned = True
            self.warn(f"warning: the loop waited for data {100 * fraction:.0f}% of the last logging window; "
                      "raise data.num_workers (DataLoader worker processes) so batches are built ahead")
        return fraction


# Dense bf16/fp16 tensor-core peaks (TFLOP/s) for model-FLOPs utilization; set tracking.peak_tflops otherwise.
_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10G": 125.0, "L4": 121.0, "4090": 165.0, "V100": 125.0}


def peak_flops(device: torch.device, override_tflops: float | None, precision: str = "no",
               cache: Path | None = None) -> float | None:
    """The FLOP/s that model-FLOPs utilization (`mfu`) divides by: tracking.peak_tflops when set; a GPU's
    datasheet peak; on CPU a matmul probe of this machine at the run's precision (cpu_matmul_peak)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in _PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
        return None
    if device.type == "cpu":
        return cpu_matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32, cache)
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_matmul_peak(dtype: torch.dtype, cache: Path | None = None, size: int = 1024, seconds: float = 0.3) -> float:
    """The best of a few timed `size`x`size` matmuls in `dtype` on this CPU with the run's threads, in FLOP/s.

    Measured once per (CPU model, thread count, dtype) and cached in ~/.cache/hfpipe/peak.json
    ($XDG_CACHE_HOME if set; a fraction of a second); tracking.peak_tflops overrides it. A probe on a shared, loaded machine
    measures what the run can get, which is what mfu should be relative to."""
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hfpipe" / "peak.json"
    key = f"{_cpu_model()}|threads={torch.get_num_threads()}|{str(dtype).removeprefix('torch.')}|{size}"
    try:
        saved = json.loads(cache.read_text())
    except (OSError, ValueError):
        saved = {}
    if isinstance(saved.get(key), (int, float)) and saved[key] > 0:
        return float(saved[key])
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    best, deadline = float("inf"), time.perf_counter() + seconds
    for _ in range(50):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    peak = 2 * size**3 / best
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**saved, key: peak}, indent=1))
    except OSError:
        pass  # a read-only home: probe again next run
    return peak


def mlm_flops_per_token(config: HfpipeConfig, seq_len: int, mask_ratio: float) -> float:
    """Training FLOPs per input token (forward + backward = 3 x forward, 2 FLOPs per MAC).

    Linear layers: 6 x their parameters; attention scores and weighted sum: 12 x L x C x T; the MLM
    head (dense + decoder) runs only on the masked fraction (sparse prediction)."""
    C, L, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    up = 2 * inter if config.hidden_act in ("geglu", "swiglu") else inter
    attends = getattr(config, "token_mixer", "attention") == "attention"  # transformers' BertConfig has none
    layer_params = 4 * C * C + C * up + inter * C if attends else C * up + inter * C
    attention = 12 * L * C * seq_len if attends else 0
    head = 6 * (C * C + C * config.vocab_size) * mask_ratio
    return 6 * L * layer_params + attention + head


# ----------------------------------------------------------------------------------------------
# Experiment trackers (tracking.report_to)
# ----------------------------------------------------------------------------------------------


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
"""tracking.report_to name -> the module accelerate imports for it, which is also its pip package."""


def require_trackers(report_to: list[str]) -> list[str]:
    """`tracking.report_to`, for accelerate's `log_with`; a tracker that is not installed is an error
    naming its pip package (raised before any compute), never silently dropped."""
    missing = [name for name in report_to if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None]
    if missing:
        packages = " ".join(TRACKER_PACKAGES[name] for name in missing)
        raise RecipeError(f"{', '.join(map(repr, missing))} asked for but not installed: pip install {packages} "
                          "(or remove it from the list)", key="tracking.report_to")
    return list(report_to)


def flat_config(d: dict, prefix: str = "") -> dict:
    """A nested recipe dict as {"section.key": scalar}: what trackers accept as a run's config."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
