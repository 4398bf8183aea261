"""The four ablation suites of `hfpipe ablate`: which question each answers and what each variant changes.

    from hfpipe.teach.ablate.suites import SUITES, select_variants
    SUITES["positions"].variants          # absolute, sinusoidal, rope, alibi, none
    select_variants(SUITES["mixer"], ["attention", "uniform"])

Every variant is the shared recipe recipes/ablations/base.yaml (bert-tiny, T=64) with a few HfpipeConfig
fields changed (`config`), and, for norm-position, the learning rate scaled. Nothing else differs between
the variants of a suite: same corpus, tokenizer, data order, masks and budget for a given seed.

Pure Python (no torch): `hfpipe ablate --help` lists the suites from here instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class AblationError(ValueError):
    """Bad input to `hfpipe ablate` (unknown suite or variant, missing corpus): the message says what to fix."""


@dataclass(frozen=True)
class Variant:
    """One arm of a suite."""

    name: str
    """Its name on the command line (`--variants rope alibi`) and in the table."""
    description: str
    """One line for the table and `--help`."""
    config: dict = field(default_factory=dict)
    """HfpipeConfig fields set over the base recipe's model (recipe key model.config_overrides)."""
    lr_scale: float = 1.0
    """The learning rate as a multiple of the base recipe's train.lr."""
    equal_parameters: bool = False
    """Widen the MLP by the parameters the token mixer lacks, so every variant has attention's count."""


@dataclass(frozen=True)
class Suite:
    """A question, the variants that answer it, and the extra measurement (probe) it needs."""

    name: str
    question: str
    variants: tuple[Variant, ...]
    probe: str | None = None
    """"extrapolation" (MLM loss at longer inputs), "batch_statistics" (loss with batch statistics at
    1 and 64 rows vs running statistics) or "divergence" (the step where the training loss stopped being
    finite or climbed back above its starting value)."""
    train_overrides: tuple[str, ...] = ()
    """Recipe keys every variant of this suite sets (e.g. train.on_nan=skip)."""

    def variant(self, name: str) -> Variant:
        return {v.name: v for v in self.variants}[name]


POSITIONS = Suite(
    name="positions",
    question="Is there a better positional encoding? (and what happens past the trained length)",
    variants=(
        Variant("absolute", "learned table of 64 rows (BERT)", {"position_embedding_type": "absolute"}),
        Variant("sinusoidal", "fixed sin/cos waves added to the embeddings", {"position_embedding_type": "sinusoidal"}),
        Variant("rope", "rotary: q and k rotated by position (relative)", {"position_embedding_type": "rope"}),
        Variant("alibi", "distance penalty on the attention scores", {"position_embedding_type": "alibi"}),
        Variant("none", "no position information (bag of tokens)", {"position_embedding_type": "none"}),
    ),
    probe="extrapolation",
)

NORMS = Suite(
    name="norms",
    question="Why LayerNorm and not BatchNorm?",
    variants=(
        Variant("layernorm", "per token: mean and variance of its C features (BERT)", {"norm_type": "layernorm"}),
        Variant("rmsnorm", "per token: root mean square only, no bias", {"norm_type": "rmsnorm"}),
        Variant("batchnorm", "per feature over the batch's real tokens; running stats at inference",
                {"norm_type": "batchnorm"}),
    ),
    probe="batch_statistics",
)

# Pre-norm keeps the residual stream unnormalized, so it needs a final norm before the head (final_norm);
# post-norm (BERT) ends in a norm already.
_PLACEMENT = {"post": {"norm_position": "post", "final_norm": False},
              "pre": {"norm_position": "pre", "final_norm": True}}
NORM_POSITION = Suite(
    name="norm-position",
    question="Where does the norm go? Post-norm (BERT) vs pre-norm at 1x, 3x and 10x the learning rate",
    variants=tuple(
        Variant(f"{where}-lr{scale}x", f"{where}-norm, {scale}x the recipe's learning rate", _PLACEMENT[where],
                lr_scale=float(scale))
        for where in ("post", "pre")
        for scale in (1, 3, 10)
    ),
    probe="divergence",
    # A non-finite loss skips its update instead of stopping the run, and every step is logged, so the
    # step where a run diverged (no finite loss, or back above its starting loss) is read off its curve.
    train_overrides=("train.on_nan=skip", "train.log_every_steps=1"),
)

MIXER = Suite(
    name="mixer",
    question="Can attention be replaced by a fixed token mixer (MetaFormer)? At equal parameters",
    variants=(
        Variant("attention", "softmax(q k^T / sqrt(D)) v: weights computed from the tokens",
                {"token_mixer": "attention"}),
        Variant("pooling", "PoolFormer: average of a 3-token window minus the token; wider MLP",
                {"token_mixer": "pooling"}, equal_parameters=True),
        Variant("uniform", "every token gets its document's plain average; wider MLP",
                {"token_mixer": "uniform"}, equal_parameters=True),
    ),
)

SUITES: dict[str, Suite] = {s.name: s for s in (POSITIONS, NORMS, NORM_POSITION, MIXER)}


def select_variants(suite: Suite, names: list[str] | None) -> list[Variant]:
    """The variants asked for, in the suite's order (all when `names` is empty or None)."""
    if not names:
        return list(suite.variants)
    valid = [v.name for v in suite.variants]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise AblationError(f"unknown variant(s) of suite {suite.name!r}: {', '.join(unknown)}; "
                            f"valid variants: {', '.join(valid)}")
    return [v for v in suite.variants if v.name in names]


def describe_suites() -> str:
    """The `--help` epilog: every suite, its question and its variants."""
    blocks = []
    for suite in SUITES.values():
        rows = [f"    {v.name:<12} {v.description}" for v in suite.variants]
        blocks.append("\n".join([f"  {suite.name}: {suite.question}", *rows]))
    return "suites and their variants:\n" + "\n".join(blocks)
