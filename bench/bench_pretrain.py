"""Pretraining speed, memory and loss in a time budget: hfpipe vs BERT trained as run_mlm_no_trainer does.

    python bench/bench_pretrain.py [--steps N] [--batch-size B] [--minutes M] [--device cpu|cuda]
        [--mixed-precision no|bf16|fp16] [--ablations full-logits,no-doc-mask] [--out bench/results/pretrain.json]
    python bench/bench_pretrain.py --device cuda --mixed-precision bf16 --steps 200 --warmup-steps 10 \\
        --chunk-steps 20 --minutes 5                                                       # on a GPU

Both sides are bert-mini (hidden 256, 4 layers, 4 heads, intermediate 1024, vocab 30522, 128-token
rows, post-norm, GELU, dropout 0.1, tied decoder; parameter counts are printed), trained on
WikiText-2 train from ../shared/data with ONE WordPiece tokenizer (hfpipe.data.tokenizer.train_tokenizer,
vocab 30522, trained once on train.txt and cached; `--tokenizer DIR` loads another, e.g. the
bert-base-uncased vocab shipped in the MiniLM package), with the same batch, learning rate, weight
decay, linear schedule and warmup fraction:

* hfpipe: the shipped recipe recipes/pretrain/bert-mini-wikitext.yaml (paths, batch, lr overridden),
  `tokenize_dataset` pack mode (document-aware packing, positions restart per document, no token
  dropped), `StepSampler` + `masked_batch` (per-row seeded `mask_tokens`), `HfpipeForMaskedLM` with
  attn_implementation="sdpa" given a per-document attention mask, sparse MLM prediction (decoder and
  CE only at masked positions), `hfpipe.train.step.train_step` -- the step both training loops run
  (loss over the global masked count, clipping at train.max_grad_norm) -- with `build_optimizer`
  (AdamW, no decay on 1-D parameters, betas (0.9, 0.98)) and the LR and stopping rule of `Budget`
  (steps, or wall-clock minutes in the budget phase, as Cramming).
* BERT: transformers' examples/pytorch/language-modeling/run_mlm_no_trainer.py: load_dataset("text"),
  `tokenizer(texts, return_special_tokens_mask=True)`, `group_texts` into 128-token blocks (documents
  run together, the remainder of each 1000-line map batch dropped, blank lines kept as [CLS] [SEP]),
  DataCollatorForLanguageModeling(mlm_probability=0.15), DataLoader(shuffle=True), AdamW with no decay
  on bias/LayerNorm.weight (torch defaults betas (0.9, 0.999)), get_scheduler("linear"), no clipping,
  accelerate; BertForMaskedLM from_config with attn_implementation="sdpa" (no mask: rows are full, so
  sdpa gets attn_mask=None), full-vocabulary logits at all 128 positions. With a wall-clock budget
  its max_train_steps is the budget divided by its step time measured in the throughput phase (the
  example needs a step count up front).

How it is measured. Each side runs in its own worker process (so peak RSS is that side's alone) and
the parent alternates them: the throughput phase runs `--chunk-steps` steps of one side, then of the
other, reversing the order every round (A B B A A B ...), after `--warmup-steps` untimed steps each;
the machine is shared and load varies, so the ratio is also reported per round, separately for
rounds where hfpipe ran first and where BERT ran first. The budget phase restarts both from scratch
and alternates `--slice-seconds` slices until each has trained `--minutes` of its own time, then
evaluates both on the same fixed-mask validation set: the first `--eval-blocks` packed rows of
WikiText-2 valid, masked once with a fixed seed exactly as `hfpipe.train.pretrain` masks its eval set
(same tokens, same masked positions, same labels for both; each model reads them as it was trained:
hfpipe with its restarting position_ids, BERT as plain rows). Reported: tokens/s over input tokens
(padding included) and over real tokens (BERT's rows have no padding; hfpipe's only padding is the
short last row of each packing batch), step time, data-path time per step (collate + mask), peak
RSS and its growth from before the model was built (CPU), torch.cuda.max_memory_allocated (GPU),
and vocab-size cross-entropy over the masked positions of the fixed validation set.

What makes it faster. Measured on 2 shared CPU cores (`python bench/bench_pretrain.py`, batch 32,
12 interleaved steps per side, load average ~4.6): hfpipe 1,185 real tokens/s vs BERT 697 (x1.70;
per round x1.83 median with hfpipe first, x1.69 with BERT first), peak RSS 1.67 vs 3.25 GB, 34 vs
20 steps in 2 minutes and validation MLM loss 7.97 vs 8.84. The full-logits ablation (the same
hfpipe model, data and loop, but the MLM head on all B x T positions, as BERT does) runs at 606
tokens/s (x0.51 of hfpipe, x0.87 of BERT) and peaks at 3.28 GB like BERT: sparse prediction is the
whole gain. At bert-mini size the decoder to 30522 words (7.8 M MACs per position) costs more than
the 4 encoder layers (~3.3 M MACs per token), and its (B, T, V) logits and their gradient are most
of the activation memory; computing them at the ~15% masked positions removes most of both. The
no-doc-mask ablation (hfpipe without position_ids, so sdpa gets no mask) read x1.13, within this
machine's noise (chunk times of one side varied 2x with the load; an in-process A/B of the model
alone showed no difference), so the per-document mask costs little here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "wikitext-2"
DEFAULT_OUT = REPO / "bench" / "results" / "pretrain.json"
RECIPE = REPO / "recipes" / "pretrain" / "bert-mini-wikitext.yaml"
BERT_MINI = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
VOCAB, BLOCK, MLM_PROBABILITY = 30522, 128, 0.15
ABLATIONS = ("full-logits", "no-doc-mask")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=12, help="timed steps per side in the throughput phase")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per side before timing")
    p.add_argument("--chunk-steps", type=int, default=2, help="steps per side per turn (interleaving)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--minutes", type=float, default=2.0, help="wall-clock training budget per side (0: skip)")
    p.add_argument("--slice-seconds", type=float, default=20.0, help="budget-phase turn length")
    p.add_argument("--eval-blocks", type=int, default=128, help="validation rows (fixed masks)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-fraction", type=float, default=0.06)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    p.add_argument(
        "--ablations", default="full-logits,no-doc-mask", help=f"comma list from {ABLATIONS}, or 'none'"
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with train.txt and valid.txt")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder; default: train WordPiece 30522 once")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "hfpipe-bench-pretrain")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one side
    args = p.parse_args(argv)
    args.ablations = [] if args.ablations in ("", "none") else args.ablations.split(",")
    for name in args.ablations:
        if name not in ABLATIONS:
            p.error(f"--ablations: unknown {name!r}; choose from {', '.join(ABLATIONS)}")
    for name in ("train.txt", "valid.txt"):
        if not (args.data_dir / name).is_file():
            p.error(
                f"--data-dir {args.data_dir}: {name} not found (WikiText-2 lives in ../shared/data/wikitext-2)"
            )
    if args.steps < 1 or args.batch_size < 1 or args.chunk_steps < 1:
        p.error("--steps, --batch-size and --chunk-steps must be >= 1")
    return args


# ----------------------------------------------------------------------------------------------
# Shared inputs: tokenizer, hfpipe recipe, data (built once by the parent; workers hit the caches)
# ----------------------------------------------------------------------------------------------


def get_bench_tokenizer(args):
    from hfpipe.config import TokenizerArgs
    from hfpipe.data.tokenizer import load_tokenizer, train_tokenizer

    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    folder = args.work_dir / "wordpiece-30522"
    if (folder / "tokenizer.json").exists():
        return load_tokenizer(folder)
    texts = (line for line in open(args.data_dir / "train.txt", encoding="utf-8") if line.strip())
    train_tokenizer(texts, TokenizerArgs(type="wordpiece", vocab_size=VOCAB), output_dir=folder)
    return load_tokenizer(folder)  # as the workers load it (the datasets cache key hashes the object)


def hfpipe_recipe(args, tokenizer_dir: str, mode: str = "pack", extra: tuple[str, ...] = ()):
    from hfpipe.config import PretrainRecipe, load_recipe

    overrides = [
        f"output_dir={args.work_dir / 'hfpipe-run'}", f"seed={args.seed}", f"tokenizer.name_or_path={tokenizer_dir}",
        f"data.source={args.data_dir / 'train.txt'}", f"data.validation_source={args.data_dir / 'valid.txt'}",
        f"data.block_size={BLOCK}", f"data.mode={mode}", f"masking.mlm_probability={MLM_PROBABILITY}",
        f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", f"train.weight_decay={args.weight_decay}",
        f"train.warmup_fraction={args.warmup_fraction}", "train.schedule=linear",
        f"train.mixed_precision={args.mixed_precision}", "model.preset=bert-mini", "model.attn_implementation=sdpa",
        f"model.config_overrides={{vocab_size: {VOCAB}}}", *extra,
    ]  # fmt: skip
    return load_recipe(RECIPE, PretrainRecipe, overrides)


def hfpipe_data(recipe, tokenizer):
    from hfpipe.data.sources import load_text_datasets, tokenize_dataset

    train_texts, val_texts = load_text_datasets(recipe.data, seed=recipe.seed)
    train = tokenize_dataset(train_texts, tokenizer, recipe.data, whole_word=False)
    return train, tokenize_dataset(val_texts, tokenizer, recipe.data, whole_word=False)


def run_mlm_train_set(args, tokenizer):
    """run_mlm_no_trainer's non-line-by-line path, verbatim in substance."""
    import datasets

    raw = datasets.load_dataset("text", data_files={"train": str(args.data_dir / "train.txt")})["train"]
    tokenized = raw.map(
        tokenize_function, batched=True, remove_columns=["text"], fn_kwargs={"tokenizer": tokenizer}
    )
    return tokenized.map(group_texts, batched=True)


def tokenize_function(examples, tokenizer):
    return tokenizer(examples["text"], return_special_tokens_mask=True)


def group_texts(examples):
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total_length = len(concatenated[list(examples.keys())[0]])
    if total_length >= BLOCK:
        total_length = (total_length // BLOCK) * BLOCK
    return {k: [t[i : i + BLOCK] for i in range(0, total_length, BLOCK)] for k, t in concatenated.items()}


def build_eval_set(recipe, tokenizer, val_set, n_blocks: int) -> dict:
    """The first n_blocks packed validation rows, masked as hfpipe.train.pretrain masks its eval set."""
    from hfpipe.data.loader import fixed_eval_batches

    (batch,) = fixed_eval_batches(val_set, tokenizer, masking=recipe.masking, mlm_probability=MLM_PROBABILITY,
                                  seed=recipe.seed, batch_size=n_blocks, max_batches=1)  # fmt: skip
    return batch


# ----------------------------------------------------------------------------------------------
# The two sides. Each: start(total_steps | budget_seconds) builds a fresh model, optimizer and
# schedule; step() runs one optimizer step and returns its figures; evaluate() scores the eval set.
# ----------------------------------------------------------------------------------------------


class HfpipeSide:
    """hfpipe through its public functions: the recipe, the loader (`StepSampler`, `masked_batch`),
    `build_model`, `build_optimizer`, `Budget` and `train_step`, the very step of both training loops
    (one process, one micro-batch)."""

    def __init__(self, args, accelerator, tokenizer, variant: str | None):
        self.args, self.accelerator, self.tokenizer, self.variant = args, accelerator, tokenizer, variant
        self.recipe = hfpipe_recipe(args, args.tokenizer)
        self.train_set, _ = hfpipe_data(self.recipe, tokenizer)

    def start(self, total_steps: int | None, budget_seconds: float | None) -> dict:
        from hfpipe.data.loader import StepSampler
        from hfpipe.train.budget import Budget
        from hfpipe.train.optim import build_optimizer
        from hfpipe.train.pretrain import build_model
        from hfpipe.train.step import LoopState

        budget = (f"train.max_steps={total_steps or 'null'}",
                  f"train.max_minutes={budget_seconds / 60 if budget_seconds else 'null'}")  # fmt: skip
        self.recipe = hfpipe_recipe(self.args, self.args.tokenizer, extra=budget)
        train = self.recipe.train
        self.accelerator.free_memory()
        torch.manual_seed(self.args.seed)
        model = build_model(self.recipe, self.tokenizer)
        optimizer = build_optimizer(model, train)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.model.train()
        self.budget, self.state = Budget(train), LoopState()
        self.sampler = StepSampler(len(self.train_set), self.recipe.seed, train.batch_size, 1, 1)
        return {"parameters": sum(p.numel() for p in model.parameters()),
                "attention": f"{model.config._attn_implementation} (per-document mask from position_ids)"}  # fmt: skip

    @property
    def seconds(self) -> float:  # training time so far: the sum of step times
        return self.state.elapsed

    def done(self) -> bool:
        from hfpipe.train.budget import budget_spent

        return budget_spent(self.budget, self.state, self.accelerator)

    def step(self) -> dict:
        from hfpipe.data.loader import masked_batch
        from hfpipe.train.checkpoint import checkpoint_dir
        from hfpipe.train.optim import set_lr
        from hfpipe.train.step import train_step

        start, train = time.perf_counter(), self.recipe.train
        set_lr(self.optimizer, self.budget.lr(self.state.step, self.state.tokens, self.state.elapsed))
        items = self.sampler.micro_batch(self.state.step, 0, 0)
        mb = masked_batch(self.train_set, items, self.tokenizer, self.recipe.masking, MLM_PROBABILITY,
                          self.recipe.seed, self.state.step)  # fmt: skip
        if self.variant == "no-doc-mask":
            del mb["position_ids"]
        data_s = time.perf_counter() - start
        result = train_step(self.model, self.optimizer, self.accelerator, [mb], self.state,
                            max_grad_norm=train.max_grad_norm, on_nan=train.on_nan,
                            checkpoints=checkpoint_dir(self.recipe.output_dir),
                            loss_fn=full_logits_loss if self.variant == "full-logits" else None)  # fmt: skip
        seconds = time.perf_counter() - start
        self.state.elapsed += seconds
        return {"s": seconds, "data_s": data_s, "input_tokens": mb["input_ids"].numel(), "real_tokens": result.tokens,
                "masked": result.targets, "loss": result.loss}  # fmt: skip

    @torch.no_grad()
    def evaluate(self, eval_set: dict) -> dict:
        self.model.eval()
        totals = [0.0, 0, 0]
        for rows in batches(eval_set, self.args.eval_batch_size, self.accelerator.device):
            with self.accelerator.autocast():
                out = self.model(**rows)  # logits (N, V) at the masked positions
            labels = rows["labels"][rows["labels"] != -100]
            totals = accumulate(totals, out.loss, out.logits, labels)
        self.model.train()
        return eval_metrics(totals)


def full_logits_loss(model, batch: dict) -> torch.Tensor:
    """The full-logits ablation's loss, BERT's way: logits at every position, CE over the masked ones."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), batch["labels"].view(-1))


class BertSide:
    """run_mlm_no_trainer's training loop (one process, no gradient accumulation)."""

    def __init__(self, args, accelerator, tokenizer):
        self.args, self.accelerator, self.tokenizer = args, accelerator, tokenizer
        self.train_set = run_mlm_train_set(args, tokenizer)

    def start(self, total_steps: int | None, budget_seconds: float | None) -> dict:
        from torch.utils.data import DataLoader
        from transformers import (
            AutoModelForMaskedLM,
            BertConfig,
            DataCollatorForLanguageModeling,
            get_scheduler,
        )

        args = self.args
        self.accelerator.free_memory()
        torch.manual_seed(args.seed)
        config = BertConfig(vocab_size=VOCAB, **BERT_MINI, pad_token_id=self.tokenizer.pad_token_id)
        model = AutoModelForMaskedLM.from_config(config, attn_implementation="sdpa")
        collator = DataCollatorForLanguageModeling(tokenizer=self.tokenizer, mlm_probability=MLM_PROBABILITY)
        loader = DataLoader(self.train_set, shuffle=True, collate_fn=collator, batch_size=args.batch_size)
        no_decay = ["bias", "LayerNorm.weight"]
        groups = [
            {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
             "weight_decay": args.weight_decay},
            {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
             "weight_decay": 0.0},
        ]  # fmt: skip
        optimizer = torch.optim.AdamW(groups, lr=args.lr)
        self.max_steps = total_steps if total_steps else max(1, round(budget_seconds / self.step_estimate))
        scheduler = get_scheduler("linear", optimizer, num_warmup_steps=math.ceil(args.warmup_fraction * self.max_steps),
                                  num_training_steps=self.max_steps)  # fmt: skip
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            model, optimizer, loader, scheduler
        )
        self.model.train()
        self.batches = self._forever()
        self.budget_seconds, self.step_index, self.seconds = budget_seconds, 0, 0.0
        return {"parameters": sum(p.numel() for p in model.parameters()), "max_train_steps": self.max_steps,
                "attention": f"{model.config._attn_implementation} (attn_mask=None: full rows)"}  # fmt: skip

    step_estimate = 1.0  # seconds per step, set by the parent from the throughput phase

    def _forever(self):
        epoch = 0
        while True:
            self.loader.set_epoch(epoch)
            yield from self.loader
            epoch += 1

    def done(self) -> bool:
        if self.step_index >= self.max_steps:
            return True
        return self.budget_seconds is not None and self.seconds >= self.budget_seconds

    def step(self) -> dict:
        start = time.perf_counter()
        batch = next(self.batches)
        data_s = time.perf_counter() - start
        with self.accelerator.accumulate(self.model):
            outputs = self.model(**batch)
            loss = outputs.loss
            self.accelerator.backward(loss)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.step_index += 1
        seconds = time.perf_counter() - start  # not synchronized: the example never waits for the GPU
        self.seconds += seconds
        return {
            "s": seconds,
            "data_s": data_s,
            "input_tokens": batch["input_ids"].numel(),
            "real_tokens": batch["attention_mask"].sum(),
            "masked": (batch["labels"] != -100).sum(),
            "loss": loss.detach(),
        }  # fmt: skip  (device tensors: read after the turn, no sync per step)

    @torch.no_grad()
    def evaluate(self, eval_set: dict) -> dict:
        self.model.eval()
        totals = [0.0, 0, 0]
        for rows in batches(eval_set, self.args.eval_batch_size, self.accelerator.device):
            rows.pop("position_ids")  # BERT reads a row as one sequence, as it was trained
            with self.accelerator.autocast():
                out = self.model(**rows)  # logits (B, T, V)
            selected = rows["labels"] != -100
            totals = accumulate(totals, out.loss, out.logits[selected], rows["labels"][selected])
        self.model.train()
        return eval_metrics(totals)


def batches(eval_set: dict, size: int, device):
    n = eval_set["input_ids"].size(0)
    for i in range(0, n, size):
        yield {k: v[i : i + size].to(device) for k, v in eval_set.items()}


def accumulate(totals: list, loss, logits, labels) -> list:
    return [totals[0] + loss.double().item() * labels.numel(),
            totals[1] + int((logits.argmax(-1) == labels).sum()), totals[2] + labels.numel()]  # fmt: skip


def eval_metrics(totals: list) -> dict:
    loss = totals[0] / max(totals[2], 1)
    return {"eval_loss": loss, "eval_accuracy": totals[1] / max(totals[2], 1),
            "eval_perplexity": math.exp(min(loss, 50.0)), "eval_masked_tokens": totals[2]}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Worker process: one side, driven over stdin/stdout with one JSON object per line
# ----------------------------------------------------------------------------------------------


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args) -> None:
    reply_stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints go to stderr; stdout carries only replies
    t0 = time.perf_counter()
    from accelerate import Accelerator

    from hfpipe.data.tokenizer import load_tokenizer

    def reply(obj) -> None:
        reply_stream.write(json.dumps(obj) + "\n")

    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision)
    tokenizer = load_tokenizer(args.tokenizer)
    family, _, variant = args.worker.partition(":")
    side = (
        BertSide(args, accelerator, tokenizer)
        if family == "bert"
        else HfpipeSide(args, accelerator, tokenizer, variant or None)
    )
    eval_set = torch.load(args.work_dir / "eval_set.pt")
    cuda = accelerator.device.type == "cuda"
    reply({"setup_s": time.perf_counter() - t0, "device": str(accelerator.device)})
    baseline_rss = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "start":
            if cmd.get("step_estimate"):
                side.step_estimate = cmd["step_estimate"]
            if baseline_rss is None:  # data loaded, no model yet
                baseline_rss, baseline_peak = rss_mb(), peak_rss_mb()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            reply(side.start(cmd.get("total_steps"), cmd.get("budget_seconds")))
        elif op == "train":  # `steps` steps, or until `seconds` of this turn are used, or the side is done
            records, turn_start = [], time.perf_counter()
            while not side.done():
                records.append(side.step())
                if cmd.get("steps") and len(records) >= cmd["steps"]:
                    break
                if cmd.get("seconds") and time.perf_counter() - turn_start >= cmd["seconds"]:
                    break
            if cuda:
                torch.cuda.synchronize()
            turn_s = time.perf_counter() - turn_start
            if isinstance(side, BertSide):
                side.seconds += turn_s - sum(r["s"] for r in records)  # time the GPU was still busy
            for r in records:
                r.update(loss=float(r["loss"]), real_tokens=int(r["real_tokens"]), masked=int(r["masked"]))
            reply({"records": records, "turn_s": turn_s, "done": side.done(), "trained_s": side.seconds})
        elif op == "eval":
            reply(side.evaluate(eval_set))
        elif op == "memory":
            memory = {
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_model_mb": baseline_rss,
                "peak_rss_before_model_mb": baseline_peak,
            }  # if peak_rss == this, training never set the peak
            memory["rss_growth_mb"] = memory["peak_rss_mb"] - baseline_rss
            if cuda:
                memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            reply(memory)
        elif op == "quit":
            return


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, name: str, args, tokenizer_dir: str):
        self.name = name
        argv = [sys.executable, __file__, "--worker", name, "--tokenizer", tokenizer_dir]
        for key in ("batch_size", "lr", "weight_decay", "warmup_fraction", "seed", "device", "mixed_precision",
                    "data_dir", "work_dir", "eval_batch_size"):  # fmt: skip
            argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"worker {self.name!r} exited with code {self.process.wait()} (its stderr is above)"
            )
        return json.loads(line)

    def call(self, op: str, **kwargs) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


# ----------------------------------------------------------------------------------------------
# The parent: prepare, interleave, summarize
# ----------------------------------------------------------------------------------------------


def summarize(records: list[dict], turn_seconds: float) -> dict:
    steps = len(records)
    input_tokens = sum(r["input_tokens"] for r in records)
    real_tokens = sum(r["real_tokens"] for r in records)
    return {
        "steps": steps,
        "seconds": turn_seconds,
        "step_s_mean": turn_seconds / steps,
        "step_s_median": statistics.median(r["s"] for r in records),
        "data_ms_per_step": 1000 * statistics.mean(r["data_s"] for r in records),
        "input_tokens_per_s": input_tokens / turn_seconds,
        "real_tokens_per_s": real_tokens / turn_seconds,
        "padding_fraction": 1 - real_tokens / input_tokens,
        "masked_tokens_per_step": sum(r["masked"] for r in records) / steps,
        "step_s_each": [
            round(r["s"], 4) for r in records
        ],  # per step, in run order (GPU: BERT's unsynchronized)
    }


def throughput_phase(args, workers: dict[str, Worker]) -> dict:
    names = list(workers)
    total = args.warmup_steps + args.steps
    info = {name: w.call("start", total_steps=total) for name, w in workers.items()}
    for name in names:
        if args.warmup_steps:
            workers[name].call("train", steps=args.warmup_steps)
    timed = {name: [] for name in names}  # per round: (records, turn seconds)
    rounds, first = [], []
    done = dict.fromkeys(names, 0)
    while min(done.values()) < args.steps:
        order = names if len(rounds) % 2 == 0 else names[::-1]
        this_round = {}
        for name in order:
            k = min(args.chunk_steps, args.steps - done[name])
            if k == 0:
                continue
            out = workers[name].call("train", steps=k)
            timed[name].append((out["records"], out["turn_s"]))
            this_round[name] = sum(r["real_tokens"] for r in out["records"]) / out["turn_s"]
            done[name] += k
            print(
                f"  {name:<22} {k} steps {out['turn_s']:6.1f}s  {this_round[name]:8.0f} real tok/s",
                flush=True,
            )
        rounds.append(this_round)
        first.append(next(name for name in order if name in ("hfpipe", "bert")))
    result = {}
    for name in names:
        records = [r for recs, _ in timed[name] for r in recs]
        result[name] = {**info[name], **summarize(records, sum(s for _, s in timed[name])),
                        "turn_s_each": [round(s, 4) for _, s in timed[name]],
                        **workers[name].call("memory")}  # fmt: skip
    per_round = [
        {"first": f, "ratio": r["hfpipe"] / r["bert"]}
        for f, r in zip(first, rounds)
        if "hfpipe" in r and "bert" in r
    ]
    by_order = {}
    for who in ("hfpipe", "bert"):
        ratios = [x["ratio"] for x in per_round if x["first"] == who]
        if ratios:
            by_order[f"{who}_first"] = {"rounds": len(ratios), "median_ratio": statistics.median(ratios),
                                        "min": min(ratios), "max": max(ratios)}  # fmt: skip
    return {"sides": result, "rounds": per_round, "ratio_by_order": by_order}


def budget_phase(args, workers: dict[str, Worker], bert_step_s: float) -> dict:
    seconds = args.minutes * 60
    names = ["hfpipe", "bert"]
    info = {
        "hfpipe": workers["hfpipe"].call("start", budget_seconds=seconds),
        "bert": workers["bert"].call("start", budget_seconds=seconds, step_estimate=bert_step_s),
    }
    records = {name: [] for name in names}
    trained = dict.fromkeys(names, 0.0)
    finished = set()
    turn = 0
    while len(finished) < len(names):
        for name in names if turn % 2 == 0 else names[::-1]:
            if name in finished:
                continue
            out = workers[name].call(
                "train", seconds=min(args.slice_seconds, max(1e-3, seconds - trained[name]))
            )
            records[name] += out["records"]
            trained[name] = out["trained_s"]
            if out["done"]:
                finished.add(name)
            loss = out["records"][-1]["loss"] if out["records"] else float("nan")
            print(f"  {name:<6} trained {trained[name]:6.1f}s / {seconds:.0f}s, step {len(records[name])}, "
                  f"train loss {loss:.3f}", flush=True)  # fmt: skip
        turn += 1
    result = {}
    for name in names:
        recs = records[name]
        print(f"  evaluating {name} ...", flush=True)
        result[name] = {
            **info[name], "steps": len(recs), "trained_s": trained[name],
            "real_tokens": sum(r["real_tokens"] for r in recs), "input_tokens": sum(r["input_tokens"] for r in recs),
            "final_train_loss": statistics.mean(r["loss"] for r in recs[-5:]) if recs else None,
            **workers[name].call("eval"),
        }  # fmt: skip
    return result


def fmt(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def table(results: dict) -> str:
    t = results["throughput"]["sides"]
    h, b = t["hfpipe"], t["bert"]
    memory_key = "cuda_max_allocated_mb" if "cuda_max_allocated_mb" in h else "peak_rss_mb"
    rows = [
        ("attention", h["attention"], b["attention"], None),
        ("parameters", fmt(h["parameters"]), fmt(b["parameters"]), h["parameters"] / b["parameters"]),
        ("step time, mean (s)", fmt(h["step_s_mean"], 3), fmt(b["step_s_mean"], 3), h["step_s_mean"] / b["step_s_mean"]),
        ("input tokens/s (incl. padding)", fmt(h["input_tokens_per_s"]), fmt(b["input_tokens_per_s"]),
         h["input_tokens_per_s"] / b["input_tokens_per_s"]),
        ("real tokens/s", fmt(h["real_tokens_per_s"]), fmt(b["real_tokens_per_s"]), h["real_tokens_per_s"] / b["real_tokens_per_s"]),
        ("padding (% of input tokens)", fmt(100 * h["padding_fraction"], 2), fmt(100 * b["padding_fraction"], 2), None),
        ("masked (predicted) tokens / step", fmt(h["masked_tokens_per_step"], 1), fmt(b["masked_tokens_per_step"], 1), None),
        ("data path (collate + mask) ms / step", fmt(h["data_ms_per_step"], 1), fmt(b["data_ms_per_step"], 1), None),
        (f"peak memory: {memory_key} (MB)", fmt(h[memory_key]), fmt(b[memory_key]), h[memory_key] / b[memory_key]),
    ]  # fmt: skip
    if memory_key == "peak_rss_mb":
        rows.append(("RSS growth from before the model (MB)", fmt(h["rss_growth_mb"]), fmt(b["rss_growth_mb"]),
                     h["rss_growth_mb"] / b["rss_growth_mb"]))  # fmt: skip
    if "budget" in results:
        g = results["budget"]
        m = results["config"]["minutes"]
        rows += [
            (f"steps in {m:g} min budget", fmt(g["hfpipe"]["steps"]), fmt(g["bert"]["steps"]), g["hfpipe"]["steps"] / g["bert"]["steps"]),
            (f"real tokens in {m:g} min", fmt(g["hfpipe"]["real_tokens"]), fmt(g["bert"]["real_tokens"]),
             g["hfpipe"]["real_tokens"] / g["bert"]["real_tokens"]),
            ("validation MLM loss (fixed masks)", fmt(g["hfpipe"]["eval_loss"], 3), fmt(g["bert"]["eval_loss"], 3),
             g["hfpipe"]["eval_loss"] / g["bert"]["eval_loss"]),
            ("validation masked-token accuracy", fmt(g["hfpipe"]["eval_accuracy"], 4), fmt(g["bert"]["eval_accuracy"], 4), None),
        ]  # fmt: skip
    lines = ["| metric | hfpipe | BERT (run_mlm_no_trainer) | hfpipe/BERT |", "|---|---|---|---|"]
    lines += [f"| {name} | {a} | {c} | {'' if r is None else f'{r:.2f}'} |" for name, a, c, r in rows]
    order = results["throughput"]["ratio_by_order"]
    lines.append("")
    for key, value in order.items():
        lines.append(f"real tokens/s ratio, rounds with {key.replace('_', ' ')}: median {value['median_ratio']:.2f} "
                     f"(min {value['min']:.2f}, max {value['max']:.2f}, {value['rounds']} rounds)")  # fmt: skip
    ablations = {k: v for k, v in t.items() if k.startswith("hfpipe:")}
    if ablations:
        lines += [
            "",
            "| ablation | step time (s) | real tokens/s | vs hfpipe | vs BERT |",
            "|---|---|---|---|---|",
        ]
        for name, a in {"hfpipe": h, **ablations}.items():
            lines.append(f"| {name} | {a['step_s_mean']:.3f} | {a['real_tokens_per_s']:,.0f} | "
                         f"{a['real_tokens_per_s'] / h['real_tokens_per_s']:.2f} | {a['real_tokens_per_s'] / b['real_tokens_per_s']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch")
    import datasets

    datasets.disable_progress_bars()
    started = time.perf_counter()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(
        "preparing: tokenizer, hfpipe and run_mlm data (cached for the workers), fixed-mask eval set",
        flush=True,
    )
    tokenizer = get_bench_tokenizer(args)
    tokenizer_dir = args.tokenizer or str(args.work_dir / "wordpiece-30522")
    recipe = hfpipe_recipe(args, tokenizer_dir)
    _, val_set = hfpipe_data(recipe, tokenizer)
    run_mlm_train_set(args, tokenizer)
    torch.save(build_eval_set(recipe, tokenizer, val_set, args.eval_blocks), args.work_dir / "eval_set.pt")

    names = ["hfpipe", "bert", *(f"hfpipe:{a}" for a in args.ablations)]
    workers = {name: Worker(name, args, tokenizer_dir) for name in names}
    try:
        setup = {name: w.read() for name, w in workers.items()}
        print(f"throughput phase: {args.steps} timed steps per side, batch {args.batch_size}", flush=True)
        throughput = throughput_phase(args, workers)
        results = {"throughput": throughput}
        if args.minutes > 0:
            for name in names[2:]:  # ablation workers are done: free their memory and cores
                workers.pop(name).close()
            print(f"budget phase: {args.minutes:g} min of training per side", flush=True)
            bert_step = throughput["sides"]["bert"]["step_s_mean"]
            results["budget"] = budget_phase(args, workers, bert_step)
    finally:
        for w in workers.values():
            w.close()

    results["config"] = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
        "tokenizer": tokenizer_dir, "tokenizer_vocab": len(tokenizer), "block_size": BLOCK,
        "mlm_probability": MLM_PROBABILITY, "model": {"vocab_size": VOCAB, **BERT_MINI},
        "eval_rows": args.eval_blocks,
    }  # fmt: skip
    results["environment"] = {
        "device": setup["hfpipe"]["device"], "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None, "python": platform.python_version(),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "accelerate": __import__("accelerate").__version__, "load_average_at_end": os.getloadavg(),
        "worker_setup_s": {k: round(v["setup_s"], 1) for k, v in setup.items()},
        "total_s": round(time.perf_counter() - started, 1), "command": " ".join(["python", *sys.argv]),
    }  # fmt: skip
    print()
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['environment']['total_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
