"""PNG figures of the benches (matplotlib, Agg backend: no display needed).

matplotlib comes with the ``bench`` extra (``pip install 'argo-xapp[bench]'``; ``scripts/setup.sh`` installs
it). Without it a bench still writes its CSV and JSON files: each ``plot_*`` prints one line saying the PNG
was skipped and returns False.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xapp.bench.common import percentile

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter
except ImportError:  # the bench extra is not installed: CSV and JSON only
    plt = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from matplotlib.axes import Axes

EXTRA = "bench"  # pip install 'argo-xapp[bench]'


def available() -> bool:
    """Whether figures can be drawn (matplotlib installed)."""
    return plt is not None


def _skipped(path: Path) -> bool:
    if plt is not None:
        return False
    print(f"skipped {path.name}: drawing needs matplotlib, pip install 'argo-xapp[{EXTRA}]'", file=sys.stderr)
    return True


COMPONENTS = ("policy", "decomposer", "retriever", "reasoner", "synthesizer", "overhead")
COLORS = {
    "policy": "#7f7f7f",
    "decomposer": "#1f77b4",
    "retriever": "#2ca02c",
    "reasoner": "#9467bd",
    "synthesizer": "#ff7f0e",
    "overhead": "#8c564b",
}
ARGO_COLOR, BASELINE_COLOR, DEADLINE_COLOR = "#1f77b4", "#d62728", "#d62728"

Row = Mapping[str, Any]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return float((sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5)


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, fontweight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


# ---- latency --------------------------------------------------------------------------------------------


def plot_latency(
    measured: Sequence[Row],
    baseline: Sequence[Row],
    path: Path,
    *,
    deadline_ms: float,
    title: str,
) -> bool:
    """Histogram, per-component bars, CDF with p95/p99, box plot per component; with a baseline, also
    ARGO against the baseline (totals and components). False: skipped (no matplotlib)."""
    if _skipped(path):
        return False
    cols = 3 if baseline else 2
    fig, axes = plt.subplots(2, cols, figsize=(7.5 * cols, 11))
    wall = [float(r["wall_ms"]) for r in measured]
    _histogram(axes[0][0], wall, deadline_ms)
    _component_bars(axes[0][1], measured)
    _cdf(axes[1][0], wall, deadline_ms)
    _component_boxes(axes[1][1], measured)
    if baseline:
        _versus_totals(axes[0][2], measured, baseline, deadline_ms)
        _versus_components(axes[1][2], measured, baseline)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _histogram(ax: Axes, wall: Sequence[float], deadline_ms: float) -> None:
    bins = min(max(len(wall) // 2, 5), 40)
    ax.hist(wall, bins=bins, color=ARGO_COLOR, alpha=0.8, edgecolor="white")
    mean, median = _mean(wall), percentile(wall, 50)
    ax.axvline(mean, color="black", linestyle="-", linewidth=1.5, label=f"mean {mean:.0f} ms")
    ax.axvline(median, color="black", linestyle=":", linewidth=1.5, label=f"median {median:.0f} ms")
    if deadline_ms <= max(wall, default=0) * 1.5:
        _deadline(ax, deadline_ms)
    else:
        ax.text(
            0.98, 0.95, f"deadline {deadline_ms:.0f} ms (off scale →)", transform=ax.transAxes,
            ha="right", va="top", color=DEADLINE_COLOR,
        )  # fmt: skip
    _style(ax, f"End-to-end latency (n={len(wall)})", "latency per question [ms]", "questions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=9, framealpha=0.9)


def _component_bars(ax: Axes, rows: Sequence[Row]) -> None:
    means = [_mean([float(r[f"{c}_ms"]) for r in rows]) for c in COMPONENTS]
    stds = [_std([float(r[f"{c}_ms"]) for r in rows]) for c in COMPONENTS]
    total = _mean([float(r["total_ms"]) for r in rows]) or 1.0
    bars = ax.bar(COMPONENTS, means, yerr=stds, capsize=4, color=[COLORS[c] for c in COMPONENTS], alpha=0.85)
    top = max((m + s for m, s in zip(means, stds, strict=True)), default=1.0) or 1.0
    for bar, mean, std in zip(bars, means, stds, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2, mean + std + top * 0.02,
            f"{mean:.1f} ms\n{_share(mean / total)}", ha="center", va="bottom", fontsize=9,
        )  # fmt: skip
    ax.set_ylim(0, top * 1.2)
    _style(ax, "Mean time per component per question (± std, % of total)", "", "ms")
    ax.tick_params(axis="x", labelsize=9)


def _deadline(ax: Axes, deadline_ms: float) -> None:
    ax.axvline(deadline_ms, color=DEADLINE_COLOR, linestyle="--", linewidth=2, label=f"deadline {deadline_ms:.0f} ms")


def _share(x: float) -> str:
    return "<1%" if 0 < x < 0.005 else f"{x:.0%}"


def _cdf(ax: Axes, wall: Sequence[float], deadline_ms: float) -> None:
    ordered = sorted(wall)
    n = len(ordered)
    ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", color=ARGO_COLOR, linewidth=2)
    for q, style in ((95, "--"), (99, ":")):
        value = percentile(ordered, q)
        ax.axvline(value, color="black", linestyle=style, linewidth=1.5, label=f"p{q} {value:.0f} ms")
    if deadline_ms <= max(ordered, default=0) * 1.5:
        _deadline(ax, deadline_ms)
    met = sum(v <= deadline_ms for v in ordered) / n if n else 0.0
    ax.set_ylim(0, 1.05)
    _style(ax, f"CDF of end-to-end latency ({met:.0%} within the deadline)", "latency [ms]", "share of questions")
    ax.legend(loc="lower right", fontsize=9)


def _component_boxes(ax: Axes, rows: Sequence[Row]) -> None:
    data, labels, colors = [], [], []
    for c in COMPONENTS:
        values = [float(r[f"{c}_ms"]) for r in rows if float(r[f"{c}_ms"]) > 0]
        if values:
            data.append(values)
            labels.append(f"{c}\n(n={len(values)})")
            colors.append(COLORS[c])
    if data:
        box = ax.boxplot(data, patch_artist=True, widths=0.6)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        for patch, color in zip(box["boxes"], colors, strict=True):
            patch.set_facecolor(color)
            patch.set_alpha(0.6)
        ax.set_yscale("log")
    _style(ax, "Per-component time per question (questions where it ran; log scale)", "", "ms (log)")
    ax.tick_params(axis="x", labelsize=9)


def _versus_totals(ax: Axes, argo: Sequence[Row], baseline: Sequence[Row], deadline_ms: float) -> None:
    a = [float(r["total_ms"]) for r in argo]
    b = [float(r["total_ms"]) for r in baseline]
    names = ["ARGO xApp", "HF generate\n(seed way, no deadline)"]
    means = [max(_mean(a), 1e-3), max(_mean(b), 1e-3)]
    p95 = [percentile(a, 95), percentile(b, 95)]
    ax.bar(names, means, color=[ARGO_COLOR, BASELINE_COLOR], alpha=0.85, width=0.5)
    ax.scatter([0, 1], p95, marker="_", s=1500, linewidths=2.5, color="black", zorder=3, label="p95")
    for x, mean in enumerate(means):
        # Inside the bar (log scale: a third of its height) so the p95 tick never covers the value.
        ax.text(x, mean / 3, f"mean\n{mean:,.0f} ms", ha="center", va="center", fontsize=10, color="white",
                fontweight="bold")  # fmt: skip
    ax.axhline(deadline_ms, color=DEADLINE_COLOR, linestyle="--", linewidth=2, label=f"deadline {deadline_ms:.0f} ms")
    ax.set_yscale("log")
    ratio = means[1] / means[0]
    _style(ax, f"Mean per question: baseline / ARGO = {ratio:,.1f}x", "", "ms (log)")
    ax.set_ylim(min([*means, deadline_ms]) / 10, max([*p95, *means, deadline_ms]) * 4)
    ax.legend(loc="upper left", fontsize=9, markerscale=0.4)


def _versus_components(ax: Axes, argo: Sequence[Row], baseline: Sequence[Row]) -> None:
    shown = ("decomposer", "retriever", "reasoner", "synthesizer")
    width = 0.38
    xs = range(len(shown))
    positive: list[float] = []
    for offset, rows, color, label in (
        (-width / 2, argo, ARGO_COLOR, "ARGO xApp"),
        (width / 2, baseline, BASELINE_COLOR, "HF generate"),
    ):
        means = [_mean([float(r[f"{c}_ms"]) for r in rows]) for c in shown]
        positive += [m for m in means if m > 0]
        ax.bar([x + offset for x in xs], means, width, color=color, alpha=0.85, label=label)
        for x, m in zip(xs, means, strict=True):
            text = "not run" if m <= 0 else (f"{m:,.0f}" if m >= 1 else f"{m:.2f}")
            y = m * 1.15 if m > 0 else min(positive or [1.0]) / 2
            ax.text(x + offset, y, text, ha="center", va="bottom", fontsize=8, rotation=0)
    ax.set_xticks(list(xs), shown)
    ax.set_yscale("log")
    if positive:
        ax.set_ylim(min(positive) / 5, max(positive) * 8)
    _style(ax, "Mean ms per component per question (log scale)", "", "ms (log)")
    ax.legend(loc="upper left", fontsize=9, ncol=2)


# ---- accuracy -------------------------------------------------------------------------------------------


def plot_accuracy(summary: Sequence[Row], path: Path, *, title: str) -> bool:
    """Accuracy by strategy and difficulty (majority baseline marked), and accuracy against mean time.
    False: skipped (no matplotlib)."""
    if _skipped(path):
        return False
    strategies = list(dict.fromkeys(str(r["strategy"]) for r in summary))
    groups = list(dict.fromkeys(str(r["difficulty"]) for r in summary if r["difficulty"] != "all")) + ["all"]
    by = {(str(r["strategy"]), str(r["difficulty"])): r for r in summary}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6.2), gridspec_kw={"width_ratios": [3, 2]})

    width = 0.8 / max(len(strategies), 1)
    cmap = plt.get_cmap("tab10")
    for si, strategy in enumerate(strategies):
        xs, ys = [], []
        for gi, group in enumerate(groups):
            row = by.get((strategy, group))
            if row is None:
                continue
            xs.append(gi - 0.4 + width * (si + 0.5))
            ys.append(float(row["accuracy"]))
        bars = ax1.bar(xs, ys, width * 0.95, color=cmap(si % 10), label=strategy, alpha=0.9)
        for bar, y in zip(bars, ys, strict=True):
            ax1.text(bar.get_x() + bar.get_width() / 2, y + 0.01, f"{y:.0%}", ha="center", fontsize=8)
    for gi, group in enumerate(groups):
        row = by.get((strategies[0], group)) if strategies else None
        if row is None:
            continue
        base = float(row["majority_baseline"])
        ax1.hlines(base, gi - 0.45, gi + 0.45, colors="black", linestyles="--", linewidth=2,
                   label="majority baseline" if gi == 0 else None)  # fmt: skip
    ax1.set_xticks(range(len(groups)), [_group_label(g, by, strategies) for g in groups])
    ax1.set_ylim(0, 1.12)
    ax1.set_yticks([i / 5 for i in range(6)])
    ax1.yaxis.set_major_formatter(PercentFormatter(1.0))
    _style(ax1, "Accuracy by strategy and difficulty", "", "accuracy")
    ax1.legend(loc="upper left", fontsize=9, ncol=min(len(strategies) + 1, 4))

    for si, strategy in enumerate(strategies):
        row = by.get((strategy, "all"))
        if row is None:
            continue
        x, y = float(row["mean_ms"]), float(row["accuracy"])
        ax2.scatter([x], [y], s=90, color=cmap(si % 10), zorder=3)  # named on the point, not in a legend
        ax2.annotate(strategy, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if strategies and (strategies[0], "all") in by:
        base = float(by[(strategies[0], "all")]["majority_baseline"])
        ax2.axhline(base, color="black", linestyle="--", linewidth=1.5, label=f"majority baseline {base:.0%}")
    ax2.set_xscale("log")
    times = [float(r["mean_ms"]) for r in summary if r["difficulty"] == "all" and float(r["mean_ms"]) > 0]
    if times:
        ax2.set_xlim(min(times) / 2, max(times) * 2)
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax2.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if f"{v:.0f}"[0] in "25" else ""))
    ax2.set_ylim(0, 1.0)
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    _style(ax2, "Accuracy against mean time per question", "mean time per question [ms] (log)", "accuracy")
    ax2.legend(loc="lower right", fontsize=9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _group_label(group: str, by: Mapping[tuple[str, str], Row], strategies: Sequence[str]) -> str:
    row = by.get((strategies[0], group)) if strategies else None
    if row is None:
        return group
    return f"{group}\nn={row['n']}, majority {float(row['majority_baseline']):.0%}"
