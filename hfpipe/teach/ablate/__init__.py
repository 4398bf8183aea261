"""`hfpipe ablate SUITE`: the tutorial's questions answered by experiments a student can trust and rerun.

    hfpipe ablate positions        # learned absolute, sinusoidal, RoPE, ALiBi, none; and lengths 128, 256
    hfpipe ablate norms            # LayerNorm, RMSNorm, a padding-aware BatchNorm; batch 1 vs 64 at inference
    hfpipe ablate norm-position    # post- vs pre-norm at 1x, 3x, 10x the learning rate; divergence step
    hfpipe ablate mixer            # attention vs pooling (PoolFormer) vs a fixed uniform mix, equal parameters

Each suite trains one bert-tiny per variant and seed (default 3 seeds) under one budget, on the same
data, tokenizer and masks, and reports validation MLM loss and downstream accuracy as mean ± std --
saying where the seeds do not resolve a difference -- as a markdown table, one PNG of the loss curves
with seed bands, and results.json. docs/ablations.md holds measured tables.

    suites.py   the questions and their variants (pure Python)
    runs.py     the shared setup (corpus, tokenizer, evaluation rows) and one cell: pretrain -> probes -> fine-tune
    probes.py   what is measured on a trained model (extrapolation, batch statistics, divergence)
    report.py   mean ± std, resolved or not, the table and the curves
    command.py  the command line and the loop over variants x seeds
"""

from .suites import SUITES, AblationError, Suite, Variant

__all__ = ["SUITES", "AblationError", "Suite", "Variant"]
