"""Tables of the benchmark rows: speed-ups of one product, whole-model latencies,
the whole-model speed-up summary, storage and GPU speed-ups."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .formats import DENSE_VARIANTS, MODEL_VARIANTS, REFERENCE, SPARSE_FORMATS, SPARSE_VARIANTS

SUMMARY_COLUMNS = ("k", "density_pct", "weights", "dense_us", "best_sparse", "best_sparse_us", "ratio_vs_dense", "ideal",
                   "gap_to_ideal", "ratio_vs_best_dense", "lean_auto_vs_lean_dense", "target", "meets_target")


def frame(rows) -> pd.DataFrame:
    """Rows (a list of dicts or a DataFrame) as a DataFrame."""
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def speedup_table(rows, layers=None, threads: str = "1") -> pd.DataFrame:
    """Speed-up of one product over the best dense format, per (layer, k, density %)
    row and (format, batch) column."""
    df = frame(rows)
    df = df[(df["threads_label"] == threads) & df["format"].isin(SPARSE_FORMATS)]
    if layers is not None:
        df = df[df["layer"].isin(layers)]
    df = df.assign(density_pct=(100 * df["density"]).round(1))
    return df.pivot_table(index=["layer", "k", "density_pct"], columns=["format", "batch"], values="speedup",
                          aggfunc="first").sort_index(ascending=[True, True, False]).round(2)


def model_table(rows, threads: str = "1") -> pd.DataFrame:
    """Whole-model latency (µs) per (batch, k, density %) and variant."""
    df = frame(rows)
    df = df[df["threads_label"] == threads].assign(us=lambda d: d["median_ns"] / 1e3,
                                                   density_pct=lambda d: (100 * d["density"]).round(1))
    return df.pivot_table(index=["batch", "k", "density_pct"], columns="variant", values="us", aggfunc="first")[
        [v for v in MODEL_VARIANTS if v in set(df["variant"])]].round(1)


def speedup_summary(rows, round: int = 16, batch: int = 1, threads: str = "1", target: float = 5.0) -> pd.DataFrame:
    """Whole-model speed-up at one (round, batch, threads), one row per k.

    ``ratio_vs_dense``: the dense forward (``to_bsr_model(backend="dense")``, variant
    ``torch_dense``) over the fastest block-sparse forward (BSR or auto, torch module
    or lean path; named in ``best_sparse``); ``ideal`` = 1/density and
    ``gap_to_ideal`` = ideal / ratio.  ``ratio_vs_best_dense``: the same against the
    fastest dense forward of any path (the fair, harder comparison);
    ``lean_auto_vs_lean_dense``: lean auto against lean dense (same harness, so the
    gain of sparsity alone).  ``meets_target``: ``ratio_vs_dense >= target``."""
    df = frame(rows)
    df = df[(df["round"] == round) & (df["batch"] == batch) & (df["threads_label"] == threads) & df["ok"].astype(bool)]
    out = []
    for k, g in df.groupby("k"):
        t = dict(zip(g["variant"], g["median_ns"]))
        cand = {v: t[v] for v in SPARSE_VARIANTS if v in t}
        if not cand or REFERENCE not in t:
            continue
        best = min(cand, key=cand.get)
        dens = float(g["density"].iloc[0])
        best_dense = min(t[v] for v in DENSE_VARIANTS if v in t)
        ratio = t[REFERENCE] / cand[best]
        out.append({"k": k, "density_pct": float(np.round(100 * dens, 2)), "weights": g["weights"].iloc[0],
                    "dense_us": t[REFERENCE] / 1e3, "best_sparse": best, "best_sparse_us": cand[best] / 1e3,
                    "ratio_vs_dense": ratio, "ideal": 1 / dens, "gap_to_ideal": (1 / dens) / ratio,
                    "ratio_vs_best_dense": best_dense / cand[best],
                    "lean_auto_vs_lean_dense": (t["lean_dense"] / t["lean_auto"]
                                                if {"lean_dense", "lean_auto"} <= t.keys() else None),
                    "target": target, "meets_target": bool(ratio >= target)})
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS)).round(2)


def storage_table(rows) -> pd.DataFrame:
    """Bytes of the LeNet layers together (``layer="all"``) per (k, round) and format."""
    s = frame(rows)
    return s[s["layer"] == "all"].pivot_table(index=["k", "round"], columns="format", values="bytes")


def gpu_table(rows) -> pd.DataFrame:
    """GPU speed-up of BSR over dense of the same dtype, per matrix and (dtype, batch)."""
    g = frame(rows)
    return g[g["layout"] == "bsr"].pivot_table(index=["matrix"], columns=["dtype", "batch"], values="speedup").round(2)


def kernel_bar(rows, k: int = 4, round: int = 16, threads: str = "1") -> dict:
    """The numba kernels' standing on the pruned LeNet at ``round``, from one run:
    ``batch1_vs_fastest_dense`` (fastest dense forward / numba BSR forward, batch 1),
    ``batch256_frac_of_ideal`` (that speed-up at batch 256 times the density: 1 is
    the ideal 1/density) and ``bsr_over_csr_b256_k4`` (numba CSR / numba BSR time at
    batch 256; > 1 means BSR is faster).  NaN where a row is missing."""
    df = frame(rows)
    df = df[(df["round"] == round) & (df["k"] == k) & (df["threads_label"] == threads) & df["ok"].astype(bool)]

    def at(batch):
        g = df[df["batch"] == batch]
        return dict(zip(g["variant"], g["median_ns"])), (float(g["density"].iloc[0]) if len(g) else float("nan"))

    nan = float("nan")
    t1, _ = at(1)
    t256, dens = at(256)
    dense1 = min((t1[v] for v in DENSE_VARIANTS if v in t1), default=nan)
    dense256 = min((t256[v] for v in DENSE_VARIANTS if v in t256), default=nan)
    return {
        "batch1_vs_fastest_dense": dense1 / t1["numba_bsr"] if "numba_bsr" in t1 else nan,
        "batch256_frac_of_ideal": dense256 / t256["numba_bsr"] * dens if "numba_bsr" in t256 else nan,
        "bsr_over_csr_b256_k4": t256["numba_csr"] / t256["numba_bsr"] if {"numba_bsr", "numba_csr"} <= t256.keys() else nan,
    }

