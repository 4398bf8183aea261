"""Bad input gets a one-line error and loses nothing; no recipe key is a silent no-op (issue 12).

    .venv/bin/pytest -q tests/train/test_robustness.py

Empty corpus files, trackers that are not installed, keys that are not implemented, resuming into a
run of another recipe, damaged checkpoints, failures while saving; and what fine-tuning now honours:
trackers, eval.max_batches, train.compile, hub.push_checkpoints; progress bars with a total and an
ETA for every budget kind. Tiny runs: bert-tiny, a few steps, generated text.
"""

import importlib.util
import io
import json
import logging
import random
import re
import shutil
from pathlib import Path

import launch
import pytest
import torch
import yaml

from hfpipe.config import DataArgs, FinetuneRecipe, PretrainRecipe, RecipeError, TrainArgs, load_recipe
from hfpipe.data.sources import DataSourceError, load_text_datasets
from hfpipe.train import checkpoint as ckpt
from hfpipe.train.budget import Budget
from hfpipe.train.checkpoint import CheckpointError
from hfpipe.train.logs import BudgetBar
from hfpipe.train.step import LoopState

REPO = Path(__file__).resolve().parents[2]
PRETRAIN, SST2 = REPO / "recipes/pretrain/tiny.yaml", REPO / "recipes/finetune/glue/sst2.yaml"
WORDS = "the model reads a sentence and predicts masked words from context while the optimizer learns".split()


def tiny_tokenizer(texts: list[str], folder: Path) -> Path:
    from hfpipe.config import TokenizerArgs
    from hfpipe.data.tokenizer import train_tokenizer

    if not folder.exists():
        train_tokenizer(texts, TokenizerArgs(vocab_size=200, min_frequency=1), output_dir=folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(200)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    tiny_tokenizer(lines, root / "tokenizer")
    return root


def pretrain_recipe(corpus: Path, out: Path, **extra) -> PretrainRecipe:
    items = {"output_dir": out, "data.source": corpus / "corpus.txt", "data.block_size": 32,
             "data.validation_fraction": 0.1, "data.cache_dir": corpus / "cache",
             "tokenizer.name_or_path": corpus / "tokenizer", "model.preset": "bert-tiny", "train.max_steps": 4,
             "train.batch_size": 4, "train.lr": 3e-3, "train.log_every_steps": 1, "train.eval_every_steps": 2,
             "train.save_every_steps": 2, "eval.batch_size": 8, "eval.max_batches": 2, "tracking.plot": False,
             **extra}
    return load_recipe(PRETRAIN, PretrainRecipe, [f"{k}={v}" for k, v in items.items()])


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory) -> Path:
    """A 4-step pretraining run with checkpoints at steps 2 and 4; tests copy it before changing it."""
    from hfpipe.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("pretrain") / "run"
    pretrain(pretrain_recipe(corpus, out))
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Empty or unreadable corpus files: one line naming the file
# ----------------------------------------------------------------------------------------------


def load(tmp_path: Path, source) -> None:
    load_text_datasets(DataArgs(source=str(source), cache_dir=str(tmp_path / "cache"), validation_fraction=0.5), seed=0)


@pytest.mark.parametrize(("name", "content", "what"), [
    ("empty.txt", "", "is empty"), ("blank.txt", "  \n\n\t\n", "holds only whitespace"),
    ("empty.csv", "", "is empty"), ("empty.jsonl", "\n", "holds only whitespace"), ("empty.tsv", "", "is empty"),
])  # fmt: skip
def test_an_empty_corpus_file_is_named(tmp_path, name, content, what):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataSourceError) as error:
        load(tmp_path, tmp_path / name)
    assert str(error.value) == (f"{tmp_path / name}: no training document: the file {what}; "
                                "put text in it or name another file")


def test_empty_files_in_a_glob_are_skipped_unless_all_are(tmp_path, caplog):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("".join(f"document number {i} of the corpus\n" for i in range(20)))
    with caplog.at_level(logging.WARNING):
        load(tmp_path, tmp_path / "*.txt")
    assert f"skipping 1 empty file(s): {tmp_path / 'a.txt'}" in caplog.text
    (tmp_path / "b.txt").write_text(" \n")
    with pytest.raises(DataSourceError, match=r"\*\.txt: no training document: all 2 files are empty or only "
                                              r"whitespace \(a\.txt, b\.txt\)"):
        load(tmp_path, tmp_path / "*.txt")


def test_an_empty_validation_source_says_validation(tmp_path):
    (tmp_path / "train.txt").write_text("one document here\nanother document there\n")
    (tmp_path / "dev.txt").write_text("")
    args = DataArgs(source=str(tmp_path / "train.txt"), validation_source=str(tmp_path / "dev.txt"),
                    cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataSourceError, match=r"dev\.txt: no validation document: the file is empty"):
        load_text_datasets(args, seed=0)


def test_a_malformed_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(DataSourceError, match=r"bad\.jsonl: cannot be read as json: .*JSON parse error") as error:
        load(tmp_path, tmp_path / "bad.jsonl")
    assert "\n" not in str(error.value)


def test_the_command_line_prints_one_line_for_an_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    done = launch.run(launch.hfpipe_command("pretrain", str(PRETRAIN), f"output_dir={tmp_path / 'out'}",
                                            f"data.source={tmp_path / 'empty.txt'}"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"hfpipe pretrain: error: {tmp_path / 'empty.txt'}: no training document: the file is empty; "
        "put text in it or name another file")


# ----------------------------------------------------------------------------------------------
# Keys that would do nothing are errors
# ----------------------------------------------------------------------------------------------


def test_num_workers_lives_in_data():
    with pytest.raises(RecipeError, match=r"unknown key 'train\.num_workers'"):
        load_recipe(PRETRAIN, PretrainRecipe, ["train.num_workers=2"])
    with pytest.raises(RecipeError, match=r"data\.num_workers: must be >= 0, got -1"):
        load_recipe(PRETRAIN, PretrainRecipe, ["data.num_workers=-1"])
    assert load_recipe(PRETRAIN, PretrainRecipe, ["data.num_workers=2"]).data.num_workers == 2


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "trackio"])
@pytest.mark.parametrize("loop", ["pretrain", "finetune"])
def test_a_tracker_that_is_not_installed_stops_the_run_before_it_starts(tmp_path, corpus, tracker, loop):
    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    out = tmp_path / "out"
    if loop == "pretrain":
        from hfpipe.train.pretrain import pretrain as run

        recipe = pretrain_recipe(corpus, out, **{"tracking.report_to": f"[{tracker}]"})
    else:
        from hfpipe.train.finetune import finetune as run

        recipe = load_recipe(SST2, FinetuneRecipe, [f"output_dir={out}", "model.name_or_path=nowhere",
                                                    f"tracking.report_to=[{tracker}]"])
    with pytest.raises(RecipeError) as error:
        run(recipe)
    assert str(error.value) == (f"tracking.report_to: '{tracker}' asked for but not installed: pip install {tracker} "
                                "(or remove it from the list)")
    assert not out.exists()  # nothing was computed or written


# ----------------------------------------------------------------------------------------------
# Resuming: the same recipe (budget and cadence aside), a whole checkpoint
# ----------------------------------------------------------------------------------------------


def test_checkpoints_carry_their_recipe_and_a_manifest(finished_run):
    for step in (2, 4):
        folder = finished_run / "checkpoints" / f"step-{step:08d}"
        manifest = json.loads((folder / "COMPLETE").read_text())
        assert manifest["step"] == step and manifest["files"]["model.safetensors"] > 0
        assert all((folder / name).stat().st_size == size for name, size in manifest["files"].items())
        recipe = yaml.safe_load((folder / "resolved_recipe.yaml").read_text())
        assert recipe["train"]["lr"] == 0.003 and recipe["model"]["preset"] == "bert-tiny"
        assert ckpt.verify_checkpoint(folder) is None


def test_a_changed_recipe_stops_before_any_compute_and_names_the_keys(finished_run, corpus, tmp_path, monkeypatch):
    from hfpipe.train import pretrain as loop

    run = copy_run(finished_run, tmp_path)
    before = digest(run)
    monkeypatch.setattr(loop, "load_data", lambda *a: pytest.fail("data was loaded before the recipe check"))
    changed = pretrain_recipe(corpus, run, **{"train.lr": 1e-3, "model.config_overrides": "{hidden_dropout_prob: 0.0}",
                                              "train.max_steps": 8, "train.eval_every_steps": 4})
    with pytest.raises(CheckpointError) as error:
        loop.pretrain(changed)
    assert str(error.value) == (
        f"{run}/checkpoints/step-00000004 was trained with a different recipe "
        "(model.config_overrides.hidden_dropout_prob: (absent) -> 0.0, train.lr: 0.003 -> 0.001), so resuming "
        "would not run the new recipe; set train.resume=force to resume it anyway with the new values, "
        "or set a new output_dir to start a fresh run")
    assert digest(run) == before  # resolved_recipe.yaml, metrics, checkpoints: all as they were

    forced = pretrain_recipe(corpus, run, **{"train.lr": 1e-3, "train.resume": "force"})
    assert ckpt.find_resume(forced) == run / "checkpoints/step-00000004"
    cadence = {"train.max_steps": 9, "train.max_minutes": 5, "train.log_every_steps": 3, "train.eval_every_steps": 3,
               "train.save_every_steps": 3, "train.keep_last": 1}
    assert ckpt.find_resume(pretrain_recipe(corpus, run, **cadence)) == run / "checkpoints/step-00000004"


def test_a_forced_resume_into_another_architecture_fails_clearly(finished_run, corpus, tmp_path):
    from hfpipe.train.pretrain import pretrain

    run = copy_run(finished_run, tmp_path)
    forced = pretrain_recipe(corpus, run, **{"train.resume": "force", "model.config_overrides": "{intermediate_size: 64}"})
    with pytest.raises(CheckpointError, match=rf"could not load checkpoint {run}/checkpoints/step-00000004 \(RuntimeError: "
                                              r"Error\(s\) in loading state_dict for HfpipeForMaskedLM: size mismatch "
                                              r".*\); the model and optimizer must match .* set a new output_dir"):
        pretrain(forced)
    assert all(ckpt.verify_checkpoint(p) is None for p in ckpt.list_checkpoints(run))  # the checkpoints are intact


def damage(folder: Path, how: str) -> None:
    weights = folder / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbled header":  # same size, so the manifest alone cannot tell
        data = bytearray(weights.read_bytes())
        data[8:40] = b"\x00\xff" * 16
        weights.write_bytes(bytes(data))
    elif how == "missing file":
        (folder / "optimizer.bin").unlink()
    elif how == "bad state":
        (folder / "trainer_state.json").write_text("{not json")


@pytest.mark.parametrize(("how", "problem"), [
    ("truncated", r"model\.safetensors has \d+ bytes, \d+ when it was saved"),
    ("garbled header", r"model\.safetensors: its header does not parse"),
    ("missing file", r"optimizer\.bin is missing"),
    ("bad state", r"trainer_state\.json is unreadable \(JSONDecodeError: Expecting property name .*\)"),
])  # fmt: skip
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path, caplog, how, problem):
    run = copy_run(finished_run, tmp_path)
    newest, previous = run / "checkpoints/step-00000004", run / "checkpoints/step-00000002"
    damage(newest, how)
    assert re.fullmatch(problem, ckpt.verify_checkpoint(newest))
    with caplog.at_level(logging.WARNING):
        assert ckpt.resolve_resume("auto", run) == previous
    assert re.search(rf"skipping damaged checkpoint\(s\) \(step-00000004: {problem}\); resuming from {previous}",
                     caplog.text)
    with pytest.raises(CheckpointError, match=rf"train.resume='{newest}': the checkpoint is damaged: {problem}"):
        ckpt.resolve_resume(str(newest), run)
    damage(previous, how)
    with pytest.raises(CheckpointError, match=rf"no checkpoint in {run}/checkpoints can be resumed, all are damaged "
                                              rf"\(step-00000004: {problem}; step-00000002: {problem}\); delete"):
        ckpt.resolve_resume("auto", run)


def test_a_resume_past_a_damaged_checkpoint_trains_on_from_the_whole_one(finished_run, corpus, tmp_path, capsys):
    from hfpipe.train.pretrain import pretrain

    run = copy_run(finished_run, tmp_path)
    damage(run / "checkpoints/step-00000004", "truncated")
    results = pretrain(pretrain_recipe(corpus, run, **{"train.max_steps": 5}))  # a budget change is fine
    assert f"resumed from {run}/checkpoints/step-00000002 at step 2" in capsys.readouterr().out
    assert results["step"] == 5
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-00000002", "step-00000004", "step-00000005"]
    assert all(ckpt.verify_checkpoint(p) is None for p in ckpt.list_checkpoints(run))  # step 4 was saved again


# ----------------------------------------------------------------------------------------------
# A failure while saving never leaves a checkpoint that looks complete
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    accelerator = Accelerator()
    model = torch.nn.Linear(4, 2)
    accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    return accelerator


def test_a_save_that_fails_midway_leaves_nothing_complete_and_is_cleaned_up(tmp_path, accelerator, monkeypatch):
    real_save = accelerator.save_state

    def save_then_fail(folder, **kwargs):
        real_save(folder, **kwargs)  # the weights are written, then the disk fills up
        raise OSError(28, "No space left on device")

    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(accelerator, tmp_path, 1, {"step": 1}, keep_last=3)
    monkeypatch.setattr(accelerator, "save_state", save_then_fail)
    with pytest.raises(CheckpointError, match=rf"the disk holding {root} is full: saving step-00000002 needs about"):
        ckpt.save_checkpoint(accelerator, tmp_path, 2, {"step": 2}, keep_last=3)  # (a real full disk: below)
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001"]  # the half-written save is removed
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.resolve_resume("auto", tmp_path) == root / "step-00000001"

    with pytest.raises(TypeError, match="not JSON serializable"):  # the trainer state cannot be written
        ckpt.save_checkpoint(accelerator, tmp_path, 3, {"step": object()}, keep_last=3)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001", "step-00000003.tmp"]  # not a full disk: kept
    assert [p.parent.name for p in root.glob("*/COMPLETE")] == ["step-00000001"]
    assert ckpt.latest_checkpoint(tmp_path) == root / "step-00000001"

    (root / "step-00000009").mkdir()  # a folder renamed but never marked (an older hfpipe, killed)
    ckpt.save_checkpoint(accelerator, tmp_path, 4, {"step": 4}, keep_last=3)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001", "step-00000004"]
    assert ckpt.verify_checkpoint(root / "step-00000004") is None


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB filesystem (tmpfs; mounting needs root), unmounted afterwards; skipped where not allowed."""
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the monkeypatched ENOSPC test above covers the logic")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazy: torch may still map a file there


def test_a_disk_that_fills_during_a_save_is_one_line_and_the_last_checkpoint_resumes(small_disk):
    from accelerate import Accelerator

    accelerator = Accelerator()
    model = torch.nn.Linear(256, 256)  # 257 KiB of weights, 2x that of AdamW state: ~0.8 MB a checkpoint
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.ones(1, 256)).sum().backward()
    optimizer.step()
    first = ckpt.save_checkpoint(accelerator, small_disk, 1, {"step": 1}, keep_last=3)
    (small_disk / "filler").write_bytes(b"x" * (shutil.disk_usage(small_disk).free - 300_000))
    with pytest.raises(CheckpointError) as raised:
        ckpt.save_checkpoint(accelerator, small_disk, 2, {"step": 2}, keep_last=3)
    message = str(raised.value)
    assert "\n" not in message and re.fullmatch(
        rf"the disk holding {small_disk / 'checkpoints'} is full: saving step-00000002 needs about 0\.8 MB and "
        r"0\.\d MB are free; free some space \(or lower train.keep_last\) and run the same command again to "
        r"resume from step-00000001", message), message
    assert sorted(p.name for p in (small_disk / "checkpoints").iterdir()) == ["step-00000001"]  # no *.tmp
    assert ckpt.resolve_resume("auto", small_disk) == first and ckpt.verify_checkpoint(first) is None
    weights = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.zero_()
    assert ckpt.load_checkpoint(accelerator, first) == {"step": 1}
    assert torch.equal(model.weight, weights)


# ----------------------------------------------------------------------------------------------
# Progress bars: elapsed, total and ETA for every budget kind
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("budget", "state", "shown"), [
    ({"max_steps": 10}, LoopState(step=4), r"\| 4/10 \[\d\d:\d\d<\d\d:\d\d"),
    ({"max_steps": None, "max_tokens": 20_000}, LoopState(step=3, tokens=5_000), r"\| 5\.00k/20\.0k \[\d\d:\d\d<\d\d:\d\d"),
    ({"max_steps": None, "max_minutes": 2}, LoopState(step=3, elapsed=30.0), r"\| 30/120 s \[\d\d:\d\d<\d\d:\d\d"),
    ({"max_steps": 100, "max_minutes": 1}, LoopState(step=10, elapsed=30.0),
     r"\| 50\.0/100% of the budget \[\d\d:\d\d<\d\d:\d\d"),
])  # fmt: skip
def test_the_progress_bar_counts_in_the_budgets_unit(budget, state, shown):
    out = io.StringIO()
    bar = BudgetBar(Budget(TrainArgs(**budget)), LoopState(), desc="run", enabled=True, file=out)
    bar.update(state)
    bar.close()
    assert re.search(shown, out.getvalue()), out.getvalue()


def test_pretraining_on_a_time_budget_shows_its_total_and_eta(corpus, tmp_path, capsys):
    from hfpipe.train.pretrain import pretrain

    pretrain(pretrain_recipe(corpus, tmp_path / "timed", **{"train.max_steps": "null", "train.max_minutes": 0.04,
                                                            "train.eval_every_steps": 1000,
                                                            "train.save_every_steps": 1000}))
    bars = capsys.readouterr().err.replace("\r", "\n")
    assert re.search(r"pretrain: +100%\|.*\| 2/2 s \[\d\d:\d\d<00:00", bars), bars[-2000:]


# ----------------------------------------------------------------------------------------------
# Fine-tuning honours trackers, eval.max_batches, train.compile and hub.push_checkpoints
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> Path:
    """A tiny pretrained-looking model and SST-2-style files (37 dev rows)."""
    from hfpipe import HfpipeConfig, HfpipeForMaskedLM

    root, rng = tmp_path_factory.mktemp("sst2"), random.Random(0)
    good, bad = "good great fine lovely".split(), "bad awful poor dull".split()

    def row(positive: bool) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))] + [rng.choice(good if positive else bad)]
        return " ".join(words) + f"\t{int(positive)}\n"

    (root / "train.tsv").write_text("sentence\tlabel\n" + "".join(row(i % 2 == 0) for i in range(64)))
    (root / "dev.tsv").write_text("sentence\tlabel\n" + "".join(row(i % 3 == 0) for i in range(37)))
    lines = [line.split("\t")[0] for name in ("train.tsv", "dev.tsv") for line in (root / name).read_text().splitlines()]
    tokenizer = tiny_tokenizer(lines, root / "tokenizer")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    config = HfpipeConfig.from_preset("bert-tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    HfpipeForMaskedLM(config).save_pretrained(root / "pretrained")
    tokenizer.save_pretrained(root / "pretrained")
    return root


def sst2_recipe(ws: Path, out: str, **extra) -> FinetuneRecipe:
    items = {"output_dir": ws / out, "model.name_or_path": ws / "pretrained", "data.train_file": ws / "train.tsv",
             "data.validation_file": ws / "dev.tsv", "train.batch_size": 8, "train.lr": 1e-3, "train.num_epochs": "null",
             "train.max_steps": 4, "train.log_every_steps": 1, "train.eval_every_steps": 2, "train.resume": "none",
             "eval.batch_size": 8, "tracking.plot": "false", **extra}
    return load_recipe(SST2, FinetuneRecipe, [f"{k}={v}" for k, v in items.items()])


def test_fine_tuning_logs_to_trackers_limits_eval_and_pushes_checkpoints(sst2, monkeypatch, capsys):
    from accelerate.tracking import GeneralTracker

    from hfpipe.train import finetune as loop

    class Recorder(GeneralTracker):  # a tracker of accelerate's kind that keeps what it is given
        name, requires_logging_directory = "recorder", False

        def __init__(self):
            super().__init__()
            self.config, self.logged = None, []

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            self.logged.append((step, dict(values)))

    recorder, pushed = Recorder(), []
    monkeypatch.setattr(loop, "require_trackers", lambda names: [recorder] if names else [])
    monkeypatch.setattr(loop, "push_checkpoint_to_hub",
                        lambda model, tokenizer, folder, recipe: pushed.append((folder, recipe.hub.checkpoint_branch)))
    recipe = sst2_recipe(sst2, "tracked", **{"tracking.report_to": "[tensorboard]", "eval.max_batches": 1,
                                             "train.save_every_steps": 2, "hub.push_checkpoints": "true",
                                             "hub.repo_id": "me/tiny-sst2", "train.max_steps": "null",
                                             "train.max_tokens": 300})
    results = loop.finetune(recipe)

    assert recorder.config["train.lr"] == 1e-3 and recorder.config["task"] == "sst2"
    losses = {step: v["loss"] for step, v in recorder.logged if "loss" in v}
    evals = {step: v["eval_accuracy"] for step, v in recorder.logged if "eval_accuracy" in v}
    assert sorted(losses) == list(range(1, results["steps"] + 1)) and sorted(evals)[0] == 2
    assert [evals[h["step"]] for h in results["history"]] == [h["accuracy"] for h in results["history"]]
    # eval.max_batches=1 x eval.batch_size=8: accuracy over 8 of the 37 dev rows
    assert all((8 * h["accuracy"]).is_integer() for h in results["history"])
    assert all(folder.name == f"step-{2 * (i + 1):08d}" and branch == "checkpoints" and (folder / "COMPLETE").is_file()
               for i, (folder, branch) in enumerate(pushed)) and pushed
    # train.max_tokens: the bar counts tokens, with its total and an ETA
    assert re.search(r"finetune sst2: +100%\|.*\| 300/300 \[\d\d:\d\d<00:00", capsys.readouterr().err.replace("\r", "\n"))


def test_fine_tuning_setup_honours_compile_and_max_batches(sst2):
    from hfpipe.train.finetune import build_model, setup

    run = setup(sst2_recipe(sst2, "compiled", **{"train.compile": "true", "eval.max_batches": 2}), build_model)
    assert isinstance(run.model, torch._dynamo.eval_frame.OptimizedModule)
    assert len(run.raw["validation"]) == len(run.features["validation"]) == 16 and len(run.raw["train"]) == 64
    run.accelerator.end_training()


def test_the_pretrained_models_card_reports_evaluation_metrics_on_its_corpus(finished_run):
    _, front, _ = (finished_run / "final/README.md").read_text().split("---\n", 2)
    (entry,) = yaml.safe_load(front)["model-index"]
    (result,) = entry["results"]
    assert {m["type"] for m in result["metrics"]} == {"eval_loss", "eval_accuracy", "eval_perplexity"}
    assert result["dataset"]["type"] == "corpus.txt" and "split" in result["dataset"]
