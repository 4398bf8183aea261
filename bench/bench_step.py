"""The MLM training step, hfpipe vs transformers' BERT with the same weights, both through THE step.

    python bench/bench_step.py [--quick] [--dirty] [--steps 20] [--precisions fp32 bf16]

bert-mini (hfpipe's preset; BertForMaskedLM built from the same sizes and converted to hfpipe with
hfpipe/model/convert.py, so both start from identical weights), T=128, B=32, 15% masked. Both sides
run hfpipe/train/step.py `train_step` (BERT with `loss_fn`: its own full-logits loss), on the same
batches, interleaved in blocks (A B A B) so machine load hits both alike. bf16 (CPU autocast) only
where the CPU has native bf16 (AVX512-BF16 or AMX); provenance records which.

Also measured in the same run: a matmul peak (square fp32/bf16 matrices of a few sizes and the FFN
shape, best of N, on the benchmark's threads) and MFU against it, counting (a) the FLOPs each side
actually computes (BERT: the MLM head at every position; hfpipe: at masked positions only) and (b) the
same useful FLOPs for both (the head at masked positions); peak RSS of each side in its own process.

Writes bench/results/step.json (bench/results/quick/step.json with --quick).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from provenance import cpu_info, load_average, provenance, write_results  # noqa: E402

from hfpipe.train.logs import mlm_flops_per_token  # noqa: E402

MEASURES = [
    "hfpipe/train/step.py",
    "hfpipe/model/modeling_hfpipe.py",
    "hfpipe/model/convert.py",
    "hfpipe/train/logs.py",
    "bench/bench_step.py",
]
MLM_PROBABILITY = 0.15
SIDES = ("hfpipe", "bert")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="few steps, for CI-size checks (bench/results/quick/)"
    )
    p.add_argument(
        "--dirty", action="store_true", help="allow an uncommitted tree (the results file says so)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="measured steps per side per precision (default 40; 6 quick)"
    )
    p.add_argument(
        "--block",
        type=int,
        default=None,
        help="steps per turn in the A B A B interleave (default 5; 2 quick)",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--preset", default="bert-mini")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--out", type=Path, default=None, help="results file (default bench/results[/quick]/step.json)"
    )
    p.add_argument("--memory-child", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (4 if args.quick else 40)
    args.block = args.block or (2 if args.quick else 5)
    if args.out is None:
        args.out = BENCH / "results" / ("quick" if args.quick else "") / "step.json"
    return args


def build_models(args):
    """(hfpipe model, BertForMaskedLM, hfpipe config) with identical weights, in train mode."""
    from transformers import BertConfig, BertForMaskedLM

    from hfpipe.model.configuration_hfpipe import HfpipeConfig
    from hfpipe.model.convert import convert_bert_model

    cfg = HfpipeConfig.from_preset(args.preset, vocab_size=args.vocab_size)
    torch.manual_seed(0)
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=max(512, args.seq_len),
            attn_implementation="sdpa",
        )
    )
    hfpipe = convert_bert_model(bert)
    hfpipe.sparse_prediction = True  # as hfpipe pretrain sets it (the head at masked positions only)
    return hfpipe.train(), bert.train(), hfpipe.config


def make_batches(args, n: int, seed: int = 0) -> list[dict]:
    """n MLM micro-batches (B, T): random tokens, 15% of positions masked (labels -100 elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, args.vocab_size, (args.batch_size, args.seq_len), generator=g)
        mask = torch.rand(ids.shape, generator=g) < MLM_PROBABILITY
        labels = torch.where(mask, ids, torch.full_like(ids, -100))
        out.append(
            {
                "input_ids": torch.where(mask, torch.full_like(ids, 4), ids),
                "labels": labels,
                "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.zeros_like(ids),
            }
        )
    return out


def bert_loss(model, batch):
    """BERT's own loss (logits at every position, CE over the masked ones)."""
    return model(**batch).loss


class Side:
    """One model with its optimizer, stepping through hfpipe's train_step."""

    def __init__(self, name, model, accelerator, precision):
        from hfpipe.train.step import LoopState

        self.name, self.model, self.accelerator, self.precision = name, model, accelerator, precision
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.state, self.seconds, self.tokens, self.losses = LoopState(), 0.0, 0, []

    def loss(self, model, batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return bert_loss(model, batch)  # hfpipe's and BERT's own loss alike: model(**batch).loss

    def step(self, batch: dict, timed: bool = True) -> None:
        from hfpipe.train.step import train_step

        start = time.perf_counter()
        # bf16 as the loop's Accelerator does it: autocast around the forward (and loss), not the backward
        loss_fn = None if self.name == "hfpipe" and self.precision == "fp32" else self.loss
        result = train_step(
            self.model,
            self.optimizer,
            self.accelerator,
            [batch],
            self.state,
            max_grad_norm=1.0,
            on_nan="stop",
            checkpoints=Path("unused"),
            loss_fn=loss_fn,
        )
        if timed:
            self.seconds += time.perf_counter() - start
            self.tokens += result.tokens
            self.losses.append(result.loss)


def interleaved(args, precision: str, accelerator) -> dict:
    """tokens/s of each side over the same batches, turns of `block` steps alternating A B A B."""
    hfpipe, bert, _ = build_models(args)
    sides = [Side("hfpipe", hfpipe, accelerator, precision), Side("bert", bert, accelerator, precision)]
    warm, batches = make_batches(args, args.warmup, seed=1), make_batches(args, args.steps)
    for side in sides:
        for b in warm:
            side.step(b, timed=False)
    for start in range(0, args.steps, args.block):
        for side in sides:  # A then B, every turn
            for b in batches[start : start + args.block]:
                side.step(b)
    return {
        s.name: {
            "tokens_per_s": s.tokens / s.seconds,
            "step_s": s.seconds / args.steps,
            "first_loss": s.losses[0],
            "last_loss": s.losses[-1],
        }
        for s in sides
    }


def matmul_peak(sizes: list[tuple[int, int, int]], dtype: torch.dtype, repeats: int) -> dict:
    """Best FLOP/s of torch.matmul over (M, K, N) shapes, best of `repeats` per shape."""
    best, per_shape = 0.0, {}
    for m, k, n in sizes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.matmul(a, b)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - t)
        flops = 2 * m * k * n / min(times)
        per_shape[f"{m}x{k}x{n}"] = flops
        best = max(best, flops)
    return {"flops": best, "per_shape": per_shape}


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def memory_child(args) -> None:
    """Run a few steps of one side alone; print as JSON its peak RSS (MB) while stepping, with the other
    side's model freed and the peak reset first (Linux: /proc/self/clear_refs), and the RSS before."""
    import gc

    from accelerate import Accelerator

    hfpipe, bert, _ = build_models(args)
    keep = hfpipe if args.memory_child == "hfpipe" else bert
    del hfpipe, bert
    gc.collect()
    side = Side(args.memory_child, keep, Accelerator(cpu=True), args.precision)
    batches = make_batches(args, 3)
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    for b in batches:
        side.step(b)
    print(json.dumps({"peak_rss_mb": _status_mb("VmHWM"), "rss_before_mb": before}))


def peak_memory(args, precision: str) -> dict:
    out = {}
    for name in SIDES:  # interleaving is moot for a peak; each in its own fresh process
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            name,
            "--precision",
            precision,
            "--preset",
            args.preset,
            "--vocab-size",
            str(args.vocab_size),
            "--batch-size",
            str(args.batch_size),
            "--seq-len",
            str(args.seq_len),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def tables(raw: dict, note: str) -> dict:
    step_rows, mfu_rows, mem_rows = [], [], []
    for precision, r in raw["precisions"].items():
        h, b = r["tokens_per_s"]["hfpipe"], r["tokens_per_s"]["bert"]
        step_rows.append([precision, fmt(h), fmt(b), f"{h / b:.2f}x"])
        for name in SIDES:
            m = r["mfu"][name]
            mfu_rows.append(
                [
                    precision,
                    name,
                    fmt(r["tokens_per_s"][name]),
                    f"{m['computed']:.1%}",
                    f"{m['useful']:.1%}",
                    f"{r['peak_tflops']:.2f}",
                ]
            )
        mem = r["memory"]
        mem_rows.append(
            [
                precision,
                fmt(mem["hfpipe"]["peak_rss_mb"]),
                fmt(mem["bert"]["peak_rss_mb"]),
                fmt(mem["hfpipe"]["peak_rss_mb"] - mem["hfpipe"]["rss_before_mb"]),
                fmt(mem["bert"]["peak_rss_mb"] - mem["bert"]["rss_before_mb"]),
            ]
        )
    return {
        "step": {
            "columns": ["precision", "hfpipe tokens/s", "BERT tokens/s", "speed-up"],
            "rows": step_rows,
            "note": note,
        },
        "mfu": {
            "columns": [
                "precision",
                "side",
                "tokens/s",
                "MFU (FLOPs computed)",
                "MFU (useful FLOPs)",
                "matmul peak TFLOP/s",
            ],
            "rows": mfu_rows,
            "note": note + "; computed: BERT's head at every position, hfpipe's at masked ones; "
            "useful: the head at masked positions for both",
        },
        "memory": {
            "columns": [
                "precision",
                "hfpipe peak RSS MB",
                "BERT peak RSS MB",
                "hfpipe step's growth MB",
                "BERT step's growth MB",
            ],
            "rows": mem_rows,
            "note": note + "; each side alone in a fresh process, peak over 3 steps (growth: above the "
            "RSS with model and batches loaded)",
        },
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return {}
    from accelerate import Accelerator

    load_before = load_average()
    provenance(dirty_ok=args.dirty)  # refuse a dirty tree before the run, not after it
    cpu = cpu_info()
    precisions = [p for p in args.precisions if p == "fp32" or cpu["native_bf16"]]
    accelerator = Accelerator(cpu=True)
    _, _, cfg = build_models(args)
    flops = {
        "hfpipe": mlm_flops_per_token(cfg, args.seq_len, MLM_PROBABILITY),
        "bert": mlm_flops_per_token(cfg, args.seq_len, 1.0),
    }
    n = 512 if args.quick else 1024
    sizes = [
        (n, n, n),
        (2 * n, 2 * n, 2 * n),
        (args.batch_size * args.seq_len, cfg.hidden_size, cfg.intermediate_size),
    ]  # the FFN's up-projection
    raw = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "preset": args.preset,
        "vocab_size": args.vocab_size,
        "steps": args.steps,
        "block": args.block,
        "flops_per_token": flops,
        "skipped_precisions": sorted(set(args.precisions) - set(precisions)),
        "precisions": {},
    }
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        peak = matmul_peak(sizes, dtype, repeats=3 if args.quick else 10)
        speed = interleaved(args, precision, accelerator)
        tps = {k: v["tokens_per_s"] for k, v in speed.items()}
        raw["precisions"][precision] = {
            "tokens_per_s": tps,
            "sides": speed,
            "matmul_peak": peak,
            "peak_tflops": peak["flops"] / 1e12,
            "mfu": {
                k: {
                    "computed": tps[k] * flops[k] / peak["flops"],
                    "useful": tps[k] * flops["hfpipe"] / peak["flops"],
                }
                for k in SIDES
            },
            "memory": peak_memory(args, precision),
        }
        print(precision, json.dumps(tps), flush=True)
    load = load_average()
    note = (
        f"{cpu['model']}, {args.threads} thread(s), load {load_before} -> {load}; "
        f"{args.preset} T={args.seq_len} B={args.batch_size}; python bench/bench_step.py"
        f"{' --quick' if args.quick else ''}"
    )
    out = write_results(
        args.out,
        {"measures": MEASURES, "tables": tables(raw, note), "raw": raw},
        argv=[__file__, *(sys.argv[1:] if argv is None else argv)],
        dirty_ok=args.dirty,
        load_before=load_before,
    )
    for name, t in out["tables"].items():
        print(name, t["columns"], *t["rows"], sep="\n  ")
    return out


if __name__ == "__main__":
    main()
