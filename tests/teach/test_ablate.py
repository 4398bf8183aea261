"""`hfpipe ablate`: every suite runs end to end at a tiny budget and writes its table, curves and JSON;
the probes measure what they claim; the seeds' verdict follows the mean ± std rule; bad input says
what to fix.

    .venv/bin/pytest tests/teach/test_ablate.py -q

The end-to-end tests train 2 variants x 2 seeds x 2 steps on 200 documents of the embedded corpus
(the budget is the point of --steps / --max-documents / --eval-batches), a few seconds per suite.
"""

import json
import math

import pytest
import torch

from hfpipe.cli import main as hfpipe
from hfpipe.model.configuration_hfpipe import HfpipeConfig
from hfpipe.model.modeling_hfpipe import HfpipeForMaskedLM
from hfpipe.teach.ablate import runs
from hfpipe.teach.ablate.command import ablate
from hfpipe.teach.ablate.probes import batch_statistics, divergence, extrapolation, mlm_metrics, peak_loss
from hfpipe.teach.ablate.report import format_table, summarize
from hfpipe.teach.ablate.suites import SUITES, AblationError, select_variants

TINY = dict(seeds=2, steps=2, max_documents=200, eval_batches=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_suite(tmp_path, suite: str, variants: list[str], **kwargs) -> dict:
    result = ablate(suite, variants=variants, output_dir=tmp_path / suite, **{**TINY, **kwargs})
    out = tmp_path / suite
    assert (out / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert json.loads((out / "results.json").read_text())["command"] == result["command"]
    table = (out / "table.md").read_text()
    assert result["command"] in table and "| variant | parameters |" in table
    assert all(f"| {name} |" in table for name in variants)
    assert {name: len(cells) for name, cells in result["cells"].items()} == {name: 2 for name in variants}
    for cells in result["cells"].values():
        assert [c["seed"] for c in cells] == [1, 2]
        assert all(c["steps"] == 2 and math.isfinite(c["metrics"]["mlm_loss"]) for c in cells)
    return result


# ----------------------------------------------------------------------------------------------
# The four suites, end to end
# ----------------------------------------------------------------------------------------------


def test_positions_suite_refuses_to_extrapolate_a_learned_table(tmp_path):
    result = run_suite(tmp_path, "positions", ["absolute", "alibi"], downstream="none")
    absolute, alibi = result["cells"]["absolute"][0], result["cells"]["alibi"][0]
    assert absolute["refused"] == {"128": "cannot extrapolate: the learned table has 64 rows",
                                   "256": "cannot extrapolate: the learned table has 64 rows"}
    assert absolute["metrics"]["loss_256"] is None
    assert alibi["refused"] == {"128": None, "256": None}
    assert math.isfinite(alibi["metrics"]["loss_256"])
    assert 0 < alibi["metrics"]["share_256_beyond"] < 1  # some scored tokens sit past the trained 64
    assert "cannot extrapolate: the learned table has 64 rows" in (tmp_path / "positions" / "table.md").read_text()
    # the same rows and masks for every cell: the evaluation counts the same tokens
    tokens = {c["metrics"]["eval_tokens"] for cells in result["cells"].values() for c in cells}
    assert len(tokens) == 1


def test_norms_suite_measures_batch_statistics_only_where_there_are_some(tmp_path):
    result = run_suite(tmp_path, "norms", ["layernorm", "batchnorm"], downstream="none")
    for cell in result["cells"]["layernorm"]:
        m = cell["metrics"]
        assert m["loss_batch"] == pytest.approx(m["loss_running"], abs=1e-5)
        assert m["loss_single_row"] == pytest.approx(m["loss_running"], abs=1e-5)
    for cell in result["cells"]["batchnorm"]:
        m = cell["metrics"]
        assert abs(m["loss_batch"] - m["loss_running"]) > 1e-4
        assert abs(m["loss_single_row"] - m["loss_batch"]) > 1e-4


def test_norm_position_suite_records_divergence_and_scales_the_lr(tmp_path):
    result = run_suite(tmp_path, "norm-position", ["post-lr1x", "pre-lr10x"], downstream="none")
    post, pre = result["cells"]["post-lr1x"][0], result["cells"]["pre-lr10x"][0]
    assert "train.lr=0.01" in pre["overrides"] and not any(o.startswith("train.lr=") for o in post["overrides"])
    assert "model.config_overrides.final_norm=true" in pre["overrides"]
    assert "train.on_nan=skip" in pre["overrides"]
    assert [step for step, _ in pre["curves"]["train"]] == [1, 2]  # every step logged
    table = (tmp_path / "norm-position" / "table.md").read_text()
    assert "| diverged (loss back above its start, or not finite) |" in table
    for name, cells in result["cells"].items():
        steps = [divergence(c["curves"]["train"], 2) for c in cells]
        hit = [str(s) for s in steps if s is not None]
        expected = f"{len(hit)} of 2 seeds, at step {', '.join(hit)}" if hit else "no (0 of 2)"
        assert f"| {name} | 950," in table and f"| {expected} |" in table


def test_mixer_suite_has_equal_parameters_and_fine_tunes(tmp_path):
    result = run_suite(tmp_path, "mixer", ["attention", "uniform"], downstream="pydocs", finetune_steps=2)
    attention, uniform = result["cells"]["attention"][0], result["cells"]["uniform"][0]
    assert abs(attention["parameters"] - uniform["parameters"]) <= 2
    assert "model.config_overrides.intermediate_size=769" in uniform["overrides"]
    for cells in result["cells"].values():
        assert all(0 <= c["downstream"] <= 1 for c in cells)
    assert "pydocs accuracy" in (tmp_path / "mixer" / "table.md").read_text()
    # a finished cell is read back, not trained again
    weights = tmp_path / "mixer" / "runs" / "uniform" / "seed-1" / "final" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    again = ablate("mixer", variants=["attention", "uniform"], output_dir=tmp_path / "mixer", downstream="pydocs",
                   finetune_steps=2, **TINY)
    reread = {name: [{k: v for k, v in c.items() if k != "reused"} for c in cells]
              for name, cells in again["cells"].items()}
    assert reread == result["cells"]
    assert all(c["reused"] for cells in again["cells"].values() for c in cells)
    # another fine-tuning budget: the pretrained models stand, only the fine-tuning runs again
    longer = ablate("mixer", variants=["attention", "uniform"], output_dir=tmp_path / "mixer", downstream="pydocs",
                    finetune_steps=3, **TINY)
    cell = longer["cells"]["uniform"][0]
    assert "train.max_steps=3" in cell["downstream_settings"]["overrides"]
    assert cell["metrics"] == uniform["metrics"] and weights.stat().st_mtime_ns == written


# ----------------------------------------------------------------------------------------------
# Probes on tiny random models
# ----------------------------------------------------------------------------------------------


def tiny_model(**overrides) -> HfpipeForMaskedLM:
    torch.manual_seed(0)
    config = HfpipeConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=48, max_position_embeddings=8, **overrides)
    model = HfpipeForMaskedLM(config).eval()
    model.sparse_prediction = True
    return model


def batch(rows: int, length: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (rows, length), generator=g)
    labels = torch.where(torch.rand(rows, length, generator=g) < 0.3, ids, -100)
    labels[:, -1] = ids[:, -1]  # at least one label per row, at the last position
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "position_ids": torch.arange(length).expand(rows, length), "labels": labels}


def test_extrapolation_refuses_absolute_and_scores_relative_schemes():
    sets = {8: [batch(2, 8)], 16: [batch(2, 16)]}
    refused = extrapolation(tiny_model(position_embedding_type="absolute"), sets, trained_length=8)
    assert refused == {16: {"refused": "cannot extrapolate: the learned table has 8 rows"}}
    scored = extrapolation(tiny_model(position_embedding_type="alibi"), sets, trained_length=8)[16]
    assert math.isfinite(scored["loss"]) and math.isfinite(scored["loss_beyond"])
    labels = sets[16][0]["labels"]
    assert scored["share_beyond"] == pytest.approx((labels[:, 8:] != -100).sum().item() / (labels != -100).sum().item())


def test_mlm_metrics_is_token_weighted_cross_entropy():
    model, b = tiny_model(), batch(3, 8)
    out = model(**b)
    expected = torch.nn.functional.cross_entropy(out.logits, b["labels"][b["labels"] != -100]).item()
    assert mlm_metrics(model, [b])["loss"] == pytest.approx(expected, rel=1e-6)
    halves = [{k: v[:1] for k, v in b.items()}, {k: v[1:] for k, v in b.items()}]
    assert mlm_metrics(model, halves)["loss"] == pytest.approx(expected, rel=1e-5)  # not a mean of batch means


def test_batch_statistics_leaves_the_model_untouched():
    model = tiny_model(norm_type="batchnorm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = batch_statistics(model, [batch(4, 8)])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training
    assert result["batch"] != pytest.approx(result["running"]) and result["single_row"] != pytest.approx(result["batch"])


def test_divergence_is_a_skipped_step_or_a_loss_back_at_its_start():
    falling = [[s, 8.0 - 0.1 * s] for s in range(1, 41)]
    assert divergence(falling, last_step=40) is None
    assert peak_loss(falling, last_step=40) == pytest.approx(8.0 - 0.5)  # after the first 10%: step 5 on
    skipped = [p for p in falling if p[0] != 17]  # train.on_nan=skip: no entry for step 17
    assert divergence(skipped, last_step=40) == 17
    spike = [[s, 9.0 if s == 25 else v] for s, v in falling]  # back above the start (7.9 at step 1)
    assert divergence(spike, last_step=40) == 25 and peak_loss(spike, last_step=40) == 9.0
    early = [[s, 8.5 if s == 3 else v] for s, v in falling]  # the first 10% (warmup) is not judged
    assert divergence(early, last_step=40) is None
    assert divergence([[1, float("nan")]], last_step=1) == 1


def test_matched_intermediate_size_equalizes_parameters():
    from hfpipe.config import PretrainRecipe, load_recipe
    from hfpipe.config.recipes_index import shipped_recipe

    for preset in ("bert-tiny", "modern-tiny"):
        recipe = load_recipe(shipped_recipe("ablations/base", "pretrain"), PretrainRecipe,
                             [f"model.preset={preset}", "model.config_overrides.position_embedding_type=absolute"])
        counts = {}
        for name in ("attention", "uniform"):
            variant = SUITES["mixer"].variant(name)
            fields = {**recipe.model.config_overrides, **variant.config}
            if variant.equal_parameters:
                fields["intermediate_size"] = runs.matched_intermediate_size(recipe, variant)
            with torch.device("meta"):
                model = HfpipeForMaskedLM(HfpipeConfig.from_preset(preset, vocab_size=100, **fields))
            counts[name] = sum(p.numel() for p in model.parameters())
        config = HfpipeConfig.from_preset(preset)
        per_unit = 3 * config.hidden_size if config.hidden_act == "geglu" else 2 * config.hidden_size + 1
        assert abs(counts["attention"] - counts["uniform"]) <= config.num_hidden_layers * per_unit / 2, preset


# ----------------------------------------------------------------------------------------------
# The verdict: mean ± std, resolved or not
# ----------------------------------------------------------------------------------------------


def fake_cells(losses: dict[str, list[float]]) -> dict[str, list[dict]]:
    return {name: [{"seed": i + 1, "parameters": 1000, "metrics": {"mlm_loss": v, "mlm_accuracy": 0.5},
                    "downstream": None, "steps": 10, "curves": {"train": [], "eval": []}}
                   for i, v in enumerate(values)]
            for name, values in losses.items()}


def test_overlapping_intervals_are_not_resolved():
    suite = SUITES["mixer"]
    cells = fake_cells({"attention": [5.00, 5.02, 5.04], "pooling": [5.03, 5.05, 5.07], "uniform": [6.0, 6.1, 6.2]})
    summary = summarize(suite, cells, trained_length=64, task=None)
    assert summary["stats"]["attention"]["mlm_loss"]["mean"] == pytest.approx(5.02)
    assert summary["stats"]["attention"]["mlm_loss"]["std"] == pytest.approx(0.02)
    assert summary["unresolved"]["mlm_loss"] == [["attention", "pooling"]]  # |5.02-5.05| <= 0.02+0.02
    assert summary["best"]["mlm_loss"] == "attention"
    table = format_table(suite, cells, summary, trained_length=64, task=None)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["pooling"].endswith("| not resolved at this budget |")
    assert rows["uniform"].endswith("| resolved |") and rows["attention"].endswith("| best |")
    assert "**5.020 ± 0.020**" in rows["attention"]
    assert "- MLM loss (T=64): attention ~ pooling" in table


def test_one_seed_resolves_nothing():
    summary = summarize(SUITES["mixer"], fake_cells({"attention": [5.0], "pooling": [9.0]}), 64, None)
    assert summary["unresolved"]["mlm_loss"] == [["attention", "pooling"]]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(AblationError) as err:
        select_variants(SUITES["positions"], ["rope", "learned"])
    assert "learned" in str(err.value)
    for name in ("absolute", "sinusoidal", "rope", "alibi", "none"):
        assert name in str(err.value)


def test_cli_errors_name_what_to_fix(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        hfpipe(["ablate", "position"])
    assert exit_.value.code == 2
    assert "invalid choice: 'position'" in capsys.readouterr().err
    assert hfpipe(["ablate", "norms", "--variants", "groupnorm", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "hfpipe ablate: error: unknown variant(s) of suite 'norms': groupnorm" in err
    assert "layernorm, rmsnorm, batchnorm" in err
    missing = tmp_path / "no-such-corpus"
    assert hfpipe(["ablate", "mixer", "--corpus", str(missing), "--output-dir", str(tmp_path / "y")]) == 2
    assert str(missing.resolve()) in capsys.readouterr().err
    monkeypatch.setattr(runs, "WIKITEXT_CANDIDATES", (tmp_path / "shared" / "wikitext-2",))
    assert hfpipe(["ablate", "mixer", "--corpus", "wikitext-2", "--output-dir", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "--corpus wikitext-2: no train.txt in" in err and str(tmp_path / "shared" / "wikitext-2") in err
    assert hfpipe(["ablate", "mixer", "--seeds", "0", "--output-dir", str(tmp_path / "w")]) == 2
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err
