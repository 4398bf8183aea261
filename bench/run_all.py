"""`make bench`: every benchmark, each side by side with its transformers baseline in one run.

    python bench/run_all.py [--only data pretrain parity finetune] [--quick]

  data      tokenizer training, tokenization and packing on WikiText-2: hfpipe vs run_mlm's path;
            pretraining input pipeline tokens/s, before vs after (batched, vectorised, DataLoader workers)
  pretrain  bert-mini MLM throughput, memory and loss-at-equal-time: hfpipe vs BertForMaskedLM
  parity    all-MiniLM-L6-v2 converted to hfpipe vs transformers' BertModel (max abs diff)
  finetune  SST-2 / CoNLL-2003 from all-MiniLM-L6-v2: hfpipe vs BertFor{Sequence,Token}Classification
  ablations `hfpipe ablate` for every suite: positions, norms, norm placement, token mixers (mean ± std over seeds)
  squad     SQuAD v1.1 from all-MiniLM-L6-v2 on the dev set split by article (EM / F1)

Results land in bench/results/*.json. Benchmarks that need ../shared/data skip when it is absent.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
QUICK = {
    "data": [],
    "pretrain": ["--steps", "30", "--minutes", "1"],
    "parity": [],
    "finetune": ["--sst2-train", "2000", "--conll-train", "1000"],
    "squad": ["--max-train", "500"],
    "ablations": ["--suites", "positions", "--steps", "60", "--seeds", "2"],
}
SCRIPTS = {"data": "bench_data.py", "pretrain": "bench_pretrain.py", "parity": "minilm_parity.py",
           "finetune": "finetune_compare.py", "squad": "squad_dev_split.py", "ablations": "ablations.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS))
    parser.add_argument("--quick", action="store_true", help="smaller runs (minutes, not tens of minutes)")
    args = parser.parse_args()
    failed = []
    for name in args.only:
        cmd = [sys.executable, str(BENCH / SCRIPTS[name]), *(QUICK[name] if args.quick else [])]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
        print(f"=== {name} took {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
