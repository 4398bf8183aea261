"""A pretrained model vs the same architecture from random weights, fine-tuned identically (issue 14).

    python bench/finetune_pair.py runs/q14/hfpipe/final --tasks sst2 --seeds 1 2 3 --epochs sst2=1
    python bench/finetune_pair.py runs/q14/hfpipe/final --tasks sst2 --lr-grid 1e-3 3e-4 1e-4 --select-on 0.1

Uses bench/quality.py's fine-tuning, which is `hfpipe glue`'s protocol (hfpipe.train.suite.run_task: the
shipped task recipes on ../shared/data; per task and model the lr chosen from --lr-grid on a held-out
--select-on fraction of the TRAINING data, then every seed with it on all of it, scored on dev; --lr
fixes one lr instead) and prints mean ± std per task and the chosen lrs; writes WORK/pair.json with bench/provenance.py's block (a dirty tree is
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
p.add_argument("--lr-grid", nargs="+", type=float, default=[1e-3, 3e-4, 1e-4], metavar="LR")
p.add_argument("--select-on", type=float, default=0.1, help="held-out fraction of the training data")
p.add_argument("--select-seed", type=int, default=0)
p.add_argument("--lr", type=float, help="one lr, no selection (overrides --lr-grid)")
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
                        lr_grid=args.lr_grid, select_on=args.select_on, select_seed=args.select_seed,
                        epochs={k: int(v) for k, v in (e.split("=") for e in args.epochs)}, max_train=None, tiny=False)
scores, selection = {}, {}
for name, folder in {"pretrained": args.model, "random-init": control}.items():
    scores[name], selection[name] = quality.finetune_all(ft, folder, work / "finetune" / name)
write_results(work / "pair.json", {"scores": scores, "lr_selection": selection, "protocol": quality.finetune_protocol(ft)},
              dirty_ok=args.dirty, load_before=load_before)
for name, by_task in scores.items():
    lrs = {t: f" (lr {selection[name][t]['chosen_lr']:g})" if t in selection[name] else "" for t in args.tasks}
    print(name.ljust(12), "  ".join(f"{t} {mean_std([r['score'] for r in by_task[t]], digits=2)}{lrs[t]}"
                                    for t in args.tasks))
