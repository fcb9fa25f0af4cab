"""Seaborn plots of the BSR speed benchmark (:mod:`blockprune_utils.bench`).

Every plot function takes the tidy rows (a list of dicts or a DataFrame) and
returns ``(figure, table)``: the figure and the tidy table it draws, which
:func:`blockprune_utils.infra.figures.save_figure` stores as the figure's CSV.
Next to each plot, a ``*_caption(table)`` function words the figure's caption from
that table (what is drawn, at which threads, round and batch sizes).
Densities are drawn on a log axis from dense (left) to sparse (right), speed-ups
on a log axis with a line at 1 (= as fast as dense).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..bench.formats import FORMAT, GROUPS, MODEL_VARIANTS, SPARSE_FORMATS, VARIANT
from .cache import CACHE_METRICS, cache_misses, cache_misses_caption, count_label  # noqa: F401
from .common import as_frame as _df
from .common import density_axis

DENSITY_TICKS = (0.8, 0.3, 0.1, 0.03, 0.01, 0.003)


def _ratio_axis(ax, label: str) -> None:
    ax.set_yscale("log")
    ax.axhline(1, color="0.3", ls="--", lw=1)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(label)


def speedup_vs_density(rows, *, family: str = "lenet", layer: str | None = "fc1", threads: str = "1",
                       formats=SPARSE_FORMATS, x: str = "density"):
    """Speed-up over the best dense format against density: one line per k, one
    panel per (batch, format)."""
    df = _df(rows)
    df = df[(df["family"] == family) & (df["threads_label"] == threads) & df["format"].isin(formats) & df["ok"]]
    if layer is not None:
        df = df[df["layer"] == layer]
    if df.empty:
        raise ValueError(f"no speed-up rows for family={family!r}, layer={layer!r}, threads={threads!r}")
    df = df.assign(k=df["k"].astype(int), label=df["format"].map(lambda f: FORMAT[f].label))
    batches = sorted(df["batch"].unique())
    fmts = [f for f in formats if f in set(df["format"])]
    fig, axes = plt.subplots(len(batches), len(fmts), figsize=(3.3 * len(fmts), 2.8 * len(batches)),
                             sharex=True, sharey=True, squeeze=False)
    palette = dict(zip(sorted(df["k"].unique()), sns.color_palette("viridis", n_colors=df["k"].nunique())))
    style = "layer" if layer is None and df["layer"].nunique() > 1 else None
    for i, b in enumerate(batches):
        for j, f in enumerate(fmts):
            ax = axes[i][j]
            sub = df[(df["batch"] == b) & (df["format"] == f)].sort_values(x)
            sns.lineplot(data=sub, x=x, y="speedup", hue="k", palette=palette, style=style, marker="o", markersize=4,
                         ax=ax, legend=(i == 0 and j == len(fmts) - 1))
            label = "block density" if x == "block_density" else "density"
            density_axis(ax, df[x].min(), df[x].max(), label, ticks=DENSITY_TICKS, margin=1.2)
            _ratio_axis(ax, "speed-up over dense" if j == 0 else "")
            ax.set_title(f"{FORMAT[f].label}, batch {b}", fontsize=9)
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="block size k", fontsize=8)
    what = f"LeNet {layer}" if family == "lenet" and layer else family
    fig.suptitle(f"{what}: speed-up of one product over the fastest dense format ({threads} thread(s))", y=1.0)
    fig.tight_layout()
    cols = ["matrix", "family", "layer", "rows", "cols", "k", "round", "weights", "density", "block_density", "format",
            "batch", "threads_label", "median_ns", "q25_ns", "q75_ns", "dense_format", "dense_ns", "speedup",
            "speedup_same_lib"]
    return fig, df[[c for c in cols if c in df.columns]].reset_index(drop=True)


def _threads(table) -> str:
    return ", ".join(f"{t} thread(s)" for t in sorted(set(table["threads_label"].astype(str))))


def speedup_vs_density_caption(table) -> str:
    """Caption of a :func:`speedup_vs_density` figure, from its table."""
    if set(table["family"]) == {"synthetic"}:
        return ("Speed-up of one product over the fastest dense format for synthetic square matrices with random "
                "k x k blocks, against block density; one line per k (line style: matrix size), per format and batch "
                f"size; {_threads(table)}; medians of interleaved repeats measured in the same run.")
    shapes = sorted({f"{layer} ({r}x{c})" for layer, r, c in zip(table["layer"], table["rows"], table["cols"])})
    return (f"Speed-up of one product Y = W X over the fastest dense format (numpy or torch), LeNet {', '.join(shapes)}, "
            "against density, one line per block size k, per format and batch size; "
            f"{_threads(table)}; medians of interleaved repeats measured in the same run.")


def break_even_density(rows, *, threads: str = "1", group=("family", "layer", "format", "k", "batch")) -> pd.DataFrame:
    """Per (layer, format, k, batch): the density below which the format beats dense.

    Walking from the sparsest measured density upwards, the break-even point is
    interpolated (log density vs log speed-up) where the speed-up first drops below
    1.  ``status``: ``pays`` (a crossing was found), ``always`` (faster than dense at
    every measured density: the value is the densest one measured, a lower bound) or
    ``never`` (slower at every density: the value is NaN)."""
    df = _df(rows)
    df = df[(df["threads_label"] == threads) & df["format"].isin(SPARSE_FORMATS) & df["ok"]]
    out = []
    for key, g in df.groupby(list(group)):
        g = g.groupby("density", as_index=False)["speedup"].median().sort_values("density")
        d, s = g["density"].to_numpy(), g["speedup"].to_numpy()
        if not (s >= 1).any() or s[0] < 1:
            out.append({**dict(zip(group, key)), "break_even": np.nan, "status": "never"})
            continue
        i = int(np.argmax(s < 1)) if (s < 1).any() else len(s)
        if i == len(s):
            out.append({**dict(zip(group, key)), "break_even": float(d[-1]), "status": "always"})
            continue
        ld0, ld1, ls0, ls1 = math.log(d[i - 1]), math.log(d[i]), math.log(s[i - 1]), math.log(s[i])
        t = ls0 / (ls0 - ls1) if ls0 != ls1 else 0.0
        out.append({**dict(zip(group, key)), "break_even": float(math.exp(ld0 + t * (ld1 - ld0))), "status": "pays"})
    return pd.DataFrame(out)


def break_even_map(rows, *, family: str = "lenet", layer: str = "fc1", threads: str = "1", formats=SPARSE_FORMATS):
    """Heat maps (k x batch) of the break-even density, one per format: the table of
    :func:`break_even_density`, drawn by :func:`draw_break_even`."""
    be = break_even_density(rows, threads=threads)
    be = be[(be["family"] == family) & (be["layer"] == layer) & be["format"].isin(formats)]
    if be.empty:
        raise ValueError(f"no break-even rows for {family} {layer}")
    be = complete_break_even(be.assign(threads_label=threads))
    return draw_break_even(be, formats), be


def complete_break_even(be: pd.DataFrame) -> pd.DataFrame:
    """The break-even table of one layer with a row for every (format, k, batch): a
    combination without a measurement gets ``status`` "not measured", and every row
    the ``label`` its cell shows, so that "never" and "not measured" read apart."""
    family, layer, threads = be["family"].iloc[0], be["layer"].iloc[0], be["threads_label"].iloc[0]
    full = pd.MultiIndex.from_product([sorted(set(be["format"])), sorted(set(be["k"])), sorted(set(be["batch"]))],
                                      names=["format", "k", "batch"])
    out = be.set_index(["format", "k", "batch"]).reindex(full).reset_index()
    out = out.assign(family=family, layer=layer, threads_label=threads, status=out["status"].fillna("not measured"))
    out["label"] = [break_even_label(v, st) for v, st in zip(out["break_even"], out["status"])]
    return out[["family", "layer", "format", "k", "batch", "break_even", "status", "label", "threads_label"]]


BREAK_EVEN_LABELS = {"never": "never", "not measured": "n/m"}


def break_even_label(value: float, status: str) -> str:
    """The text of one break-even cell: a density, a lower bound, ``never`` or ``n/m``."""
    if status in BREAK_EVEN_LABELS:
        return BREAK_EVEN_LABELS[status]
    return f"≥{100 * value:.0f}%" if status == "always" else f"{100 * value:.1f}%"


def draw_break_even(be: pd.DataFrame, formats=SPARSE_FORMATS):
    """Draw the break-even table ``be`` (family, layer, format, k, batch, break_even,
    status, threads_label): one heat map per format; a cell where the format never
    beats dense is hatched and says ``never``, a cell that was not measured says ``n/m``."""
    from matplotlib.patches import Rectangle

    fmts = [f for f in formats if f in set(be["format"])]
    ks, batches = sorted(set(be["k"])), sorted(set(be["batch"]))
    fig, axes = plt.subplots(1, len(fmts), figsize=(3.2 * len(fmts), 3.4), squeeze=False)
    vmax = max(0.05, float(np.nanmax(be["break_even"])) if be["break_even"].notna().any() else 0.05)
    for ax, f in zip(axes[0], fmts):
        sub = be[be["format"] == f]
        grid = sub.pivot(index="k", columns="batch", values="break_even").reindex(index=ks, columns=batches)
        status = sub.pivot(index="k", columns="batch", values="status").reindex(index=ks, columns=batches)
        status = status.fillna("not measured")
        labels = np.array([[break_even_label(grid.loc[r, c], status.loc[r, c]) for c in batches] for r in ks], dtype=object)
        sns.heatmap(grid * 100, annot=labels, fmt="", cmap="mako_r", vmin=0, vmax=100 * vmax, cbar=ax is axes[0][-1],
                    cbar_kws={"label": "break-even density (%)"}, ax=ax, linewidths=0.5, linecolor="white",
                    annot_kws={"fontsize": 8})
        for i, r in enumerate(ks):  # seaborn leaves NaN cells blank: label them
            for j, c in enumerate(batches):
                st = status.loc[r, c]
                if st in BREAK_EVEN_LABELS:
                    ax.add_patch(Rectangle((j, i), 1, 1, facecolor="0.93", edgecolor="white", lw=0.5,
                                           hatch="///" if st == "never" else None))
                    ax.text(j + 0.5, i + 0.5, BREAK_EVEN_LABELS[st], ha="center", va="center", fontsize=8, color="0.25")
        ax.set_title(FORMAT[f].label, fontsize=9)
        ax.set_xlabel("batch")
        ax.set_ylabel("block size k" if ax is axes[0][0] else "")
    layers = ", ".join(sorted(set(be["layer"])))
    threads = ", ".join(sorted(str(t) for t in set(be["threads_label"])))
    fig.suptitle(f"LeNet {layers}: density below which the format beats dense ({threads} thread(s)); "
                 "hatched: never, n/m: not measured", y=1.02)
    fig.tight_layout()
    return fig


def break_even_map_caption(table) -> str:
    """Caption of a :func:`break_even_map` figure, from its table."""
    layers = ", ".join(sorted(set(table["layer"])))
    return ("Break-even density (below it the sparse format beats the fastest dense format) of one product with "
            f"LeNet {layers}, per block size k (rows) and batch size (columns), one map per format; {_threads(table)}; "
            "interpolated on log-log axes between the measured rounds. \"never\" (hatched): slower than dense at every "
            "measured density; \"≥x%\": faster at every measured density (x is the densest one); \"n/m\": not measured.")


def storage_vs_density(rows, layer: str = "all"):
    """Bytes of CSR and BSR storage against density (one line per k; dense dotted)."""
    df = _df(rows)
    df = df[df["layer"] == layer].assign(k=lambda d: d["k"].astype(int))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sparse = df[df["format"] != "dense"]
    palette = dict(zip(sorted(df["k"].unique()), sns.color_palette("viridis", n_colors=df["k"].nunique())))
    sns.lineplot(data=sparse, x="density", y="bytes", hue="k", style="format", palette=palette, markers=True,
                 dashes={"csr": (2, 2), "bsr": ""}, ax=ax)
    dense = df[df["format"] == "dense"]["bytes"]
    if not dense.empty:
        ax.axhline(float(dense.iloc[0]), color="0.3", ls=":", label="dense")
    density_axis(ax, df["density"].min(), df["density"].max(), ticks=DENSITY_TICKS, margin=1.2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1024:.3g} KiB"))
    ax.set_ylabel("bytes (values + int32 indices)")
    ax.set_title("LeNet-300-100 weights" + (" (fc1+fc2+fc3)" if layer == "all" else f" ({layer})") + ": storage")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig, df.reset_index(drop=True)


def storage_vs_density_caption(table) -> str:
    """Caption of a :func:`storage_vs_density` figure, from its table."""
    what = ("the three LeNet-300-100 weight matrices" if set(table["layer"]) == {"all"}
            else f"the LeNet-300-100 layer {', '.join(sorted(set(table['layer'])))}")
    return (f"Bytes of {what} stored dense, as CSR and as BSR (values + int32 indices, BSR with zero-padded edge "
            "blocks), against total density, one line per block size k.")


# The whole-model variants in their groups (dense, torch modules, lean numpy, numba), one colour per group.
VARIANT_GROUPS = {g: tuple(v.name for v in VARIANT.values() if v.group == g) for g in GROUPS}
K_MARKERS = "os^Dvph"


def model_latency(rows, *, round: int | None = None, threads: str = "1", variants=MODEL_VARIANTS):
    """Whole-model forward latency at one round (default the last): one row per
    variant, grouped and coloured by kind (dense, torch modules, lean numpy, numba),
    one marker per k, log time axis; one panel per batch size; dotted: the fastest
    dense forward."""
    df = _df(rows)
    df = df[(df["threads_label"] == threads) & df["variant"].isin(variants) & df["median_ns"].notna()]
    rnd = int(df["round"].max()) if round is None else round
    df = df[df["round"] == rnd].assign(us=lambda d: d["median_ns"] / 1e3, k=lambda d: d["k"].astype(int))
    if df.empty:
        raise ValueError(f"no whole-model rows at round {rnd}")
    order = [v for g in VARIANT_GROUPS.values() for v in g if v in set(df["variant"])]
    batches, ks = sorted(df["batch"].unique()), sorted(df["k"].unique())
    fig, axes = plt.subplots(1, len(batches), figsize=(5.4 * len(batches), 0.34 * len(order) + 1.9), sharey=True,
                             squeeze=False)
    for ax, b in zip(axes[0], batches):
        sub = df[df["batch"] == b]
        for i, v in enumerate(order):
            s = sub[sub["variant"] == v].sort_values("k")
            color = GROUPS[VARIANT[v].group]
            if len(s):
                ax.plot([s["us"].min(), s["us"].max()], [i, i], color=color, lw=1.2, alpha=0.5)
            for j, k in enumerate(ks):
                ax.scatter(s.loc[s["k"] == k, "us"], [i] * int((s["k"] == k).sum()), marker=K_MARKERS[j % len(K_MARKERS)],
                           color=color, s=28, zorder=3)
        dense = sub[sub["variant"].isin(VARIANT_GROUPS["dense"])]["us"]
        if len(dense):
            ax.axvline(float(dense.min()), color="0.3", ls=":", lw=1)
        for i in np.cumsum([sum(v in order for v in g) for g in VARIANT_GROUPS.values()])[:-1]:
            ax.axhline(i - 0.5, color="0.8", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("forward latency (µs, median; log scale)")
        ax.set_title(f"batch {b}, density {100 * sub['density'].mean():.1f}%", fontsize=10)
    axes[0][0].set_yticks(range(len(order)), [VARIANT[v].label for v in order], fontsize=8)
    for tick, v in zip(axes[0][0].get_yticklabels(), order):
        tick.set_color(GROUPS[VARIANT[v].group])
    axes[0][0].invert_yaxis()
    handles = [plt.Line2D([], [], ls="", marker=K_MARKERS[j % len(K_MARKERS)], color="0.2", label=f"k={k}")
               for j, k in enumerate(ks)]
    handles.append(plt.Line2D([], [], color="0.3", ls=":", label="fastest dense"))
    axes[0][-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.suptitle(f"Pruned LeNet-300-100 forward (round {rnd}, {threads} thread(s))", y=1.0)
    fig.tight_layout()
    cols = ["k", "round", "weights", "density", "batch", "threads_label", "variant", "path", "kernel", "median_ns",
            "q25_ns", "q75_ns", "dense_ns", "speedup", "speedup_vs_best_dense", "speedup_vs_lean_dense", "auto_choice"]
    return fig, df[[c for c in cols if c in df.columns]].reset_index(drop=True)


def model_latency_caption(table) -> str:
    """Caption of a :func:`model_latency` figure, from its table."""
    batches = " and ".join(str(int(b)) for b in sorted(set(table["batch"])))
    return (f"Forward latency of the block-pruned LeNet-300-100 at round {int(table['round'].iloc[0])} "
            f"(~{100 * table['density'].mean():.1f}% density), one row per forward, one marker per block size k: "
            "dense forwards (grey), torch modules from to_bsr_model (blue: torch / scipy BSR, automatic choice), the "
            "lean numpy path (green: scipy CSR / BSR kernels, automatic choice) and the fused numba forwards (orange); "
            f"batch {batches}; {_threads(table)}; medians of interleaved repeats; dotted: the fastest dense forward.")

