"""Benchmark hfpipe's data path against the way transformers' run_mlm example does the same work.

    python bench/bench_data.py [--data ../shared/data/wikitext-2/train.txt] [--out bench/results/data.json]

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
   recording throughput and peak-RSS growth (memory must stay flat as the corpus grows).

Every timed map runs on a fresh datasets cache folder (a first run, no cache hits), with the
same tokenizer and num_proc=None for both sides; steps 2-3 are repeated `--repeats` times,
alternating hfpipe and baseline, and the median is reported (this machine is shared, timings are
noisy). MB/s is corpus bytes / seconds; tokens/s counts the tokens in the produced rows.
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
import transformers  # noqa: E402

from hfpipe.config import DataArgs, TokenizerArgs  # noqa: E402
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


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "data.json")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    if not options.data.is_file():
        sys.exit(f"{options.data} not found: pass --data PATH (WikiText-2 train.txt lives in ../shared/data)")
    path = str(options.data)
    mb = options.data.stat().st_size / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="hfpipe-bench-"))
    results: dict = {"data": path, "mb": mb, "block_size": BLOCK, "cpus": os.cpu_count(),
                     "python": platform.python_version(), "datasets": datasets.__version__,
                     "tokenizers": tokenizers.__version__, "transformers": transformers.__version__}  # fmt: skip

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

    table = report(results, mb)
    print(table)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps({**results, "table": table}, indent=2) + "\n")
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
