"""The ablation's report: mean ± std over seeds, which differences the seeds resolve, a markdown table,
one PNG of the loss curves with seed bands, and results.json.

    from hfpipe.teach.ablate.report import summarize, format_table, plot_curves
    summary = summarize(suite, cells)              # cells: {variant: [cell per seed]}
    print(format_table(summary, header_lines))

The rule for "resolved": two variants' mean ± std intervals (sample std over seeds) must not overlap.
It is a rough, deliberately cautious reading: with 3 seeds it asks for a gap of about two standard
deviations. Where intervals overlap the table says "not resolved at this budget" -- more seeds or a
longer budget might separate them, or might not.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from .probes import divergence, peak_loss
from .suites import Suite


@dataclass(frozen=True)
class Column:
    key: str  # in cell["metrics"], or "downstream"
    header: str
    lower_is_better: bool | None  # None: not a score (no best, no resolution)
    percent: bool = False


def columns(suite: Suite, trained_length: int, task: str | None) -> list[Column]:
    """The table's numeric columns for `suite`."""
    T = trained_length
    cols = [Column("mlm_loss", f"MLM loss (T={T})", True), Column("mlm_accuracy", "masked-token acc.", False, True)]
    if suite.probe == "extrapolation":
        for n in (128, 256):
            cols.append(Column(f"loss_{n}", f"MLM loss, T={n}", True))
        cols.append(Column("loss_256_beyond", f"T=256, only positions >= {T}", True))
        cols.append(Column("delta_256", f"change T={T} -> 256 (same model)", True))
    elif suite.probe == "batch_statistics":
        cols += [Column("loss_running", "running stats (inference)", True),
                 Column("loss_batch", "batch stats, 64 rows", True),
                 Column("loss_single_row", "batch stats, 1 row", True)]
    elif suite.probe == "divergence":
        cols += [Column("peak_train_loss", "peak train loss after 10% of steps", True),
                 Column("final_train_loss", "final train loss", True)]
    if task:
        cols.append(Column("downstream", f"{task} accuracy", False, True))
    return cols


def value(cell: dict, key: str) -> float | None:
    """A cell's number for column `key`; None where it has none (refused, diverged, not measured)."""
    if key == "downstream":
        v = cell.get("downstream")
    elif key == "peak_train_loss":
        v = peak_loss(cell["curves"]["train"], cell["steps"])
    elif key.startswith("delta_"):  # the same model's loss at a longer length minus at the trained one
        longer = cell["metrics"].get("loss_" + key.split("_")[1])
        v = None if longer is None else longer - cell["metrics"]["mlm_loss"]
    else:
        v = cell["metrics"].get(key)
    return v if v is not None and math.isfinite(v) else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN std for fewer than 2 values)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether mean ± std intervals overlap (always, when a std is unknown)."""
    if math.isnan(a[1]) or math.isnan(b[1]):
        return True
    return abs(a[0] - b[0]) <= a[1] + b[1]


def summarize(suite: Suite, cells: dict[str, list[dict]], trained_length: int, task: str | None) -> dict:
    """{"stats": {variant: {key: {mean, std, n}}}, "unresolved": {key: [[a, b], ...]}, "best": {key: variant}}."""
    stats: dict[str, dict] = {}
    for name, runs in cells.items():
        stats[name] = {}
        for col in columns(suite, trained_length, task):
            found = [v for v in (value(c, col.key) for c in runs) if v is not None]
            if found:
                m, s = mean_std(found)
                stats[name][col.key] = {"mean": m, "std": s, "n": len(found)}
    unresolved, best = {}, {}
    for col in columns(suite, trained_length, task):
        if col.lower_is_better is None:
            continue
        have = {n: (st[col.key]["mean"], st[col.key]["std"]) for n, st in stats.items() if col.key in st}
        unresolved[col.key] = [[a, b] for a, b in combinations(have, 2) if overlap(have[a], have[b])]
        if have:
            pick = min if col.lower_is_better else max
            best[col.key] = pick(have, key=lambda n: have[n][0])
    return {"stats": stats, "unresolved": unresolved, "best": best}


# ----------------------------------------------------------------------------------------------
# The markdown table
# ----------------------------------------------------------------------------------------------


def _cell_text(stat: dict | None, col: Column, runs: int) -> str:
    if stat is None:
        return "—"
    scale, unit = (100, "%") if col.percent else (1, "")
    digits = 1 if col.percent else 3
    if 0 < scale * stat["std"] < 0.5 * 10**-digits:  # a spread that would print as 0
        digits += 1
    std = "n/a" if math.isnan(stat["std"]) else f"{scale * stat['std']:.{digits}f}"
    text = f"{scale * stat['mean']:.{digits}f} ± {std}{unit}"
    return text + (f" ({stat['n']} of {runs} seeds)" if stat["n"] < runs else "")


def _refused(runs: list[dict], key: str) -> str | None:
    """"cannot extrapolate: ..." when every seed refused the length of column `key`."""
    length = key.split("_")[1] if key.startswith(("loss_", "delta_")) else None
    reasons = {(c.get("refused") or {}).get(length) for c in runs}
    return reasons.pop() if length and len(reasons) == 1 and None not in reasons else None


def _divergence_text(runs: list[dict]) -> str:
    steps = [divergence(c["curves"]["train"], c["steps"]) for c in runs]
    hit = [s for s in steps if s is not None]
    if not hit:
        return f"no (0 of {len(runs)})"
    return f"{len(hit)} of {len(runs)} seeds, at step {', '.join(map(str, hit))}"


def format_table(suite: Suite, cells: dict[str, list[dict]], summary: dict, trained_length: int,
                 task: str | None) -> str:
    """The markdown table (best mean in bold), then the pairs the seeds do not resolve."""
    cols = columns(suite, trained_length, task)
    main = cols[0].key
    header = ["variant", "parameters", *(c.header for c in cols), f"{cols[0].header}: vs best"]
    if suite.probe == "divergence":
        header.insert(2, "diverged (loss back above its start, or not finite)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    unresolved = {k: {frozenset(p) for p in pairs} for k, pairs in summary["unresolved"].items()}
    refusals: dict[str, str] = {}
    for name, runs in cells.items():
        stats = summary["stats"][name]
        row = [name, f"{runs[0]['parameters']:,}"]
        if suite.probe == "divergence":
            row.append(_divergence_text(runs))
        for col in cols:
            reason = _refused(runs, col.key)
            if reason:
                refusals[name] = reason
            text = "cannot extrapolate" if reason else _cell_text(stats.get(col.key), col, len(runs))
            row.append(f"**{text}**" if summary["best"].get(col.key) == name and col.key in stats else text)
        best = summary["best"].get(main)
        if best is None or main not in stats:
            row.append("—")
        elif best == name:
            row.append("best")
        else:
            row.append("not resolved at this budget" if frozenset((name, best)) in unresolved[main] else "resolved")
        lines.append("| " + " | ".join(row) + " |")
    if refusals:
        lines += [""] + [f"{name}: {reason}." for name, reason in refusals.items()]
    lines += ["", "Not resolved at this budget (mean ± std intervals overlap):"]
    for col in cols:
        pairs, measured = summary["unresolved"].get(col.key), sum(col.key in st for st in summary["stats"].values())
        if pairs is None or measured < 2:
            continue
        every = len(pairs) == math.comb(measured, 2)
        shown = "every pair" if every and pairs else ", ".join(f"{a} ~ {b}" for a, b in pairs) or "none"
        lines.append(f"- {col.header}: {shown}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The curves
# ----------------------------------------------------------------------------------------------


def _band(per_seed: list[list], bins: int) -> tuple[list[float], list[float], list[float]]:
    """Steps, mean and std over seeds of (step, value) series, averaged in bins of `bins` steps."""
    binned: dict[int, list[list[float]]] = {}
    for seed_index, points in enumerate(per_seed):
        for step, v in points:
            if math.isfinite(v):
                slot = binned.setdefault((step - 1) // bins, [[] for _ in per_seed])
                slot[seed_index].append(v)
    steps, means, stds = [], [], []
    for b in sorted(binned):
        seed_means = [statistics.fmean(vs) for vs in binned[b] if vs]
        steps.append((b + 1) * bins)
        means.append(statistics.fmean(seed_means))
        stds.append(statistics.stdev(seed_means) if len(seed_means) > 1 else 0.0)
    return steps, means, stds


def plot_curves(cells: dict[str, list[dict]], png: Path, title: str) -> Path:
    """Training loss and in-loop validation loss per variant: the mean over seeds, a band of ± 1 std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    last = max((c["steps"] for runs in cells.values() for c in runs), default=1)
    for i, (name, runs) in enumerate(cells.items()):
        color = plt.get_cmap("tab10")(i % 10)
        for ax, kind, bins in ((axes[0], "train", max(1, last // 50)), (axes[1], "eval", 1)):
            steps, mean, std = _band([c["curves"][kind] for c in runs], bins)
            if not steps:
                continue
            ax.plot(steps, mean, color=color, label=name, marker="o" if kind == "eval" else None, markersize=3)
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2, linewidth=0)
    axes[0].set_title("training loss (window means)", fontsize=9)
    axes[1].set_title("validation MLM loss during training (each seed's masks)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("MLM loss")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png
