"""The paper's claims next to what this study measured, read from the result tables
committed in ``figures/`` (so the table is as current as the figures).

Every claim is judged by a rule written next to it (the ``rule`` column), over all the
numbers it cites, and the row prints those numbers.  A status is one of:

* ``supported`` / ``not supported``: the rule decides;
* ``undecided``: the numbers point both ways, or the difference is within the noise;
* ``not measured yet``: the table the claim needs is not in the folder;
* ``quick run, no claim``: the table comes from a quick profile (its sidecar says so),
  whose numbers only test the code;
* ``no claim``: the numbers cannot carry one (a baseline at chance level).

Each ``judge_*`` function takes plain numbers and returns ``(status, numbers text)``,
so every rule can be tested on numbers that support it, contradict it and leave it
undecided.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..infra.figures import is_quick
from ..infra.paths import figures_dir
from .cifar.report import CHANCE_PP, head_numbers

SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "not supported", "undecided"
NOT_MEASURED = "not measured yet"
QUICK_RUN = "quick run, no claim"
NO_CLAIM = "no claim"
AUTHORS_CIFAR = (90.37, 90.73)  # the authors' README: ResNet18 + FC head, unpruned -> 97% of the head pruned
DROP_PP = 1.0  # "without greatly degrading the accuracy": within this many points of the dense baseline
LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}

RULES = {
    "drop": (f"supported if every k = 2..6 at the last round is within {DROP_PP:g} pp of the dense baseline (means over "
             f"seeds); not supported if every k is further; undecided otherwise"),
    "trend": ("over every k at the last round (means over seeds): supported if the accuracy falls at every step "
              "k -> k+1; not supported if it does not fall overall (Spearman rank correlation of k and accuracy >= 0); "
              "undecided if it falls overall but rises at some step"),
    "share": ("over every (matrix, batch, threads) case with k >= 2: supported if BSR wins in all of them, not "
              "supported if in none, undecided otherwise"),
    "cache": ("over every matrix with k >= 2: supported if BSR has fewer L1 data misses than CSR in all of them, "
              "not supported if in none, undecided otherwise"),
    "cifar": (f"k = 2, unpruned vs the last round, means over seeds; noise = the larger of the seeds' sd and the test "
              f"set's sampling error: supported if the accuracy rises by more than the noise, not supported if it "
              f"falls by more than the noise, undecided within it; no claim when the unpruned network is below "
              f"{2 * CHANCE_PP:g}% (chance is {CHANCE_PP:g}%)"),
}


def judge_drop(baseline: float, accs: dict, tol: float = DROP_PP) -> tuple[str, str]:
    """``baseline`` and ``accs`` {k: accuracy} in percent."""
    drops = {k: baseline - a for k, a in sorted(accs.items())}
    within = [k for k, d in drops.items() if d <= tol]
    status = SUPPORTED if len(within) == len(drops) else (CONTRADICTED if not within else UNDECIDED)
    text = f"dense {baseline:.2f}%; " + ", ".join(f"k = {k}: {accs[k]:.2f}% ({-d:+.2f} pp)" for k, d in drops.items())
    return status, text


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = pd.Series(list(x)).rank(), pd.Series(list(y)).rank()
    return float(rx.corr(ry)) if rx.nunique() > 1 and ry.nunique() > 1 else float("nan")


def judge_trend(accs: dict) -> tuple[str, str]:
    """``accs`` {k: accuracy} in percent: does the accuracy fall as k grows?"""
    ks = sorted(accs)
    rises = [(a, b) for a, b in zip(ks, ks[1:]) if accs[b] >= accs[a]]
    rho = spearman(ks, [accs[k] for k in ks])
    if not rises:
        status = SUPPORTED
    elif math.isnan(rho) or rho >= 0:
        status = CONTRADICTED
    else:
        status = UNDECIDED
    text = ", ".join(f"k = {k}: {accs[k]:.2f}%" for k in ks) + f"; Spearman rho = {rho:.2f}"
    if rises:
        text += "; does not fall from " + ", ".join(f"k = {a} to {b}" for a, b in rises)
    return status, text


def judge_share(wins: int, cases: int) -> str:
    """All cases won: supported; none: not supported; some: undecided."""
    return SUPPORTED if wins == cases else (CONTRADICTED if wins == 0 else UNDECIDED)


def judge_cifar(unpruned: float, pruned: float, noise: float) -> tuple[str, str]:
    """Unpruned and pruned test accuracy and the noise, all in percent."""
    change = pruned - unpruned
    text = f"{unpruned:.2f}% -> {pruned:.2f}% ({change:+.2f} ± {noise:.2f} pp)"
    if unpruned < 2 * CHANCE_PP:
        return NO_CLAIM, text + f"; the unpruned network is near chance ({unpruned:.2f}%)"
    if change > noise:
        return SUPPORTED, text
    return (CONTRADICTED, text) if change < -noise else (UNDECIDED, text + "; within the noise")


def _row(claim: str, paper: str, rule: str, measured: str, status: str) -> dict:
    return {"claim": claim, "paper / authors": paper, "rule": rule, "this study": measured, "status": status}


def table_profile(folder: Path, csv_name: str) -> str | None:
    """The profile a committed table was made with: its sidecar's, else its ``profile`` column's."""
    side = folder / (Path(csv_name).stem + ".json")
    if side.is_file():
        try:
            return str(json.loads(side.read_text()).get("profile") or "") or None
        except (OSError, ValueError):
            return None
    path = folder / csv_name
    if path.is_file():
        head = pd.read_csv(path, nrows=1)
        if "profile" in head.columns and len(head):
            return str(head["profile"].iloc[0])
    return None


def _read(folder: Path, name: str) -> tuple[pd.DataFrame | None, bool]:
    """The table ``name`` and whether it comes from a quick run."""
    path = folder / name
    if not path.exists():
        return None, False
    return pd.read_csv(path), is_quick(table_profile(folder, name) or "")


def lenet_rows(summary: pd.DataFrame | None, datasets=("mnist", "fashion_mnist"), quick: bool = False) -> list[dict]:
    """Accuracy at the last round (about 2.9% density) against the dense baseline, and
    the trend over k, per data set, from ``lenet_summary.csv``."""
    out = []
    for ds in datasets:
        name = LABELS.get(ds, ds)
        claims = [
            (f"LeNet-300-100 on {name}: block pruning to about 97% sparsity (k = 2..6) without greatly degrading "
             "accuracy", "abstract: \"without greatly degrading the classification accuracy\" (numbers not retrieved)",
             RULES["drop"]),
            (f"LeNet-300-100 on {name}: accuracy falls as the block size k grows",
             "authors' README: \"with the increase of sparsity and pruning granularity, the accuracy has a decreasing "
             "trend\"", RULES["trend"]),
        ]
        s = None if summary is None else summary[summary["dataset"] == ds]
        base = None if s is None else s[s["variant"] == "baseline"]
        block = None if s is None else s[s["variant"] == "block"]
        if quick:
            out += [_row(c, p, r, QUICK_RUN, QUICK_RUN) for c, p, r in claims]
            continue
        if base is None or base.empty or block is None or block.empty:
            out += [_row(c, p, r, NOT_MEASURED, NOT_MEASURED) for c, p, r in claims]
            continue
        last = block[block["round"] == block["round"].max()]
        b = 100 * float(base["acc_mean"].iloc[0])
        accs = {int(k): 100 * float(a) for k, a in zip(last["k"], last["acc_mean"])}
        where = f"round {int(last['round'].iloc[0])} ({100 * float(last['density'].mean()):.1f}% density): "
        drop = {k: a for k, a in accs.items() if 2 <= k <= 6}
        for (c, p, r), judged in zip(claims, (judge_drop(b, drop) if drop else None, judge_trend(accs))):
            out.append(_row(c, p, r, NOT_MEASURED, NOT_MEASURED) if judged is None
                       else _row(c, p, r, where + judged[1], judged[0]))
    return out


def _bsr_vs_csr_row(claim: str, paper: str, rule: str, ratio: pd.Series | None, quick: bool, lead: str) -> dict:
    """The row of a claim that BSR does better than CSR, judged by :func:`judge_share`
    over the cases of ``ratio`` (CSR / BSR per case; None or empty: not measured): the
    numbers are ``lead`` (its ``{wins}`` and ``{n}`` filled in) and the ratio's median
    and range."""
    if quick:
        return _row(claim, paper, rule, QUICK_RUN, QUICK_RUN)
    if ratio is None or ratio.empty:
        return _row(claim, paper, rule, NOT_MEASURED, NOT_MEASURED)
    wins = int((ratio > 1).sum())
    return _row(claim, paper, rule, lead.format(wins=wins, n=len(ratio)) +
                f" median {ratio.median():.2f} (range {ratio.min():.2f}-{ratio.max():.2f})", judge_share(wins, len(ratio)))


def _speed_ratio(speed: pd.DataFrame | None) -> pd.Series | None:
    """The fastest CSR time over the fastest BSR time per (matrix, batch, threads) case with k >= 2."""
    if speed is None or speed.empty:
        return None
    s = speed[speed["k"] >= 2].copy()
    s["kind"] = s["format"].str.contains("bsr").map({True: "bsr", False: "other"})
    s.loc[s["format"].str.contains("csr"), "kind"] = "csr"
    best = s[s["kind"] != "other"].groupby(["matrix", "batch", "threads_label", "kind"])["median_ns"].min().unstack()
    best = best.dropna() if {"bsr", "csr"} <= set(best.columns) else best.iloc[0:0]
    return None if best.empty else best["csr"] / best["bsr"]


def speed_row(speed: pd.DataFrame | None, quick: bool = False) -> dict:
    """Fastest BSR product against the fastest CSR product of the same matrix and batch
    (``bsr_speedup_fc1.csv``), k >= 2."""
    return _bsr_vs_csr_row("BSR makes the sparse product faster than CSR",
                           "BSR is \"more effective for storage and computation compared to CSR\" (timings not retrieved)",
                           RULES["share"], None if quick else _speed_ratio(speed), quick,
                           "fc1 of the pruned LeNet: the fastest BSR beats the fastest CSR in {wins} of {n} cases; "
                           "CSR time / BSR time")


def _cache_ratio(cache: pd.DataFrame | None) -> pd.Series | None:
    """CSR's L1 data misses over BSR's per matrix (the fewest of each over k >= 2)."""
    if cache is None or cache.empty or not {"bsr", "csr"} <= set(cache["fmt"]):
        return None
    c = cache[cache["k"] >= 2].pivot_table(index="matrix", columns="fmt", values="d1_misses", aggfunc="min")
    c = c.dropna(subset=["bsr", "csr"])
    return c["csr"] / c["bsr"]


def cache_row(cache: pd.DataFrame | None, quick: bool = False) -> dict:
    """L1 data-cache misses per product, CSR against BSR (``bsr_cache_misses.csv``)."""
    return _bsr_vs_csr_row("BSR uses the cache better than CSR", "\"cache hit ratio experiments\" (numbers not retrieved)",
                           RULES["cache"], None if quick else _cache_ratio(cache), quick,
                           "cachegrind, fc1: BSR has fewer L1 data misses in {wins} of {n} matrices; CSR misses / BSR misses")


def cifar_row(folder: Path) -> dict:
    """Unpruned against the last round (k = 2) of experiment A, from each committed
    ``cifar_*_experiment_a.csv`` / ``cifar_*_results_*.csv`` table."""
    claim = "ResNet18 on CIFAR-10: pruning 97% of the FC head raises accuracy"
    paper = f"authors' README: {AUTHORS_CIFAR[0]}% unpruned -> {AUTHORS_CIFAR[1]}% with 97% of the head pruned (k = 2)"
    judged = []
    for path in sorted([*folder.glob("cifar_*_experiment_a.csv"), *folder.glob("cifar_*_results_*.csv")]):
        rows = pd.read_csv(path)
        if not {"experiment", "k", "round", "test_acc", "n_test"} <= set(rows.columns):
            continue
        if is_quick(table_profile(folder, path.name) or ""):
            judged.append((path.stem, QUICK_RUN, "quick run"))
            continue
        n = head_numbers(rows)
        if n is None:
            continue
        status, text = judge_cifar(n["unpruned"], n["pruned"], max(n["sd"], n["noise"]))
        judged.append((path.stem, status, f"k = {n['k']}, round {n['round']} (head density "
                                          f"{100 * n['density']:.1f}%, {n['seeds']} seed(s)): {text}"))
    if not judged:
        return _row(claim, paper, RULES["cifar"], NOT_MEASURED + " (no CIFAR-10 result table in figures/)", NOT_MEASURED)
    statuses = {s for _, s, _ in judged if s not in (QUICK_RUN, NO_CLAIM)}
    if not statuses:
        status = QUICK_RUN if all(s == QUICK_RUN for _, s, _ in judged) else NO_CLAIM
    else:
        status = statuses.pop() if len(statuses) == 1 else UNDECIDED
    return _row(claim, paper, RULES["cifar"], "; ".join(f"{src}: {text}" for src, _, text in judged), status)


def paper_vs_study(folder=None, datasets=("mnist", "fashion_mnist")) -> pd.DataFrame:
    """One row per claim: the paper's statement, the rule, this study's numbers and a
    status (the LeNet claims for ``datasets``)."""
    folder = Path(folder) if folder is not None else figures_dir()
    summary, summary_quick = _read(folder, "lenet_summary.csv")
    rows = lenet_rows(summary, datasets, quick=summary_quick)
    speed, speed_quick = _read(folder, "bsr_speedup_fc1.csv")
    cache, cache_quick = _read(folder, "bsr_cache_misses.csv")
    rows += [speed_row(speed, speed_quick), cache_row(cache, cache_quick), cifar_row(folder)]
    return pd.DataFrame(rows)
