"""A pretrained model vs the same architecture from random weights, fine-tuned identically (issue 14).

    python bench/finetune_pair.py runs/q14/hfpipe/final --tasks sst2 --seeds 1 2 3 --epochs sst2=1 --lr 3e-4

Uses bench/quality.py's fine-tuning (the shipped task recipes on ../shared/data, all training data) and
prints mean ± std per task; writes WORK/pair.json with bench/provenance.py's block (a dirty tree is
refused unless --dirty). Nothing in docs/ quotes it: published figures come from bench/quality.py's
results file through bench/publish.py.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402
from provenance import DirtyTreeError, load_average, provenance, write_results  # noqa: E402

from hfpipe.demo import save_random_init  # noqa: E402
from hfpipe.train.suite import mean_std  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("model", type=Path, help="the pretrained model folder")
p.add_argument("--tasks", nargs="+", default=["sst2"], choices=sorted(quality.TASKS))
p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
p.add_argument("--epochs", nargs="+", default=[], metavar="TASK=E")
p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--work", type=Path, help="default: the model folder's parent")
p.add_argument("--dirty", action="store_true", help="run on uncommitted changes (recorded as such)")
args = p.parse_args()
load_before = load_average()
try:  # refuse a dirty tree before the runs, not after
    provenance(dirty_ok=args.dirty)
except DirtyTreeError as e:
    sys.exit(f"bench/finetune_pair.py: error: {e}")
work = args.work or args.model.parent
control = work / "random-init"
if not control.exists():
    save_random_init(args.model, control, seed=42)
ft = argparse.Namespace(tasks=args.tasks, seeds=args.seeds, data_dir=quality.DATA, finetune_lr=args.lr,
                        epochs={k: int(v) for k, v in (e.split("=") for e in args.epochs)}, max_train=None, tiny=False)
scores = {name: quality.finetune_all(ft, folder, work / "finetune" / name)
          for name, folder in {"pretrained": args.model, "random-init": control}.items()}
write_results(work / "pair.json", {"scores": scores}, dirty_ok=args.dirty, load_before=load_before)
for name, by_task in scores.items():
    print(name.ljust(12), "  ".join(f"{t} {mean_std([r['score'] for r in by_task[t]], digits=2)}" for t in args.tasks))
