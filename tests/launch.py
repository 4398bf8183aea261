"""Run hfpipe's command line in subprocesses, as users do: one process, or two CPU processes through
`accelerate launch` (gloo; `--cpu` alone would start only one)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """Offline, one thread per process (two processes share the 2 cores of CI)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def hfpipe_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hfpipe", *args]


def cpu_precision() -> str:
    """What `train.mixed_precision: null` (the shipped recipes) means outside a launcher on this CPU
    ('bf16' with AVX512-BF16 or AMX, else 'no'). Launches pass it, so a 2-process run computes in the same
    precision as the 1-process run it is compared with (under a launcher, null takes the launcher's)."""
    import torch

    from hfpipe.train.distributed import resolve_precision

    return resolve_precision("auto", torch.device("cpu"))[0]


def two_process_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", cpu_precision(), "--dynamo_backend", "no", "--main_process_port", "0",
            "-m", "hfpipe", *args]


def run(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = cli_env(ACCELERATE_USE_CPU="1") if "accelerate.commands.launch" in command else cli_env()
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
