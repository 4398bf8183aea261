"""`hfpipe plan`: size the model, batch and schedule to a time budget on this machine, and write the recipe.

    hfpipe plan --minutes 60                                     # measure here, print the table
    hfpipe plan --minutes 60 --base tiny data.source=../shared/data/wikitext-2/train.txt \\
        data.validation_source=../shared/data/wikitext-2/valid.txt --out recipes/pretrain/cpu-hour.yaml
    hfpipe plan --minutes 60 --device cuda --estimate-tflops 989 --mfu 0.35 --out gpu-hour.yaml   # no GPU here

Two halves, kept apart so the decision is testable without timing anything:

  measure_throughputs(...)  runs each candidate preset for a few seconds through the real pretraining
                            setup (`pretrain.setup`: tokenizer, packed rows of the embedded corpus,
                            `masked_batch`, the model with sparse prediction) and the real step
                            (`train_step`), plus one pass of the real `evaluate`; it returns tokens/s.
  decide(measurements, ...) turns measured (or given, or estimated) throughputs into a `Plan`.

The rule (why this model). At a fixed compute budget the loss-optimal model sees about 20 training
tokens per parameter (Chinchilla: Hoffmann et al. 2022, "Training Compute-Optimal Large Language
Models", parameters counted with embeddings). Cramming (Geiping & Goldstein 2022, "Cramming: Training
a Language Model on a Single GPU in One Day") found the same for BERT-style MLM at a one-day budget:
what a model learns depends mostly on the tokens it processes, so a model too big for the budget
loses. So: among the presets, take the LARGEST whose measured throughput gives it at least
`tokens_per_param` (default 20) tokens in the budget. No encoder-specific constant is settled in
the literature (ModernBERT, Warner et al. 2024, trains ~13,000 tokens/param: it optimizes for
inference, not training compute), and an MLM learns from only its 15-30% masked tokens, so 20 is a
floor: `--tokens-per-param` raises it. Too small a budget for every preset is an error that names
the smallest budget that works.

The rest of the plan:
  * sequence length 128: BERT trained 90% of its steps at 128, Cramming all of them; attention
    cost and padding waste grow with length, and short-budget runs do not need long context.
  * global batch: the largest power of two that still leaves `MIN_STEPS` optimizer steps, between
    32 and 4,096 rows (Cramming ramps to 4,096; small budgets need steps more than large batches);
    the micro-batch is the measured one, the rest is gradient accumulation.
  * learning rate: pre-norm (modern-*) 1e-3 up to 50M parameters (Cramming), 8e-4 up to 200M
    (ModernBERT-base), 5e-4 above (ModernBERT-large); post-norm (bert-*) 5e-4, or 1e-4 above 50M
    (Devlin et al. 2019): post-norm is unstable at high rates (Xiong et al. 2020).
  * schedule: warmup-stable-decay on the wall clock, 5% warmup, the last 20% decaying linearly to 0
    (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations":
    a 20% cooldown matches cosine) -- and any stable-phase checkpoint can be finished later with
    `hfpipe decay`.
  * masking: 30% for modern presets (ModernBERT; Wettig et al. 2022, "Should You Mask 15% in MLM?"),
    15% for BERT ones (Devlin et al. 2019).
  * evaluation: `EVALS` evaluations inside the budget on a fixed number of validation rows chosen so
    they take at most `EVAL_SHARE` (3%) of it at the measured evaluation speed (and at most
    `EVAL_MAX_TOKENS` tokens each); the final evaluation
    runs after the budget (train.max_minutes counts the loop's wall time, periodic evaluations and
    checkpoint saves included; see train/budget.py).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PretrainRecipe, deep_merge, from_dict, parse_overrides, yaml12
from .step import TrainingError

TOKENS_PER_PARAM = 20.0
"""Chinchilla's compute-optimal ratio (Hoffmann et al. 2022): training tokens per parameter."""
EVAL_SHARE = 0.03
"""Periodic evaluation may cost at most this fraction of the budget."""
EVALS = 4
"""Evaluations inside the budget (the final one comes after it)."""
EVAL_MAX_TOKENS = 2**20
"""Nor more than this many tokens per evaluation (~200k masked tokens: the loss's standard error is
already far below any difference worth reading)."""
MIN_STEPS = 2000
"""The global batch is chosen to leave at least this many optimizer steps (when the budget allows)."""
MIN_BATCH, MAX_BATCH = 32, 4096
BLOCK_SIZE = 128
WARMUP_FRACTION, DECAY_FRACTION = 0.05, 0.2
MEASURE_DOCUMENTS = 3000
"""Documents of the embedded corpus tokenized for the measurement (enough rows for every step)."""


@dataclass(frozen=True)
class Measurement:
    """How fast one preset trains (and evaluates) here: real input tokens per second."""

    preset: str
    params: int
    """Trainable parameters, embeddings included (Chinchilla's count)."""
    tokens_per_sec: float
    eval_tokens_per_sec: float
    micro_batch: int
    source: str = "measured"
    """`measured` on this machine, or `estimated` from FLOPs (--estimate-tflops)."""


@dataclass
class Row:
    """One line of the decision table."""

    measurement: Measurement
    train_seconds: float
    tokens: float
    tokens_per_param: float
    fits: bool


@dataclass
class Plan:
    """Everything the recipe needs, and the table it was decided from."""

    minutes: float
    device: str
    tokens_per_param_rule: float
    rows: list[Row]
    choice: Row
    block_size: int
    micro_batch: int
    accumulation: int
    lr: float
    mlm_probability: float
    steps: int
    eval_batch_size: int
    eval_max_batches: int
    eval_every_steps: int
    save_every_steps: int
    log_every_steps: int
    notes: list[str] = field(default_factory=list)

    @property
    def preset(self) -> str:
        return self.choice.measurement.preset

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation


# ----------------------------------------------------------------------------------------------
# The decision: pure arithmetic on throughputs (tests give it numbers)
# ----------------------------------------------------------------------------------------------


def decide(
    measurements: Sequence[Measurement],
    *,
    minutes: float,
    device: str = "cpu",
    tokens_per_param: float = TOKENS_PER_PARAM,
    block_size: int = BLOCK_SIZE,
    eval_batch_size: int = 64,
) -> Plan:
    """The plan for `minutes` of training given each candidate's throughput.

    Raises TrainingError when no candidate reaches `tokens_per_param`, naming the smallest budget
    that works."""
    if minutes <= 0:
        raise TrainingError(f"--minutes must be > 0, got {minutes}")
    if not measurements:
        raise TrainingError("no candidate preset was measured")
    train_seconds = minutes * 60 * (1 - EVAL_SHARE)
    rows = []
    for m in sorted(measurements, key=lambda m: m.params):
        tokens = m.tokens_per_sec * train_seconds
        rows.append(Row(m, train_seconds, tokens, tokens / m.params, tokens / m.params >= tokens_per_param))
    fitting = [r for r in rows if r.fits]
    if not fitting:
        raise TrainingError(too_small_message(rows, minutes, tokens_per_param))
    choice = fitting[-1]  # the largest that still sees enough tokens
    m = choice.measurement
    rows_seen = choice.tokens / block_size
    global_batch = _pow2_floor(rows_seen / MIN_STEPS)
    global_batch = min(max(global_batch, MIN_BATCH), MAX_BATCH)
    micro = min(m.micro_batch, global_batch)
    accumulation = max(1, global_batch // micro)
    steps = max(1, int(rows_seen // (micro * accumulation)))
    # Evaluation: EVALS evaluations inside the budget take at most EVAL_SHARE of it.
    eval_tokens = min(EVAL_SHARE * minutes * 60 * m.eval_tokens_per_sec / EVALS, EVAL_MAX_TOKENS)
    eval_max_batches = max(1, int(eval_tokens // (eval_batch_size * block_size)))
    plan = Plan(
        minutes=minutes, device=device, tokens_per_param_rule=tokens_per_param, rows=rows, choice=choice,
        block_size=block_size, micro_batch=micro, accumulation=accumulation, lr=peak_lr(m.preset, m.params),
        mlm_probability=0.30 if m.preset.startswith("modern-") else 0.15, steps=steps,
        eval_batch_size=eval_batch_size, eval_max_batches=eval_max_batches,
        eval_every_steps=max(1, math.ceil(steps / (EVALS + 1))), save_every_steps=max(1, math.ceil(steps / 10)),
        log_every_steps=max(1, min(50, steps // 100)),
    )  # fmt: skip
    if steps < MIN_STEPS:
        plan.notes.append(f"only {steps} optimizer steps at the smallest global batch ({MIN_BATCH} rows)")
    return plan


def too_small_message(rows: Sequence[Row], minutes: float, tokens_per_param: float) -> str:
    smallest = min(rows, key=lambda r: minutes_needed(r.measurement, tokens_per_param))
    m, need = smallest.measurement, minutes_needed(smallest.measurement, tokens_per_param)
    return (
        f"a {minutes:g}-minute budget is too small for every preset measured here: the best candidate, "
        f"{m.preset} ({m.params / 1e6:.2f}M parameters, {m.tokens_per_sec:,.0f} tokens/s), would see "
        f"{smallest.tokens_per_param:.1f} tokens per parameter, and needs {tokens_per_param:g}. The smallest "
        f"budget that works is --minutes {math.ceil(need)} (or lower --tokens-per-param)"
    )


def minutes_needed(m: Measurement, tokens_per_param: float) -> float:
    """Budget in which `m` sees `tokens_per_param` tokens per parameter (evaluation share included)."""
    return tokens_per_param * m.params / m.tokens_per_sec / (1 - EVAL_SHARE) / 60


def peak_lr(preset: str, params: int) -> float:
    if preset.startswith("modern-"):  # pre-norm
        return 1e-3 if params <= 50e6 else 8e-4 if params <= 200e6 else 5e-4
    return 5e-4 if params <= 50e6 else 1e-4  # post-norm BERT


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1.0)))))


# ----------------------------------------------------------------------------------------------
# Throughputs: measured here, or estimated from FLOPs for a device that is not here
# ----------------------------------------------------------------------------------------------


def count_parameters(preset: str, vocab_size: int, block_size: int = BLOCK_SIZE) -> int:
    """Trainable parameters of the preset's MLM model (built on the meta device: no memory, no init)."""
    import torch

    from ..model.configuration_hfpipe import PRESETS, HfpipeConfig
    from ..model.modeling_hfpipe import HfpipeForMaskedLM

    positions = max(block_size, PRESETS[preset].get("max_position_embeddings", 512))
    with torch.device("meta"):
        model = HfpipeForMaskedLM(
            HfpipeConfig.from_preset(preset, vocab_size=vocab_size, max_position_embeddings=positions)
        )
    return sum(p.numel() for p in model.parameters())


def candidates(vocab_size: int, presets: Iterable[str] | None = None) -> list[str]:
    """Preset names, smallest first."""
    from ..model.configuration_hfpipe import PRESETS

    names = list(presets) if presets is not None else list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise TrainingError(f"unknown preset(s) {unknown}; available: {', '.join(PRESETS)}")
    return sorted(names, key=lambda n: count_parameters(n, vocab_size))


def estimated_throughputs(
    presets: Iterable[str],
    *,
    vocab_size: int,
    tflops: float,
    mfu: float,
    micro_batch: int,
    block_size: int = BLOCK_SIZE,
) -> list[Measurement]:
    """Tokens/s = tflops x mfu / training FLOPs per token (train/logs.py's count); evaluation, a forward
    pass only, at 3x that. For planning a device this machine does not have; label it as estimated."""
    from ..model.configuration_hfpipe import HfpipeConfig
    from .logs import mlm_flops_per_token

    out = []
    for preset in presets:
        mask = 0.30 if preset.startswith("modern-") else 0.15
        flops = mlm_flops_per_token(HfpipeConfig.from_preset(preset, vocab_size=vocab_size), block_size, mask)
        rate = tflops * 1e12 * mfu / flops
        out.append(
            Measurement(
                preset,
                count_parameters(preset, vocab_size, block_size),
                rate,
                3 * rate,
                micro_batch,
                source="estimated",
            )
        )
    return out


def measure_throughputs(
    presets: Iterable[str],
    *,
    vocab_size: int,
    micro_batch: int,
    seconds: float = 5.0,
    block_size: int = BLOCK_SIZE,
    work_dir: str | Path | None = None,
    stop_when: Callable[[Measurement], bool] | None = None,
    warmup_steps: int = 1,
    min_steps: int = 2,
    data: dict | None = None,
) -> list[Measurement]:
    """Train each preset for about `seconds` (after `warmup_steps` untimed steps) on packed rows of the
    recipe's data (`data`: the base recipe's `data:` section; the embedded corpus when None) through
    `pretrain.setup` and `train_step`, then evaluate once with `pretrain.evaluate`.

    `stop_when(measurement)` True stops before the larger presets (they can only be slower per
    parameter): the planner stops at the first preset that misses the tokens-per-parameter rule."""
    from .pretrain import evaluate, setup, train_batches

    out: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="hfpipe-plan-") as tmp:
        root = Path(work_dir or tmp)
        tokenizer_dir = None
        for preset in presets:
            recipe = measurement_recipe(
                preset, root / preset, vocab_size, micro_batch, block_size, tokenizer_dir, data
            )
            run = setup(recipe)
            tokenizer_dir = tokenizer_dir or str(root / preset / "tokenizer")
            batches = train_batches(run)  # the loop's own batches: packed rows, masked per (seed, step, row)
            for _ in range(warmup_steps):
                _step(run, next(batches))
            start, tokens0, steps = time.perf_counter(), run.state.tokens, 0
            while steps < min_steps or time.perf_counter() - start < seconds:
                _step(run, next(batches))
                steps += 1
            train_rate = (run.state.tokens - tokens0) / (time.perf_counter() - start)
            eval_tokens = sum(int(_batch(b)["attention_mask"].sum()) for b in run.eval_batches)
            start = time.perf_counter()
            evaluate(run)
            eval_rate = eval_tokens / (time.perf_counter() - start)
            params = sum(p.numel() for p in run.model.parameters())
            run.accelerator.free_memory()
            m = Measurement(preset, params, train_rate, eval_rate, micro_batch)
            out.append(m)
            if stop_when is not None and stop_when(m):
                break
    return out


def measurement_recipe(
    preset: str, out_dir: Path, vocab_size: int, micro_batch: int, block_size: int, tokenizer_dir: str | None,
    data: dict | None = None,
) -> PretrainRecipe:
    """A pretraining recipe for the measurement: the model at the planned vocab size, on the first
    MEASURE_DOCUMENTS documents of the data the plan is for (`data`, the base recipe's `data:` section;
    the embedded corpus when None): the speed of packing, masking and the step depends on the text."""
    tokenizer = {"name_or_path": tokenizer_dir} if tokenizer_dir else {"vocab_size": min(vocab_size, 8192)}
    measured_data = {**(data or {"source": "builtin:python-docs"}), "block_size": block_size,
                     "max_documents": MEASURE_DOCUMENTS, "max_validation_documents": 200, "streaming": False}
    return from_dict(PretrainRecipe, {
        "output_dir": str(out_dir), "model": {"preset": preset, "config_overrides": {"vocab_size": vocab_size}},
        "tokenizer": tokenizer,
        "data": measured_data,
        "train": {"max_steps": 1000, "batch_size": micro_batch, "resume": "none", "eval_every_steps": None,
                  "save_every_steps": None, "mixed_precision": "auto"},
        "eval": {"batch_size": 64, "max_batches": 2}, "tracking": {"plot": False},
    })  # fmt: skip


def _step(run, micro_batches: list[dict]) -> None:
    """One optimizer step as `pretrain.fit` takes it: the lr, then `train_step` on the loop's batches."""
    from .checkpoint import checkpoint_dir
    from .optim import set_lr
    from .step import train_step

    train = run.recipe.train
    set_lr(run.optimizer, train.lr)
    train_step(
        run.model,
        run.optimizer,
        run.accelerator,
        micro_batches,
        run.state,
        max_grad_norm=train.max_grad_norm,
        on_nan=train.on_nan,
        checkpoints=checkpoint_dir(run.out_dir),
    )


def _batch(item) -> dict:
    """An entry of `Run.eval_batches`: a batch, or (batch, counted)."""
    return item[0] if isinstance(item, tuple) else item


# ----------------------------------------------------------------------------------------------
# Output: the table and the recipe
# ----------------------------------------------------------------------------------------------


def format_table(plan: Plan) -> str:
    lines = [
        f"{'preset':<13} {'params':>8} {'tokens/s':>10} {'eval tok/s':>10} {'tokens in budget':>17} "
        f"{'tokens/param':>12}  verdict",
    ]
    for r in plan.rows:
        m = r.measurement
        verdict = (
            ("CHOSEN" if r is plan.choice else "fits") if r.fits else f"< {plan.tokens_per_param_rule:g}"
        )
        lines.append(
            f"{m.preset:<13} {m.params / 1e6:>7.2f}M {m.tokens_per_sec:>10,.0f} {m.eval_tokens_per_sec:>10,.0f} "
            f"{r.tokens / 1e6:>16.1f}M {r.tokens_per_param:>12.1f}  {verdict} ({m.source})"
        )
    return "\n".join(lines)


def format_summary(plan: Plan) -> str:
    c = plan.choice
    lines = [
        f"budget {plan.minutes:g} min on {plan.device}; rule: the largest preset with >= "
        f"{plan.tokens_per_param_rule:g} training tokens per parameter (Chinchilla; Cramming)",
        f"model      {plan.preset} ({c.measurement.params / 1e6:.2f}M parameters, ~{c.tokens / 1e6:.1f}M tokens, "
        f"{c.tokens_per_param:.0f} tokens/param)",
        f"batch      {plan.global_batch} rows x {plan.block_size} tokens = {plan.micro_batch} x "
        f"{plan.accumulation} accumulation; ~{plan.steps:,} optimizer steps",
        f"schedule   wsd on the wall clock: peak lr {plan.lr:g}, warmup {WARMUP_FRACTION:.0%}, "
        f"decay over the last {DECAY_FRACTION:.0%} to 0; masking {plan.mlm_probability:.0%}",
        f"evaluation {EVALS} x {plan.eval_max_batches} batches of {plan.eval_batch_size} rows in the budget "
        f"(<= {EVAL_SHARE:.0%} of it at the measured speed), every {plan.eval_every_steps} steps; final one after",
    ]
    return "\n".join(lines + [f"note       {n}" for n in plan.notes])


def planned_output_dir(plan: Plan, out: str | Path | None) -> str:
    """A run folder of its own, named after the recipe file (`my-hour.yaml` -> `runs/my-hour`), never the
    base recipe's: a planned run must not resume, or overwrite, the run it was planned from."""
    name = Path(out).stem if out else f"plan-{plan.minutes:g}min-{plan.preset}"
    return f"runs/{name}"


def plan_recipe(plan: Plan, base: dict, *, precision: str | None = None, output_dir: str | None = None) -> dict:
    """The base recipe (a dict as its YAML file holds it, overrides merged) with the plan's keys set
    (`output_dir` when given: the base recipe's is another run's folder)."""
    planned = {
        **({"output_dir": output_dir} if output_dir else {}),
        "model": {"preset": plan.preset},
        "data": {"block_size": plan.block_size, "mode": "pack"},
        "masking": {"mlm_probability": plan.mlm_probability},
        "train": {
            "max_steps": None, "max_tokens": None, "num_epochs": None, "max_minutes": plan.minutes,
            "batch_size": plan.micro_batch, "gradient_accumulation_steps": plan.accumulation, "lr": plan.lr,
            "schedule": "wsd", "warmup_fraction": WARMUP_FRACTION, "warmup_steps": None,
            "decay_fraction": DECAY_FRACTION, "min_lr_ratio": 0.0, "mixed_precision": precision,
            "log_every_steps": plan.log_every_steps, "eval_every_steps": plan.eval_every_steps,
            "save_every_steps": plan.save_every_steps, "keep_last": 3,
        },
        "eval": {"batch_size": plan.eval_batch_size, "max_batches": plan.eval_max_batches},
    }  # fmt: skip
    merged = deep_merge(base, planned)
    model = merged["model"]
    model.pop("name_or_path", None)
    if "vocab_size" in model.get("config_overrides", {}):
        model["config_overrides"].pop("vocab_size")
    return merged


def recipe_header(plan: Plan, command: str) -> str:
    lines = [
        f"Made by `hfpipe plan` for {plan.minutes:g} minutes on {plan.device}:",
        f"  {command}",
        "  hfpipe pretrain THIS_FILE                 # then, from any stable-phase checkpoint:",
        "  hfpipe decay OUTPUT_DIR --minutes M       # a finished model early (decay phase only)",
        "Time: train.max_minutes counts the training loop's wall clock, periodic evaluations and checkpoint",
        f"saves INCLUDED; they are sized to <= {EVAL_SHARE:.0%} of it. The final evaluation and export come after.",
        "The table the planner decided from:",
        *("  " + line for line in format_table(plan).splitlines()),
    ]
    return "".join(f"# {line}\n" for line in lines)


def load_base(base: str, overrides: Sequence[str]) -> dict:
    """The base recipe's YAML (a shipped name or a path) with overrides merged, as a plain dict."""
    from ..config.recipes_index import resolve_recipe

    path = resolve_recipe(base, "pretrain")
    data = yaml12.load(Path(path).read_text(encoding="utf-8")) or {}
    return deep_merge(data, parse_overrides(overrides))


def make_plan(args) -> tuple[Plan, dict]:
    """From parsed CLI arguments: measure (or estimate) and decide; returns the plan and the base dict."""
    base = load_base(args.base, args.overrides)
    base_recipe = from_dict(PretrainRecipe, base)
    vocab = base_recipe.tokenizer.vocab_size
    names = candidates(vocab, args.presets)
    micro = args.micro_batch or (128 if args.device == "cuda" else 32)
    if args.estimate_tflops:
        measured = estimated_throughputs(
            names, vocab_size=vocab, tflops=args.estimate_tflops, mfu=args.mfu, micro_batch=micro
        )
    else:
        _require_device(args.device)
        budget_s = args.minutes * 60 * (1 - EVAL_SHARE)
        measured = measure_throughputs(
            names, vocab_size=vocab, micro_batch=micro, seconds=args.seconds,
            stop_when=lambda m: m.tokens_per_sec * budget_s / m.params < args.tokens_per_param,
            data=base.get("data"),
        )  # fmt: skip
    plan = decide(
        measured,
        minutes=args.minutes,
        device=args.device,
        tokens_per_param=args.tokens_per_param,
        eval_batch_size=256 if args.device == "cuda" else 64,
    )
    return plan, base


def _require_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "--device cuda: no CUDA device here; plan on the GPU machine, or estimate with "
            "--estimate-tflops (the device's dense bf16 TFLOP/s) and --mfu"
        )
    if device == "cpu" and torch.cuda.is_available():
        raise TrainingError("--device cpu on a machine with a GPU: hide it first (CUDA_VISIBLE_DEVICES=)")


def run_plan(args) -> int:
    """`hfpipe plan` (cli.py parses the arguments)."""
    import shlex
    import sys

    plan, base = make_plan(args)
    print(format_table(plan))
    print()
    print(format_summary(plan))
    if args.out:
        # The run gets a folder of its own unless the command line named one (the base's is another run's).
        named = parse_overrides(args.overrides).get("output_dir")
        recipe = plan_recipe(plan, base, precision=args.precision, output_dir=named or planned_output_dir(plan, args.out))
        from_dict(PretrainRecipe, recipe)  # the written recipe validates
        command = "hfpipe " + " ".join(shlex.quote(a) for a in (args.argv or sys.argv[1:]))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(recipe_header(plan, command) + yaml12.dump(recipe))
        print(f"\nrecipe written to {args.out}")
    return 0
