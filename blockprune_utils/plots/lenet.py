"""Seaborn plots of the LeNet study, each from the tidy results DataFrame of
:func:`blockprune_utils.studies.lenet.run_study` (results -> DataFrame -> plot).

Every function returns ``(figure, table)``: the matplotlib figure and the tidy
table it draws, which :func:`blockprune_utils.infra.figures.save_figure` stores as the
figure's CSV.  Accuracies are drawn in percent, densities on a log axis that runs
from dense (left) to sparse (right); lines are means over seeds, bands +-1 sd.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..models import LENET_LAYERS as LAYERS
from ..studies.lenet.summary import nearest_round
from .common import density_axis

VARIANT_LABELS = {
    "block": "block pruning + retrain",
    "random_retrain": "random block mask + retrain",
    "random_scratch": "random block mask, trained from scratch",
}


def baseline_of(df: pd.DataFrame, metric: str = "test_acc") -> tuple[float, float] | None:
    """The dense baseline's mean and sd over seeds, in percent (None without baseline rows)."""
    base = df.loc[df["variant"] == "baseline", metric] * 100
    if base.empty:
        return None
    return float(base.mean()), float(base.std() if len(base) > 1 else 0.0)


def _baseline_line(ax, baseline: tuple[float, float] | None) -> None:
    if baseline is None:
        return
    m, s = baseline
    ax.axhline(m, color="0.3", ls="--", lw=1, label=f"dense baseline ({m:.2f}%)")
    if s > 0:
        ax.axhspan(m - s, m + s, color="0.5", alpha=0.15, lw=0)


def _baseline_band(ax, df: pd.DataFrame, metric: str = "test_acc") -> None:
    _baseline_line(ax, baseline_of(df, metric))


def dense_control_of(df: pd.DataFrame, metric: str = "test_acc") -> tuple[float, float, int] | None:
    """The dense control at its last round (the dense network retrained as long as the
    pruned ones): mean and sd over seeds in percent, and its extra epochs."""
    ctrl = df[df["variant"] == "dense_control"]
    if ctrl.empty:
        return None
    last = ctrl[ctrl["round"] == ctrl["round"].max()][metric] * 100
    return float(last.mean()), float(last.std() if len(last) > 1 else 0.0), int(ctrl.groupby("seed")["epochs"].sum().iloc[0])


def _dense_control_line(ax, control: tuple[float, float, int] | None) -> None:
    if control is None:
        return
    m, s, epochs = control
    ax.axhline(m, color="tab:green", ls=":", lw=1.2, label=f"dense, +{epochs} epochs (equal training, {m:.2f}%)")
    if s > 0:
        ax.axhspan(m - s, m + s, color="tab:green", alpha=0.12, lw=0)


def _dense_control_band(ax, df: pd.DataFrame, metric: str = "test_acc") -> None:
    _dense_control_line(ax, dense_control_of(df, metric))


def _with_density(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``density``: the mean total density of their (variant, k, round)
    (edge blocks make it differ by a few 1e-4 between seeds), and ``acc`` in %."""
    out = df.copy()
    out["density"] = out.groupby(["variant", "k", "round"])["density_total"].transform("mean")
    out["acc"] = out["test_acc"] * 100
    return out


def accuracy_vs_density(df: pd.DataFrame, variant: str = "block", ax=None):
    """Test accuracy against total weight density, one line per block size k."""
    sub = _with_density(df[df["variant"] == variant])
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4.5))
    sub = sub.assign(k=sub["k"].astype(int))
    palette = sns.color_palette("viridis", n_colors=sub["k"].nunique())
    sns.lineplot(data=sub, x="density", y="acc", hue="k", palette=palette, marker="o", markersize=4,
                 errorbar="sd", ax=ax)
    _baseline_band(ax, df)
    _dense_control_band(ax, df)
    density_axis(ax, sub["density"].min(), sub["density"].max())
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{VARIANT_LABELS.get(variant, variant)}: accuracy vs density")
    ax.legend(title="block size k", fontsize=8, title_fontsize=9)
    table = sub.groupby(["k", "round"]).agg(density=("density", "mean"), acc_mean=("acc", "mean"),
                                            acc_sd=("acc", "std"), n_seeds=("seed", "nunique")).reset_index()
    return fig, table


def pick_rounds(df: pd.DataFrame, targets: Sequence[float], variant: str = "block") -> dict[float, int]:
    """For each target density the round whose mean density is nearest (log scale)."""
    return {t: nearest_round(df, t, variant) for t in targets}


def accuracy_vs_k(df: pd.DataFrame, targets: Sequence[float] = (0.10, 0.05, 0.029), ax=None):
    """Test accuracy against block size k at a few fixed densities (the nearest round):
    the table of those rounds, drawn by :func:`draw_accuracy_vs_k`."""
    block = _with_density(df[df["variant"] == "block"])
    rounds = pick_rounds(df, targets)
    parts = []
    for t, r in rounds.items():
        rows = block[block["round"] == r].copy()
        rows["target"] = t
        rows["at"] = f"~{100 * rows['density'].mean():.1f}% (round {r})"
        parts.append(rows)
    sub = pd.concat(parts, ignore_index=True).drop_duplicates(["k", "round", "seed"])
    table = sub.groupby(["at", "round", "k"]).agg(density=("density", "mean"), acc_mean=("acc", "mean"),
                                                 acc_sd=("acc", "std"), n_seeds=("seed", "nunique")).reset_index()
    return draw_accuracy_vs_k(table, baseline_of(df), dense_control_of(df), ax=ax), table


def draw_accuracy_vs_k(table: pd.DataFrame, baseline=None, control=None, ax=None):
    """One line per density (``table``: at, round, k, acc_mean, acc_sd), with the dense
    baseline's and the dense control's bands."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.2))
    order = table.sort_values("round")["at"].drop_duplicates().tolist()
    for at, color in zip(order, sns.color_palette("rocket", n_colors=len(order))):
        g = table[table["at"] == at].sort_values("k")
        ax.plot(g["k"], g["acc_mean"], marker="o", color=color, label=at)
        sd = g["acc_sd"].fillna(0)
        ax.fill_between(g["k"], g["acc_mean"] - sd, g["acc_mean"] + sd, color=color, alpha=0.2, lw=0)
    _baseline_line(ax, baseline)
    _dense_control_line(ax, control)
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_xlabel("block size k (1 = fine-grained)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs block size at fixed density")
    ax.legend(title="density", fontsize=8, title_fontsize=9)
    return fig


def random_controls(df: pd.DataFrame, ks: Sequence[int] | None = None):
    """Block pruning vs the random-mask controls, one panel per k."""
    variants = [v for v in VARIANT_LABELS if v in set(df["variant"])]
    sub = _with_density(df[df["variant"].isin(variants)])
    ks = sorted(sub["k"].unique()) if ks is None else list(ks)
    ncol = min(3, len(ks))
    nrow = math.ceil(len(ks) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.3 * ncol, 3.4 * nrow), sharey=True, squeeze=False)
    sub = sub.assign(method=sub["variant"].map(VARIANT_LABELS))
    order = [VARIANT_LABELS[v] for v in variants]
    for ax, k in zip(axes.flat, ks):
        rows = sub[sub["k"] == k]
        sns.lineplot(data=rows, x="density", y="acc", hue="method", hue_order=order, style="method", style_order=order,
                     markers=True, dashes=False, errorbar="sd", ax=ax, legend=ax is axes.flat[0], markersize=5)
        _baseline_band(ax, df)
        density_axis(ax, sub["density"].min(), sub["density"].max(), label="density")
        ax.set_title(f"k = {k}")
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[len(ks):]:
        ax.set_visible(False)
    if axes.flat[0].get_legend() is not None:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        axes.flat[0].get_legend().remove()
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("block pruning vs random block masks with the same per-layer block counts")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    table = sub.groupby(["variant", "k", "round"]).agg(density=("density", "mean"), acc_mean=("acc", "mean"),
                                                      acc_sd=("acc", "std"), n_seeds=("seed", "nunique")).reset_index()
    return fig, table


def weight_matrices(weights: pd.DataFrame, zoom: int = 60, zoom_col: int = 360, title: str = ""):
    """The surviving weights (black) of fc1, fc2, fc3 for each k, from the tidy
    table of :func:`blockprune_utils.studies.lenet.weight_frame`, plus a ``zoom`` x
    ``zoom`` window of fc1 (rows 0.., input columns ``zoom_col``.., i.e. pixels of
    the middle image rows) where single blocks are visible.  Panels are stretched
    to a common height (fc3 is 10 x 100)."""
    ks = sorted(weights["k"].unique())
    panels = list(LAYERS) + ["zoom"]
    fig, axes = plt.subplots(len(ks), 4, figsize=(16, 2.4 * max(len(ks), 1) + 0.9), squeeze=False,
                             gridspec_kw={"width_ratios": [784, 300, 170, 170]})
    for i, k in enumerate(ks):
        wk = weights[weights["k"] == k]
        for j, name in enumerate(panels):
            ax = axes[i, j]
            layer = "fc1" if name == "zoom" else name
            wl = wk[wk["layer"] == layer]
            shape = (int(wl["rows"].iloc[0]), int(wl["cols"].iloc[0])) if len(wl) else (1, 1)
            img = np.zeros(shape, dtype=np.uint8)
            img[wl["row"].to_numpy(), wl["col"].to_numpy()] = 1
            if name == "zoom":
                img = img[:zoom, zoom_col:zoom_col + zoom]
            ax.imshow(img, cmap="Greys", interpolation="nearest", aspect="auto", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            dens = img.mean() if name == "zoom" else len(wl) / (shape[0] * shape[1])
            label = f"fc1 zoom [:{zoom}, {zoom_col}:{zoom_col + zoom}]" if name == "zoom" else f"{name} {shape[0]}x{shape[1]}"
            ax.set_title(f"{label}\n{100 * dens:.1f}% kept", fontsize=10)  # two lines: the narrow panels' titles fit
            if j == 0:
                ax.set_ylabel(f"k = {k}", fontsize=12)
    fig.suptitle(title or "pruned weight matrices (black = kept weight)")
    fig.tight_layout()
    table = (weights.assign(kept=1).groupby(["k", "layer"]).agg(kept=("kept", "sum"), rows=("rows", "first"),
                                                                  cols=("cols", "first")).reset_index())
    table["density"] = table["kept"] / (table["rows"] * table["cols"])
    return fig, table


def sensitivity(df: pd.DataFrame):
    """Test accuracy when only one layer is pruned (no retraining), per layer and k:
    the table of the sensitivity rows, drawn by :func:`draw_sensitivity`."""
    sub = df[df["variant"] == "sensitivity"].copy()
    sub["acc"] = sub["test_acc"] * 100
    sub = sub.assign(k=sub["k"].astype(int))
    table = sub.groupby(["layer", "k", "target_density"]).agg(acc_mean=("acc", "mean"), acc_sd=("acc", "std"),
                                                              n_seeds=("seed", "nunique")).reset_index()
    return draw_sensitivity(table, baseline_of(df)), table


# Fewer ticks than the other density axes: three panels share the width.
SENSITIVITY_TICKS = (0.8, 0.3, 0.1, 0.03, 0.01)


def draw_sensitivity(table: pd.DataFrame, baseline: tuple[float, float] | None = None):
    """One panel per layer: accuracy (mean ± sd over seeds, from ``table``) against the
    density that layer alone was pruned to, one line per k; ``baseline``: the dense
    baseline's (mean, sd) in percent."""
    ks = sorted(int(k) for k in table["k"].unique())
    fig, axes = plt.subplots(1, len(LAYERS), figsize=(4.6 * len(LAYERS), 3.8), sharey=True)
    palette = dict(zip(ks, sns.color_palette("viridis", n_colors=len(ks))))
    for ax, name in zip(axes, LAYERS):
        rows = table[table["layer"] == name]
        for k in ks:
            g = rows[rows["k"] == k].sort_values("target_density")
            ax.plot(g["target_density"], g["acc_mean"], marker="o", markersize=4, color=palette[k], label=str(k))
            sd = g["acc_sd"].fillna(0)
            ax.fill_between(g["target_density"], g["acc_mean"] - sd, g["acc_mean"] + sd, color=palette[k], alpha=0.15,
                            lw=0)
        _baseline_line(ax, baseline)
        density_axis(ax, table["target_density"].min(), table["target_density"].max(), label=f"{name} density",
                     ticks=SENSITIVITY_TICKS)
        ax.set_title(f"only {name} pruned (no retraining)", fontsize=11)
        ax.set_ylabel("test accuracy (%)")
    # outside the panels, so no curve is covered
    axes[-1].legend(title="k", fontsize=9, title_fontsize=10, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def schedule_scan(df: pd.DataFrame):
    """Validation accuracy of the schedule candidates: the baseline's per epoch (left)
    and block pruning's per round with each retraining candidate (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    tables = []
    for ax, variant, x, xlabel in ((axes[0], "baseline_scan", "round", "epoch"),
                                   (axes[1], "retrain_scan", "round", "pruning round")):
        sub = df[df["variant"] == variant].assign(acc=lambda d: d["val_acc"] * 100)
        if sub.empty:
            ax.set_visible(False)
            continue
        sns.lineplot(data=sub, x=x, y="acc", hue="setting", marker="o", markersize=3, ax=ax, palette="deep")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation accuracy (%)")
        ax.legend(title="schedule", fontsize=8, title_fontsize=9)
        tables.append(sub[["variant", "setting", "round", "k", "val_acc"]])
    axes[0].set_title("baseline: Adam, candidate schedules")
    axes[1].set_title("retraining after each round (k = 4, seed 0)")
    fig.tight_layout()
    return fig, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
