"""The ablations are a command now: `hfpipe ablate SUITE` (hfpipe/teach/ablate/, tables in docs/ablations.md).

    python bench/ablations.py [--suites positions norms norm-position mixer] [--steps 300] [--seeds 3]

runs `hfpipe ablate` for each suite, one after the other: several seeds per variant, mean ± std, and
"not resolved at this budget" where the seeds overlap. Tables and curves land in runs/ablate/SUITE/.
"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUITES = ("positions", "norms", "norm-position", "mixer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--steps", type=int, help="optimizer steps per cell (default: the recipe's 300)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    from hfpipe.cli import main as hfpipe

    failed = []
    for suite in args.suites:
        argv = ["ablate", suite, "--seeds", str(args.seeds), *(["--steps", str(args.steps)] if args.steps else [])]
        print(f"\n=== hfpipe {' '.join(argv)}", flush=True)
        if hfpipe(argv) != 0:
            failed.append(suite)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
