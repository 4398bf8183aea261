"""`make bench`: every speed figure the README and docs/ publish, from the current commit, in one invocation.

    python bench/run_all.py [--quick] [--dirty] [--only step loop input parity finetune]
    make bench BENCH_ARGS="--quick --dirty"

  step      the MLM training step, hfpipe vs BertForMaskedLM with the same weights, both through
            hfpipe/train/step.py, fp32 and bf16 (where native), A B A B; matmul peak, MFU, peak memory
  loop      the whole `hfpipe pretrain` loop vs the step alone on the same batches (loop, step, loop, step)
  input     input preparation, real tokens/s per process, 0 and 2 DataLoader workers (bench_data.py)
  parity    all-MiniLM-L6-v2 converted to hfpipe vs transformers' BertModel (max abs diff)
  finetune  fine-tuning throughput and accuracy, hfpipe's loop vs transformers' Trainer
            (bench/finetune_trainer.py; skipped while that script does not exist)

Each script measures its side and its baseline in the same process tree, interleaved, and writes
bench/results/<name>.json (with --quick: bench/results/quick/<name>.json, which the README never
quotes) with a provenance block (bench/provenance.py). A dirty tree is refused unless --dirty.
--quick runs all of it in minutes, for CI-size checks.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from provenance import DirtyTreeError, provenance  # noqa: E402

# name -> (script, arguments in --quick mode). Every script takes --quick and --dirty.
BENCHMARKS = {
    "step": ("bench_step.py", ["--quick"]),
    "loop": ("bench_loop.py", ["--quick"]),
    "input": ("bench_data.py", ["--quick"]),
    "parity": ("minilm_parity.py", ["--quick"]),
    "finetune": ("finetune_trainer.py", ["--quick"]),
}


def plan(names: list[str], *, quick: bool, dirty: bool) -> list[tuple[str, list[str] | None]]:
    """[(name, command or None when its script is absent)] in run order."""
    out = []
    for name in names:
        script, quick_args = BENCHMARKS[name]
        path = BENCH / script
        cmd = [sys.executable, str(path), *(quick_args if quick else []), *(["--dirty"] if dirty else [])]
        out.append((name, cmd if path.is_file() else None))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument(
        "--quick", action="store_true", help="CI-size runs (minutes), to bench/results/quick/"
    )
    parser.add_argument(
        "--dirty", action="store_true", help="allow an uncommitted tree; every results file says so"
    )
    args = parser.parse_args(argv)
    try:
        provenance(dirty_ok=args.dirty)
    except DirtyTreeError as e:
        print(f"bench/run_all.py: error: {e}", file=sys.stderr)
        return 2
    failed, skipped, start_all = [], [], time.perf_counter()
    for name, cmd in plan(args.only, quick=args.quick, dirty=args.dirty):
        if cmd is None:
            print(f"\n=== {name}: skipped ({BENCHMARKS[name][0]} does not exist)", flush=True)
            skipped.append(name)
            continue
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
        print(f"=== {name} took {time.perf_counter() - start:.0f} s", flush=True)
    print(
        f"\nall took {time.perf_counter() - start_all:.0f} s"
        + (f"; skipped: {', '.join(skipped)}" if skipped else "")
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
