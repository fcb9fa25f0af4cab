"""The cachegrind figure of the BSR study: instructions and simulated cache misses per
product, one bar per kernel, from the cache rows (results -> DataFrame -> plot)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..bench.formats import SIMULATED
from .common import as_frame as _df

# {cachegrind fmt: label} in the order of the bars, and {label: colour}: CSR orange, BSR blue (scipy light, numba dark),
# dense grey (declared with the formats)
CACHE_FORMATS = {fmt: c.label for fmt, c in SIMULATED.items()}
CACHE_COLORS = {c.label: c.color for c in SIMULATED.values()}
CACHE_METRICS = (("instructions", "instructions per product"), ("d1_misses", "D1 misses per product"),
                 ("ll_misses", "LL misses per product"))


FAILED_MARK = dict(marker="x", color="crimson", s=40, zorder=4, clip_on=False)


def _failed_slots(sub, cases, kernels, width: float = 0.8) -> tuple[list[float], int]:
    """x positions of the bars of ``sub``'s failed rows (seaborn's dodged bars: ``width``
    shared by the kernels of a case), and how many there are."""
    xs = []
    for case, kernel in zip(sub.loc[~sub["ok"], "case"], sub.loc[~sub["ok"], "kernel"]):
        j, n = kernels.index(kernel), len(kernels)
        xs.append(cases.index(case) - width / 2 + width * (j + 0.5) / n)
    return xs, len(xs)


def count_label(value: float) -> str:
    """A bar's count, short enough to stand upright beside its neighbours: 881, 14.8k,
    132k, 1.2M.  The numba counts are the difference of two runs, so a count of zero
    can come out a little below 0; it reads 0 (the table keeps the value)."""
    if not np.isfinite(value):
        return ""
    v = max(float(value), 0.0)
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            x = v / div
            return f"{x:.1f}{unit}" if x < 100 else f"{x:.0f}{unit}"
    return f"{v:.0f}"


def cache_misses(rows):
    """cachegrind: instructions, D1 misses and LL misses per product, one bar per
    kernel (scipy / numba, CSR / BSR, dense when measured), grouped by (k, round);
    one column of panels per batch size.  A case whose simulation failed (``ok``
    false) has no bar but a red cross where its bar would be."""
    df = _df(rows)
    if df.empty:
        raise ValueError("no cachegrind rows")
    ok = df["ok"].fillna(True).astype(bool) if "ok" in df else pd.Series(True, index=df.index)
    df = df.assign(batch=df["batch"].fillna(1).astype(int) if "batch" in df else 1, k=df["k"].astype(int),
                   kernel=df["fmt"].map(CACHE_FORMATS), ok=ok)
    for m, _ in CACHE_METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    approx = (100 * df.groupby("round")["density"].transform("mean")).round(1)
    df = df.assign(case=[f"k={k}, round {r}\n(~{d:g}% dense)" for k, r, d in zip(df["k"], df["round"], approx)])
    dense = df[df["fmt"] == "dense"]
    sparse = df[df["fmt"] != "dense"]
    cases = sorted(sparse["case"].unique(), key=lambda c: (int(c.split(",")[0][2:]), int(c.split("round ")[1].split("\n")[0])))
    batches = sorted(sparse["batch"].unique())
    fig, axes = plt.subplots(len(CACHE_METRICS), len(batches), figsize=(max(4.5, 1.0 * len(cases) + 2.5) * len(batches),
                                                                        2.6 * len(CACHE_METRICS)), squeeze=False)
    n_failed = 0
    for j, b in enumerate(batches):
        sub = sparse[sparse["batch"] == b]
        if b == 1 and not dense.empty:  # one dense run (its work does not depend on the pattern) beside every case
            sub = pd.concat([sub, *(dense.assign(case=c, batch=1) for c in cases)], ignore_index=True)
        kernels = [v for v in CACHE_FORMATS.values() if v in set(sub["kernel"])]
        failed_x, n = _failed_slots(sub, cases, kernels)
        n_failed += n
        for i, (m, label) in enumerate(CACHE_METRICS):
            ax = axes[i][j]
            # a difference of two runs can come out a little below 0: drawn at 0 (the table keeps it)
            sns.barplot(data=sub.assign(**{m: sub[m].clip(lower=0)}), x="case", y=m, hue="kernel", order=cases,
                        hue_order=kernels, palette=CACHE_COLORS, ax=ax, legend=False)
            for bars in ax.containers if len(cases) <= 3 else ():  # numbers on the bars while they fit
                ax.bar_label(bars, labels=[count_label(h) for h in bars.datavalues], fontsize=7, padding=2,
                             rotation=90)
            ax.set_yscale("symlog", linthresh=10)  # misses can be 0
            top = float(sub[m].max()) if sub[m].notna().any() else 10.0
            ax.set_ylim(0, 300 * max(10.0, top))  # room for the upright labels above the tallest bar
            if failed_x:
                ax.scatter(failed_x, [2.0] * len(failed_x), **FAILED_MARK)
            ax.set_ylabel(label if j == 0 else "")
            ax.set_xlabel("")
            ax.set_title(f"batch {b}" if i == 0 else "", fontsize=10)
    shown = [v for v in CACHE_FORMATS.values() if v in set(df["kernel"])]
    layer = df["layer"].iloc[0] if "layer" in df else ""
    fig.suptitle(f"LeNet {layer}: one product Y = W X in simulated caches ({df['cache'].iloc[0]})", y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    handles = [plt.Rectangle((0, 0), 1, 1, color=CACHE_COLORS[v]) for v in shown]
    if n_failed:
        handles.append(plt.Line2D([], [], ls="", marker="x", color="crimson"))
        shown = [*shown, "simulation failed"]
    fig.legend(handles=handles, labels=shown, loc="upper center", bbox_to_anchor=(0.5, 0.97), ncol=len(shown), fontsize=8,
               frameon=False)
    cols = ["matrix", "layer", "fmt", "kernel", "batch", "k", "round", "density", "weights", "rows", "cols", "nnz",
            "nnz_blocks", "n_products", "instructions", "data_refs", "d1_misses", "ll_misses", "d1_miss_ratio",
            "ll_miss_ratio", "method", "counted_target", "counted_isa", "isa", "cpu_model", "ok", "error", "cache",
            "valgrind"]
    return fig, df[[c for c in cols if c in df.columns]].reset_index(drop=True)


def cache_misses_caption(table) -> str:
    """Caption of a :func:`cache_misses` figure, from its table."""
    layers = ", ".join(sorted(set(table["layer"])))
    kernels = ", ".join(v for f, v in CACHE_FORMATS.items() if f in set(table["fmt"]))
    batches = " and ".join(str(int(b)) for b in sorted(set(table["batch"])))
    text = (f"Instructions, simulated D1 and LL data-cache misses per product Y = W X of LeNet {layers} ({kernels}) "
            f"per block size k and pruning round, batch {batches} (scipy and dense: batch 1 only); cachegrind counts "
            f"of the product kernels only, warm caches ({table['cache'].iloc[0]}); numba: difference of two runs")
    numba = table[table["fmt"].astype(str).str.startswith("numba")]
    if "counted_target" in table and numba["counted_target"].notna().any():
        counted = ", ".join(sorted(set(numba["counted_target"].dropna())))
        timed = ", ".join(sorted({str(v) for v in numba["isa"].dropna()})) if "isa" in numba else ""
        text += f", kernels counted as compiled for {counted}" + (f" (the timings ran {timed} code)" if timed else "")
    text += "."
    if "ok" in table and not table["ok"].fillna(True).astype(bool).all():
        bad = int((~table["ok"].fillna(True).astype(bool)).sum())
        text += f" Red crosses: {bad} case(s) whose simulation failed (the reason is in the table's error column)."
    return text
