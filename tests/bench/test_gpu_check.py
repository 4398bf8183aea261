"""bench/gpu_check.py can fail: targets_missed on fabricated reports, and main's exit code and JSON on CPU.

    pytest tests/bench/test_gpu_check.py
"""

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402


def run(name, processes=1, mfu=0.45, data_wait=0.005, gap=None):
    r = {"name": name, "processes": processes, "tokens_per_sec": 100_000.0, "mfu": mfu, "data_wait": data_wait,
         "peak_memory_gb": 40.0, "losses": {5: 9.0, 10: 8.0}}
    return r if gap is None else {**r, "loss_gap_vs_ddp": gap}


def good_runs():
    return [run("1 GPU, sdpa"), run("1 GPU, flex_attention", mfu=0.41), run("8 GPUs DDP, sdpa", 8, mfu=0.3),
            run("8 GPU(s) FSDP2, sdpa", 8, gap=0.004), run("8 GPU(s) ZeRO-2, sdpa", 8, gap=0.01)]


def test_a_report_meeting_every_target_passes():
    assert gpu_check.targets_missed({"gpu": "NVIDIA H100 80GB HBM3", "runs": good_runs()}) == []


@pytest.mark.parametrize("change, expect", [
    (lambda rs: rs.__setitem__(1, {"name": "1 GPU, flex_attention", "error": "CUDA out of memory"}),
     "1 GPU, flex_attention: failed: CUDA out of memory"),
    (lambda rs: rs.__setitem__(0, run("1 GPU, sdpa", mfu=0.399)), "1 GPU, sdpa: MFU 39.9% < 40%"),
    (lambda rs: rs.__setitem__(0, run("1 GPU, sdpa", mfu=None)), "no MFU logged"),
    (lambda rs: rs.__setitem__(2, run("8 GPUs DDP, sdpa", 8, data_wait=0.02)), "data_wait 2.0% >= 2%"),
    (lambda rs: rs.__setitem__(3, run("8 GPU(s) FSDP2, sdpa", 8, gap=0.021)), "by 2.10% > 2.00%"),
    (lambda rs: rs.__setitem__(4, run("8 GPU(s) ZeRO-2, sdpa", 8, gap=None) | {"loss_gap_vs_ddp": None}),
     "no logged step in common with DDP"),
    (lambda rs: rs.__setitem__(4, {"name": "ZeRO-2", "error": "deepspeed is not installed"}), "ZeRO-2: failed"),
    (lambda rs: rs.clear(), "no run was made"),
])
def test_each_missed_target_fails_and_is_named(change, expect):
    runs = good_runs()
    change(runs)
    missed = gpu_check.targets_missed({"gpu": "NVIDIA H200", "runs": runs})
    assert len(missed) == 1 and expect in missed[0], missed


def test_mfu_target_applies_to_h100_h200_only_and_tolerance_is_a_parameter():
    runs = good_runs()
    runs[0] = run("1 GPU, sdpa", mfu=0.2)
    assert gpu_check.targets_missed({"gpu": "NVIDIA A100-SXM4-80GB", "runs": runs}) == []
    assert gpu_check.targets_missed({"gpu": "NVIDIA H100", "runs": good_runs()}, loss_tolerance=0.005) == [
        "8 GPU(s) ZeRO-2, sdpa: loss differs from DDP's by 1.00% > 0.50%"]


def test_loss_gap_is_the_max_relative_difference_over_common_steps():
    ref = {"losses": {5: 10.0, 10: 8.0}}
    assert gpu_check.loss_gap({"losses": {5: 10.1, 10: 8.4, 15: 1.0}}, ref) == pytest.approx(0.05)
    assert gpu_check.loss_gap({"losses": {15: 1.0}}, ref) is None
    assert gpu_check.loss_gap({"error": "x"}, ref) is None


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")


@pytest.mark.parametrize("runs, rc", [(good_runs(), 0), (good_runs()[:2] + [run("x", 8, data_wait=0.1)], 1)])
def test_main_exit_code_follows_the_targets_and_writes_json(fake_gpu, monkeypatch, tmp_path, runs, rc):
    monkeypatch.setattr(gpu_check, "run_all", lambda args, gpus: runs)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dirty", "--out", str(out)]) == rc
    written = json.loads(out.read_text())
    assert written["provenance"]["command"] == f"python bench/gpu_check.py --dirty --out {out}"
    assert bool(written["targets_missed"]) == bool(rc) and written["measures"] == gpu_check.MEASURES
    assert written["tables"]["gpu"]["rows"][0][:3] == ["1 GPU, sdpa", "100,000", "45.0%"]


def test_main_without_a_gpu_fails_and_still_writes_json(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dirty", "--out", str(out)]) == 1
    assert "no CUDA GPU" in json.loads(out.read_text())["targets_missed"][0]
