"""The GLUE suite runner: the paper-style table and GLUE average (pure functions, exact strings),
per-task overrides, and real tiny runs: tasks x seeds with a failing task, and --from-mnli; the
comparison protocol (--lr-grid): the selection split, the lr choice, and that dev is read only after it."""

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hfpipe import HfpipeConfig, HfpipeForMaskedLM
from hfpipe.config.recipe import RecipeError
from hfpipe.train.suite import (
    choose_lr,
    format_table,
    glue_score,
    run_suite,
    selection_split,
    split_overrides,
    task_scores,
    write_jsonl,
)

REPO = Path(__file__).resolve().parents[2]


def run(seed: int, **metrics: float) -> dict:
    return {"seed": seed, "metrics": metrics}


RESULTS = {
    "sst2": [run(1, accuracy=0.90), run(2, accuracy=0.92)],
    "mrpc": [run(1, f1=0.88, accuracy=0.84), run(2, f1=0.86, accuracy=0.80)],
    "cola": [run(1, matthews_correlation=0.50), run(2, matthews_correlation=0.56)],
}


def test_glue_score_averages_each_tasks_numbers_then_the_tasks():
    scores = task_scores(RESULTS)
    assert scores["sst2"] == pytest.approx(91.0)
    assert scores["mrpc"] == pytest.approx((87.0 + 82.0) / 2)  # mean of F1 (87) and accuracy (82)
    assert scores["cola"] == pytest.approx(53.0)
    assert glue_score(RESULTS) == pytest.approx((91.0 + 84.5 + 53.0) / 3)


def test_format_table_mean_and_sample_std_in_glue_order():
    table = format_table(RESULTS, model="tiny")
    lines = table.splitlines()
    assert lines[0] == "| Model | CoLA (MCC) | SST-2 (acc) | MRPC (F1/acc) | GLUE avg |"
    assert lines[1] == "|---|---|---|---|---|"
    # sample std (n-1) of (50, 56) = 4.24; of (90, 92) = 1.41; F1 (88, 86) = 1.41, acc (84, 80) = 2.83
    assert lines[2] == "| tiny | 53.0 ± 4.2 | 91.0 ± 1.4 | 87.0 ± 1.4 / 82.0 ± 2.8 | 76.2 |"
    assert lines[4] == (
        "Dev-set scores x100, mean ± sample std (n-1) over seeds 1, 2. GLUE avg: mean of the "
        "task scores of cola, sst2, mrpc; a task with two numbers scores their mean."
    )


def test_format_table_one_seed_has_no_spread_and_failures_are_shown_not_averaged():
    results = {
        "mnli": [run(7, accuracy=0.8, accuracy_mismatched=0.82)],
        "stsb": [run(7, pearson=0.881, spearmanr=0.879)],
        "qqp": [
            {"seed": 7, "error": "RuntimeError: could not load Hub dataset 'nyu-mll/glue' | offline\nmore"}
        ],
    }
    lines = format_table(results, model="m").splitlines()
    assert lines[0] == "| Model | STS-B (P/S) | QQP (F1/acc) | MNLI (m/mm) | GLUE avg |"
    assert lines[2] == (
        "| m | 88.1 / 87.9 | failed: RuntimeError: could not load Hub dataset 'nyu-mll/glue' \\| "
        "offline | 80.0 / 82.0 | 84.5 |"
    )
    assert glue_score(results) == pytest.approx((88.0 + 81.0) / 2)
    assert "one run, seed 7" in lines[4] and "task scores of stsb, mnli;" in lines[4]
    assert glue_score({"qqp": results["qqp"]}) is None


def test_long_failure_reasons_are_cut():
    results = {"rte": [{"seed": 1, "error": "x" * 200}]}
    cell = format_table(results).splitlines()[2].split(" | ")[1]
    assert cell == "failed: " + "x" * 79 + "…"


def test_split_overrides_plain_for_all_prefixed_for_one():
    items = [
        "train.lr=1e-4",
        "sst2:data.train_file=a=b.tsv",
        "SST-2:train.lr=3e-5",
        "cola:data.train_file=c.tsv",
    ]
    got = split_overrides(items, ["sst2", "cola"])
    assert got == {
        "sst2": ["train.lr=1e-4", "data.train_file=a=b.tsv", "train.lr=3e-5"],  # task's own come last, so win
        "cola": ["train.lr=1e-4", "data.train_file=c.tsv"],
    }


@pytest.mark.parametrize("item, message", [
    ("rte:train.lr=1", "is for task rte, which is not run (tasks: sst2)"),
    ("nosuch:train.lr=1", "unknown task 'nosuch'"),
    ("seed=3", "seed is set by the suite for each run (use --seeds)"),
    ("sst2:output_dir=x", "output_dir is set by the suite for each run (use --output-dir)"),
    ("train.lr", "write key=value or task:key=value"),
])  # fmt: skip
def test_split_overrides_errors(item, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_overrides([item], ["sst2"])


# ----------------------------------------------------------------------------------------------
# Real tiny runs
# ----------------------------------------------------------------------------------------------

WORDS = "the a film story was is good bad great awful fine dull it this that movie plot actors".split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny hfpipe model folder, and SST-2, CoLA, MNLI and STS-B files (~40 rows each)."""
    from hfpipe.config import TokenizerArgs
    from hfpipe.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("suite")
    rng = random.Random(0)
    rows = [(sentence(rng), sentence(rng), i % 2, i % 3) for i in range(40)]
    (root / "sst2.tsv").write_text("sentence\tlabel\n" + "".join(f"{a} \t{y}\n" for a, _, y, _ in rows))
    (root / "cola.tsv").write_text("".join(f"gj04\t{y}\t{'' if y else '*'}\t{a}\n" for a, _, y, _ in rows))
    mnli_labels = ("entailment", "neutral", "contradiction")
    (root / "mnli.tsv").write_text(
        "sentence1\tsentence2\tgold_label\n" + "".join(f"{a}\t{b}\t{mnli_labels[z]}\n" for a, b, _, z in rows)
    )
    (root / "stsb.tsv").write_text(
        "sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{z * 2.5}\n" for a, b, _, z in rows)
    )

    tokenizer = train_tokenizer(
        [a + " " + b for a, b, _, _ in rows], TokenizerArgs(vocab_size=100, min_frequency=1)
    )
    config = HfpipeConfig.from_preset(
        "bert-tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(0)
    HfpipeForMaskedLM(config).save_pretrained(root / "pretrained")
    tokenizer.save_pretrained(root / "pretrained")
    return root


def suite_args(
    ws: Path, out: str, tasks: list[str], seeds: list[int], from_mnli: bool = False
) -> argparse.Namespace:
    overrides = [
        "train.max_steps=3",
        "train.num_epochs=null",
        "train.batch_size=8",
        "eval.batch_size=16",
        "tracking.plot=false",
    ]
    for task in tasks:
        overrides += [
            f"{task}:data.train_file={ws / task}.tsv",
            f"{task}:data.validation_file={ws / task}.tsv",
        ]
    return argparse.Namespace(
        model=str(ws / "pretrained"),
        tasks=tasks,
        seeds=seeds,
        output_dir=str(ws / out),
        from_mnli=from_mnli,
        overrides=overrides,
    )


def test_suite_runs_tasks_x_seeds_and_reports_a_failed_task(workspace, capsys):
    args = suite_args(workspace, "glue", ["sst2", "cola"], [1, 2])
    args.tasks.append("wnli")  # its training file does not exist, so its runs fail (and the others go on)
    args.overrides.append(f"wnli:data.train_file={workspace / 'missing.tsv'}")
    assert run_suite(args) == 1

    summary = json.loads((workspace / "glue" / "suite_results.json").read_text())
    runs = summary["runs"]
    assert [len(runs[t]) for t in ("sst2", "cola", "wnli")] == [2, 2, 2]
    assert [r["seed"] for r in runs["sst2"]] == [1, 2]
    for task, key in (("sst2", "accuracy"), ("cola", "matthews_correlation")):
        for r in runs[task]:
            assert r["main_metric"] == key and 0.0 <= abs(r["main"]) <= 1.0 and r["steps"] == 3
            assert r["output_dir"] == str(workspace / "glue" / task / f"seed{r['seed']}")
            saved = json.loads((Path(r["output_dir"]) / "results.json").read_text())
            assert saved[key] == r["metrics"][key] == r["main"]
    assert all(r["error"].startswith("FileNotFoundError: data.train_file: no such file") for r in runs["wnli"])
    assert (workspace / "glue" / "wnli" / "seed1" / "error.txt").is_file()

    expected = pytest.approx((summary["scores"]["sst2"] + summary["scores"]["cola"]) / 2)
    assert set(summary["scores"]) == {"sst2", "cola"} and summary["glue_average"] == expected
    lines = summary["table"].splitlines()
    assert lines[0] == "| Model | CoLA (MCC) | SST-2 (acc) | WNLI (acc) | GLUE avg |"
    cells = lines[2].split(" | ")
    assert cells[0] == f"| {args.model}" and " ± " in cells[1] and " ± " in cells[2]
    assert cells[3].startswith("failed: FileNotFoundError: data.train_file: no such file: ")
    assert cells[4] == f"{summary['glue_average']:.1f} |"
    assert summary["table"] in capsys.readouterr().out
    assert (workspace / "glue" / "suite_results.md").read_text() == summary["table"] + "\n"


def test_from_mnli_starts_stsb_from_the_mnli_encoder(workspace):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    args = suite_args(workspace, "transfer", ["stsb"], [5], from_mnli=True)
    args.overrides += [
        f"mnli:data.train_file={workspace / 'mnli.tsv'}",
        f"mnli:data.validation_file={workspace / 'mnli.tsv'}",
    ]
    assert run_suite(args) == 0
    out = workspace / "transfer"
    summary = json.loads((out / "suite_results.json").read_text())
    assert summary["tasks"] == ["mnli", "stsb"]  # MNLI ran first, though only stsb was asked for
    backbone = out / "mnli" / "seed5" / "backbone"
    assert summary["runs"]["stsb"][0]["init_from"] == str(backbone)
    resolved = yaml.safe_load((out / "stsb" / "seed5" / "resolved_recipe.yaml").read_text())
    assert resolved["model"]["name_or_path"] == str(backbone)

    # the backbone is MNLI's best encoder, pooler included, without the 3-way head
    mnli = load_file(out / "mnli" / "seed5" / "final" / "model.safetensors")
    encoder = load_file(backbone / "model.safetensors")
    assert mnli["classifier.weight"].shape[0] == 3 and not any(k.startswith("classifier") for k in encoder)
    assert any(k.startswith("pooler.") for k in encoder)
    assert all(torch.equal(encoder[k], mnli["model." + k]) for k in encoder)
    config = AutoConfig.from_pretrained(backbone)
    assert config.architectures == ["HfpipeModel"] and config.num_labels == 2 and config.problem_type is None
    stsb = json.loads((out / "stsb" / "seed5" / "final" / "config.json").read_text())
    assert stsb["problem_type"] == "regression" and len(stsb["id2label"]) == 1
    assert {"pearson", "spearmanr"} <= set(summary["runs"]["stsb"][0]["metrics"])
    assert summary["table"].splitlines()[2].split(" | ")[2].endswith(" / –")  # no mismatched MNLI file given


def test_glue_help():
    out = subprocess.run(
        [sys.executable, "-m", "hfpipe", "glue", "--help"], capture_output=True, text=True, check=True
    )
    assert "--from-mnli" in out.stdout and "--seeds" in out.stdout
    assert "--lr-grid" in out.stdout and "--select-on" in out.stdout and "--select-seed" in out.stdout


def test_an_unreachable_hub_stops_the_suite_with_one_error(workspace):
    from hfpipe.tasks.files import HubUnreachableError

    args = suite_args(workspace, "hub_down", ["sst2"], [1])
    args.tasks.append("wnli")  # no local files for WNLI and the Hub is offline: every Hub task would fail alike
    with pytest.raises(HubUnreachableError, match="give local files instead"):
        run_suite(args)


def test_transfer_tasks_fail_with_mnli_and_bad_keys_fail_before_training(workspace):
    args = suite_args(
        workspace, "no_mnli", ["rte"], [3], from_mnli=True
    )  # MNLI's training file does not exist
    args.overrides.append(f"mnli:data.train_file={workspace / 'missing.tsv'}")
    assert run_suite(args) == 1
    runs = json.loads((workspace / "no_mnli" / "suite_results.json").read_text())["runs"]
    assert runs["mnli"][0]["error"].startswith("FileNotFoundError: data.train_file: no such file")
    assert runs["rte"][0]["error"].startswith("MNLI seed 3 failed (FileNotFoundError: data.train_file: no such file")
    assert not (workspace / "no_mnli" / "rte").exists()  # RTE never started

    args = suite_args(workspace, "typo", ["sst2"], [1])
    args.overrides.append("sst2:train.lrr=1e-4")
    with pytest.raises(RecipeError, match=r"unknown key 'train.lrr'; did you mean 'train.lr'\?"):
        run_suite(args)
    assert not (workspace / "typo").exists()


# ----------------------------------------------------------------------------------------------
# The comparison protocol (--lr-grid)
# ----------------------------------------------------------------------------------------------


def test_selection_split_is_seeded_disjoint_and_rounds_the_fraction():
    fit, held = selection_split(40, 0.1, seed=0)
    assert len(held) == 4 and len(fit) == 36 and sorted(fit + held) == list(range(40))
    assert (fit, held) == selection_split(40, 0.1, seed=0)  # fixed by the seed
    assert held != selection_split(40, 0.1, seed=1)[1]
    assert selection_split(5, 0.01, 0)[1].__len__() == 1 and len(selection_split(5, 0.99, 0)[0]) == 1
    with pytest.raises(RecipeError, match=r"--select-on 1.5: give the held-out fraction .* in \(0, 1\)"):
        selection_split(40, 1.5, 0)
    with pytest.raises(RecipeError, match="1 training row"):
        selection_split(1, 0.5, 0)


def test_choose_lr_best_score_ties_to_the_smaller_lr_failures_never_win():
    assert choose_lr({3e-4: 0.80, 1e-4: 0.85, 5e-5: 0.70}) == 1e-4
    assert choose_lr({3e-4: 0.85, 1e-4: 0.85, 5e-5: 0.70}) == 1e-4  # tie -> the smaller
    assert choose_lr({1e-3: None, 1e-4: -0.2, 3e-4: float("nan")}) == 1e-4  # MCC can be negative
    assert choose_lr({1e-3: None}) is None


@pytest.mark.parametrize("task, text", [
    ("cola", "gj04\t1\t\tthe film was good\ngj04\t0\t*\tfilm the good was\n"),
    ("conll2003", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"),
])  # fmt: skip
def test_selection_files_read_back_as_the_same_rows(tmp_path, task, text):
    from hfpipe.config import TaskDataArgs
    from hfpipe.tasks import get_task
    from hfpipe.tasks.files import read_task_file

    source = tmp_path / ("train.txt" if task == "conll2003" else "train.tsv")
    source.write_text(text)
    rows = read_task_file(get_task(task), source, TaskDataArgs())
    write_jsonl(rows, tmp_path / "part.jsonl")
    again = read_task_file(get_task(task), tmp_path / "part.jsonl", TaskDataArgs())
    assert again.to_list() == rows.to_list() and len(rows) == 2


def test_lr_grid_chooses_on_held_out_training_rows_and_reads_dev_only_after(workspace, monkeypatch):
    import hfpipe.tasks.files as files

    dev = workspace / "sst2_dev.tsv"
    dev.write_text((workspace / "sst2.tsv").read_text())
    read: list[str] = []
    real = files.read_task_file
    monkeypatch.setattr(
        files,
        "read_task_file",
        lambda spec, path, *a, **k: read.append(str(path)) or real(spec, path, *a, **k),
    )

    args = suite_args(workspace, "protocol", ["sst2"], [1, 2])
    args.overrides += [f"sst2:data.validation_file={dev}", "train.max_steps=2"]
    args.lr_grid, args.select_on, args.select_seed = [1e-3, 1e-4], 0.25, 7
    assert run_suite(args) == 0

    out, train = workspace / "protocol", str(workspace / "sst2.tsv")
    fit, held = str(out / "sst2" / "select" / "fit.jsonl"), str(out / "sst2" / "select" / "held_out.jsonl")
    # the split reads the training file; each lr fits on `fit`, scores on `held_out`; dev only in the seed runs
    assert read == [train, fit, held, fit, held, train, str(dev), train, str(dev)]
    assert len((out / "sst2" / "select" / "held_out.jsonl").read_text().splitlines()) == 10  # 25% of 40
    assert len((out / "sst2" / "select" / "fit.jsonl").read_text().splitlines()) == 30

    summary = json.loads((out / "suite_results.json").read_text())
    selection = summary["selection"]["sst2"]
    assert [g["lr"] for g in selection["grid"]] == [1e-3, 1e-4]
    assert selection["chosen_lr"] == choose_lr({g["lr"]: g["score"] for g in selection["grid"]})
    assert (selection["train_rows"], selection["fit_rows"], selection["held_out_rows"]) == (40, 30, 10)
    assert summary["protocol"]["lr_grid"] == [1e-3, 1e-4] and summary["protocol"]["select_on"] == 0.25
    for g in selection["grid"]:
        saved = json.loads((out / "sst2" / "select" / f"lr{g['lr']:g}" / "results.json").read_text())
        assert saved["accuracy"] == g["score"]
    for r in summary["runs"]["sst2"]:
        resolved = yaml.safe_load((Path(r["output_dir"]) / "resolved_recipe.yaml").read_text())
        assert resolved["train"]["lr"] == selection["chosen_lr"] and resolved["seed"] == r["seed"]
        assert (
            resolved["data"]["train_file"] == train and r["best_step"] == r["steps"] == 2
        )  # scored at the end only


@pytest.mark.parametrize("change, message", [
    ({"lr_grid": [1e-4], "overrides": ["sst2:train.lr=3e-5"]}, "override train.lr for sst2: with --lr-grid"),
    ({"lr_grid": [1e-4], "select_on": 1.0}, "--select-on 1: give the held-out fraction"),
    ({"lr_grid": [0.0]}, "every lr must be a positive number"),
    ({"lr_grid": [1e-4], "from_mnli": True, "tasks": ["sst2", "rte"]}, "--lr-grid with --from-mnli is not supported"),
])  # fmt: skip
def test_protocol_refuses_before_training(workspace, change, message):
    args = suite_args(workspace, "refused", ["sst2"], [1])
    args.select_on, args.select_seed = 0.1, 0
    for key, value in change.items():
        setattr(args, key, getattr(args, key) + value if key == "overrides" else value)
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        run_suite(args)
    assert not (workspace / "refused").exists()


def test_lr_grid_needs_a_local_training_file(workspace):
    args = suite_args(workspace, "hub", [], [1])
    args.tasks, args.lr_grid, args.select_on, args.select_seed = ["rte"], [1e-4], 0.1, 0
    with pytest.raises(RecipeError, match="task rte needs a local training file for the selection split"):
        run_suite(args)


def test_glue_cli_lr_grid_error_is_one_line_exit_2(workspace):
    out = workspace / "cli_refused"
    cmd = [sys.executable, "-m", "hfpipe", "glue", str(workspace / "pretrained"), "sst2:train.lr=1e-4",
           "--tasks", "sst2", "--lr-grid", "3e-4", "1e-4", "--output-dir", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().splitlines()[-1] == (
        "hfpipe glue: error: override train.lr for sst2: with --lr-grid the lr is chosen from the grid"
    )


def test_conll2003_gets_a_column_but_not_a_place_in_the_glue_average():
    results = {"sst2": [run(1, accuracy=0.90)], "conll2003": [run(1, f1=0.70)]}
    lines = format_table(results, model="m").splitlines()
    assert lines[0] == "| Model | SST-2 (acc) | CoNLL-2003 (F1) | GLUE avg |"
    assert lines[2] == "| m | 90.0 | 70.0 | 90.0 |"
    assert task_scores(results) == pytest.approx({"sst2": 90.0, "conll2003": 70.0})
    assert "task scores of sst2;" in lines[4]
