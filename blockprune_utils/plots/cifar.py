"""Tables, plots and captions of the ResNet18 / CIFAR-10 study, each from its result
rows (the DataFrame of :func:`blockprune_utils.studies.cifar.run_study` or
:func:`~blockprune_utils.studies.cifar.load_results`; ``layer_density`` as dicts).

Round 0 is the unpruned baseline; round r the model after r pruning steps and the
retraining that follows.  Accuracies are drawn in percent, densities on a log axis
from dense (left) to sparse (right).  Lines that may coincide (the same round 0 for
every k, equal accuracies) get their own marker and dash pattern and a small
horizontal offset, so none hides another.  With several seeds a line is their mean
and its band one standard deviation.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from ..studies.cifar.config import AUTHORS_README, HEAD_LAYERS
from ..studies.cifar.export import flat_frame
from .common import density_axis

TICKS = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)  # round 0 (dense) is at 1.0
MEASURES = {"test_acc": "after retraining (last epoch)",
            "test_acc_best_epoch": "best epoch on test (authors' selection)",
            "test_acc_pruned": "right after pruning"}
MARKERS = ("o", "s", "^", "D", "v", "P")
DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 2)))
DODGE = 0.035  # relative horizontal offset between neighbouring lines on the log density axis


def figure_name(base: str, profile: str) -> str:
    """``cifar_<base>`` for the paper profile, ``cifar_<base>_<profile>`` otherwise."""
    return f"cifar_{base}" if profile == "paper" else f"cifar_{base}_{profile}"


def _k_label(k) -> str:
    return "k=1 (element-wise)" if int(k) == 1 else f"k={int(k)} blocks"


def main_k(df: pd.DataFrame) -> int:
    """The block size A is shown at: the authors' k = 2 when there are its rows."""
    ks = sorted(int(k) for k in set(df.loc[df["experiment"] == "A", "k"]))
    return 2 if 2 in ks or not ks else ks[0]


def _values(rows: pd.DataFrame, col: str) -> list:
    return sorted(set(str(v) for v in rows[col].dropna())) if col in rows else []


def provenance_line(rows: pd.DataFrame, profile: str) -> str:
    """Data set, profile, seeds, device and commit of the rows, as one line."""
    seeds = sorted(int(s) for s in set(rows["seed"]))
    return (f"{', '.join(_values(rows, 'data_source'))} · profile {profile} · seeds {seeds} · "
            f"{', '.join(_values(rows, 'device'))} · commit {', '.join(_values(rows, 'commit'))}")


def _label(fig, rows: pd.DataFrame, profile: str) -> None:
    fig.suptitle(provenance_line(rows, profile), fontsize=9, color="0.3", y=1.0)


def _percent_log_yaxis(ax) -> None:
    """A log-scaled y axis of percentages with plain tick labels (100, 50, 20, ...)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([100, 70, 50, 30, 20, 10, 5, 3, 2, 1, 0.5]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _lines(ax, long: pd.DataFrame, by: str, order, x: str = "density", y: str = "acc %") -> None:
    """One line per value of ``by`` (mean over seeds per round, a band of one sd),
    each with its own marker and dashes, dodged sideways around its true x."""
    n = len(order)
    for i, (key, colour) in enumerate(zip(order, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)):
        d = long[long[by] == key].groupby("round").agg(x=(x, "mean"), m=(y, "mean"), sd=(y, "std")).sort_index()
        if d.empty:
            continue
        xs = d["x"] * (1 + DODGE) ** (i - (n - 1) / 2)
        ax.plot(xs, d["m"], marker=MARKERS[i % len(MARKERS)], linestyle=DASHES[i % len(DASHES)], color=colour,
                markerfacecolor="none" if i % 2 else colour, markersize=7 - i % 3, label=str(key))
        if d["sd"].notna().any():
            ax.fill_between(xs, d["m"] - d["sd"].fillna(0), d["m"] + d["sd"].fillna(0), color=colour, alpha=0.15)


# ------------------------------------------------------------------------- tables
def table_a(df: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """Experiment A at block size ``k`` (default :func:`main_k`) per round: head density
    and test accuracies (percent; the mean over seeds, with its sd after retraining)."""
    a = df[(df["experiment"] == "A") & (df["k"] == (main_k(df) if k is None else k))]
    cols = {"density": "head density %", "test_acc_pruned": "acc after pruning %",
            "test_acc": "acc after retraining %", "test_acc_best_epoch": "best-epoch acc % (authors' selection)"}
    out = 100 * a[["round", *cols]].set_index("round").astype(float).groupby("round").mean().rename(columns=cols)
    if a["seed"].nunique() > 1:
        out.insert(3, "sd (retrained)", 100 * a.groupby("round")["test_acc"].std())
    out.insert(0, "seeds", a.groupby("round")["seed"].nunique())
    return out.round(2).reset_index()


def table_a_ks(df: pd.DataFrame) -> pd.DataFrame:
    """Experiment A: test accuracy after retraining (percent, mean over seeds) per round and k."""
    a = df[df["experiment"] == "A"].copy()
    a["label"] = a["k"].map(_k_label)
    acc = a.pivot_table(index="round", columns="label", values="test_acc", aggfunc="mean") * 100
    acc.insert(0, "head density % (k=2)", a[a["k"] == main_k(df)].groupby("round")["density"].mean() * 100)
    return acc.round(2)


def table_b(df: pd.DataFrame) -> pd.DataFrame:
    """Experiment B: test accuracy (percent) per round and k, with the density reached."""
    b = df[df["experiment"] == "B"].copy()
    b["label"] = b["k"].map(_k_label)
    acc = b.pivot_table(index="round", columns="label", values="test_acc", aggfunc="mean") * 100
    acc.insert(0, "density % (pruned layers)", b.groupby("round")["density"].mean() * 100)
    return acc.round(2)


# -------------------------------------------------------------------------- plots
def plot_head_pruning(df: pd.DataFrame, reference: bool = False, profile: str = "paper"):
    """A at the authors' k: test accuracy vs head density (left) and per-layer density
    per round (right).  ``reference`` marks the two numbers of the authors' README."""
    k = main_k(df)
    a = df[(df["experiment"] == "A") & (df["k"] == k)]
    long = a.melt(id_vars=["density", "round", "seed"], value_vars=list(MEASURES), var_name="measure", value_name="acc")
    long = long.dropna(subset=["acc"])
    long["acc %"] = 100 * long["acc"].astype(float)
    long["measure"] = long["measure"].map(MEASURES)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    _lines(axes[0], long, "measure", [m for m in MEASURES.values() if m in set(long["measure"])])
    lo = a["density"].min()
    if reference:
        ref = 1 - AUTHORS_README["pruned_head_sparsity"]
        axes[0].scatter([1.0, ref], [100 * AUTHORS_README["unpruned_acc"], 100 * AUTHORS_README["pruned_acc"]],
                        marker="*", s=160, color="black", zorder=5, label="authors' README (their CIFAR-10 run)")
        lo = min(lo, ref)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("test accuracy %")
    density_axis(axes[0], lo, 1.0, label="head density (fraction of head weights kept)", ticks=TICKS)
    axes[0].set_title(f"A: FC head block-pruned (k={k}), trunk frozen", fontsize=11)
    dens = pd.DataFrame([{"round": r, "layer": layer, "density %": 100 * d}
                         for r, ld in zip(a["round"], a["layer_density"]) for layer, d in (ld or {}).items()])
    dens = dens.groupby(["layer", "round"], as_index=False)["density %"].mean()
    for i, layer in enumerate(sorted(set(dens["layer"]))):
        d = dens[dens["layer"] == layer]
        axes[1].plot(d["round"] + 0.12 * (i - 0.5), d["density %"], marker=MARKERS[i], linestyle=DASHES[i],
                     markerfacecolor="none" if i else None, label=layer)
    axes[1].legend(fontsize=8)
    _percent_log_yaxis(axes[1])
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xlabel("round (0 = unpruned)")
    axes[1].set_ylabel("density %")
    axes[1].set_title("A: per-layer density per round (p=0.2 of the surviving blocks)", fontsize=11)
    _label(fig, a, profile)
    fig.tight_layout()
    return fig


def plot_by_k(df: pd.DataFrame, experiment: str = "B", profile: str = "paper"):
    """Test accuracy vs density of the pruned layers, one line per k; after retraining
    (left) and right after pruning (right).  ``experiment`` B (convolutions) or A (head)."""
    e = df[df["experiment"] == experiment].copy()
    e["granularity"] = e["k"].map(_k_label)
    order = [_k_label(k) for k in sorted(e["k"].unique())]
    what = "convolutions" if experiment == "B" else "FC head"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for ax, col, title in [(axes[0], "test_acc", "after retraining"), (axes[1], "test_acc_pruned", "right after pruning")]:
        d = e.dropna(subset=[col]).copy()
        d["acc %"] = 100 * d[col].astype(float)
        _lines(ax, d, "granularity", order)
        ax.legend(fontsize=8)
        density_axis(ax, e["density"].min(), 1.0, label=f"density of the pruned layers ({what})", ticks=TICKS)
        ax.set_title(f"{experiment}: {what} block-pruned, {title}", fontsize=11)
    axes[0].set_ylabel("test accuracy %")
    _label(fig, e, profile)
    fig.tight_layout()
    return fig


def plot_conv_pruning(df: pd.DataFrame, profile: str = "paper"):
    """B: test accuracy vs density of the pruned layers, one line per k."""
    return plot_by_k(df, "B", profile)


def plot_head_blocks(blocks: pd.DataFrame, rows: pd.DataFrame | None = None, profile: str = "paper"):
    """The pruned head matrices at block resolution (k = 2 when present, lowest seed):
    surviving blocks coloured by their score (mean |w|, one colour scale for both),
    pruned blocks white."""
    k = 2 if (blocks["k"] == 2).any() else int(blocks["k"].min())
    blocks = blocks[blocks["k"] == k]
    blocks = blocks[blocks["seed"] == blocks["seed"].min()]
    layers = [name for name in HEAD_LAYERS if name in set(blocks["layer"])]
    norm = Normalize(float(blocks["score"].min()), float(blocks["score"].max()))
    fig, axes = plt.subplots(len(layers) + 1, 1, figsize=(11, 7.8),
                             gridspec_kw={"height_ratios": [4, 1.1][: len(layers)] + [0.12]})
    im = None
    for ax, layer in zip(axes[:-1], layers):
        d = blocks[blocks["layer"] == layer]
        rows_n, cols = int(d["rows"].iloc[0]), int(d["cols"].iloc[0])
        grid = np.full((math.ceil(rows_n / k), math.ceil(cols / k)), np.nan)
        grid[d["block_row"].to_numpy(), d["block_col"].to_numpy()] = d["score"].to_numpy()
        im = ax.imshow(grid, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest",
                       extent=(0, cols, rows_n, 0))
        ax.set_title(f"{layer}: {rows_n}x{cols}, k={k}, density {100 * d['density'].iloc[0]:.1f}% after round "
                     f"{int(d['round'].iloc[0])} ({len(d)} blocks kept; seed {int(d['seed'].iloc[0])})", fontsize=10)
        ax.grid(False)
        ax.set_xlabel("input feature")
        ax.set_ylabel("output unit")
    fig.colorbar(im, cax=axes[-1], orientation="horizontal", label="block score (mean |w|)")
    if rows is not None:
        _label(fig, rows[rows["experiment"] == "A"], profile)
    fig.tight_layout()
    return fig


def render(fig, base: str, res, rows: pd.DataFrame, source: str, data=None) -> None:
    """Save figure ``base`` of the result set ``res`` (drawn from ``rows``; its table
    ``data``, default the rows) with caption and provenance, then show and close it."""
    from IPython.display import display

    from ..infra.figures import save_figure

    save_figure(fig, figure_name(base, res.profile), data=flat_frame(rows) if data is None else data,
                caption=caption(base, res.rows, res.profile), dataset=res.source, seeds=res.seeds, device=res.device,
                source=source, profile=res.profile, runs=rows)
    display(fig)
    plt.close(fig)


# ----------------------------------------------------------------------- captions
def caption(base: str, rows: pd.DataFrame, profile: str) -> str:
    """The caption of figure ``base`` (``head_pruning``, ``head_ks``, ``conv_pruning``
    or ``head_blocks``), with the settings read off the result rows."""
    a = rows[rows["experiment"] == "A"]
    tail = (f" Data: {', '.join(_values(rows, 'data_source'))}. Profile {profile}; seeds "
            f"{sorted(int(s) for s in set(rows['seed']))}; device {', '.join(_values(rows, 'device'))}; result rows "
            f"made at commit {', '.join(_values(rows, 'commit'))}. Lines that coincide are offset slightly sideways.")
    frozen = ("the head retrained on cached features of the frozen trunk" if profile == "cpu"
              else "convolutions and BN frozen, the head retrained")
    if base == "head_pruning":
        return (f"Experiment A (the authors' set-up): ResNet18's FC head (head.0 300x512, head.2 10x300) block-pruned "
                f"with k={main_k(rows)}, {int(a['round'].max())} rounds of p=0.2 per layer, {frozen} after each round; "
                f"test accuracy vs head density (log axis; round 0 = unpruned), and per-layer density per round." + tail)
    if base == "head_ks":
        ks = sorted(int(k) for k in set(a["k"]))
        return (f"Experiment A at every block size: the FC head block-pruned with k in {ks} (k=1: element-wise), "
                f"{int(a['round'].max())} rounds of p=0.2 per layer, {frozen} after each round; test accuracy vs "
                f"head density after retraining and right after pruning." + tail)
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
        return ("Experiment A: surviving blocks of the ResNet18 head matrices after the last pruning round (k=2, lowest "
                "seed), coloured by block score (mean |w|); white = pruned." + tail)
    raise ValueError(f"no caption for {base!r}")
