"""`hfpipe plan`: the decision on given throughputs (no timing), the recipe it writes, one real
measurement (structure only), and `bench/quality.py --tiny` end to end.

    .venv/bin/pytest tests/train/test_plan.py -q
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from hfpipe.config import PretrainRecipe, from_dict, load_recipe
from hfpipe.train.plan import (
    EVAL_MAX_TOKENS,
    EVAL_SHARE,
    EVALS,
    Measurement,
    decide,
    estimated_throughputs,
    format_table,
    measure_throughputs,
    minutes_needed,
    plan_recipe,
    recipe_header,
)
from hfpipe.train.step import TrainingError

REPO = Path(__file__).resolve().parents[2]
TINY = Measurement("modern-tiny", 1_000_000, 20_000.0, 60_000.0, 32)
MINI = Measurement("bert-mini", 5_000_000, 4_000.0, 15_000.0, 32)
SMALL = Measurement("modern-small", 20_000_000, 500.0, 2_000.0, 32)


def test_the_largest_preset_that_sees_enough_tokens_per_parameter_is_chosen():
    plan = decide([SMALL, MINI, TINY], minutes=60)  # any order
    assert [r.measurement.preset for r in plan.rows] == ["modern-tiny", "bert-mini", "modern-small"]
    assert [r.fits for r in plan.rows] == [True, False, False]  # 69.8, 2.8 and 0.17 tokens per parameter
    assert plan.preset == "modern-tiny"
    assert plan.choice.tokens == pytest.approx(20_000 * 3600 * (1 - EVAL_SHARE))
    # 545,625 rows / 2,000 steps -> 272 -> a global batch of 256 = 32 x 8
    assert (plan.micro_batch, plan.accumulation, plan.global_batch, plan.steps) == (32, 8, 256, 2131)
    assert (plan.lr, plan.mlm_probability, plan.block_size) == (1e-3, 0.30, 128)
    assert plan.eval_every_steps == math.ceil(2131 / (EVALS + 1))

    faster = Measurement("bert-mini", 5_000_000, 40_000.0, 150_000.0, 32)  # now 27.9 tokens per parameter
    plan = decide([TINY, faster, SMALL], minutes=60)
    assert (plan.preset, plan.lr, plan.mlm_probability) == ("bert-mini", 5e-4, 0.15)


def test_evaluation_costs_at_most_three_percent_of_the_budget():
    for minutes in (2, 10, 30):
        plan = decide([TINY], minutes=minutes, tokens_per_param=1)
        eval_seconds = (
            EVALS * plan.eval_max_batches * plan.eval_batch_size * plan.block_size / TINY.eval_tokens_per_sec
        )
        assert eval_seconds <= EVAL_SHARE * minutes * 60
        assert eval_seconds > 0.9 * EVAL_SHARE * minutes * 60  # and uses most of that share
    plan = decide([TINY], minutes=600, tokens_per_param=1)  # 3% would be 8M tokens a time: capped at 1M
    assert plan.eval_max_batches == EVAL_MAX_TOKENS // (plan.eval_batch_size * plan.block_size) == 128


def test_a_budget_too_small_for_every_preset_names_the_smallest_that_works():
    with pytest.raises(TrainingError) as caught:
        decide([MINI, TINY], minutes=1)
    # modern-tiny needs 20 x 1M tokens at 20,000 tokens/s: 1000 s / 0.97 = 17.2 minutes
    assert minutes_needed(TINY, 20) == pytest.approx(1000 / 0.97 / 60)
    message = str(caught.value)
    assert "a 1-minute budget is too small for every preset" in message
    assert "modern-tiny (1.00M parameters, 20,000 tokens/s), would see 1.2 tokens per parameter" in message
    assert message.endswith("The smallest budget that works is --minutes 18 (or lower --tokens-per-param)")
    assert decide([TINY], minutes=18).preset == "modern-tiny"  # and it does work


def test_the_written_recipe_validates_and_carries_the_plan():
    plan = decide([TINY, MINI], minutes=60)
    base = load_recipe_dict(REPO / "recipes/pretrain/tiny.yaml")
    recipe = from_dict(PretrainRecipe, plan_recipe(plan, base, precision=None))
    train = recipe.train
    assert (recipe.model.preset, train.schedule, train.max_minutes, train.max_steps) == (
        "modern-tiny",
        "wsd",
        60,
        None,
    )
    assert (train.batch_size, train.gradient_accumulation_steps, train.lr) == (32, 8, 1e-3)
    assert (train.warmup_fraction, train.decay_fraction, train.mixed_precision) == (0.05, 0.2, None)
    assert (recipe.eval.max_batches, recipe.masking.mlm_probability) == (plan.eval_max_batches, 0.30)
    assert recipe.data.source == "builtin:python-docs"  # kept from the base
    header = recipe_header(plan, "hfpipe plan --minutes 60")
    assert all(line.startswith("# ") for line in header.splitlines())
    assert "INCLUDED" in header and format_table(plan).splitlines()[1] in header


def load_recipe_dict(path: Path) -> dict:
    from hfpipe.config import yaml12

    return yaml12.load(path.read_text())


def test_estimated_throughput_follows_the_flops():
    one, two = estimated_throughputs(
        ["bert-tiny", "bert-mini"], vocab_size=8192, tflops=100, mfu=0.5, micro_batch=64
    )
    (double,) = estimated_throughputs(["bert-tiny"], vocab_size=8192, tflops=200, mfu=0.5, micro_batch=64)
    assert double.tokens_per_sec == pytest.approx(2 * one.tokens_per_sec)
    assert two.tokens_per_sec < one.tokens_per_sec and two.params > one.params
    assert one.source == "estimated" and one.eval_tokens_per_sec == pytest.approx(3 * one.tokens_per_sec)


def test_a_real_measurement_has_the_right_structure(tmp_path):
    from hfpipe.train.plan import count_parameters

    (m,) = measure_throughputs(
        ["bert-tiny"],
        vocab_size=512,
        micro_batch=4,
        seconds=0.0,
        block_size=32,
        work_dir=tmp_path,
        warmup_steps=0,
        min_steps=1,
    )
    assert (m.preset, m.micro_batch, m.source) == ("bert-tiny", 4, "measured")
    assert m.params == count_parameters("bert-tiny", 512, 32)
    assert math.isfinite(m.tokens_per_sec) and m.tokens_per_sec > 0
    assert math.isfinite(m.eval_tokens_per_sec) and m.eval_tokens_per_sec > 0


def test_the_measurement_reads_the_data_the_plan_is_for(tmp_path):
    """`hfpipe plan ... data.source=FILE` measures FILE (its packing and step speed), not the embedded corpus."""
    from hfpipe.train.plan import measurement_recipe

    data = {"source": str(tmp_path / "corpus.txt"), "validation_source": str(tmp_path / "valid.txt"),
            "streaming": True}
    recipe = measurement_recipe("bert-tiny", tmp_path / "m", 512, 4, 32, None, data)
    assert (recipe.data.source, recipe.data.validation_source) == (data["source"], data["validation_source"])
    assert (recipe.data.block_size, recipe.data.streaming, recipe.data.max_documents) == (32, False, 3000)
    assert measurement_recipe("bert-tiny", tmp_path / "m", 512, 4, 32, None).data.source == "builtin:python-docs"


def test_plan_cli_writes_a_recipe_and_refuses_a_budget_too_small(tmp_path, capsys):
    from hfpipe.cli import main

    out = tmp_path / "planned.yaml"
    args = [
        "plan",
        "--minutes",
        "1",
        "--estimate-tflops",
        "1",
        "--mfu",
        "0.5",
        "--presets",
        "bert-tiny",
        "modern-tiny",
    ]
    assert main([*args, "--tokens-per-param", "1", "--out", str(out)]) == 0
    recipe = load_recipe(out, PretrainRecipe)
    assert recipe.model.preset == "bert-tiny" and recipe.train.schedule == "wsd"  # the larger of the two
    assert out.read_text().startswith("# Made by `hfpipe plan` for 1 minutes on cpu:")
    # A run folder of its own, named after the recipe file: not the base recipe's (runs/pretrain-tiny),
    # which a planned run would otherwise resume or overwrite; an output_dir the user gives wins.
    assert recipe.output_dir == "runs/planned"
    assert main([*args, "--tokens-per-param", "1", "--out", str(out), f"output_dir={tmp_path}/mine"]) == 0
    assert load_recipe(out, PretrainRecipe).output_dir == f"{tmp_path}/mine"
    capsys.readouterr()
    assert main([*args, "--tokens-per-param", "1000"]) == 2
    assert "The smallest budget that works is --minutes" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cpu-hour", "gpu-hour"])
def test_budget_recipes_schedule_on_time_with_capped_evaluation(name):
    recipe = load_recipe(REPO / "recipes" / "pretrain" / f"{name}.yaml", PretrainRecipe)
    train = recipe.train
    assert (train.schedule, train.max_minutes, train.max_steps, train.mixed_precision) == (
        "wsd",
        60,
        None,
        None,  # the launcher's choice; outside a launcher, bf16 where native (issue 22)
    )
    assert recipe.eval.max_batches is not None and train.eval_every_steps is not None
    assert "INCLUDED" in (REPO / "recipes" / "pretrain" / f"{name}.yaml").read_text()


def test_bench_quality_tiny_runs_every_stage(shared_data, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quality", REPO / "bench" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    results = tmp_path / "quality.json"
    report = quality.main(
        [
            "--tiny",
            "--recipe",
            str(REPO / "recipes/pretrain/cpu-hour.yaml"),
            "--tasks",
            "sst2",
            "--data-dir",
            str(shared_data),
            "--work-dir",
            str(tmp_path / "q"),
            "--results",
            str(results),
            "--dirty",
        ]
    )
    assert report["bert_pretrain"]["step"] == 3 and report["hfpipe_pretrain"]["step"] == 3
    for side in ("hfpipe", "bert"):
        assert math.isfinite(report["mlm"][side]["loss"]) and report["mlm"][side]["masked_tokens"] > 0
    for name in ("hfpipe", "bert", "scratch"):
        (run,) = report["models"][name]["sst2"]
        assert 0 <= run["score"] <= 100 and run["metric"] == "accuracy"
    assert set(report["seconds"]) >= {
        "pretrain hfpipe",
        "pretrain BERT (run_mlm_no_trainer)",
        "fine-tune scratch",
    }
    written = json.loads(results.read_text())  # the results file bench/publish.py renders
    assert written["provenance"]["command"].startswith("python bench/quality.py --tiny")
    assert written["one_invocation"] and set(written["load"]) == set(report["seconds"])
    rows = written["tables"]["quality"]["rows"]
    assert ["Google BERT-Mini (published, GLUE test, 3.3B words)", "3.3B words (Turc et al. 2019)", "—", "85.9"] in rows
    # an hfpipe run made earlier (the CPU hour) is reused: stage 1 skipped, BERT gets that run's budget
    common = ["--tiny", "--tasks", "sst2", "--data-dir", str(shared_data), "--dirty",
              "--results", str(tmp_path / "r2.json")]
    again = quality.main(common + ["--hfpipe-run", str(tmp_path / "q" / "hfpipe"), "--work-dir", str(tmp_path / "q2")])
    assert "pretrain hfpipe" not in again["seconds"] and again["hfpipe_pretrain"] == report["hfpipe_pretrain"]
    assert again["mlm"]["hfpipe"] == report["mlm"]["hfpipe"] and again["bert_pretrain"]["step"] == 3
    assert not again["one_invocation"] and "NOT timed in one invocation" in json.loads(
        (tmp_path / "r2.json").read_text())["tables"]["quality"]["note"]
    with pytest.raises(SystemExit):
        quality.main(common + ["--hfpipe-run", str(tmp_path / "nothing"), "--work-dir", str(tmp_path / "q3")])
    assert "not a finished hfpipe pretraining run" in capsys.readouterr().err
