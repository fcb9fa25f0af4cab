"""What the benchmark rows say, in words: each function reads result rows and
returns Markdown sentences whose numbers (and whose wording, where the result
could go either way) come from those rows, so a notebook's conclusion always
describes the run it shows.  Comparisons of formats use k >= 2 (k = 1 BSR is CSR)
and one thread."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .formats import DENSE_VARIANTS, SPARSE_VARIANTS, csr_bsr_pairs
from .tables import frame

CSR_BSR = csr_bsr_pairs()  # {library: (CSR format, BSR format)}
ALIKE = "numba"  # the library whose CSR and BSR kernels are written alike (this study's); the others' are library kernels
LIBRARY_KERNELS = tuple(lib for lib in CSR_BSR if lib != ALIKE)


def _x(v: float) -> str:
    return f"{v:.2g}x" if v < 10 else f"{v:.0f}x"


def _span(s: pd.Series) -> str:
    lo, hi = float(s.min()), float(s.max())
    return _x(lo) if np.isclose(lo, hi, rtol=0.05) else f"{_x(lo)} to {_x(hi)}"


def _ok(df: pd.DataFrame, threads: str = "1") -> pd.DataFrame:
    """Rows at one thread count, k >= 2, that passed their check (figure tables hold only those)."""
    if df.empty:
        return df
    ok = df["ok"].astype(bool) if "ok" in df else True
    return df[(df["threads_label"].astype(str) == threads) & ok & (df["k"] >= 2)]


def product_formats(rows, layer: str = "fc1") -> pd.DataFrame:
    """One product of ``layer`` at the sparsest round: CSR time / BSR time per
    (library, k, batch); above 1 means BSR is the faster."""
    df = _ok(frame(rows))
    if df.empty:
        return pd.DataFrame(columns=["k", "batch", "csr_over_bsr", "lib"])
    df = df[(df["family"] == "lenet") & (df["layer"] == layer)]
    df = df[df["round"] == df["round"].max()]
    out = []
    for lib, (csr, bsr) in CSR_BSR.items():
        t = df.pivot_table(index=["k", "batch"], columns="format", values="median_ns", aggfunc="first")
        if {csr, bsr} <= set(t.columns):
            out.append((t[csr] / t[bsr]).rename("csr_over_bsr").reset_index().assign(lib=lib))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["k", "batch", "csr_over_bsr", "lib"])


def synthetic_formats(rows, lib: str = ALIKE) -> pd.DataFrame:
    """One product of each synthetic matrix: CSR time / BSR time of ``lib``'s kernels
    per (size, k, density, batch); above 1 means BSR is the faster."""
    df = _ok(frame(rows))
    csr, bsr = CSR_BSR[lib]
    cols = ["rows", "k", "density", "batch"]
    if df.empty:
        return pd.DataFrame(columns=[*cols, "csr_over_bsr"])
    df = df[df["family"] == "synthetic"]
    t = df[df["format"].isin((csr, bsr))].pivot_table(index=cols, columns="format", values="median_ns", aggfunc="first")
    if not {csr, bsr} <= set(t.columns):
        return pd.DataFrame(columns=[*cols, "csr_over_bsr"])
    return (t[csr] / t[bsr]).rename("csr_over_bsr").dropna().reset_index()


MODEL_COLUMNS = ["k", "batch", "density", "numba_csr_us", "numba_bsr_us", "csr_over_bsr", "best_sparse", "best_sparse_us",
                 "fastest_dense", "fastest_dense_us", "speedup"]


def model_formats(mrows, round: int | None = None) -> pd.DataFrame:
    """Whole-model forward at ``round`` (default the last): per (k, batch) the numba
    CSR and BSR times, their ratio, and the best block-sparse and fastest dense forwards."""
    df = _ok(frame(mrows))
    if df.empty:
        return pd.DataFrame(columns=MODEL_COLUMNS)
    df = df[df["round"] == (df["round"].max() if round is None else round)]
    out = []
    for (k, b), g in df.groupby(["k", "batch"]):
        t = dict(zip(g["variant"], g["median_ns"]))
        sparse = {v: t[v] for v in SPARSE_VARIANTS if v in t}
        dense = {v: t[v] for v in DENSE_VARIANTS if v in t}
        if not sparse or not dense:
            continue
        best, fastest = min(sparse, key=sparse.get), min(dense, key=dense.get)
        out.append({"k": k, "batch": b, "density": float(g["density"].iloc[0]), "numba_csr_us": t.get("numba_csr", np.nan) / 1e3,
                    "numba_bsr_us": t.get("numba_bsr", np.nan) / 1e3,
                    "csr_over_bsr": t.get("numba_csr", np.nan) / t.get("numba_bsr", np.nan), "best_sparse": best,
                    "best_sparse_us": sparse[best] / 1e3, "fastest_dense": fastest, "fastest_dense_us": dense[fastest] / 1e3,
                    "speedup": dense[fastest] / sparse[best]})
    return pd.DataFrame(out, columns=MODEL_COLUMNS)


def cache_ok(crows) -> pd.DataFrame:
    """The cachegrind rows whose simulation succeeded (rows without an ``ok`` column: all)."""
    c = frame(crows)
    if c.empty or "ok" not in c:
        return c
    return c[c["ok"].fillna(True).astype(bool)]


def cache_pairs(crows) -> pd.DataFrame:
    """cachegrind rows side by side: per (library, batch, k, round) the CSR and BSR
    instructions, D1 and LL misses per product, and their BSR / CSR ratios (failed
    simulations left out)."""
    c = cache_ok(crows)
    if c.empty:
        return pd.DataFrame()
    c = c.assign(batch=c["batch"].fillna(1).astype(int) if "batch" in c else 1)
    out = []
    for lib, (csr, bsr) in csr_bsr_pairs(cache=True).items():
        for key, g in c[c["k"] >= 2].groupby(["batch", "k", "round"]):
            r = {f: g[g["fmt"] == f].iloc[0] for f in (csr, bsr) if (g["fmt"] == f).any()}
            if len(r) < 2:
                continue
            row = dict(zip(("batch", "k", "round"), key), lib=lib, density=float(r[bsr]["density"]))
            for m in ("instructions", "d1_misses", "ll_misses"):
                row |= {f"csr_{m}": float(r[csr][m]), f"bsr_{m}": float(r[bsr][m]),
                        f"{m}_bsr_over_csr": float(r[bsr][m]) / max(float(r[csr][m]), 1e-9)}
            out.append(row)
    return pd.DataFrame(out)


def product_sentence(rows) -> str:
    p = product_formats(rows)
    parts = []
    for lib, g in p.groupby("lib"):
        parts.append(f"{lib}'s BSR beats {lib}'s CSR in {_wins(g, '(k, batch) cases')}")
    return ("One product of fc1 at its sparsest round: " + "; ".join(parts) + ".") if parts else ""


def _wins(g: pd.DataFrame, cases: str) -> str:
    """'<wins> of <n> <cases> (CSR time / BSR time <span>)' for a table of CSR / BSR time ratios."""
    return f"{int((g['csr_over_bsr'] > 1).sum())} of {len(g)} {cases} (CSR time / BSR time {_span(g['csr_over_bsr'])})"


def synthetic_sentence(rows) -> str:
    s = synthetic_formats(rows)
    if s.empty:
        return ""
    parts = [f"{n}x{n} at batch {b}: {_wins(g, '(k, density) cases')}" for (n, b), g in s.groupby(["rows", "batch"])]
    dens = ", ".join(dict.fromkeys(f"{100 * d:.2g}%" for d in sorted(s["density"])))  # nominal: measured ones differ by a block
    return (f"Synthetic random block-sparse matrices at densities {dens}, the numba kernels: BSR is the faster in "
            + "; ".join(parts) + ".")


def numba_sentence(mrows) -> str:
    m = model_formats(mrows).dropna(subset=["csr_over_bsr"])
    if m.empty:
        return ""
    parts = [f"batch {b}: {_wins(g, 'block sizes')}" for b, g in m.groupby("batch")]
    return ("Whole model, the CSR and BSR kernels written alike (numba, one compiled call): BSR is the faster in "
            + "; ".join(parts) + ".")


def model_sentence(mrows) -> str:
    m = model_formats(mrows)
    if m.empty:
        return ""
    parts = []
    for b, g in m.groupby("batch"):
        top = g.loc[g["speedup"].idxmax()]
        parts.append(f"batch {b}: {_span(g['speedup'])} faster than the fastest dense forward (best: {top['best_sparse']}, "
                     f"k={int(top['k'])}); the ideal 1/density is {_x(1 / g['density'].mean())}")
    return f"Whole pruned LeNet at ~{100 * m['density'].mean():.1f}% density: " + "; ".join(parts) + "."


def counted_targets(crows) -> str:
    """Which numba machine code the cachegrind rows counted and which the timings ran,
    e.g. ``the numba kernels as compiled for znver4 (avx2); the timings ran avx512 code``."""
    c = cache_ok(crows)
    if c.empty or "counted_target" not in c:
        return ""
    numba = c[c["fmt"].astype(str).str.startswith("numba") & c["counted_target"].notna()]
    if numba.empty:
        return ""
    counted = ", ".join(sorted(set(numba["counted_target"])))
    timed = ", ".join(sorted({str(v) for v in numba.get("isa", pd.Series(dtype=object)).dropna()}))
    text = f"the numba kernels as compiled for {counted}"
    if timed:
        same = set(numba["counted_isa"].dropna()) == set(numba["isa"].dropna())
        text += (f"; the timings ran the same {timed} code" if same else
                 f"; the timings ran {timed} code, which valgrind cannot decode, so the counts are of the same kernels "
                 "limited to what valgrind runs")
    return text


def cache_gaps(crows) -> str:
    """One sentence on the cachegrind cases that failed (empty when none did): how many,
    which, and why; they are tried again on the next run."""
    c = frame(crows)
    if c.empty or "ok" not in c:
        return ""
    bad = c[~c["ok"].fillna(True).astype(bool)]
    if bad.empty:
        return ""
    which = ", ".join(f"{f} at k={int(k)}, batch {int(b)}" for f, k, b in zip(bad["fmt"], bad["k"], bad["batch"]))
    reasons = "; ".join(dict.fromkeys(str(e) for e in bad["error"]))
    return (f"cachegrind failed for {len(bad)} of {len(c)} cases ({which}): {reasons}. Figure 6 marks them with a cross; "
            "they are not stored, so the next run tries them again.")


def cache_sentence(crows) -> str:
    c = cache_pairs(crows)
    if c.empty:
        return ""
    parts = []
    for (lib, b), g in c.groupby(["lib", "batch"]):
        parts.append(f"{lib} at batch {b}: BSR has {_span(g['d1_misses_bsr_over_csr'])} the D1 misses of CSR and executes "
                     f"{_span(g['instructions_bsr_over_csr'])} its instructions")
    if not parts:
        return ""
    targets = counted_targets(crows)
    return "cachegrind, one product of fc1: " + "; ".join(parts) + (f" (counted: {targets})" if targets else "") + "."


def auto_and_cache(mrows, crows) -> str:
    """Why the measured choice of the lean (scipy) path can pick CSR while cachegrind
    counts fewer misses for BSR: the time follows the instructions when the misses
    are few and stay in the cache hierarchy (conditional on the rows)."""
    m = frame(mrows)
    auto = m[(m["variant"] == "lean_auto") & m["auto_choice"].notna() & (m["round"] == m["round"].max())]
    if auto.empty:
        return ""
    picks = pd.Series([v for s in auto["auto_choice"] for v in json.loads(s).values()])
    share_csr = float((picks == "csr").mean())
    text = (f"The measured choice of the lean path (scipy's kernels) picks CSR for {share_csr:.0%} of the layers "
            f"({len(auto)} (k, batch) runs).")
    c = cache_pairs(crows)
    s = c[(c["lib"] == "scipy") & (c["round"] == c["round"].max())] if not c.empty else c
    if s.empty:
        return text + " Without cachegrind rows there is no miss count to set against it."
    fewer_misses = bool((s["d1_misses_bsr_over_csr"] < 1).all())
    more_instr = bool((s["instructions_bsr_over_csr"] > 1).all())
    few_ll = float(s[["csr_ll_misses", "bsr_ll_misses"]].max().max())
    if fewer_misses and more_instr:
        text += (f" cachegrind agrees that scipy's BSR kernel misses the D1 cache less ({_span(s['d1_misses_bsr_over_csr'])} "
                 f"CSR's misses) but counts {_span(s['instructions_bsr_over_csr'])} CSR's instructions.")
        if few_ll <= 0.05 * float(s["bsr_d1_misses"].min()):
            text += (f" With at most {few_ll:.2g} last-level misses per product the operands sit in the L2 cache, where "
                     "a D1 miss costs about a dozen cycles; the extra instructions cost more than the saved misses, so "
                     "CSR is faster there and the choice is consistent with the counts.")
        else:
            text += " The misses it saves cost less than its extra instructions, as the timings show."
    elif fewer_misses:
        text += (f" cachegrind counts fewer D1 misses for scipy's BSR ({_span(s['d1_misses_bsr_over_csr'])} CSR's) and "
                 "no more instructions, so the choice of CSR comes from costs the counts do not see (call overhead, "
                 "the order of memory accesses).")
    else:
        text += " cachegrind does not count fewer D1 misses for scipy's BSR here, so nothing needs reconciling."
    return text


def conclusion(rows, mrows, srows, crows=()) -> str:
    """The plain conclusion of a run, as Markdown bullets and a verdict on the
    paper's claim that BSR is better than CSR for storage and computation."""
    bullets = [s for s in (product_sentence(rows), synthetic_sentence(rows), numba_sentence(mrows), model_sentence(mrows),
                           cache_sentence(crows)) if s]
    st = frame(srows)
    st = st[(st["layer"] == "all") & (st["k"] >= 2)]
    st = st[st["round"] == st["round"].max()].pivot_table(index="k", columns="format", values="bytes")
    if {"csr", "bsr"} <= set(st.columns):
        bullets.insert(0, f"Storage at the sparsest round: BSR needs {_span(st['bsr'] / st['csr'])} the bytes of CSR.")
    p = product_formats(rows)
    # kernels written alike: the numba whole-model forwards and the numba products (fc1, synthetic)
    alike = pd.concat([model_formats(mrows).dropna(subset=["csr_over_bsr"])["csr_over_bsr"],
                       p.loc[p["lib"] == ALIKE, "csr_over_bsr"], synthetic_formats(rows)["csr_over_bsr"]])
    p = p[p["lib"].isin(LIBRARY_KERNELS)]
    storage_ok = bool(len(st) and (st["bsr"] < st["csr"]).all()) if {"csr", "bsr"} <= set(st.columns) else None
    fair = float((alike > 1).mean()) if len(alike) else None
    lib = float((p["csr_over_bsr"] > 1).mean()) if len(p) else None
    verdict = []
    if storage_ok is not None:
        verdict.append("BSR stores the pruned weights in less space than CSR" if storage_ok
                       else "BSR does not always store the pruned weights in less space than CSR")
    if fair is not None:
        verdict.append("with kernels written alike (numba), BSR computes faster than CSR" + (
            f" in all {len(alike)} cases" if fair == 1 else f" in {fair:.0%} of the {len(alike)} cases" if fair > 0
            else f" in none of the {len(alike)} cases") + " (whole model, fc1 products, synthetic products, k >= 2)")
    if lib is not None:
        verdict.append("with the library kernels (scipy, torch), BSR is faster than CSR in "
                       f"{lib:.0%} of the cases: whether BSR pays depends on how well its kernel is written")
    text = "\n".join(f"* {b}" for b in bullets)
    if verdict:
        text += "\n\n**Conclusion on the paper's claim.** In this run, " + "; ".join(verdict) + "."
    return text
