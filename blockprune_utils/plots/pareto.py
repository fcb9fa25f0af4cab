"""Plots of the LeNet budget and accuracy-for-the-time questions: the epochs-per-round
scan, test accuracy against epochs per round (the budget figure) and the Pareto
figure (test accuracy against measured latency).  Each returns ``(figure, table)``,
the table being what the figure draws (saved as its CSV)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter

from ..studies.lenet.pareto import frontier


def _two_and_five(v: float, _pos=None) -> str:
    """A minor tick's label on a log axis: only at 2 and 5 times a power of ten, so
    that neighbouring labels do not overlap."""
    if v <= 0:
        return ""
    lead = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""


def epochs_scan(choice: pd.DataFrame):
    """Mean validation accuracy over the late rounds against epochs per round, one
    line per scanned k and their mean (per learning-rate schedule, where several were
    scanned); the rule's pick marked.  ``choice`` from
    :func:`~blockprune_utils.studies.lenet.budget.epochs_choice`."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    cols = [c for c in choice.columns if c.startswith("val_k")]
    schedules = choice["setting"].str.replace(r"-\d+ep$", "", regex=True)
    several = schedules.nunique() > 1
    for (sched, g), ls in zip(choice.groupby(schedules), ("-", "--", ":", "-.")):
        tag = f" ({sched})" if several else ""
        for c, color in zip(cols, sns.color_palette("tab10", len(cols))):
            ax.plot(g["epochs"], 100 * g[c], marker="o", ls=ls, color=color, label=f"k = {c[5:]}{tag}")
        ax.plot(g["epochs"], 100 * g["mean_val"], color="black", ls=ls, lw=2, marker="s", label=f"mean over k{tag}")
    picked = choice[choice["chosen"]]
    ax.scatter(picked["epochs"], 100 * picked["mean_val"], s=160, facecolors="none", edgecolors="red", lw=2,
               label="the rule's pick", zorder=5)
    epochs = sorted(choice["epochs"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.set_xlabel("retraining epochs per pruning round")
    ax.set_ylabel("validation accuracy, late rounds (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, choice


def budget(table: pd.DataFrame):
    """Test accuracy at the key rounds against epochs per round, one line per k, one
    panel per (data set, round) (``table`` from
    :func:`~blockprune_utils.studies.lenet.budget.budget_table`)."""
    datasets, rounds = sorted(table["dataset"].unique()), sorted(table["round"].unique())
    nr, nc = max(len(datasets), 1), max(len(rounds), 1)
    fig, axes = plt.subplots(nr, nc, figsize=(5 * nc, 3.4 * nr), squeeze=False)
    palette = dict(zip(sorted(table["k"].unique()), sns.color_palette("viridis", table["k"].nunique())))
    for i, ds in enumerate(datasets):
        for j, r in enumerate(rounds):
            ax, sub = axes[i][j], table[(table["dataset"] == ds) & (table["round"] == r)]
            for k, g in sub.groupby("k"):
                g = g.sort_values("epochs_per_round")
                ax.errorbar(g["epochs_per_round"], 100 * g["acc_mean"], yerr=100 * g["acc_sd"].fillna(0), marker="o",
                            capsize=3, color=palette[k], label=f"k = {k}")
            epochs = sorted(sub["epochs_per_round"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(epochs, [str(e) for e in epochs])
            ax.set_title(f"{ds}, round {r} ({100 * sub['density'].mean():.1f}% kept)")
            ax.set_xlabel("retraining epochs per pruning round")
            ax.set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig, table


def pareto(points: pd.DataFrame, title: str = ""):
    """Test accuracy against latency of the fastest backend, one panel per batch size,
    one line per model family (k, neuron pruning, narrow dense), the frontier dashed."""
    batches = sorted(points["batch"].unique())
    fig, axes = plt.subplots(1, max(len(batches), 1), figsize=(6 * max(len(batches), 1), 4.2), squeeze=False)
    lines = sorted(points["line"].unique(), key=lambda s: (s.startswith("blocks"), s))
    palette = dict(zip(lines, sns.color_palette("tab10", len(lines))))
    for ax, b in zip(axes[0], batches):
        sub = points[points["batch"] == b]
        for line, g in sub.groupby("line"):
            g = g.sort_values("round")
            marker = "*" if line == "dense baseline" else "o"
            ax.plot(g["median_us"], 100 * g["acc_mean"], marker=marker, ms=9 if marker == "*" else 4, lw=1,
                    color=palette[line], label=line)
        front = frontier(sub)
        ax.plot(front["median_us"], 100 * front["acc_mean"], color="black", ls="--", lw=1, label="Pareto frontier")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(f"latency at batch {b} (µs, fastest backend, 1 thread)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{title} batch {b}".strip())
        # the worst models (the sparsest narrow nets) would squash the rest: the axis starts near the 10% quantile,
        # or lower where the frontier's least accurate (fastest) point lies
        low = max(min(sub["acc_mean"].quantile(0.1), front["acc_mean"].min()) * 100 - 1.5, 0)
        ax.set_ylim(low, 100 * sub["acc_mean"].max() + 0.5)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig, points
