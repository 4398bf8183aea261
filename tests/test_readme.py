"""The README's "Using it" commands, run exactly as written (issue 22): a new user types them in order.

    .venv/bin/pytest tests/test_readme.py -q

They run in a scratch workspace laid out like a clone (recipes/, and ../shared when this machine has
it), with `.venv/bin` first on the PATH and the Hub offline (HF_HUB_OFFLINE=1), as `source
.venv/bin/activate` on a machine without network. Every command of the block is in exactly one table
below; `test_every_readme_command_is_accounted_for` fails when the README gains one nobody placed:

- RUN: run as written; exit 0 and what it must leave behind.
- HUB: the commands whose data come from the Hub: offline, exit 2 within seconds with ONE line that
  says so and shows the `data.train_file=... data.validation_file=...` form.
- NOT_RUN: not run here, each with its reason (too slow for the suite, GPUs, a placeholder path, the Hub).

The first command (`hfpipe pretrain recipes/pretrain/tiny.yaml train.max_steps=300`, ~90 s on 2 shared
cores) makes runs/pretrain-tiny/final, which the later commands use; the 2-process launch as written
(~5 min under load: with the loopback test, 428 s) is its own test. All the commands together take ~6.5 min on 2 shared cores (measured: 12 tests,
391 s, with the first command), so every test that runs one is marked slow (still part of make test).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

PRETRAIN = "hfpipe pretrain recipes/pretrain/tiny.yaml train.max_steps=300"
TWO_PROCESSES = ("ACCELERATE_USE_CPU=1 accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml "
                 "-m hfpipe pretrain recipes/pretrain/tiny.yaml")

RUN = {  # command -> (a file it must write, or None; text its output must contain)
    "hfpipe recipes": (None, "tiny"),
    "hfpipe pretrain --help": (None, "train.mixed_precision"),
    "hfpipe validate tiny train.lr=3e-4 --print": (None, "lr: 0.0003"),
    "hfpipe export onnx runs/pretrain-tiny/final runs/onnx": ("runs/onnx/model.onnx", ""),
    "hfpipe export sentence-transformers runs/pretrain-tiny/final runs/st": ("runs/st/modules.json", ""),
    "hfpipe shapes --preset bert-mini": (None, "hidden"),
    'hfpipe attention runs/pretrain-tiny/final "The cat sat on the mat." --out attention.png': ("attention.png", ""),
}

HUB = [
    "hfpipe finetune recipes/finetune/glue/sst2.yaml model.name_or_path=runs/pretrain-tiny/final",
    "hfpipe glue runs/pretrain-tiny/final --tasks sst2 cola --seeds 1 2 3",
    "hfpipe finetune glue/sst2-lora model.name_or_path=runs/pretrain-tiny/final",
]

NOT_RUN = {
    "accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m hfpipe pretrain "
    "recipes/pretrain/bert-mini-wikitext.yaml": "needs GPUs (tests/train/test_distributed.py runs this config "
                                                "on 2 CPU processes)",
    "hfpipe finetune glue/sst2 model.name_or_path=runs/pretrain-tiny/final data.train_file=../shared/data/sst2/"
    "train.tsv data.validation_file=../shared/data/sst2/dev.tsv": "3 epochs of SST-2: minutes (the local-file "
                                                                  "form is tested in tests/train/test_finetune.py)",
    "hfpipe finetune recipes/finetune/conll2003.yaml model.name_or_path=runs/pretrain-tiny/final data.train_file="
    "../shared/data/conll2003/train.txt data.validation_file=../shared/data/conll2003/dev.txt": "CoNLL-2003 "
    "epochs: minutes",
    "hfpipe glue runs/pretrain-tiny/final sst2:data.train_file=../shared/data/sst2/train.tsv sst2:data.validation"
    "_file=../shared/data/sst2/dev.tsv --tasks sst2 --seeds 1": "3 epochs of SST-2: minutes",
    "hfpipe plan --minutes 60 --out my-hour.yaml data.source=../shared/data/wikitext-2/train.txt": "run by "
    "test_the_plan_command_as_written_writes_its_own_run_folder (needs ../shared)",
    "hfpipe pretrain recipes/pretrain/gutenberg-mini.yaml": "bert-mini on 54M words: hours (the source, cleaning "
    "and mixture are tested in tests/data/test_files.py)",
    "hfpipe glue runs/pretrain-tiny/final --tasks sst2 --lr-grid 1e-3 3e-4 1e-4 --select-on 0.1 --seeds 1 2 3 "
    "sst2:data.train_file=../shared/data/sst2/train.tsv sst2:data.validation_file=../shared/data/sst2/dev.tsv":
    "3 learning rates + 3 seeds of SST-2: an hour (the protocol is tested in tests/train/test_suite.py)",
    "hfpipe decay runs/cpu-hour --minutes 5": "needs an hour-long cpu-hour run (tests/train/test_decay.py)",
    "hfpipe convert bert path/to/bert-checkpoint runs/converted": "a placeholder path (tests/model/test_convert.py)",
    "hfpipe ablate positions": "variants x 3 seeds: tens of minutes (tests/teach/test_ablate.py)",
    "hfpipe push runs/pretrain-tiny/final --repo-id you/hfpipe-tiny": "needs the Hub and a token "
                                                                      "(tests/hub/test_hub.py, a local server)",
}


def readme_commands() -> list[str]:
    """The 'Using it' bash block's commands: continuations joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using it"):text.index("\n## ", text.index("## Using it") + 1)]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            commands.append(re.sub(r"\s+", " ", line))
    return commands


def test_every_readme_command_is_accounted_for():
    placed = [PRETRAIN, TWO_PROCESSES, *RUN, *HUB, *NOT_RUN]
    assert len(placed) == len(set(placed))
    assert sorted(readme_commands()) == sorted(placed)


def test_the_readme_says_how_to_put_hfpipe_on_the_path():
    text = (REPO / "README.md").read_text()
    assert "source .venv/bin/activate" in text and ".venv/bin/hfpipe" in text


def _workspace(root: Path) -> Path:
    """A clone's layout: repo/recipes (and ../shared where this machine has it)."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    (repo / "recipes").symlink_to(REPO / "recipes")
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    return repo


def _shell(command: str, cwd: Path, timeout: int = 600) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    start = time.perf_counter()
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """The README's first command, as written: runs/pretrain-tiny/final for the commands after it."""
    repo = _workspace(tmp_path_factory.mktemp("readme"))
    done, _ = _shell(PRETRAIN, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (repo / "runs/pretrain-tiny/final/model.safetensors").is_file()
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("command", RUN)
def test_readme_command_runs_as_written(pretrained, command):
    done, _ = _shell(command, pretrained)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    wrote, says = RUN[command]
    assert wrote is None or (pretrained / wrote).is_file(), wrote
    assert says in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", HUB)
def test_readme_hub_command_offline_says_so_in_one_line(pretrained, command):
    runs_before = sorted(p.name for p in (pretrained / "runs").iterdir())
    done, seconds = _shell(command, pretrained)
    # nothing half-written: no run folder appears for the fine-tune that could not get its data
    assert sorted(p.name for p in (pretrained / "runs").iterdir()) == runs_before
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "from the Hugging Face Hub, which is unreachable (HF_HUB_OFFLINE=1)" in errors[0]
    assert "data.train_file=" in errors[0] and "data.validation_file=" in errors[0]
    assert seconds < 60  # a bound on a hang (~40 s of retries before), not a timing


@pytest.mark.slow
def test_the_two_process_launch_as_written_runs_two_processes(tmp_path):
    import json

    repo = _workspace(tmp_path)
    done, _ = _shell(TWO_PROCESSES, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((repo / "runs/pretrain-tiny/results.json").read_text())["run"]
    assert (results["num_processes"], results["distributed_type"]) == (2, "MULTI_CPU")
    assert "WARNING" not in done.stdout


@pytest.mark.slow
def test_the_plan_command_as_written_writes_its_own_run_folder(tmp_path):
    """`hfpipe plan --minutes 60 ...` as the README writes it works on this machine (it measures the data it
    names) and writes a recipe whose run folder is its own, not the tiny run's."""
    if not (SHARED / "data" / "wikitext-2" / "train.txt").is_file():
        pytest.skip(f"real-data command: {SHARED / 'data'} is absent (it sits beside the checkout in CI)")
    from hfpipe.config import PretrainRecipe, load_recipe

    repo = _workspace(tmp_path)
    command = next(c for c in NOT_RUN if c.startswith("hfpipe plan"))
    done, _ = _shell(command, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    recipe = load_recipe(repo / "my-hour.yaml", PretrainRecipe)
    assert recipe.output_dir == "runs/my-hour" and recipe.data.source == "../shared/data/wikitext-2/train.txt"
    assert recipe.train.max_minutes == 60 and "CHOSEN" in done.stdout
