"""What a run reports (hfpipe/train/logs.py): the CPU peak that mfu divides by, measured once per
machine and precision and cached; tracking.peak_tflops overrides it.

    .venv/bin/pytest -q tests/train/test_logs.py
"""

import json

import torch

from hfpipe.train.logs import DataWait, cpu_matmul_peak, peak_flops


def test_cpu_peak_is_measured_once_per_precision_and_cached(tmp_path):
    cache = tmp_path / "peak.json"
    measured = cpu_matmul_peak(torch.float32, cache, size=256, seconds=0.05)
    assert 1e8 < measured < 1e14  # FLOP/s of a real CPU
    saved = json.loads(cache.read_text())
    (key,) = saved
    assert key.endswith("|float32|256") and f"threads={torch.get_num_threads()}" in key
    cache.write_text(json.dumps({key: 123.0}))  # a cached figure is used, not measured again
    assert cpu_matmul_peak(torch.float32, cache, size=256) == 123.0
    bf16 = cpu_matmul_peak(torch.bfloat16, cache, size=256, seconds=0.05)  # its own entry
    assert bf16 != 123.0 and len(json.loads(cache.read_text())) == 2


def test_recipe_peak_overrides_the_probe(tmp_path):
    cache = tmp_path / "peak.json"
    assert peak_flops(torch.device("cpu"), 2.5, "bf16", cache) == 2.5e12
    assert not cache.exists()  # no probe ran
    cache.write_text(json.dumps({}))
    assert peak_flops(torch.device("cpu"), None, "no", cache) > 0


def test_data_wait_is_the_fraction_of_the_window_spent_fetching():
    import time

    warnings = []
    wait = DataWait(warnings.append)
    wait.timed(lambda: time.sleep(0.05))
    time.sleep(0.05)
    assert 0.3 < wait.fraction() < 0.7
    assert wait.fraction() < 0.1  # a new window started
