"""`make bench-quality`: what a time budget of pretraining buys downstream, against BERT's recipe and no pretraining.

    python bench/quality.py                                   # the CPU-hour recipe, 3 seeds (hours)
    python bench/quality.py --minutes 10 --seeds 1 --max-train 20000   # a reduced run
    python bench/quality.py --tiny --work-dir /tmp/q --results /tmp/q/quality.json --dirty   # seconds: a smoke run
    python bench/publish.py                                   # then: docs/results.md from the results file

Stages, each timed (wall clock):
  1. hfpipe     `hfpipe pretrain RECIPE` (default recipes/pretrain/cpu-hour.yaml, made by `hfpipe plan`)
                on WikiText-2 train (../shared/data/wikitext-2), train.max_minutes = --minutes.
  2. BERT       the same wall-clock budget given to transformers' recipe, run_mlm_no_trainer's way:
                BertForMaskedLM of the same size (layers, hidden, heads; 4x intermediate), the
                tokenizer stage 1 trained, `tokenizer(..., return_special_tokens_mask=True)` + group_texts
                into 128-token blocks, DataCollatorForLanguageModeling (15% masking), shuffled
                DataLoader, AdamW (no decay on bias/LayerNorm, torch's betas), get_scheduler("linear")
                with no warmup (the example's default) over the steps the budget allows (step time
                measured over the first steps), no clipping. lr --bert-lr, batch --bert-batch.
  3. control    the hfpipe model's architecture with random weights (hfpipe.demo.save_random_init).
  4. MLM loss   both pretrained models on the same fixed validation rows (WikiText-2 valid packed into
                128-token rows, 15% masked once with a fixed seed): cross-entropy at the masked tokens.
  5. fine-tune  every model on SST-2 (accuracy), CoLA (Matthews corr.) and CoNLL-2003 (entity F1),
                dev sets, per seed, with the shipped recipes (glue/sst2, glue/cola, conll2003) and the
                same overrides for every model (epochs: SST-2 1, CoLA 3, CoNLL 2; the BERT model
                converted to hfpipe by `convert_bert`, exact to 0.0, so one loop fine-tunes all), with
                `hfpipe glue`'s protocol (hfpipe.train.suite.run_task): per task and model, the lr
                chosen from --lr-grid (default 1e-3 3e-4 1e-4) on a held-out --select-on (0.1) of
                the TRAINING data, never dev, then every seed with it on all the training data.
The reference rows are Google's BERT-Tiny/Mini (Turc et al. 2019, google-research/bert README): GLUE
*test* scores after 3.3B words of pretraining, best of a grid of lr x batch, 4 epochs. Published,
not measured here.

All three sides run in this one invocation, one after the other on the same machine, and the load
average before and after each stage is recorded: token counts are only comparable between sides that
ran under the same load. (--hfpipe-run and --reuse-pretraining break that; the results file then says
the sides were timed separately.) A difference is called resolved only where the mean ± std intervals
over seeds do not overlap.

Writes WORK_DIR/quality.json and --results (bench/results/quality.json: provenance, "measures" and the
tables that `python bench/publish.py` renders between `<!-- bench:quality/... -->` markers in
docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import statistics  # noqa: E402

import torch  # noqa: E402

from hfpipe.train.suite import mean_std  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from provenance import DirtyTreeError, load_average, provenance, write_results  # noqa: E402

# What the figures measure: the results file is stale once any of these changed (bench/publish.py).
MEASURES = ["hfpipe/train", "hfpipe/model", "hfpipe/data", "hfpipe/tasks", "hfpipe/config",
            "recipes/pretrain/cpu-hour.yaml", "recipes/finetune", "bench/quality.py"]
DATA = REPO.parent / "shared" / "data"
RECIPE = REPO / "recipes" / "pretrain" / "cpu-hour.yaml"
BLOCK, BERT_MLM = 128, 0.15
TASKS = {  # task -> (shipped recipe, train file, dev file, overrides, metric label)
    "sst2": ("glue/sst2", "sst2/train.tsv", "sst2/dev.tsv", ["train.num_epochs=1"], "SST-2 acc"),
    "cola": ("glue/cola", "cola/train.tsv", "cola/dev.tsv", ["train.num_epochs=3"], "CoLA MCC"),
    "conll2003": (
        "conll2003",
        "conll2003/train.txt",
        "conll2003/dev.txt",
        ["train.num_epochs=2"],
        "CoNLL-2003 F1",
    ),
}
PUBLISHED = {  # google-research/bert README, GLUE test set (CoNLL-2003 not reported)
    "Google BERT-Tiny (published, GLUE test, 3.3B words)": {"sst2": 83.2, "cola": 0.0},
    "Google BERT-Mini (published, GLUE test, 3.3B words)": {"sst2": 85.9, "cola": 0.0},
}
TINY_PRETRAIN = ["train.max_steps=3", "train.max_minutes=null", "data.max_documents=300",
                 "data.max_validation_documents=40", "tokenizer.vocab_size=1000", "eval.max_batches=1",
                 "train.eval_every_steps=null", "train.save_every_steps=null", "train.log_every_steps=1",
                 "train.gradient_accumulation_steps=1", "train.batch_size=8"]  # fmt: skip
TINY_FINETUNE = ["data.max_train_examples=32", "data.max_eval_examples=32", "train.max_steps=2",
                 "train.num_epochs=null", "train.log_every_steps=1"]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="the hfpipe pretraining recipe")
    p.add_argument("--minutes", type=float, help="pretraining budget of both sides (default: the recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--max-train", type=int, help="cap every task's training examples")
    p.add_argument("--lr-grid", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4], metavar="LR",
                   help="fine-tuning lrs; each task's is chosen on a --select-on split of its training data "
                   "(hfpipe glue's protocol, issue 21; why this grid: hfpipe/train/suite.py)")
    p.add_argument("--select-on", type=float, default=0.1, help="held-out fraction of the training data")
    p.add_argument("--select-seed", type=int, default=0, help="seed of the selection split and runs")
    p.add_argument("--finetune-lr", type=float, help="one lr for every task, no selection (the protocol before "
                   "issue 21; overrides --lr-grid)")
    p.add_argument("--bert-lr", type=float, default=5e-4)
    p.add_argument("--bert-batch", type=int, default=32)
    p.add_argument("--eval-rows", type=int, default=512, help="validation rows of the common MLM evaluation")
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--work-dir", type=Path, default=REPO / "runs" / "quality")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "quality.json",
                   help="the results file bench/publish.py renders")
    p.add_argument("--dirty", action="store_true", help="run on uncommitted changes (recorded as such)")
    p.add_argument(
        "--epochs",
        nargs="+",
        default=[],
        metavar="TASK=E",
        help="fine-tuning epochs per task (default: sst2=1 cola=3 conll2003=2)",
    )
    p.add_argument(
        "--hfpipe-run",
        type=Path,
        help="an hfpipe pretraining run already made with --recipe (its final/ and results.json): stage 1 is "
        "skipped and the BERT recipe gets that run's budget",
    )
    p.add_argument(
        "--reuse-pretraining",
        action="store_true",
        help="keep the pretrained models already in --work-dir (their stage times are not re-measured)",
    )
    p.add_argument("--tiny", action="store_true", help="a few steps everywhere (the test)")
    args = p.parse_args(argv)
    needed = ["wikitext-2/train.txt", "wikitext-2/valid.txt"] + [f for t in args.tasks for f in TASKS[t][1:3]]
    missing = [f for f in needed if not (args.data_dir / f).is_file()]
    if missing:
        p.error(f"--data-dir {args.data_dir}: missing {', '.join(missing)} (the shared data sets)")
    if args.hfpipe_run and not all((args.hfpipe_run / f).exists() for f in ("final", "results.json")):
        p.error(f"--hfpipe-run {args.hfpipe_run}: not a finished hfpipe pretraining run (final/ and results.json)")
    if not 0 < args.select_on < 1 or min(args.lr_grid) <= 0:  # before hours of pretraining, not after
        p.error(f"--select-on {args.select_on:g} must be in (0, 1) and every --lr-grid value positive")
    if args.tiny:
        args.seeds, args.eval_rows = args.seeds[:1], 16
    args.epochs = dict(item.split("=", 1) for item in args.epochs)
    if unknown := set(args.epochs) - set(TASKS):
        p.error(f"--epochs: unknown task(s) {sorted(unknown)}; tasks: {', '.join(TASKS)}")
    return args


def finetune_protocol(args) -> str:
    """One line for the results: how each task's lr was set."""
    if args.finetune_lr is not None:
        return f"lr {args.finetune_lr:g} for every task (no selection)"
    grid = ", ".join(f"{lr:g}" for lr in args.lr_grid)
    return (f"lr chosen per task and model from {{{grid}}} on {args.select_on:g} of the training data "
            f"(split seed {args.select_seed}; ties -> smaller lr), then each seed on all of it; one evaluation "
            "at the end of each run")


def main(argv=None) -> dict:
    args = parse_args(argv)
    argv = [__file__, *(sys.argv[1:] if argv is None else argv)]
    load_before = load_average()
    try:  # refuse a dirty tree before spending hours, not after
        provenance(argv, dirty_ok=args.dirty)
    except DirtyTreeError as e:
        sys.exit(f"bench/quality.py: error: {e}")
    work, seconds, loads = args.work_dir, {}, {}
    report: dict = {
        "command": "python bench/quality.py " + " ".join(argv[1:]),
        "seconds": seconds,
        "load": loads,
        "one_invocation": not (args.hfpipe_run or args.reuse_pretraining),
        "models": {},
        "lr_selection": {},
        "finetune_protocol": finetune_protocol(args),
    }

    @contextmanager
    def stage(name: str):
        print(f"\n=== {name}", flush=True)
        start, before = time.perf_counter(), load_average()
        yield
        seconds[name] = round(time.perf_counter() - start, 1)
        loads[name] = [before, load_average()]
        print(f"=== {name}: {seconds[name]} s, load {before} -> {loads[name][1]}", flush=True)

    recipe = hfpipe_recipe(args)
    run_dir = args.hfpipe_run or Path(recipe.output_dir)
    hfpipe_dir = run_dir / "final"
    if args.reuse_pretraining:
        results = json.loads((run_dir / "results.json").read_text())
        bert_file = work / "bert" / "pretrain.json"
        report["bert_pretrain"] = json.loads(bert_file.read_text()) if bert_file.is_file() else {}
        report["reused_pretraining"] = True
    else:
        if args.hfpipe_run:
            results = json.loads((run_dir / "results.json").read_text())
            report["hfpipe_run"] = str(run_dir)
        else:
            with stage("pretrain hfpipe"):
                from hfpipe.train.pretrain import pretrain

                results = pretrain(recipe)
        budget_s = recipe.train.max_minutes * 60 if recipe.train.max_minutes else None
        with stage("pretrain BERT (run_mlm_no_trainer)"):
            report["bert_pretrain"] = train_bert(args, recipe, hfpipe_dir, work / "bert", budget_s)
        with stage("control (random init)"):
            from hfpipe.demo import save_random_init

            save_random_init(hfpipe_dir, work / "random-init", seed=recipe.seed)
    report["hfpipe_pretrain"] = {k: results.get(k) for k in ("step", "tokens", "train_seconds", "eval_loss")}
    with stage("MLM evaluation"):
        batches = common_eval_batches(args, hfpipe_dir)
        report["mlm"] = {
            "hfpipe": mlm_loss("hfpipe", hfpipe_dir, batches),
            "bert": mlm_loss("bert", work / "bert" / "mlm", batches),
        }
    models = {"hfpipe": hfpipe_dir, "bert": work / "bert" / "hfpipe", "scratch": work / "random-init"}
    for name, folder in models.items():
        with stage(f"fine-tune {name}"):
            report["models"][name], report["lr_selection"][name] = finetune_all(args, folder, work / "finetune" / name)
    report["recipe"] = {
        "path": str(args.recipe),
        "preset": recipe.model.preset,
        "minutes": recipe.train.max_minutes,
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "quality.json").write_text(json.dumps(report, indent=2))
    tables = format_tables(report, args)
    for table in tables.values():
        print("\n" + render(table))
    write_results(args.results, {**report, "measures": MEASURES, "tables": tables}, argv=argv,
                  dirty_ok=args.dirty, load_before=load_before)
    print(f"\nwrote {args.results}; now `python bench/publish.py` puts its tables in docs/results.md")
    return report


# ----------------------------------------------------------------------------------------------
# Pretraining: hfpipe's recipe, and BERT's the run_mlm_no_trainer way
# ----------------------------------------------------------------------------------------------


def hfpipe_recipe(args):
    from hfpipe.config import PretrainRecipe, load_recipe

    if args.hfpipe_run:  # the recipe that run resolved, its budget included
        minutes = [f"train.max_minutes={args.minutes}"] if args.minutes is not None else []
        return load_recipe(args.hfpipe_run / "resolved_recipe.yaml", PretrainRecipe, minutes)

    wiki = args.data_dir / "wikitext-2"
    overrides = [f"output_dir={args.work_dir / 'hfpipe'}", "train.resume=none", f"data.source={wiki / 'train.txt'}",
                 f"data.validation_source={wiki / 'valid.txt'}", "tracking.plot=false"]  # fmt: skip
    if args.minutes is not None:
        overrides += [f"train.max_minutes={args.minutes}"]
    return load_recipe(args.recipe, PretrainRecipe, overrides + (TINY_PRETRAIN if args.tiny else []))


def bert_config(hfpipe_dir: Path, tokenizer):
    """BERT of the hfpipe model's size: its layers, hidden and heads; BERT's 4x intermediate."""
    from transformers import BertConfig

    from hfpipe.model.configuration_hfpipe import HfpipeConfig

    c = HfpipeConfig.from_pretrained(hfpipe_dir)
    return BertConfig(vocab_size=len(tokenizer), hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                      num_attention_heads=c.num_attention_heads, intermediate_size=4 * c.hidden_size,
                      pad_token_id=tokenizer.pad_token_id)  # fmt: skip


def train_bert(args, recipe, hfpipe_dir: Path, out: Path, budget_s: float | None) -> dict:
    """run_mlm_no_trainer's loop for `budget_s` seconds (or 3 steps with --tiny); saves the MLM model and
    its conversion to hfpipe (for the one fine-tuning loop)."""
    import datasets
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling, get_scheduler

    from hfpipe.model.convert import convert_bert

    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(hfpipe_dir)
    raw = datasets.load_dataset(
        "text", data_files={"train": str(args.data_dir / "wikitext-2" / "train.txt")}
    )["train"]
    if args.tiny:
        raw = raw.select(range(300))
    tokenized = raw.map(lambda b: tokenizer(b["text"], return_special_tokens_mask=True), batched=True,
                        remove_columns=["text"])  # fmt: skip
    train_set = tokenized.map(group_texts, batched=True)
    model = BertForMaskedLM(bert_config(hfpipe_dir, tokenizer))
    model.set_attn_implementation("sdpa")
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=BERT_MLM)
    loader = DataLoader(train_set, shuffle=True, collate_fn=collator, batch_size=args.bert_batch)
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=args.bert_lr)
    batches = chain.from_iterable(iter(loader) for _ in range(10**6))  # epochs, reshuffled each time
    model.train()
    # the example needs its step count up front: the budget over the step time measured on steps 10-110
    # (the first steps are slow warm-up; a short probe undercounts and the run ends before its budget)
    warmup, probe, start, steps, tokens, total = 10, 110, time.perf_counter(), 0, 0, 3 if args.tiny else None
    scheduler, window, curve = None, [], []
    while True:
        batch = next(batches)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps, tokens = steps + 1, tokens + int(batch["attention_mask"].sum())
        window.append(float(loss.detach()))
        if steps % 500 == 0:
            curve.append({"step": steps, "tokens": tokens, "seconds": round(time.perf_counter() - start, 1),
                          "train_loss": round(sum(window) / len(window), 4)})  # fmt: skip
            print(f"BERT step {steps}/{total}: train loss {curve[-1]['train_loss']}", flush=True)
            window.clear()
        if steps == warmup:
            warm_start = time.perf_counter()
        if scheduler is None and (steps == probe or total is not None):
            now = time.perf_counter()
            total = total or probe + max(1, int((budget_s - (now - start)) / ((now - warm_start) / (probe - warmup))))
            scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=total)
            with warnings.catch_warnings():  # catching up with the probe steps already taken
                warnings.simplefilter("ignore")
                for _ in range(steps):
                    scheduler.step()
        elif scheduler is not None:
            scheduler.step()
        if (total is not None and steps >= total) or (budget_s and time.perf_counter() - start >= budget_s):
            break
    elapsed = time.perf_counter() - start
    model.save_pretrained(out / "mlm")
    tokenizer.save_pretrained(out / "mlm")
    convert_bert(out / "mlm", out / "hfpipe")
    stats = {
        "step": steps,
        "planned_steps": total,
        "tokens": tokens,
        "train_seconds": round(elapsed, 1),
        "final_train_loss": float(loss.detach()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "lr": args.bert_lr,
        "batch_size": args.bert_batch,
        "curve": curve,
    }
    (out / "pretrain.json").write_text(json.dumps(stats, indent=2))
    return stats


def group_texts(examples: dict) -> dict:
    """run_mlm_no_trainer's group_texts: concatenate, drop the remainder, cut into BLOCK-token rows."""
    concatenated = {k: list(chain(*examples[k])) for k in examples}
    total = len(concatenated[next(iter(examples))]) // BLOCK * BLOCK
    return {k: [t[i : i + BLOCK] for i in range(0, total, BLOCK)] for k, t in concatenated.items()}


# ----------------------------------------------------------------------------------------------
# The common MLM evaluation: same rows, same masks, for both models
# ----------------------------------------------------------------------------------------------


def common_eval_batches(args, tokenizer_dir: Path) -> list[dict]:
    import datasets

    from hfpipe.config import DataArgs, MaskingArgs
    from hfpipe.data.loader import fixed_eval_batches
    from hfpipe.data.sources import tokenize_dataset
    from hfpipe.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    raw = datasets.load_dataset(
        "text", data_files={"validation": str(args.data_dir / "wikitext-2" / "valid.txt")}
    )
    texts = raw["validation"].filter(lambda row: bool(row["text"].strip()))
    rows = tokenize_dataset(texts, tokenizer, DataArgs(block_size=BLOCK), whole_word=False)
    return fixed_eval_batches(
        rows,
        tokenizer,
        masking=MaskingArgs(),
        mlm_probability=BERT_MLM,
        seed=0,
        batch_size=min(64, args.eval_rows),
        max_batches=math.ceil(args.eval_rows / 64),
    )


@torch.no_grad()
def mlm_loss(kind: str, folder: Path, batches: list[dict]) -> dict:
    """Cross-entropy and accuracy at the masked tokens; hfpipe reads its restarting positions, BERT plain rows."""
    from transformers import BertForMaskedLM

    from hfpipe.model.modeling_hfpipe import HfpipeForMaskedLM

    model = (HfpipeForMaskedLM if kind == "hfpipe" else BertForMaskedLM).from_pretrained(folder).eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        inputs = dict(batch) if kind == "hfpipe" else {k: v for k, v in batch.items() if k != "position_ids"}
        out = model(**inputs)
        labels = batch["labels"]
        logits = out.logits if out.logits.dim() == 2 else out.logits[labels != -100]  # (N, V)
        n = int((labels != -100).sum())
        loss_sum += float(out.loss) * n
        correct += int((logits.argmax(-1) == labels[labels != -100]).sum())
        count += n
    return {"loss": loss_sum / count, "accuracy": correct / count, "masked_tokens": count}


# ----------------------------------------------------------------------------------------------
# Fine-tuning every model the same way
# ----------------------------------------------------------------------------------------------


def finetune_all(args, model_dir: Path, out: Path) -> tuple[dict, dict]:
    """Every task with the suite's protocol (hfpipe/train/suite.py `run_task`): the lr chosen from
    --lr-grid on a --select-on split of the training data, then every seed with it on all of it, scored
    on dev; or, with --finetune-lr, that one lr (the protocol before issue 21).
    Returns ({task: [{"seed", "score" x100, "metric", "seconds"}]}, {task: the lr selection})."""
    from hfpipe.train.suite import run_task

    scores: dict = {}
    selection: dict = {}
    for task in args.tasks:
        _, train_file, dev_file, extra, _ = TASKS[task]
        overrides = [f"data.train_file={args.data_dir / train_file}", f"data.validation_file={args.data_dir / dev_file}",
                     "train.save_every_steps=null", *extra]  # fmt: skip
        if task in args.epochs:
            overrides.append(f"train.num_epochs={args.epochs[task]}")
        if args.max_train:
            overrides.append(f"data.max_train_examples={args.max_train}")
        if args.finetune_lr is not None:
            overrides.append(f"train.lr={args.finetune_lr}")
        records, chosen = run_task(task, str(model_dir), out, overrides + (TINY_FINETUNE if args.tiny else []),
                                   args.seeds, None if args.finetune_lr is not None else args.lr_grid,
                                   args.select_on, args.select_seed)  # fmt: skip
        if failed := [r for r in records if "error" in r]:
            raise RuntimeError(f"fine-tuning {model_dir} on {task} failed: {failed[0]['error']}")
        scores[task] = [{"seed": r["seed"], "score": 100 * float(r["main"]), "metric": r["main_metric"],
                         "seconds": r["seconds"]} for r in records]  # fmt: skip
        if chosen is not None:
            selection[task] = chosen
    return scores, selection


# ----------------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------------


def compare(a: list[float], b: list[float], higher: str, lower: str) -> str:
    """Which side is ahead, and whether the seeds resolve it: resolved only where the mean ± std intervals
    do not overlap (one seed has no interval, so nothing is resolved)."""
    if len(a) < 2 or len(b) < 2:
        return "one seed: not resolved"
    (ma, sa), (mb, sb) = (statistics.fmean(a), statistics.stdev(a)), (statistics.fmean(b), statistics.stdev(b))
    ahead = higher if ma > mb else lower
    if ma - sa > mb + sb or mb - sb > ma + sa:
        return f"{ahead} ahead by {abs(ma - mb):.2f} (intervals do not overlap)"
    return f"not resolved ({ahead} {abs(ma - mb):.2f} ahead, intervals overlap)"


def format_tables(report: dict, args) -> dict:
    """{"quality": the models x tasks table, "stages": wall time and load per stage} for bench/publish.py."""
    preset, minutes = report["recipe"]["preset"], report["recipe"]["minutes"]
    seeds = len(args.seeds)
    head = ["model", "pretraining", "val. MLM loss", *(TASKS[t][4] for t in args.tasks)]

    def budget(side: dict) -> str:
        seconds = side.get("train_seconds")
        spent = f"{seconds / 60:.1f} min" if seconds else f"{minutes:g} min" if minutes else f"{side.get('step')} steps"
        tokens = f"{side['tokens'] / 1e6:.2f}M tokens" if "tokens" in side else "tokens not recorded"
        return f"{spent}, {tokens}"

    rows = [
        [f"hfpipe `{args.recipe.name}` ({preset})", budget(report["hfpipe_pretrain"]),
         f"{report['mlm']['hfpipe']['loss']:.3f}"],
        ["transformers BERT recipe (run_mlm_no_trainer), same size", budget(report["bert_pretrain"]),
         f"{report['mlm']['bert']['loss']:.3f}"],
        ["same architecture as hfpipe, random init (control)", "none", "—"],
    ]  # fmt: skip
    scores = {name: {t: [r["score"] for r in report["models"][name][t]] for t in args.tasks}
              for name in ("hfpipe", "bert", "scratch")}  # fmt: skip
    for row, name in zip(rows, ("hfpipe", "bert", "scratch"), strict=True):
        row += [mean_std(scores[name][t], digits=2) for t in args.tasks]
    rows.append(["hfpipe vs BERT recipe", "", "one run each: no interval",
                 *(compare(scores["hfpipe"][t], scores["bert"][t], "hfpipe", "BERT") for t in args.tasks)])
    rows.append(["hfpipe vs random init", "", "",
                 *(compare(scores["hfpipe"][t], scores["scratch"][t], "hfpipe", "random init") for t in args.tasks)])
    for label, published in PUBLISHED.items():
        rows.append([label, "3.3B words (Turc et al. 2019)", "—",
                     *(f"{published[t]:.1f}" if t in published else "—" for t in args.tasks)])  # fmt: skip
    timing = ("All sides ran in this one invocation, one after the other; the load per stage is in the stages table."
              if report["one_invocation"] else
              "The sides were NOT timed in one invocation (--hfpipe-run or --reuse-pretraining): their token "
              "counts are not comparable.")
    note = (f"Dev-set scores x100, mean ± std over {seeds} seed(s) (fine-tuning seeds; one pretraining run each). "
            f"Fine-tuning: {report['finetune_protocol']}{chosen_lrs(report, args.tasks)}. "
            "Validation MLM loss: the same WikiText-2 validation rows and 15% masks for both models. " + timing)
    stages = [[name, f"{s}", f"{report['load'][name][0]} → {report['load'][name][1]}"]
              for name, s in report["seconds"].items()]
    return {"quality": {"columns": head, "rows": rows, "note": note},
            "stages": {"columns": ["stage", "wall time (s)", "load average before → after"], "rows": stages,
                       "note": ""}}


def chosen_lrs(report: dict, tasks: list[str]) -> str:
    """'; chosen lr (hfpipe / bert / scratch): sst2 3e-4 / 1e-4 / 1e-3, ...' ('' without selection); the grid
    scores are in the results file's lr_selection."""
    picked = report.get("lr_selection", {})
    names = [n for n in ("hfpipe", "bert", "scratch") if picked.get(n)]
    if not names:
        return ""
    cells = [f"{t} " + " / ".join(f"{picked[n][t]['chosen_lr']:g}" if t in picked[n] else "–" for n in names)
             for t in tasks]  # fmt: skip
    return f"; chosen lr ({' / '.join(names)}): " + ", ".join(cells)


def render(table: dict) -> str:
    lines = ["| " + " | ".join(table["columns"]) + " |", "|" + "---|" * len(table["columns"])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table["rows"]] + ["", table["note"]])


if __name__ == "__main__":
    main()
