"""The recipe sections both workflows share: model, train, eval, hub, tracking.

    hfpipe validate --help-keys pretrain      # every key with its type, default and this help

Each section is a plain dataclass; the string under a field is its help text, and `validate()`
checks what a type cannot say (ranges, combinations), naming the key with `check(...)`. The
sections only the pretraining recipe has are in `pretrain_recipe.py`, the fine-tuning ones in
`finetune_recipe.py`.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .recipe import RecipeError, check


@dataclass
class ModelArgs:
    """Which model to build or load."""

    preset: str = "bert-mini"
    """Name of an `HfpipeConfig` preset (see `HfpipeConfig.from_preset`) used to build a fresh
    model. Not used when `name_or_path` is set."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """`HfpipeConfig` fields set on top of the preset, e.g. `{num_hidden_layers: 4,
    position_embedding_type: rope}`. `HfpipeConfig` checks the names and values."""
    name_or_path: str | None = None
    """Start from existing weights: an hfpipe output folder, a Hub repo id, or a BERT checkpoint
    folder. Required for fine-tuning; null for pretraining from scratch."""
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "flash_attention_2"] = "sdpa"
    """Attention kernel. `sdpa` (PyTorch scaled_dot_product_attention) runs everywhere;
    `flash_attention_2` needs the flash-attn package and a CUDA GPU."""

    def validate(self) -> None:
        from ..model.configuration_hfpipe import PRESETS, HfpipeConfig  # lazy: pulls in transformers

        ok = self.name_or_path is None or bool(self.name_or_path.strip())
        check(ok, "name_or_path", "must not be empty (null builds a fresh model from the preset)")
        valid = set(inspect.signature(HfpipeConfig.__init__).parameters) - {"self", "kwargs"}
        valid |= set(vars(HfpipeConfig()))  # generic PreTrainedConfig attributes are allowed too
        for name in self.config_overrides:
            close = difflib.get_close_matches(name, sorted(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            check(name in valid, f"config_overrides.{name}", f"not a field of HfpipeConfig{hint}")
        if self.name_or_path is not None:
            return  # the preset is not used; the loaded config gets the overrides
        close = difflib.get_close_matches(self.preset, list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        check(
            self.preset in PRESETS,
            "preset",
            f"unknown preset {self.preset!r}; {hint}available: {', '.join(PRESETS)}",
        )
        try:
            HfpipeConfig.from_preset(self.preset, **self.config_overrides)
        except (ValueError, TypeError) as e:
            raise RecipeError(str(e), key="config_overrides") from None


@dataclass
class TrainArgs:
    """Optimization, schedule, budget, precision and checkpointing."""

    max_steps: int | None = 1000
    """Stop after this many optimizer steps. Training stops at the first budget reached
    (max_steps, max_tokens, max_minutes, num_epochs); at least one must be set."""
    max_tokens: int | None = None
    """Stop after this many input tokens (padding excluded), summed over all processes."""
    max_minutes: float | None = None
    """Stop after this many minutes of wall-clock training time (a final checkpoint is saved)."""
    num_epochs: float | None = None
    """Stop after this many passes over the training data (fractions allowed); used for fine-tuning."""
    batch_size: int = 32
    """Sequences per micro-batch per process. The global batch is batch_size x
    gradient_accumulation_steps x number of processes."""
    gradient_accumulation_steps: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    lr: float = 5e-4
    """Peak learning rate (AdamW), reached at the end of warmup."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay; biases and norm weights are not decayed."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """AdamW (beta1, beta2)."""
    adam_eps: float = 1e-6
    """AdamW epsilon."""
    schedule: Literal["linear", "cosine", "wsd", "onecycle", "constant"] = "linear"
    """Learning-rate schedule after warmup: linear or cosine decay to min_lr_ratio x lr; `wsd`
    (warmup-stable-decay) holds lr then decays over the last decay_fraction of training;
    `onecycle` rises linearly to lr over the first half and falls back over the second (Cramming's triangle; warmup_fraction is ignored); `constant` holds lr."""
    warmup_fraction: float = 0.06
    """Fraction of the total steps spent warming up linearly from 0 to lr."""
    warmup_steps: int | None = None
    """Warmup length in steps; when set it overrides warmup_fraction."""
    decay_fraction: float = 0.2
    """For `wsd`: fraction of the total steps spent in the final decay."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr (linear, cosine and wsd schedules)."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; null disables clipping."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] | None = None
    """null: the launcher's choice (`accelerate launch --mixed_precision`, the accelerate config file),
    fp32 when none is set. `auto`: bf16 where the device computes it natively (CUDA with bf16, CPUs with
    AVX512-BF16 or AMX), fp32 elsewhere. `no`, `bf16`, `fp16` (with a grad scaler) win over the launcher.
    The run prints the precision in force; results.json and the model card record it."""
    compile: bool = False
    """Wrap the model in torch.compile (slow first steps, faster afterwards on GPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (about 30% slower)."""
    log_every_steps: int = 10
    """Log loss, learning rate, throughput and grad norm every N optimizer steps."""
    eval_every_steps: int | None = 200
    """Evaluate every N optimizer steps (and at the end); null evaluates only at the end."""
    save_every_steps: int | None = 500
    """Save a resumable checkpoint every N optimizer steps (and at the end); null saves only at the end."""
    keep_last: int = 3
    """Number of step checkpoints kept on disk; older ones are deleted."""
    resume: str = "auto"
    """`auto` resumes from the newest whole checkpoint in output_dir if there is one (a damaged newer
    one is skipped with a warning), provided it was trained with this recipe: any difference outside
    the budget keys (max_steps, max_tokens, max_minutes, num_epochs) and the log/eval/save cadence
    (log_every_steps, eval_every_steps, save_every_steps, keep_last) stops the run before it starts,
    naming the keys. `force` resumes anyway, with the new values; `none` starts fresh;
    anything else is a checkpoint folder to resume from, chosen on purpose (no recipe check)."""
    on_nan: Literal["stop", "skip"] = "stop"
    """What to do when the loss is NaN or infinite: `stop` raises with the step number,
    `skip` drops that batch's update and counts it in the logs."""
    early_stopping_patience: int | None = None
    """Fine-tuning: stop when the main metric has not improved for this many evaluations."""
    group_by_length: bool = True
    """Fine-tuning: batch examples of similar length together to reduce padding."""

    def validate(self) -> None:
        budgets = ("max_steps", "max_tokens", "max_minutes", "num_epochs")
        check(
            any(getattr(self, b) is not None for b in budgets),
            "",
            "no training budget: set at least one of max_steps, max_tokens, max_minutes, num_epochs",
        )
        for name in (
            *budgets,
            "warmup_steps",
            "eval_every_steps",
            "save_every_steps",
            "early_stopping_patience",
        ):
            value = getattr(self, name)
            minimum = 0 if name == "warmup_steps" else None
            if value is not None:
                ok = value >= minimum if minimum is not None else value > 0
                check(ok, name, f"must be {'>= 0' if minimum is not None else '> 0'} (or null), got {value}")
        for name in ("batch_size", "gradient_accumulation_steps", "log_every_steps", "keep_last"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(
            len(self.adam_betas) == 2,
            "adam_betas",
            f"must be two numbers [beta1, beta2], got {self.adam_betas}",
        )
        check(
            all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas",
            f"each must be in [0, 1), got {self.adam_betas}",
        )
        check(self.adam_eps > 0, "adam_eps", f"must be > 0, got {self.adam_eps}")
        check(
            0 <= self.warmup_fraction < 1, "warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}"
        )
        check(
            0 <= self.decay_fraction <= 1, "decay_fraction", f"must be in [0, 1], got {self.decay_fraction}"
        )
        if self.schedule == "wsd" and self.warmup_steps is None:
            total = self.warmup_fraction + self.decay_fraction
            check(total <= 1, "decay_fraction", f"warmup_fraction + decay_fraction must be <= 1, got {total}")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm is not None:
            check(self.max_grad_norm > 0, "max_grad_norm", f"must be > 0 (or null), got {self.max_grad_norm}")
        check(bool(self.resume.strip()), "resume", "must be 'auto', 'force', 'none' or a checkpoint folder")


@dataclass
class EvalArgs:
    """Evaluation during and after training."""

    batch_size: int = 64
    """Sequences per evaluation batch per process (no gradients, so it can exceed train.batch_size)."""
    max_batches: int | None = None
    """Evaluate on at most this many batches, i.e. the first max_batches x batch_size validation rows
    (fine-tuning: examples of each validation split), for a quick estimate during long runs; null
    uses the whole validation split."""

    def validate(self) -> None:
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        if self.max_batches is not None:
            check(self.max_batches >= 1, "max_batches", f"must be >= 1 (or null), got {self.max_batches}")


@dataclass
class HubArgs:
    """Pushing the result to the Hugging Face Hub (the token comes from HF_TOKEN, never the recipe)."""

    push_to_hub: bool = False
    """Upload the final model, tokenizer, model card and remote code when training ends."""
    repo_id: str | None = None
    """Target repository, `user/name` or `org/name`; required when push_to_hub is true."""
    private: bool = False
    """Create the repository as private if it does not exist yet."""
    revision: str | None = None
    """Branch to push the final model to; null pushes to the default branch (main)."""
    push_checkpoints: bool = False
    """Also push every saved checkpoint (the model, code and tokenizer; no training state) to
    checkpoint_branch while training, in pretraining and fine-tuning alike."""
    checkpoint_branch: str = "checkpoints"
    """Branch that receives intermediate checkpoints when push_checkpoints is true."""
    commit_message: str | None = None
    """Commit message of the final push; null writes one with the step count and main metric."""

    def validate(self) -> None:
        if self.push_to_hub or self.push_checkpoints:
            check(
                self.repo_id is not None,
                "repo_id",
                "required when hub.push_to_hub or hub.push_checkpoints is true",
            )
        if self.repo_id is not None:
            ok = re.fullmatch(r"(?:[\w.-]+/)?[\w.-]+", self.repo_id) is not None
            check(ok, "repo_id", f"must look like 'user/name', got {self.repo_id!r}")
        check(bool(self.checkpoint_branch.strip()), "checkpoint_branch", "must not be empty")


@dataclass
class TrackingArgs:
    """Experiment tracking and plots."""

    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = field(default_factory=list)
    """Trackers to log to through accelerate, in pretraining and fine-tuning alike; each needs its
    package installed (`pip install tensorboard`), else the run stops before it starts. [] logs only
    to the console and metrics.jsonl."""
    project_name: str = "hfpipe"
    """Project (experiment group) name passed to the trackers."""
    peak_tflops: float | None = None
    """Peak dense TFLOP/s of one device, used for model FLOPs utilization (MFU); null guesses it
    from the device name."""
    plot: bool = True
    """Write a loss-curve PNG to output_dir at the end of training."""

    def validate(self) -> None:
        check(
            len(set(self.report_to)) == len(self.report_to), "report_to", f"has duplicates: {self.report_to}"
        )
        check(bool(self.project_name.strip()), "project_name", "must not be empty")
        if self.peak_tflops is not None:
            check(self.peak_tflops > 0, "peak_tflops", f"must be > 0 (or null), got {self.peak_tflops}")
