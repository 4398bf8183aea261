"""Small pieces the pretraining and fine-tuning loops share. The loops themselves stay in
pretrain.py and finetune.py, visible top to bottom; nothing here hides control flow."""

import json
import math
import time
from pathlib import Path

import torch
from transformers import AutoConfig

from ..model.configuration_hfpipe import HfpipeConfig
from .schedule import lr_factor

# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def load_encoder(name_or_path: str, hfpipe_class, **kwargs):
    """Load an hfpipe folder / Hub id into `hfpipe_class`, converting a BERT checkpoint on the fly."""
    from ..model.convert import ARCHITECTURES, convert_bert_model, hfpipe_config_from_bert

    path = Path(name_or_path)
    if not path.exists() and ("/" not in name_or_path or name_or_path.startswith((".", "/"))):
        raise FileNotFoundError(f"model.name_or_path={name_or_path!r}: no such folder (and it does not look like a Hub id)")
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    if config.model_type == "hfpipe":
        return hfpipe_class.from_pretrained(name_or_path, **kwargs)
    if config.model_type != "bert":
        raise ValueError(f"model.name_or_path={name_or_path!r} is a {config.model_type!r} model; hfpipe loads hfpipe or BERT checkpoints")
    import transformers

    arch = (config.architectures or ["BertModel"])[0]
    bert = getattr(transformers, arch if arch in ARCHITECTURES else "BertModel").from_pretrained(name_or_path)
    backbone = convert_bert_model(bert)
    hf_config = hfpipe_config_from_bert(config)
    for key, value in kwargs.items():  # num_labels, id2label, problem_type, ... for the new head
        setattr(hf_config, key, value)
    model = hfpipe_class(hf_config)
    source = backbone.state_dict()
    own = model.state_dict()
    # Copy every tensor whose name and shape match (the backbone, and the MLM head when both have one).
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith(("model.", "embeddings.")) for k in matched):
        prefix = "model." if hasattr(model, "model") else ""
        matched = {prefix + k: v for k, v in source.items() if prefix + k in own and own[prefix + k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return model


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------------------------


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
    for group in optimizer.param_groups:
        group["lr"] = lr


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


# ----------------------------------------------------------------------------------------------
# Throughput
# ----------------------------------------------------------------------------------------------

# Dense bf16/fp16 tensor-core peaks (TFLOP/s) for model-FLOPs utilization; set tracking.peak_tflops otherwise.
_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10G": 125.0, "L4": 121.0, "4090": 165.0, "V100": 125.0}


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in _PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None


def mlm_flops_per_token(config: HfpipeConfig, seq_len: int, mask_ratio: float) -> float:
    """Training FLOPs per input token (forward + backward = 3 x forward, 2 FLOPs per MAC).

    Linear layers: 6 x their parameters; attention scores and weighted sum: 12 x L x C x T; the MLM
    head (dense + decoder) runs only on the masked fraction (sparse prediction)."""
    C, L, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    up = 2 * inter if config.hidden_act in ("geglu", "swiglu") else inter
    layer_params = 4 * C * C + C * up + inter * C if config.token_mixer == "attention" else C * up + inter * C
    attention = 12 * L * C * seq_len if config.token_mixer == "attention" else 0
    head = 6 * (C * C + C * config.vocab_size) * mask_ratio
    return 6 * L * layer_params + attention + head


class Throughput:
    """Tokens per second (and MFU where the peak is known) over the window since the last call."""

    def __init__(self):
        self.last_time = time.perf_counter()
        self.last_tokens = 0

    def update(self, tokens: int) -> float:
        now = time.perf_counter()
        rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_tokens = now, tokens
        return rate


# ----------------------------------------------------------------------------------------------
# Metrics files and plots
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


def is_finite(value: float) -> bool:
    return math.isfinite(value)
