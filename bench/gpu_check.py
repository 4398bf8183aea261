"""The GPU check: is hfpipe fast and correct on real GPUs, as `accelerate launch` users run it?

    make bench-gpu                                  # = python bench/gpu_check.py
    python bench/gpu_check.py [--steps 50] [--batch-size 32] [--out bench/results/gpu_check.json]

Every run is the real command line (`accelerate launch -m hfpipe pretrain ...`): modern-base, sequence
512, packed rows, bf16, data.num_workers=2, on WikiText-2 (../shared/data/wikitext-2) when present,
else the embedded corpus. It measures, from each run's metrics.jsonl:
  1. one GPU, for each attention backend this machine has (sdpa; flex_attention; flash_attention_2
     when flash-attn is installed): tokens/s, MFU against the GPU's dense bf16 peak, data_wait, peak memory;
  2. all the machine's GPUs with DDP (when there are several): the same figures;
  3. FSDP (recipes/accelerate/fsdp.yaml) and DeepSpeed ZeRO-2 (recipes/accelerate/deepspeed_zero2.yaml,
     when deepspeed is installed), `--steps` steps each at the same global batch: their loss curve
     against DDP's (max relative difference over the steps; bf16 rounding makes them drift apart slowly).
Targets: MFU >= 40% for modern-base at 512 on one H100/H200 (ModernBERT's published run works out to
about 25%), data_wait < 2%. Prints a markdown table and writes JSON to --out. Needs CUDA.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2"


def recipe_overrides(out: Path, steps: int, batch_size: int, attn: str) -> list[str]:
    data = ([f"data.source={WIKITEXT / 'train.txt'}", f"data.validation_source={WIKITEXT / 'valid.txt'}"]
            if (WIKITEXT / "train.txt").exists() else ["data.source=builtin:python-docs"])
    return [f"output_dir={out}", "model.preset=modern-base", f"model.attn_implementation={attn}",
            "data.block_size=512", "data.mode=pack", "data.num_workers=2", *data,
            "train.mixed_precision=bf16", f"train.batch_size={batch_size}", f"train.max_steps={steps}",
            "train.max_minutes=null", "train.log_every_steps=5", "train.eval_every_steps=null",
            "train.save_every_steps=null", "train.resume=none", "eval.max_batches=2", "tracking.plot=false"]


def launch(name: str, work: Path, overrides: list[str], processes: int, config: str | None = None) -> dict:
    """One real run; its figures from metrics.jsonl (the first logged window, which compiles and warms
    up, is left out of the medians)."""
    out = work / name
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", "0"]
    launcher += ["--config_file", str(REPO / config)] if config else (["--multi_gpu"] if processes > 1 else [])
    command = [*launcher, "-m", "hfpipe", "pretrain", str(REPO / "recipes/pretrain/modern-small-wikitext.yaml"),
               *recipe_overrides(out, *overrides)]
    print(f"[{name}] {' '.join(command)}", flush=True)
    done = subprocess.run(command, cwd=REPO, text=True, capture_output=True)
    if done.returncode != 0:
        return {"name": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    steady = train[1:] or train
    return {
        "name": name, "processes": processes,
        "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in steady),
        "mfu": statistics.median(r["mfu"] for r in steady) if "mfu" in steady[0] else None,
        "data_wait": statistics.mean(r["data_wait"] for r in steady),
        "peak_memory_gb": max(r.get("peak_memory_gb", 0.0) for r in train),
        "losses": {r["step"]: r["loss"] for r in train},
        "precision": json.loads((out / "results.json").read_text())["run"]["precision"],
    }


def loss_gap(run: dict, reference: dict) -> float | None:
    """Max relative difference of two runs' logged losses, step by step."""
    if "losses" not in run or "losses" not in reference:
        return None
    steps = sorted(set(run["losses"]) & set(reference["losses"]))
    return max(abs(run["losses"][s] - reference["losses"][s]) / abs(reference["losses"][s]) for s in steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32, help="rows of 512 tokens per GPU per step")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_check.json"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu_check.py needs CUDA GPUs; this machine has none. Nothing was run.")
        return 2
    gpus = torch.cuda.device_count()
    backends = ["sdpa", "flex_attention"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="hfpipe-gpu-check-") as tmp:
        work = Path(tmp)
        for attn in backends:
            runs.append(launch(f"1 GPU, {attn}", work, [args.steps, args.batch_size, attn], 1))
        ddp = runs[0]
        if gpus > 1:
            ddp = launch(f"{gpus} GPUs DDP, sdpa", work, [args.steps, args.batch_size, "sdpa"], gpus)
            runs.append(ddp)
        fsdp = launch(f"{gpus} GPU(s) FSDP2, sdpa", work, [args.steps, args.batch_size, "sdpa"], gpus,
                      "recipes/accelerate/fsdp.yaml")
        fsdp["loss_gap_vs_ddp"] = loss_gap(fsdp, ddp)
        runs.append(fsdp)
        if importlib.util.find_spec("deepspeed"):
            zero2 = launch(f"{gpus} GPU(s) ZeRO-2, sdpa", work, [args.steps, args.batch_size, "sdpa"], gpus,
                           "recipes/accelerate/deepspeed_zero2.yaml")
            zero2["loss_gap_vs_ddp"] = loss_gap(zero2, ddp)
            runs.append(zero2)
        else:
            runs.append({"name": "ZeRO-2", "error": "deepspeed is not installed (pip install deepspeed)"})

    print(f"\nmodern-base, seq 512, bf16, {args.batch_size} rows/GPU, {args.steps} steps, "
          f"{torch.cuda.get_device_name(0)} x {gpus}")
    print("| run | tokens/s | MFU | data_wait | peak GB | loss gap vs DDP |\n|---|---|---|---|---|---|")
    for r in runs:
        if "error" in r:
            print(f"| {r['name']} | failed: {r['error']} | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        gap = f"{100 * r['loss_gap_vs_ddp']:.2f}%" if r.get("loss_gap_vs_ddp") is not None else ""
        print(f"| {r['name']} | {r['tokens_per_sec']:,.0f} | {mfu} | {100 * r['data_wait']:.1f}% | "
              f"{r['peak_memory_gb']:.1f} | {gap} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"gpu": torch.cuda.get_device_name(0), "gpus": gpus, "runs": runs},
                                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
