"""Benchmark hfpipe's data path against the way transformers' run_mlm example does the same work.

    python bench/bench_data.py [--data ../shared/data/wikitext-2/train.txt] [--out bench/results/data.json]
    python bench/bench_data.py --pipeline-only       # section 6 alone (about a minute)

On WikiText-2 train (10.8 MB) it times, side by side in one run:
1. tokenizer training: `hfpipe.data.tokenizer.train_tokenizer` (WordPiece, 8192) vs transformers'
   `train_new_from_iterator` on the same template (plus BPE and Unigram for reference);
2. loading: `load_text_datasets` (UTF-8 check, blank lines dropped, hash split) vs
   `load_dataset("text")`;
3. tokenization + packing into 128-token rows: `tokenize_dataset` (one batched map, numpy
   packing, positions per document) vs run_mlm's two maps: `tokenizer(texts,
   return_special_tokens_mask=True)` then `group_texts` (itertools.chain concatenation);
4. a second `tokenize_dataset` call (the datasets cache hit);
5. streaming tokenization of the corpus at 1x and 4x its size, each in a fresh process,
   recording throughput and peak-RSS growth (memory must stay flat as the corpus grows);
6. the pretraining input pipeline (sample, read, collate, mask one micro-batch of 32 rows, mlm 0.3)
   at block 128 and at block 512 with whole-word masking, in one preparation process with one
   torch thread (what a DataLoader worker gets): "before" = the previous path, rebuilt here from
   public functions (rows read one by one, collated row by row, `mask_tokens` called per row with
   its own `make_generator(seed, step, position)`), vs "after" = `pretrain_steps` (one arrow gather,
   vectorised collation, the whole batch masked at once with per-row keys); plus `step_loader` with
   2 DataLoader workers feeding this process. Without WikiText-2 this section runs alone on the
   embedded corpus (builtin:python-docs) and says so.

Every timed map runs on a fresh datasets cache folder (a first run, no cache hits), with the
same tokenizer and num_proc=None for both sides; steps 2-3 are repeated `--repeats` times,
alternating hfpipe and baseline, and the median is reported (this machine is shared, timings are
noisy). MB/s is corpus bytes / seconds; tokens/s counts the tokens in the produced rows (in section 6: the
real, non-padding tokens of the produced batches).
Prints a markdown table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "true"  # both sides may use every core inside a batch

import datasets  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import cpu_info, load_average, provenance, write_results  # noqa: E402

from hfpipe.config import DataArgs, MaskingArgs, TokenizerArgs  # noqa: E402
from hfpipe.data.loader import StepSampler, pretrain_steps, step_loader  # noqa: E402
from hfpipe.data.masking import make_generator, mask_tokens  # noqa: E402
from hfpipe.data.sources import iter_texts, load_text_datasets, tokenize_dataset  # noqa: E402
from hfpipe.data.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "wikitext-2" / "train.txt"
BLOCK = 128
datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()
logging.getLogger("hfpipe").setLevel(
    logging.ERROR
)  # "N documents longer than a block" once per run is noise here


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def n_tokens(ds) -> int:
    return int(pc.sum(pc.list_value_length(ds.data.column("input_ids"))).as_py())


# --- the run_mlm way (examples/pytorch/language-modeling/run_mlm.py, non line-by-line) ------------


def run_mlm_load(path: str, cache_dir: str):
    return datasets.load_dataset("text", data_files={"train": path}, cache_dir=cache_dir)["train"]


def run_mlm_tokenize_and_group(raw, tokenizer):
    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // BLOCK) * BLOCK  # the remainder of each batch is dropped
        return {k: [t[i : i + BLOCK] for i in range(0, total_length, BLOCK)] for k, t in concatenated.items()}

    t_tok, tokenized = timed(lambda: raw.map(tokenize_function, batched=True, remove_columns=["text"]))
    t_group, grouped = timed(lambda: tokenized.map(group_texts, batched=True))
    return t_tok, t_group, n_tokens(tokenized), grouped


# --- streaming memory, in a fresh process per size ----------------------------------------------------


def current_rss_mb() -> float:
    """Resident memory now (Linux /proc), not the high-water mark: imports leave a peak behind."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def streaming_child(path: str, tokenizer_dir: str) -> None:
    """Tokenize `path` in streaming mode; print JSON with throughput and peak RSS growth."""
    tokenizer = load_tokenizer(tokenizer_dir)
    tokenizer("warm up the tokenizer and its thread pool " * 100)
    before = peak = current_rss_mb()  # nothing of the corpus read yet
    start, tokens = time.perf_counter(), 0
    # validation_source = the same file: no carve-off, so every document is tokenized (as in MB/s).
    args = DataArgs(source=path, streaming=True, block_size=BLOCK, validation_source=path)
    train, _ = load_text_datasets(args, seed=0)
    rows = tokenize_dataset(train, tokenizer, args, whole_word=False)
    for i, row in enumerate(rows):
        tokens += len(row["input_ids"])
        if i % 200 == 0:
            peak = max(peak, current_rss_mb())
    seconds = time.perf_counter() - start
    peak = max(peak, current_rss_mb())
    print(json.dumps({"seconds": seconds, "tokens": tokens, "rss_before_mb": before,
                      "peak_rss_growth_mb": peak - before}))  # fmt: skip


def streaming_memory(path: Path, tokenizer_dir: str, tmp: Path) -> list[dict]:
    text = path.read_bytes()
    results = []
    for factor in (1, 4):
        big = tmp / f"corpus_x{factor}.txt"
        big.write_bytes(text * factor)
        out = subprocess.run(
            [sys.executable, __file__, "--streaming-child", str(big), tokenizer_dir],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(out.stdout.strip().splitlines()[-1])
        mb = len(text) * factor / 1e6
        results.append({"factor": factor, "mb": mb, **result, "mb_per_s": mb / result["seconds"],
                        "tokens_per_s": result["tokens"] / result["seconds"]})  # fmt: skip
    return results


# --- 6. the pretraining input pipeline, one preparation process -------------------------------------

PIPELINE_CASES = ((128, False), (512, True))  # (block size, whole-word masking)
MICRO_BATCH, MLM_PROBABILITY = 32, 0.3


def before_collate(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The previous `collate`: pad to the longest row, filling row by row."""
    width = max(len(e["input_ids"]) for e in examples)
    names = [n for n in ("input_ids", "position_ids", "special_tokens_mask", "word_starts") if n in examples[0]]
    fills = {"input_ids": pad_token_id, "position_ids": 0, "special_tokens_mask": 1, "word_starts": 1}
    batch = {n: torch.full((len(examples), width), fills[n], dtype=torch.long) for n in names}
    batch["attention_mask"] = torch.zeros((len(examples), width), dtype=torch.long)
    for i, example in enumerate(examples):
        n = len(example["input_ids"])
        batch["attention_mask"][i, :n] = 1
        for name in names:
            batch[name][i, :n] = torch.as_tensor(example[name])
    return batch


def before_masked_batch(rows, items, tokenizer, masking: MaskingArgs, seed: int, step: int) -> dict:
    """The previous `masked_batch`: rows read one by one, then `mask_tokens` once per row with its own
    generator seeded from (seed, step, global position)."""
    batch = before_collate([rows[i] for _, i in items], tokenizer.pad_token_id)
    vocab_size, special_ids = len(tokenizer), tokenizer.all_special_ids
    inputs, labels = [], []
    for row, (g, _) in enumerate(items):
        x, y = mask_tokens(
            batch["input_ids"][row : row + 1], special_tokens_mask=batch["special_tokens_mask"][row : row + 1],
            mask_token_id=tokenizer.mask_token_id, vocab_size=vocab_size, args=masking,
            mlm_probability=MLM_PROBABILITY, generator=make_generator(seed, step, g),
            word_starts=batch["word_starts"][row : row + 1] if masking.whole_word else None,
            special_token_ids=special_ids,
        )  # fmt: skip
        inputs.append(x)
        labels.append(y)
    return {"input_ids": torch.cat(inputs), "attention_mask": batch["attention_mask"],
            "position_ids": batch["position_ids"], "labels": torch.cat(labels)}  # fmt: skip


def tokens_per_second(make_batches, steps: range, repeats: int) -> float:
    """Median over `repeats` of real tokens / seconds for `make_batches(step)` over `steps`."""
    rates = []
    for _ in range(repeats):
        start, tokens = time.perf_counter(), 0
        for step in steps:
            tokens += sum(int(mb["attention_mask"].sum()) for mb in make_batches(step))
        rates.append(tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def pipeline(source: str, tokenizer, cache: Path, repeats: int) -> list[dict]:
    """Section 6: tokens/s before vs after in one process (1 torch thread), and with 2 workers."""
    return [pipeline_case(source, block, whole_word, tokenizer, cache, repeats) for block, whole_word in PIPELINE_CASES]


def pipeline_case(source: str, block: int, whole_word: bool, tokenizer, cache: Path, repeats: int) -> dict:
    args = DataArgs(source=source, cache_dir=str(cache / "pipeline"), block_size=block)
    train, _ = load_text_datasets(args, seed=0)
    rows = tokenize_dataset(train, tokenizer, args, whole_word=whole_word)
    masking = MaskingArgs(whole_word=whole_word)
    sampler = StepSampler(len(rows), 0, MICRO_BATCH, 1, 1)
    steps = pretrain_steps(rows, sampler, tokenizer, masking, MLM_PROBABILITY, 0, 0, 1)

    def before(step: int) -> list[dict]:
        return [before_masked_batch(rows, sampler.micro_batch(step, 0, 0), tokenizer, masking, 0, step)]

    def after(step: int) -> list[dict]:
        return steps[step]["micro_batches"]

    before(0), after(0)  # warm up: caches, lazy imports
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one preparation process, as a DataLoader worker runs
    try:
        rate_before = tokens_per_second(before, range(1, 31), repeats)
        rate_after = tokens_per_second(after, range(1, 301), repeats)
    finally:
        torch.set_num_threads(threads)
    loader = step_loader(steps, 0, num_workers=2)
    next(loader)  # the workers start
    rate_workers = tokens_per_second(lambda _: next(loader), range(1, 601), repeats)
    loader.close()
    return {"block_size": block, "whole_word": whole_word, "micro_batch": MICRO_BATCH, "rows": len(rows),
            "before_tokens_per_s": rate_before, "after_tokens_per_s": rate_after,
            "workers2_tokens_per_s": rate_workers}  # fmt: skip


def pipeline_table(results: dict) -> str:
    lines = [
        f"Pretraining input pipeline on {results['pipeline_data']}: micro-batch {MICRO_BATCH}, mlm "
        f"{MLM_PROBABILITY}, real tokens/s, median of {results['pipeline_repeats']} runs",
        "",
        "| rows | before: one process | after: one process | speed-up | after: 2 DataLoader workers |",
        "|---|---|---|---|---|",
    ]
    for r in results["pipeline"]:
        label = f"block {r['block_size']}" + (", whole-word" if r["whole_word"] else "")
        lines.append(f"| {label} | {r['before_tokens_per_s'] / 1e3:,.0f}k | {r['after_tokens_per_s'] / 1e3:,.0f}k | "
                     f"{r['after_tokens_per_s'] / r['before_tokens_per_s']:.1f}x | "
                     f"{r['workers2_tokens_per_s'] / 1e3:,.0f}k |")  # fmt: skip
    return "\n".join(lines)


def pipeline_only(options, tmp: Path, results: dict) -> dict:
    """Section 6 alone: on WikiText-2 when present, else on the embedded corpus."""
    source = str(options.data) if options.data.is_file() else "builtin:python-docs"
    if source != str(options.data):
        print(f"{options.data} not found: the input pipeline runs on the embedded corpus builtin:python-docs")
    train, _ = load_text_datasets(DataArgs(source=source, cache_dir=str(tmp / "c0")), seed=0)
    tokenizer = train_tokenizer(iter_texts(train), TokenizerArgs(type="wordpiece"), output_dir=tmp / "tok-pipeline")
    return {**results, "pipeline_data": source, "pipeline_repeats": options.repeats,
            "pipeline": pipeline(source, tokenizer, tmp, options.repeats)}  # fmt: skip


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "data.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline-only", action="store_true", help="run section 6 (the input pipeline) alone")
    parser.add_argument("--quick", action="store_true", help="section 6 alone, 1 repeat (bench/results/quick/data.json)")
    parser.add_argument("--dirty", action="store_true", help="allow an uncommitted tree (the results file says so)")
    options = parser.parse_args()
    provenance(dirty_ok=options.dirty)  # refuse a dirty tree before the run, not after it
    options.load_before = load_average()
    if options.quick:
        options.pipeline_only, options.repeats = True, 1
        if options.out == REPO / "bench" / "results" / "data.json":
            options.out = REPO / "bench" / "results" / "quick" / "data.json"
    path = str(options.data)
    tmp = Path(tempfile.mkdtemp(prefix="hfpipe-bench-"))
    results: dict = {"data": path, "block_size": BLOCK, "cpus": os.cpu_count(),
                     "python": platform.python_version(), "torch": torch.__version__, "datasets": datasets.__version__,
                     "tokenizers": tokenizers.__version__, "transformers": transformers.__version__}  # fmt: skip
    if options.pipeline_only or not options.data.is_file():
        if not options.data.is_file():
            print(f"{options.data} not found: sections 1-5 are skipped (pass --data PATH; WikiText-2 train.txt "
                  "lives in ../shared/data)")
        results = pipeline_only(options, tmp, results)
        write(options, results, pipeline_table(results))
        return
    mb = options.data.stat().st_size / 1e6
    results["mb"] = mb

    # 1. Tokenizer training (once each: the trainers are deterministic and take seconds).
    corpus = datasets.load_dataset("text", data_files=path, split="train", cache_dir=str(tmp / "c0"))
    corpus = corpus.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True)
    training = {}
    for kind in ("wordpiece", "bpe", "unigram"):
        seconds, tok = timed(lambda kind=kind: train_tokenizer(iter_texts(corpus), TokenizerArgs(type=kind),
                                                                output_dir=tmp / f"tok-{kind}"))  # fmt: skip
        training[f"hfpipe {kind}"] = {"seconds": seconds, "mb_per_s": mb / seconds, "vocab": len(tok)}
    template = load_tokenizer(tmp / "tok-wordpiece")
    batches = lambda: (corpus[i : i + 1000]["text"] for i in range(0, len(corpus), 1000))  # noqa: E731
    seconds, new = timed(
        lambda: template.train_new_from_iterator(batches(), vocab_size=8192, min_frequency=2)
    )
    training["transformers train_new_from_iterator (wordpiece)"] = {"seconds": seconds, "mb_per_s": mb / seconds,
                                                                    "vocab": len(new)}  # fmt: skip
    results["tokenizer_training"] = training
    tokenizer = template

    # 2-4. Loading, tokenization + packing, alternating sides, fresh caches each time.
    runs: dict[str, list] = {}
    counts: dict = {}
    for rep in range(options.repeats):
        one_repeat(path, tokenizer, tmp / f"rep{rep}", runs, counts)
    results["runs_seconds"] = runs
    results["median_seconds"] = {k: statistics.median(v) for k, v in runs.items()}
    results["min_seconds"] = {k: min(v) for k, v in runs.items()}
    results["counts"] = counts

    # 5. Streaming memory at 1x and 4x.
    results["streaming"] = streaming_memory(options.data, str(tmp / "tok-wordpiece"), tmp)

    # 6. The pretraining input pipeline.
    results.update(pipeline_data=path, pipeline_repeats=options.repeats,
                   pipeline=pipeline(path, tokenizer, tmp, options.repeats))  # fmt: skip
    write(options, results, report(results, mb) + "\n\n" + pipeline_table(results))


MEASURES = ["hfpipe/data", "bench/bench_data.py"]


def input_table(results: dict, note: str) -> dict:
    """The published table: input preparation, real tokens/s per process, 0 and 2 DataLoader workers."""
    rows = []
    for r in results["pipeline"]:
        label = f"block {r['block_size']}" + (", whole-word" if r["whole_word"] else "")
        rows.append([label, f"{r['before_tokens_per_s']:,.0f}", f"{r['after_tokens_per_s']:,.0f}",
                     f"{r['after_tokens_per_s'] / r['before_tokens_per_s']:.1f}x", f"{r['workers2_tokens_per_s']:,.0f}"])
    return {"columns": ["rows", "before: 0 workers tokens/s", "hfpipe: 0 workers tokens/s", "speed-up",
                        "hfpipe: 2 workers tokens/s"], "rows": rows, "note": note}


def write(options, results: dict, table: str) -> None:
    print(table)
    note = (f"{cpu_info()['model']}, load {options.load_before} -> {load_average()}; {results['pipeline_data']}; "
            f"python bench/bench_data.py{' --quick' if options.quick else ''}")
    write_results(options.out, {**results, "measures": MEASURES, "tables": {"input": input_table(results, note)},
                                "table": table}, dirty_ok=options.dirty, load_before=options.load_before)
    print(f"\nwrote {options.out}")


def one_repeat(path: str, tokenizer, cache: Path, runs: dict, counts: dict) -> None:
    """Time hfpipe then the run_mlm way once, each on a fresh cache folder; append to `runs`."""

    def record(key, seconds):
        runs.setdefault(key, []).append(seconds)

    args = DataArgs(source=path, cache_dir=str(cache / "hfpipe"), block_size=BLOCK)
    record("hf_load", timed(lambda: load_text_datasets(args, seed=0))[0])
    # Tokenize all non-blank lines: the baseline's documents, minus its [CLS] [SEP] rows for blank lines.
    every = run_mlm_load(path, args.cache_dir).filter(
        lambda b: [bool(t.strip()) for t in b["text"]], batched=True
    )
    seconds, rows = timed(lambda: tokenize_dataset(every, tokenizer, args, whole_word=False))
    record("hf_pack", seconds)
    counts["hfpipe"] = {"rows": len(rows), "tokens": n_tokens(rows)}
    record("hf_cached", timed(lambda: tokenize_dataset(every, tokenizer, args, whole_word=False))[0])
    record("hf_pack_ww", timed(lambda: tokenize_dataset(every, tokenizer, args, whole_word=True))[0])

    seconds, raw = timed(lambda: run_mlm_load(path, str(cache / "run_mlm")))
    record("mlm_load", seconds)
    t_tok, t_group, tokens_before, grouped = run_mlm_tokenize_and_group(raw, tokenizer)
    record("mlm_tok", t_tok)
    record("mlm_group", t_group)
    counts["run_mlm"] = {
        "rows": len(grouped),
        "tokens": n_tokens(grouped),
        "tokens_before_grouping": tokens_before,
    }


def report(results: dict, mb: float) -> str:
    m, c = results["median_seconds"], results["counts"]
    hf_tokens, mlm_tokens = c["hfpipe"]["tokens"], c["run_mlm"]["tokens"]

    def cell(seconds, tokens=None):
        rate = f"{mb / seconds:.2f} MB/s" + (f", {tokens / seconds / 1e3:.0f}k tok/s" if tokens else "")
        return f"{seconds:.2f} s ({rate})"

    mlm_pack = m["mlm_tok"] + m["mlm_group"]
    lines = [
        f"Data path on {Path(results['data']).name} ({mb:.1f} MB), block {BLOCK}, {results['cpus']} CPUs, "
        f"median of {len(results['runs_seconds']['hf_load'])} runs",
        "",
        "| step | hfpipe | run_mlm way | hfpipe speed-up |",
        "|---|---|---|---|",
    ]
    t = results["tokenizer_training"]
    base = t["transformers train_new_from_iterator (wordpiece)"]["seconds"]
    lines.append(f"| train WordPiece 8192 | {cell(t['hfpipe wordpiece']['seconds'])} | {cell(base)} | "
                 f"{base / t['hfpipe wordpiece']['seconds']:.2f}x |")  # fmt: skip
    for kind in ("bpe", "unigram"):
        lines.append(f"| train {kind} 8192 | {cell(t[f'hfpipe {kind}']['seconds'])} | - | - |")
    lines.append(
        f"| load text (hfpipe: + UTF-8 check, blank lines, hash split) | {cell(m['hf_load'])} | {cell(m['mlm_load'])} | {m['mlm_load'] / m['hf_load']:.2f}x |"
    )
    lines.append(f"| tokenize + pack | {cell(m['hf_pack'], hf_tokens)} | {cell(mlm_pack, mlm_tokens)} "
                 f"(tokenize {m['mlm_tok']:.2f} s + group {m['mlm_group']:.2f} s) | {mlm_pack / m['hf_pack']:.2f}x |")  # fmt: skip
    lines.append(f"| tokenize + pack, whole-word info | {cell(m['hf_pack_ww'], hf_tokens)} | - | - |")
    lines.append(f"| tokenize + pack, second run (cache) | {cell(m['hf_cached'])} | - | - |")
    lines.append(f"| rows / tokens kept | {c['hfpipe']['rows']} / {hf_tokens} | {c['run_mlm']['rows']} / "
                 f"{mlm_tokens} (of {c['run_mlm']['tokens_before_grouping']}) | - |")  # fmt: skip
    lines += [
        "",
        "| streaming | MB | seconds | MB/s | tok/s | peak RSS growth |",
        "|---|---|---|---|---|---|",
    ]
    for s in results["streaming"]:
        lines.append(f"| {s['factor']}x | {s['mb']:.1f} | {s['seconds']:.1f} | {s['mb_per_s']:.2f} | "
                     f"{s['tokens_per_s'] / 1e3:.0f}k | {s['peak_rss_growth_mb']:.1f} MB "
                     f"(over {s['rss_before_mb']:.0f} MB) |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--streaming-child"]:
        streaming_child(sys.argv[2], sys.argv[3])
    else:
        main()
