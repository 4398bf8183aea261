"""`hfpipe lessons`: each of the tutorial's four answers rests on numbers; these tests hold the numbers.

.venv/bin/pytest tests/teach/test_lessons.py -q
"""

import argparse

import pytest
import torch

from hfpipe.teach import lessons


@pytest.fixture(scope="module")
def positions() -> dict:
    return lessons.lesson_positions(seed=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_qkv_by_hand_equals_the_attention_module(seed):
    r = lessons.lesson_qkv(seed=seed)
    assert r["output_max_abs_diff"] < 1e-5  # x @ W_q^T ... out_proj == the module's (sdpa) output
    assert r["probs_max_abs_diff"] < 1e-5  # hand softmax(q k^T / sqrt(D)) == output_attentions
    assert r["permutation_max_abs_diff"] < 1e-5  # attention alone has no notion of order
    assert r["score_asymmetry"] > 1e-3  # Q and K are different maps: score[i, j] != score[j, i]


def test_without_positions_the_encoder_is_permutation_equivariant(positions):
    assert positions["none_permutation_max_abs_diff"] < 1e-5
    assert positions["none_dog_bites_man_diff"] < 1e-5  # same bag of words, same sentence vector
    assert positions["absolute_permutation_max_abs_diff"] > 1e-3
    assert positions["absolute_dog_bites_man_diff"] > 1e-3


def test_rope_scores_see_only_relative_distance(positions):
    assert positions["rope_shift_score_diff"] < 1e-5
    assert positions["absolute_shift_score_diff"] > 1e-3
    assert positions["sinusoidal_shift_score_diff"] > 1e-3


def test_alibi_bias_is_minus_slope_times_distance(positions):
    assert positions["alibi_slopes"] == pytest.approx([2**-4, 2**-8])  # bert-tiny: H=2
    assert positions["alibi_bias_max_abs_diff"] < 1e-6


def test_only_learned_absolute_positions_refuse_longer_inputs(positions):
    extrapolation = positions["extrapolation"]
    for kind in ("sinusoidal", "rope", "alibi", "none"):
        assert extrapolation[kind] == "runs: output (1, 24, 128), finite=True", kind
    assert extrapolation["absolute"].startswith("ValueError: ")
    assert "max_position_embeddings=16" in extrapolation["absolute"]
    model = lessons._tiny_model(0, position_embedding_type="absolute", max_position_embeddings=16)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=16"):
        model(input_ids=torch.ones(1, 17, dtype=torch.long))


@pytest.mark.parametrize("seed", [0, 1])
def test_layernorm_ignores_the_batch_batchnorm_does_not(seed):
    r = lessons.lesson_norms(seed=seed)
    for norm in ("layernorm", "rmsnorm"):
        assert r[f"{norm}_batch_vs_alone"] < 1e-6
        assert r[f"{norm}_padded_vs_alone"] < 1e-6
        assert r[f"{norm}_train_vs_eval"] < 1e-6
    assert r["batchnorm_batch_vs_alone"] > 1e-2
    assert r["batchnorm_padded_vs_alone"] > 1e-2
    assert r["batchnorm_train_vs_eval"] > 1e-2  # running statistics: eval differs from train
    assert r["layernorm_one_token"] == "works: output (1, 1, 128)"
    assert "Expected more than 1 value per channel when training" in r["batchnorm_one_token"]
    assert r["batchnorm_two_tokens_mean_abs"] == pytest.approx(1.0, abs=0.02)  # every feature is +-1


def test_shapes_lesson_names_each_dimension_change():
    rows = lessons.lesson_shapes("bert-mini")
    assert ("qkv projection", "(B=2, T=16, 3C=768)") in rows
    assert ("q head split", "(B=2, H=4, T=16, D=64)") in rows
    assert ("scores q @ k^T", "(B=2, H=4, T=16, T=16)") in rows
    assert ("head merge", "(B=2, T=16, C=256)") in rows
    assert ("MLP up", "(B=2, T=16, I=1024)") in rows
    assert rows[-1] == ("MLM decoder to vocabulary", "(B=2, T=16, V=30522)")
    assert [op for op, _ in rows].count("q head split") == 1  # layer 0 only


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hfpipe")
    lessons.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_runs_one_lesson_or_all(capsys):
    args = parse(["lessons", "norms"])
    assert args.which == "norms" and args.func is lessons.run
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Lesson 3: why LayerNorm and not BatchNorm?" in out and "Lesson 1" not in out

    args = parse(["lessons"])
    assert args.which == "all"
    assert args.func(args) == 0
    out = capsys.readouterr().out
    titles = [
        "Lesson 1: what are Q, K and V",
        "Lesson 2: is there a better positional encoding?",
        "Lesson 3: why LayerNorm and not BatchNorm?",
        "Lesson 4: which dimension change is which operation?",
    ]
    assert [out.index(t) for t in titles] == sorted(out.index(t) for t in titles)  # all four, in order
    assert "rows   0..127  -> W_q" in out
    assert "hfpipe ablate positions" in out
    with pytest.raises(SystemExit):
        parse(["lessons", "attention"])
