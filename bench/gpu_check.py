"""The GPU check: is hfpipe fast and correct on real GPUs, as `accelerate launch` users run it?

    make bench-gpu                                  # = python bench/gpu_check.py
    pip install .[deepspeed]                        # once: the ZeRO-2 run needs it (a missing run fails the check)
    python bench/gpu_check.py [--steps 50] [--batch-size 32] [--loss-tolerance 0.02] [--out bench/results/gpu_check.json]

Every run is the real command line (`accelerate launch -m hfpipe pretrain ...`): modern-base, sequence
512, packed rows, bf16, data.num_workers=2, on WikiText-2 (../shared/data/wikitext-2) when present,
else the embedded corpus. It measures, from each run's metrics.jsonl:
  1. one GPU, for each attention backend this machine has (sdpa; flex_attention; flash_attention_2
     when flash-attn is installed): tokens/s, MFU against the GPU's dense bf16 peak, data_wait, peak memory;
  2. all the machine's GPUs with DDP (when there are several): the same figures;
  3. FSDP (recipes/accelerate/fsdp.yaml) and DeepSpeed ZeRO-2 (recipes/accelerate/deepspeed_zero2.yaml,
     when deepspeed is installed), `--steps` steps each at the same global batch: their loss curve
     against DDP's (max relative difference over the steps; bf16 rounding makes them drift apart slowly).
The check fails (exit 1) when any run errors (deepspeed not installed included), when a one-GPU run on an
H100/H200 reaches under 40% MFU (ModernBERT's published run works out to about 25%), when any run's
data_wait is 2% or more, or when FSDP's or ZeRO-2's loss curve differs from DDP's by more than
--loss-tolerance (max relative difference at any logged step; default 2%: bf16 rounding drifts, a wrong
gradient reduction or a lost shard is off by far more). It prints a markdown table and writes its JSON,
with provenance and every failure, to --out either way; `targets_missed` is the pure function deciding.
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
sys.path.insert(0, str(REPO / "bench"))
from provenance import DirtyTreeError, load_average, write_results  # noqa: E402

MFU_TARGET = 0.40  # modern-base, T=512, bf16, one H100/H200
DATA_WAIT_TARGET = 0.02  # share of step time spent waiting for the next batch
LOSS_TOLERANCE = 0.02  # max relative loss difference of FSDP / ZeRO-2 vs DDP at any logged step
MFU_GPUS = ("H100", "H200")
# What the figures measure: a results file is stale once any of these changed (bench/publish.py).
MEASURES = ["hfpipe/train/step.py", "hfpipe/train/pretrain.py", "hfpipe/train/distributed.py",
            "hfpipe/train/optim.py", "hfpipe/model/modeling_hfpipe.py", "hfpipe/data",
            "recipes/accelerate", "bench/gpu_check.py"]
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
        return {"name": name, "processes": processes,
                "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    try:
        return figures(name, processes, out)
    except (OSError, KeyError, ValueError, statistics.StatisticsError) as e:  # ran, but left no usable metrics
        return {"name": name, "processes": processes, "error": f"no figures in {out}: {type(e).__name__}: {e}"}


def figures(name: str, processes: int, out: Path) -> dict:
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
    if not steps:
        return None
    return max(abs(run["losses"][s] - reference["losses"][s]) / abs(reference["losses"][s]) for s in steps)


def targets_missed(report: dict, loss_tolerance: float = LOSS_TOLERANCE) -> list[str]:
    """Every way `report` ({"gpu": name, "runs": [...]}) misses the targets; empty when it meets them all.
    Pure: tested on CPU with fabricated reports (tests/bench/test_gpu_check.py)."""
    missed, runs = [], report.get("runs", [])
    if not runs:
        missed.append("no run was made")
    for r in runs:
        if "error" in r:
            missed.append(f"{r['name']}: failed: {r['error']}")
            continue
        if r["data_wait"] >= DATA_WAIT_TARGET:
            missed.append(f"{r['name']}: data_wait {100 * r['data_wait']:.1f}% >= {100 * DATA_WAIT_TARGET:.0f}%")
        if r.get("processes") == 1 and any(g in report.get("gpu", "") for g in MFU_GPUS):
            if r.get("mfu") is None:
                missed.append(f"{r['name']}: no MFU logged, so the {100 * MFU_TARGET:.0f}% target cannot be checked")
            elif r["mfu"] < MFU_TARGET:
                missed.append(f"{r['name']}: MFU {100 * r['mfu']:.1f}% < {100 * MFU_TARGET:.0f}% "
                              f"(modern-base, T=512, bf16, one {report['gpu']})")
        if "loss_gap_vs_ddp" in r:
            gap = r["loss_gap_vs_ddp"]
            if gap is None:
                missed.append(f"{r['name']}: no logged step in common with DDP: loss curves not compared")
            elif gap > loss_tolerance:
                missed.append(f"{r['name']}: loss differs from DDP's by {100 * gap:.2f}% > {100 * loss_tolerance:.2f}%")
    return missed


def table(report: dict) -> dict:
    """The runs as a publishable table (bench/publish.py renders it)."""
    rows = []
    for r in report["runs"]:
        if "error" in r:
            rows.append([r["name"], f"failed: {r['error']}", "", "", "", ""])
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        gap = f"{100 * r['loss_gap_vs_ddp']:.2f}%" if r.get("loss_gap_vs_ddp") is not None else ""
        rows.append([r["name"], f"{r['tokens_per_sec']:,.0f}", mfu, f"{100 * r['data_wait']:.1f}%",
                     f"{r['peak_memory_gb']:.1f}", gap])
    return {"columns": ["run", "tokens/s", "MFU", "data_wait", "peak GB", "loss gap vs DDP"], "rows": rows,
            "note": f"{report['setup']}. Targets: MFU >= {100 * MFU_TARGET:.0f}% on one H100/H200, data_wait < "
                    f"{100 * DATA_WAIT_TARGET:.0f}%, loss gap <= {100 * report['loss_tolerance']:.1f}%. "
                    + ("Missed: " + "; ".join(report["targets_missed"]) if report["targets_missed"]
                       else "All targets met.")}


def run_all(args, gpus: int) -> list[dict]:
    backends = ["sdpa", "flex_attention"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
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
            runs.append({"name": "ZeRO-2", "error": "deepspeed is not installed: pip install .[deepspeed]"})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32, help="rows of 512 tokens per GPU per step")
    parser.add_argument("--loss-tolerance", type=float, default=LOSS_TOLERANCE,
                        help="max relative loss difference of FSDP / ZeRO-2 vs DDP at any logged step")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_check.json"))
    parser.add_argument("--dirty", action="store_true", help="run on uncommitted changes (recorded as such)")
    args = parser.parse_args(argv)
    import torch

    load_before = load_average()
    argv = [__file__, *(sys.argv[1:] if argv is None else argv)]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpu = torch.cuda.get_device_name(0) if gpus else "none"
    try:  # refuse a dirty tree before spending GPU time, not after
        write_results(Path(args.out), {"runs": []}, argv=argv, dirty_ok=args.dirty, load_before=load_before)
    except DirtyTreeError as e:
        print(f"bench/gpu_check.py: error: {e}", file=sys.stderr)
        return 2
    if gpus:
        runs = run_all(args, gpus)
    else:
        runs = [{"name": "GPU check", "error": "this machine has no CUDA GPU: nothing was run"}]
    report = {"gpu": gpu, "gpus": gpus, "loss_tolerance": args.loss_tolerance, "runs": runs,
              "setup": f"modern-base, seq 512, bf16, {args.batch_size} rows/GPU, {args.steps} steps, {gpu} x {gpus}"}
    report["targets_missed"] = targets_missed(report, args.loss_tolerance)
    report["measures"] = MEASURES
    report["tables"] = {"gpu": table(report)}
    write_results(Path(args.out), report, argv=argv, dirty_ok=args.dirty, load_before=load_before)
    tab = report["tables"]["gpu"]
    print("\n" + report["setup"])
    print("| " + " | ".join(tab["columns"]) + " |\n" + "|---" * len(tab["columns"]) + "|")
    for row in tab["rows"]:
        print("| " + " | ".join(row) + " |")
    for miss in report["targets_missed"]:
        print(f"bench/gpu_check.py: target missed: {miss}", file=sys.stderr)
    print(f"wrote {args.out}; {'FAILED' if report['targets_missed'] else 'all targets met'}")
    return 1 if report["targets_missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
