"""The retraining budget: the epochs-per-round scan and its rule, the budget table
(test accuracy at the key densities against epochs per round), and the literature's
budgets next to ours.  Functions of study rows (:data:`~.config.SCHEMA` frames)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .config import EPOCHS_RULE, EpochsRule
from .summary import KEY_DENSITIES, nearest_round

BUDGET_COLUMNS = ["dataset", "k", "epochs_per_round", "round", "density", "acc_mean", "acc_sd", "n_seeds"]


def epochs_choice(df: pd.DataFrame, rule: EpochsRule = EPOCHS_RULE) -> pd.DataFrame:
    """The ``epochs_scan`` candidates, one per schedule (``setting``: epochs per round
    and learning rate): the mean validation accuracy over the rule's late rounds for
    each scanned k (columns ``val_k<k>``) and over all of them (``mean_val``), and
    which one the rule picks (``chosen``): the fewest epochs whose best schedule is
    within ``rule.tol`` of the best ``mean_val``, with that best schedule (its
    learning rate, where several were scanned)."""
    sub = df[df["variant"] == "epochs_scan"]
    if sub.empty:
        return pd.DataFrame(columns=["epochs", "setting", "mean_val", "chosen"])
    rounds = rule.late_rounds(int(sub["round"].max()))
    late = sub[sub["round"].isin(rounds)]
    # a run still under way would be averaged over fewer (earlier, denser) rounds: only complete runs compete
    complete = late.groupby(["epochs", "setting", "k"])["round"].transform("nunique") == len(rounds)
    late = late[complete]
    if late.empty:
        return pd.DataFrame(columns=["epochs", "setting", "mean_val", "chosen"])
    per_k = late.groupby(["epochs", "setting", "k"])["val_acc"].mean().unstack("k")
    per_k.columns = [f"val_k{k}" for k in per_k.columns]
    table = per_k.assign(mean_val=per_k.mean(axis=1)).reset_index().sort_values(["epochs", "setting"])
    best_per_e = table.groupby("epochs")["mean_val"].max()
    pick_e = int(best_per_e[best_per_e >= table["mean_val"].max() - rule.tol].index.min())
    at_e = table[table["epochs"] == pick_e]
    pick = at_e.loc[at_e["mean_val"].idxmax(), "setting"]
    return table.assign(chosen=table["setting"] == pick).reset_index(drop=True)


def epochs_pick(df: pd.DataFrame, rule: EpochsRule = EPOCHS_RULE) -> int | None:
    """The epochs per round the rule picks from the ``epochs_scan`` rows (None without rows)."""
    choice = epochs_choice(df, rule)
    return int(choice.loc[choice["chosen"], "epochs"].iloc[0]) if len(choice) else None


def epochs_verdict(choice: pd.DataFrame, used: int, rule: EpochsRule = EPOCHS_RULE, used_setting: str | None = None) -> str:
    """One sentence: the epochs per round the rule picks (``choice`` from
    :func:`epochs_choice`) against the profile's ``used`` (and, when the scan tried
    several learning rates, its schedule ``used_setting`` against the picked one)."""
    if choice.empty:
        return f"epochs_scan: no scan rows in this run, so the rule picks nothing to compare with {used} epoch(s) per round"
    chosen = choice[choice["chosen"]].iloc[0]
    pick, setting = int(chosen["epochs"]), str(chosen["setting"])
    several = choice.groupby("epochs")["setting"].nunique().max() > 1
    best = choice.loc[choice["mean_val"].idxmax()]
    margin = 100 * (chosen["mean_val"] - (best["mean_val"] - rule.tol))
    head = (f"epochs_scan: the best mean validation accuracy over the late rounds is {100 * best['mean_val']:.2f}% "
            f"({best['setting']}); the rule (fewest epochs within {100 * rule.tol:g} pp of it) picks {pick}"
            f" ({100 * chosen['mean_val']:.2f}%, {margin:.2f} pp inside the tolerance)"
            + (f" ({setting})" if several else "") + f"; the profile uses {used}"
            + (f" ({used_setting})" if several and used_setting else "") + ": ")
    if pick == used and not (several and used_setting and used_setting != setting):
        return head + "the rule matches the profile"
    if used not in set(choice["epochs"]):
        return head + "the profile's epochs per round are not among the scan's candidates, so the rule cannot pick them"
    return head + "the rule DIFFERS from the profile: the profile no longer follows its own rule"


def budget_table(df: pd.DataFrame, epochs_per_round: int, targets: Sequence[float] = KEY_DENSITIES,
                 seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Test accuracy at the rounds nearest ``targets`` against epochs per round: the
    ``budget`` rows and, for the profile's own ``epochs_per_round``, the ``block``
    rows, on the same seeds (``seeds``; default those of the ``budget`` rows, else
    all).  Columns :data:`BUDGET_COLUMNS`."""
    runs = df[df["variant"].isin(["budget", "block"])]
    if runs.empty:
        return pd.DataFrame(columns=BUDGET_COLUMNS)
    if seeds is None:
        budget_seeds = runs.loc[runs["variant"] == "budget", "seed"].unique()
        seeds = budget_seeds if len(budget_seeds) else runs["seed"].unique()
    runs = runs[runs["seed"].isin(list(seeds))]
    ks = set(runs.loc[runs["variant"] == "budget", "k"]) or set(runs["k"])
    runs = runs[runs["k"].isin(ks)]
    runs = runs.assign(epochs_per_round=runs["epochs"].where(runs["variant"] == "budget", epochs_per_round))
    rounds = [nearest_round(df, t) for t in targets]
    sub = runs[runs["round"].isin(rounds)]
    out = (sub.groupby(["dataset", "k", "epochs_per_round", "round"])
           .agg(density=("density_total", "mean"), acc_mean=("test_acc", "mean"), acc_sd=("test_acc", "std"),
                n_seeds=("seed", "nunique")).reset_index())
    return out[BUDGET_COLUMNS].sort_values(["dataset", "round", "k", "epochs_per_round"]).reset_index(drop=True)


# A change of the coarse-vs-fine gap smaller than this (pp), read on seed 0 alone, is not
# called a trend: the seed-to-seed sd of these accuracies is of the same order.
NOISE_PP = 0.2


def _gap(gap_pp: float, lo_k: int) -> str:
    return f"trails k = {lo_k} by {gap_pp:.2f} pp" if gap_pp >= 0 else f"leads k = {lo_k} by {-gap_pp:.2f} pp"

def budget_reading(table: pd.DataFrame) -> str:
    """What the budget table shows, per data set and round: the gap between the
    coarsest and the finest k at the fewest and the most epochs per round."""
    if table.empty:
        return "No budget rows in this run."
    parts = []
    for (ds, rnd), g in table.groupby(["dataset", "round"]):
        acc = g.pivot_table(index="epochs_per_round", columns="k", values="acc_mean")
        if acc.shape[1] < 2 or acc.shape[0] < 2:
            continue
        lo_k, hi_k = acc.columns.min(), acc.columns.max()
        (e0, g0), (e1, g1) = ((e, 100 * (acc.loc[e, lo_k] - acc.loc[e, hi_k])) for e in (acc.index.min(), acc.index.max()))
        if abs(g1 - g0) < NOISE_PP:
            trend = f"changes by less than {NOISE_PP:g} pp (within seed noise)"
        else:
            trend = "shrinks" if abs(g1) < abs(g0) else "grows"
        parts.append(f"{ds}, round {rnd} ({100 * g['density'].mean():.1f}% density): k = {hi_k} {_gap(g0, lo_k)} "
                     f"at {e0} epoch(s) per round and {_gap(g1, lo_k)} at {e1}: the cost of coarse blocks {trend} "
                     f"with more retraining")
    return "; ".join(parts) + "." if parts else "The budget rows hold one k or one epochs per round only."



# The literature's LeNet-300-100 results on MNIST with their training budgets, as far as
# they are quoted here ('not quoted here' where this project has not checked the paper's figure).
LITERATURE = (
    {"source": "Han et al. 2015", "method": "iterative magnitude pruning (element-wise), prune + retrain",
     "kept_%": 8.2, "dense_error_%": 1.64, "pruned_error_%": 1.59, "epochs_per_round": "not quoted here",
     "budget": "prune + retrain until the accuracy recovers; the retraining length per round is not quoted here "
               "(see the paper)"},
    {"source": "Frankle & Carbin 2019", "method": "iterative magnitude pruning, survivors reset to their initial values",
     "kept_%": 3.6, "dense_error_%": None, "pruned_error_%": None, "epochs_per_round": "about 55",
     "budget": "50K iterations (about 55 epochs) per round; matches the dense accuracy down to about 3.6% kept"},
)


def literature_table(df: pd.DataFrame | None = None, *, baseline_epochs: int | None = None,
                     epochs_per_round: int | None = None, targets: Sequence[float] = KEY_DENSITIES) -> pd.DataFrame:
    """The literature's results (:data:`LITERATURE`) and, from the MNIST rows ``df``,
    ours: element-wise pruning (k = 1) and the dense control at the rounds nearest
    ``targets`` (test error, mean over seeds), with the epochs we spend."""
    rows = [dict(r) for r in LITERATURE]
    if df is not None and len(df) and (df["variant"] == "block").any():
        df = df[df["dataset"] == "mnist"] if "dataset" in df else df
        base = df[df["variant"] == "baseline"]["test_acc"].mean()
        for r in dict.fromkeys(nearest_round(df, t) for t in targets):
            blk = df[(df["variant"] == "block") & (df["k"] == 1) & (df["round"] == r)]
            ctl = df[(df["variant"] == "dense_control") & (df["round"] == r)]["test_acc"].mean()
            if blk.empty:
                continue
            spent = f"{baseline_epochs} dense + {r} rounds x {epochs_per_round}" if baseline_epochs is not None else ""
            rows.append({"source": f"this study (round {r}, {blk['seed'].nunique()} seeds)",
                         "method": "iterative block pruning, k = 1 (element-wise), retrained from the trained net",
                         "kept_%": round(100 * blk["density_total"].mean(), 1), "dense_error_%": round(100 * (1 - base), 2),
                         "pruned_error_%": round(100 * (1 - blk["test_acc"].mean()), 2),
                         "epochs_per_round": str(epochs_per_round) if epochs_per_round is not None else "",
                         "budget": f"{spent} epochs; the equal-training dense control errs "
                                   f"{100 * (1 - ctl):.2f}%" if ctl == ctl else spent})
    return pd.DataFrame(rows)


def figure_caption(name: str, dataset: str = "", rounds: int = 16, rule: EpochsRule = EPOCHS_RULE) -> str:
    """The caption of one of notebook 05's figures: ``"epochs_scan"`` (of ``dataset``,
    a profile of ``rounds`` rounds), ``"budget"`` or ``"pareto"`` (of ``dataset``)."""
    if name == "epochs_scan":
        return (f"LeNet-300-100 on {dataset}: mean validation accuracy over the late rounds (rounds "
                f"{list(rule.late_rounds(rounds))}) of block pruning with E retraining epochs per round, per scanned k "
                f"(seed 0); the circle marks the rule's pick (the fewest epochs within {100 * rule.tol:g} pp of the "
                f"best mean).")
    if name == "budget":
        return (f"LeNet-300-100: test accuracy (%) of block pruning at the rounds nearest "
                f"{' and '.join(f'{100 * d:.1f}%' for d in KEY_DENSITIES)} of the weights kept against retraining "
                "epochs per round, per block size k (seed 0; error bars: sd over seeds where there are several).")
    if name == "pareto":
        return (f"LeNet-300-100 on {dataset}: test accuracy (mean over seeds) against the forward latency of the fastest "
                f"backend (seed-0 weights, 1 thread) at batch 1 and 256, for block pruning per k, neuron pruning, the "
                f"narrow dense nets and the dense baseline; dashed: the Pareto frontier.")
    raise ValueError(f"unknown figure {name!r}; choose one of ['budget', 'epochs_scan', 'pareto']")
