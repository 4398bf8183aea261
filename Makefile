# hfpipe: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test lint format demo bench bench-gpu bench-quality clean

# Idempotent: re-runs only when pyproject.toml changes. torch is pinned and installed first because an
# unpinned torch would pull a multi-GB CUDA build.
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e ".[test]"
	touch $@

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check hfpipe tests bench

format: setup
	$(VENV)/bin/ruff format hfpipe tests bench

demo: setup
	$(PY) -m hfpipe demo

# Every published speed figure from this commit, each beside its baseline, interleaved (bench/run_all.py):
# the MLM step vs BERT (fp32/bf16, MFU, memory), the loop vs the step, input prep, parity, fine-tuning vs
# Trainer. Writes bench/results/*.json; BENCH_ARGS="--quick" (minutes, bench/results/quick/), "--dirty".
bench: setup
	$(PY) bench/run_all.py $(BENCH_ARGS)

# On a machine with CUDA GPUs (`pip install .[deepspeed]` first): modern-base at 512 on 1 and all GPUs, FSDP and
# ZeRO-2 vs DDP (bench/gpu_check.py). Fails on any failed run or missed target; writes bench/results/gpu_check.json.
bench-gpu: setup
	$(PY) bench/gpu_check.py $(BENCH_ARGS)

# Hours on CPU: the CPU-hour recipe vs transformers' BERT recipe vs no pretraining, fine-tuned on SST-2, CoLA,
# CoNLL-2003 x 3 seeds, in one invocation; writes bench/results/quality.json, then renders it into docs/results.md
# (bench/quality.py, bench/publish.py; BENCH_ARGS="--minutes 10 --seeds 1").
bench-quality: setup
	$(PY) bench/quality.py $(BENCH_ARGS)
	$(PY) bench/publish.py

clean:
	rm -rf runs .pytest_cache
