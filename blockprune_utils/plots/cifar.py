"""Tables, plots and captions of the ResNet18 / CIFAR-10 study, each from its result
rows (the DataFrame of :func:`blockprune_utils.studies.cifar.run_study` or
:func:`~blockprune_utils.studies.cifar.load_results`; ``layer_density`` as dicts).

Round 0 is the unpruned baseline; round r the model after r pruning steps and the
retraining that follows.  Accuracies are drawn in percent, densities on a log axis
from dense (left) to sparse (right).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from ..studies.cifar.config import AUTHORS_README, HEAD_LAYERS
from .common import density_axis

TICKS = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)  # round 0 (dense) is at 1.0
MEASURES = {"test_acc": "after retraining (last epoch)",
            "test_acc_best_epoch": "best epoch on test (authors' selection)",
            "test_acc_pruned": "right after pruning"}


def figure_name(base: str, profile: str) -> str:
    """``cifar_<base>`` for the paper profile, ``cifar_<base>_<profile>`` otherwise."""
    return f"cifar_{base}" if profile == "paper" else f"cifar_{base}_{profile}"


def _k_label(k) -> str:
    return "k=1 (element-wise)" if int(k) == 1 else f"k={int(k)} blocks"


def _percent_log_yaxis(ax) -> None:
    """A log-scaled y axis of percentages with plain tick labels (100, 50, 20, ...)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([100, 70, 50, 30, 20, 10, 5, 3, 2, 1, 0.5]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


# ------------------------------------------------------------------------- tables
def table_a(df: pd.DataFrame) -> pd.DataFrame:
    """Experiment A per round: head density and test accuracies (percent)."""
    a = df[df["experiment"] == "A"]
    out = a[["seed", "round"]].copy()
    out["head density %"] = 100 * a["density"]
    for col, name in [("test_acc_pruned", "acc after pruning %"), ("test_acc", "acc after retraining %"),
                      ("test_acc_best_epoch", "best-epoch acc % (authors' selection)")]:
        out[name] = 100 * a[col].astype(float)
    return out.round(2).reset_index(drop=True)


def table_b(df: pd.DataFrame) -> pd.DataFrame:
    """Experiment B: test accuracy (percent) per round and k, with the density reached."""
    b = df[df["experiment"] == "B"].copy()
    b["label"] = b["k"].map(_k_label)
    acc = b.pivot_table(index="round", columns="label", values="test_acc", aggfunc="mean") * 100
    acc.insert(0, "density % (pruned layers)", b.groupby("round")["density"].mean() * 100)
    return acc.round(2)


# -------------------------------------------------------------------------- plots
def plot_head_pruning(df: pd.DataFrame, reference: bool = False):
    """A: test accuracy vs head density (left) and per-layer density per round (right).
    ``reference`` marks the two numbers of the authors' README."""
    a = df[df["experiment"] == "A"]
    long = a.melt(id_vars=["density", "round", "seed"], value_vars=list(MEASURES), var_name="measure", value_name="acc")
    long = long.dropna(subset=["acc"])
    long["test accuracy %"] = 100 * long["acc"].astype(float)
    long["measure"] = long["measure"].map(MEASURES)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    sns.lineplot(data=long, x="density", y="test accuracy %", hue="measure", style="measure", markers=True,
                 dashes=False, ax=axes[0])
    lo = a["density"].min()
    if reference:
        ref = 1 - AUTHORS_README["pruned_head_sparsity"]
        axes[0].scatter([1.0, ref], [100 * AUTHORS_README["unpruned_acc"], 100 * AUTHORS_README["pruned_acc"]],
                        marker="*", s=160, color="black", zorder=5, label="authors' README (their CIFAR-10 run)")
        axes[0].legend(fontsize=8)
        lo = min(lo, ref)
    density_axis(axes[0], lo, 1.0, label="head density (fraction of head weights kept)", ticks=TICKS)
    axes[0].set_title("A: FC head block-pruned (k=2), convolutions frozen")
    dens = pd.DataFrame([{"round": r, "layer": layer, "density %": 100 * d}
                         for r, ld in zip(a["round"], a["layer_density"]) for layer, d in (ld or {}).items()])
    sns.lineplot(data=dens, x="round", y="density %", hue="layer", marker="o", ax=axes[1])
    _percent_log_yaxis(axes[1])
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xlabel("round (0 = unpruned)")
    axes[1].set_title("A: per-layer density per round (p=0.2 of the surviving blocks)")
    fig.tight_layout()
    return fig


def plot_conv_pruning(df: pd.DataFrame):
    """B: test accuracy vs density of the pruned layers, one line per k; after
    retraining (left) and right after pruning (right)."""
    b = df[df["experiment"] == "B"].copy()
    b["granularity"] = b["k"].map(_k_label)
    order = [_k_label(k) for k in sorted(b["k"].unique())]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, col, title in [(axes[0], "test_acc", "after retraining"), (axes[1], "test_acc_pruned", "right after pruning")]:
        d = b.dropna(subset=[col]).copy()
        d["test accuracy %"] = 100 * d[col].astype(float)
        sns.lineplot(data=d, x="density", y="test accuracy %", hue="granularity", hue_order=order, marker="o", ax=ax)
        density_axis(ax, b["density"].min(), 1.0, label="density of the pruned layers", ticks=TICKS)
        ax.set_title(f"B: convolutions block-pruned, {title}")
    fig.tight_layout()
    return fig


def plot_head_blocks(blocks: pd.DataFrame):
    """The pruned head matrices at block resolution (the lowest seed): surviving
    blocks coloured by their score (mean |w|), pruned blocks white."""
    layers = [name for name in HEAD_LAYERS if name in set(blocks["layer"])]
    blocks = blocks[blocks["seed"] == blocks["seed"].min()]
    fig, axes = plt.subplots(len(layers), 1, figsize=(11, 7), gridspec_kw={"height_ratios": [4, 1][: len(layers)]})
    for ax, layer in zip(np.atleast_1d(axes), layers):
        d = blocks[blocks["layer"] == layer]
        k, rows, cols = int(d["k"].iloc[0]), int(d["rows"].iloc[0]), int(d["cols"].iloc[0])
        grid = np.full((math.ceil(rows / k), math.ceil(cols / k)), np.nan)
        grid[d["block_row"].to_numpy(), d["block_col"].to_numpy()] = d["score"].to_numpy()
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest", extent=(0, cols, rows, 0))
        ax.set_title(f"{layer}: {rows}x{cols}, k={k}, density {100 * d['density'].iloc[0]:.1f}% "
                     f"after round {int(d['round'].iloc[0])} ({len(d)} blocks kept)")
        ax.grid(False)
        ax.set_xlabel("input feature")
        ax.set_ylabel("output unit")
        fig.colorbar(im, ax=ax, label="block score (mean |w|)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------- captions
def caption(base: str, rows: pd.DataFrame, profile: str) -> str:
    """The caption of figure ``base`` (``head_pruning``, ``conv_pruning`` or
    ``head_blocks``), with the settings read off the result rows."""
    source = ", ".join(sorted(set(rows["data_source"].dropna())))
    tail = f" Data: {source}. Profile {profile}; seeds {sorted(int(s) for s in set(rows['seed']))}."
    if base == "head_pruning":
        a = rows[rows["experiment"] == "A"]
        return (f"Experiment A (the authors' set-up): ResNet18's FC head (head.0 300x512, head.2 10x300) block-pruned "
                f"with k={int(a['k'].iloc[0])}, {int(a['round'].max())} rounds of p=0.2 per layer, convolutions and BN "
                f"frozen, head retrained after each round; test accuracy vs head density (log axis; round 0 = "
                f"unpruned), and per-layer density per round." + tail)
    if base == "conv_pruning":
        b = rows[rows["experiment"] == "B"]
        ks = sorted(int(k) for k in set(b["k"]))
        last = b.sort_values("round")["layer_density"].iloc[-1]
        head = "the FC head pruned too" if any(n.startswith("head.") for n in last) else "the FC head dense"
        return (f"Experiment B (beyond the paper): every ResNet18 conv except the stem, 1x1 shortcuts included, "
                f"block-pruned per layer with k in {ks} (k=1: element-wise), {int(b['round'].max())} rounds, {head}, "
                f"all parameters retrained after each round; test accuracy vs density of the pruned layers, after "
                f"retraining and right after pruning." + tail)
    if base == "head_blocks":
        return ("Experiment A: surviving blocks of the ResNet18 head matrices after the last pruning round, coloured by "
                "block score (mean |w|); white = pruned." + tail)
    raise ValueError(f"no caption for {base!r}")
