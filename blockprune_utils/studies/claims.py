"""The paper's claims next to what this study measured, read from the result tables
committed in ``figures/`` (so the table is as current as the figures).

Each claim gets the paper's (or the authors' README's) statement, this study's
number, and a status computed from that number by the rule written in the row:
``supported``, ``not supported``, ``mixed`` or ``not measured yet`` when the table
it needs is not in ``figures/``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..infra.paths import figures_dir

AUTHORS_CIFAR = (90.37, 90.73)  # the authors' README: ResNet18 + FC head, unpruned -> 97% of the head pruned
DROP_PP = 1.0  # "without greatly degrading the accuracy": within this many points of the dense baseline
LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
NOT_MEASURED = "not measured yet"


def _read(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    return pd.read_csv(path) if path.exists() else None


def _row(claim: str, paper: str, measured: str, status: str) -> dict:
    return {"claim": claim, "paper / authors": paper, "this study": measured, "status": status}


def lenet_rows(summary: pd.DataFrame | None, datasets=("mnist", "fashion_mnist"), final_round: int = 16) -> list[dict]:
    """Accuracy at the last round (about 2.8% density) against the dense baseline, and
    the trend over k, per data set, from ``lenet_summary.csv``."""
    out = []
    for ds in datasets:
        claim = f"LeNet-300-100 on {LABELS.get(ds, ds)}: block pruning to about 97% sparsity without greatly " \
                f"degrading accuracy (k = 2..6)"
        paper = "abstract: \"without greatly degrading the classification accuracy\" (numbers not retrieved)"
        claim2 = f"LeNet-300-100 on {LABELS.get(ds, ds)}: accuracy falls as the block size k grows"
        paper2 = "authors' README: \"with the increase of sparsity and pruning granularity, the accuracy has a " \
                 "decreasing trend\""
        s = None if summary is None else summary[summary["dataset"] == ds]
        base = None if s is None else s[s["variant"] == "baseline"]
        last = None if s is None else s[(s["variant"] == "block") & (s["round"] == final_round) & s["k"].between(2, 6)]
        if base is None or base.empty or last is None or last.empty:
            out += [_row(claim, paper, NOT_MEASURED, NOT_MEASURED), _row(claim2, paper2, NOT_MEASURED, NOT_MEASURED)]
            continue
        b = 100 * float(base["acc_mean"].iloc[0])
        accs = (100 * last.set_index("k")["acc_mean"]).sort_index()
        drops = b - accs
        worst = drops.idxmax()
        status = "supported" if drops.max() <= DROP_PP else ("mixed" if drops.min() <= DROP_PP else "not supported")
        out.append(_row(claim, paper, f"dense {b:.2f}%; at {100 * float(last['density'].mean()):.1f}% density "
                        f"{accs.min():.2f}-{accs.max():.2f}% (largest drop {drops.max():.2f} pp at k = {worst}; "
                        f"rule: within {DROP_PP:g} pp)", status))
        trend = accs.get(2), accs.get(6)
        if None in trend:
            out.append(_row(claim2, paper2, NOT_MEASURED, NOT_MEASURED))
        else:
            out.append(_row(claim2, paper2,
                            f"at {100 * float(last['density'].mean()):.1f}% density: k = 2 {trend[0]:.2f}%, "
                            f"k = 6 {trend[1]:.2f}%", "supported" if trend[1] < trend[0] else "not supported"))
    return out


def speed_row(speed: pd.DataFrame | None) -> dict:
    """Fastest BSR product against the fastest CSR product of the same matrix and batch
    (``bsr_speedup_fc1.csv``), k >= 2."""
    claim = "BSR makes the sparse product faster than CSR"
    paper = "BSR is \"more effective for storage and computation compared to CSR\" (timings not retrieved)"
    if speed is None or speed.empty:
        return _row(claim, paper, NOT_MEASURED, NOT_MEASURED)
    s = speed[speed["k"] >= 2].copy()
    s["kind"] = s["format"].str.contains("bsr").map({True: "bsr", False: "other"})
    s.loc[s["format"].str.contains("csr"), "kind"] = "csr"
    best = s[s["kind"] != "other"].groupby(["matrix", "batch", "threads_label", "kind"])["median_ns"].min().unstack()
    best = best.dropna()
    if best.empty:
        return _row(claim, paper, NOT_MEASURED, NOT_MEASURED)
    ratio = best["csr"] / best["bsr"]
    share = float((ratio > 1).mean())
    status = "supported" if share == 1 else ("mixed" if share > 0 else "not supported")
    return _row(claim, paper, f"fc1 of the pruned LeNet, k >= 2: fastest BSR beats fastest CSR in {share:.0%} of "
                f"{len(ratio)} (matrix, batch) cases; CSR time / BSR time median {ratio.median():.2f} "
                f"(range {ratio.min():.2f}-{ratio.max():.2f})", status)


def cache_row(cache: pd.DataFrame | None) -> dict:
    """L1 data-cache misses per product, CSR against BSR (``bsr_cache_misses.csv``)."""
    claim = "BSR uses the cache better than CSR"
    paper = "\"cache hit ratio experiments\" (numbers not retrieved)"
    if cache is None or cache.empty or not {"bsr", "csr"} <= set(cache["fmt"]):
        return _row(claim, paper, NOT_MEASURED, NOT_MEASURED)
    c = cache[cache["k"] >= 2].pivot_table(index="matrix", columns="fmt", values="d1_misses", aggfunc="min")
    c = c.dropna(subset=["bsr", "csr"])
    ratio = c["csr"] / c["bsr"]
    share = float((ratio > 1).mean())
    status = "supported" if share == 1 else ("mixed" if share > 0 else "not supported")
    return _row(claim, paper, f"cachegrind, fc1 k >= 2: CSR has {ratio.median():.2f}x the L1 data misses of BSR "
                f"(median of {len(ratio)} matrices; BSR fewer in {share:.0%})", status)


def cifar_row(folder: Path) -> dict:
    """Unpruned against about 97%-sparse head (k = 2) from any ``cifar*.csv`` result table
    with ``k``, ``round`` and ``test_acc`` columns."""
    claim = "ResNet18 on CIFAR-10: pruning 97% of the FC head keeps (even raises) accuracy"
    paper = f"authors' README: {AUTHORS_CIFAR[0]}% unpruned -> {AUTHORS_CIFAR[1]}% with 97% of the head pruned (k = 2)"
    parts = []
    for path in sorted(folder.glob("cifar*.csv")):
        t = pd.read_csv(path)
        if {"k", "round", "test_acc"} <= set(t.columns):
            parts.append(t.assign(source=path.stem))
    if not parts:
        return _row(claim, paper, NOT_MEASURED + " (no CIFAR-10 result table in figures/)", NOT_MEASURED)
    t = pd.concat(parts, ignore_index=True)
    t = t[t["k"].isin([0, 2]) | (t["round"] == 0)]
    out = []
    for src, g in t.groupby("source"):
        g2 = g[g["k"] == 2] if (g["k"] == 2).any() else g
        r0, rl = g2[g2["round"] == 0], g2[g2["round"] == g2["round"].max()]
        if r0.empty or rl.empty or g2["round"].max() == 0:
            continue
        a0, al = 100 * r0["test_acc"].mean(), 100 * rl["test_acc"].mean()
        out.append((src, a0, al))
    if not out:
        return _row(claim, paper, NOT_MEASURED, NOT_MEASURED)
    text = "; ".join(f"{s}: {a0:.2f}% -> {al:.2f}%" for s, a0, al in out) + " (CIFAR-10 JPEG copy)"
    ok = [al >= a0 - DROP_PP for _, a0, al in out]
    return _row(claim, paper, text, "supported" if all(ok) else ("mixed" if any(ok) else "not supported"))


def paper_vs_study(folder=None) -> pd.DataFrame:
    """One row per claim: the paper's statement, this study's number and a status."""
    folder = Path(folder) if folder is not None else figures_dir()
    rows = lenet_rows(_read(folder, "lenet_summary.csv"))
    rows += [speed_row(_read(folder, "bsr_speedup_fc1.csv")), cache_row(_read(folder, "bsr_cache_misses.csv")),
             cifar_row(folder)]
    return pd.DataFrame(rows)
