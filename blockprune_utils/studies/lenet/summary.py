"""Summaries of LeNet study rows (a DataFrame of :data:`~.config.SCHEMA` rows): the
baseline, accuracy at target densities, the random-mask controls."""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

__all__ = ["baseline_summary", "summary_at", "controls_summary", "mean_sd", "nearest_round", "select_rows"]

# Total densities of the two rounds the tables quote: round 11 (about 8.7%) and round 16
# (about 2.9%: fc1 and fc2 keep 0.8^16 = 2.8% of their weights, fc3 keeps 0.9^16 = 18.5%).
KEY_DENSITIES = (0.087, 0.029)


def select_rows(df, ks, seeds, variants):
    """The rows of the requested axes (and the baselines of the requested seeds; the
    k = 0 variants - dense control, baseline scan - whatever ``ks``)."""
    if df.empty:
        return df
    keep = df["seed"].isin(seeds) & ((df["variant"] == "baseline") |
                                     ((df["k"].isin(ks) | (df["k"] == 0)) & df["variant"].isin(variants)))
    return df[keep].sort_values(["variant", "k", "seed", "round", "layer"]).reset_index(drop=True)


def baseline_summary(df):
    """Dense baseline test accuracy: mean, sd and number of seeds."""
    base = df[df["variant"] == "baseline"]
    return {"acc_mean": base["test_acc"].mean(), "acc_sd": base["test_acc"].std(), "n_seeds": base["seed"].nunique()}


def summary_at(df, targets: Sequence[float] = KEY_DENSITIES, variants: Sequence[str] = ("block",)):
    """Test accuracy (mean, sd over seeds) per variant and k at the rounds nearest the
    target densities (rounds picked on ``block``; variants lacking a round are left out)."""
    parts = []
    for t in targets:
        r = nearest_round(df, t)
        sub = df[(df["round"] == r) & df["variant"].isin(variants)]
        g = sub.groupby(["variant", "k"]).agg(density=("density_total", "mean"), acc_mean=("test_acc", "mean"),
                                              acc_sd=("test_acc", "std"), n_seeds=("seed", "nunique")).reset_index()
        parts.append(g.assign(target=t, round=r))
    cols = ["target", "round", "variant", "k", "density", "acc_mean", "acc_sd", "n_seeds"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def controls_summary(df):
    """Block pruning vs the random-mask controls at the rounds where ``random_scratch``
    was trained: test accuracy mean and sd over seeds, one row per (round, k, variant)."""
    rounds = sorted(df.loc[df["variant"] == "random_scratch", "round"].unique())
    sub = df[df["variant"].isin(["block", "random_retrain", "random_scratch"]) & df["round"].isin(rounds)]
    return (sub.groupby(["round", "k", "variant"]).agg(density=("density_total", "mean"), acc_mean=("test_acc", "mean"),
                                                      acc_sd=("test_acc", "std"), n_seeds=("seed", "nunique"))
            .reset_index())


def mean_sd(frame, index, columns, value="acc_mean", sd="acc_sd", scale=100.0, digits=2):
    """A pivot of 'mean +- sd' strings (for display)."""
    text = frame.assign(cell=[f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}" if s == s else f"{scale * m:.{digits}f}"
                              for m, s in zip(frame[value], frame[sd])])
    return text.pivot(index=index, columns=columns, values="cell")


def nearest_round(df, target: float, variant: str = "block") -> int:
    """The pruning round whose mean total density is nearest ``target`` (log scale)."""
    sub = df[df["variant"] == variant]
    dens = sub.groupby("round")["density_total"].mean()
    return int((dens.apply(math.log) - math.log(target)).abs().idxmin())


SUMMARY_VARIANTS = ("baseline", "dense_control", "block", "random_retrain", "random_scratch", "authors", "neuron",
                    "narrow_dense")


def summary_table(df, authors=None):
    """One row per (dataset, variant, k, round): mean total density, test accuracy
    mean and sd over seeds, number of seeds.  ``df`` holds the study's rows,
    ``authors`` the block-pruning rows of the authors' set-up (variant ``authors``)."""
    parts = [df[df["variant"].isin(SUMMARY_VARIANTS)]]
    if authors is not None and len(authors):
        parts.append(authors[authors["variant"] == "block"].assign(variant="authors"))
    rows = pd.concat(parts, ignore_index=True)
    if rows.empty:
        return pd.DataFrame(columns=["dataset", "variant", "k", "round", "density", "acc_mean", "acc_sd", "n_seeds"])
    out = (rows.groupby(["dataset", "variant", "k", "round"])
           .agg(density=("density_total", "mean"), acc_mean=("test_acc", "mean"), acc_sd=("test_acc", "std"),
                n_seeds=("seed", "nunique"))
           .reset_index())
    out["variant"] = pd.Categorical(out["variant"], SUMMARY_VARIANTS, ordered=True)
    return out.sort_values(["dataset", "variant", "k", "round"]).reset_index(drop=True).assign(
        variant=lambda d: d["variant"].astype(str))


def key_rounds(summary, targets: Sequence[float] = KEY_DENSITIES) -> list[int]:
    """The block-pruning rounds whose mean density is nearest each target (log scale)."""
    blk = summary[summary["variant"] == "block"]
    if blk.empty:
        return []
    dens = blk.groupby("round")["density"].mean()
    return [int((dens.apply(math.log) - math.log(t)).abs().idxmin()) for t in targets]


def compact_summary(summary, targets: Sequence[float] = KEY_DENSITIES):
    """The summary at the rounds nearest ``targets`` (plus the baselines), as
    'mean ± sd (n)' accuracy strings in percent: one row per (dataset, variant, k)."""
    rounds = key_rounds(summary, targets)
    base = summary[summary["variant"] == "baseline"]
    sub = pd.concat([base, summary[summary["round"].isin(rounds) & (summary["variant"] != "baseline")]])
    if sub.empty:
        return pd.DataFrame()
    dens = summary[summary["variant"] == "block"].groupby("round")["density"].mean()
    sub = sub.assign(column=[("dense" if v == "baseline" else f"round {r} ({100 * dens.get(r, d):.1f}%)")
                             for v, r, d in zip(sub["variant"], sub["round"], sub["density"])],
                     cell=[f"{100 * m:.2f} ± {100 * s:.2f} ({n})" if s == s else f"{100 * m:.2f} ({n})"
                           for m, s, n in zip(sub["acc_mean"], sub["acc_sd"], sub["n_seeds"])])
    wide = sub.pivot_table(index=["dataset", "variant", "k"], columns="column", values="cell", aggfunc="first")
    order = {v: i for i, v in enumerate(SUMMARY_VARIANTS)}
    wide = wide.reset_index()
    wide = wide.sort_values(["dataset", "variant", "k"], key=lambda c: c.map(order) if c.name == "variant" else c)
    return wide.fillna("").reset_index(drop=True)


def scan_choice(df, variant: str, tol: float = 0.001) -> pd.DataFrame:
    """The schedule candidates of a scan with their final and mean validation
    accuracy, and which one the rule picks: for ``baseline_scan`` the shortest
    schedule whose final validation accuracy is within ``tol`` of the best (the
    plateau); for ``retrain_scan`` the best mean validation accuracy over all rounds."""
    sub = df[df["variant"] == variant]
    if sub.empty:
        return pd.DataFrame(columns=["setting", "epochs", "final_val", "mean_val", "chosen"])
    last = sub.sort_values("round").groupby("setting").tail(1).set_index("setting")
    table = pd.DataFrame({"epochs": sub.groupby("setting")["round"].max(), "final_val": last["val_acc"],
                          "mean_val": sub.groupby("setting")["val_acc"].mean()}).reset_index()
    if variant == "baseline_scan":
        ok = table[table["final_val"] >= table["final_val"].max() - tol]
        pick = ok.sort_values(["epochs", "final_val"], ascending=[True, False])["setting"].iloc[0]
    else:
        pick = table.sort_values("mean_val", ascending=False)["setting"].iloc[0]
    return table.assign(chosen=table["setting"] == pick).sort_values("epochs").reset_index(drop=True)


def scan_verdict(choice: pd.DataFrame, variant: str, used: str) -> str:
    """One sentence: the setting a scan's rule picks (``choice`` from :func:`scan_choice`)
    against the setting ``used`` by the profile, and why they may differ."""
    picked = choice.loc[choice["chosen"], "setting"].tolist()
    if not picked:
        return f"{variant}: no scan rows in this run, so the rule picks nothing to compare with {used!r}"
    head = f"{variant}: the rule picks {picked[0]!r}; the profile uses {used!r}: "
    if picked == [used]:
        return head + "the rule matches the profile"
    if used not in set(choice["setting"]):
        return head + ("the profile's setting is not among the scan's candidates (a quick profile keeps its runs short "
                       "and its scan small), so the rule cannot pick it")
    col = "final_val" if variant == "baseline_scan" else "mean_val"
    acc = choice.set_index("setting")[col]
    gap = 100 * (acc[picked[0]] - acc[used])
    what = col.split("_")[0]
    return head + (f"the rule DIFFERS from the profile: the profile no longer follows its own rule (the pick's {what} "
                   f"validation accuracy is {abs(gap):.2f} pp {'above' if gap >= 0 else 'below'} the profile's, on one seed)")


def _density_ranges(values) -> str:
    vals = sorted(float(v) for v in values)
    return f"{100 * vals[0]:g}%" if len(vals) == 1 else f"{100 * vals[0]:g}-{100 * vals[-1]:g}%"


def sensitivity_reading(table: pd.DataFrame) -> str:
    """What the per-layer sensitivity scan shows (``table``: layer, k, target_density,
    acc_mean in percent): at each density, the layer whose pruning alone costs the most
    accuracy (mean over k), in words."""
    if table.empty:
        return "No sensitivity rows in this run."
    acc = table.groupby(["target_density", "layer"])["acc_mean"].mean().unstack()
    worst = acc.idxmin(axis=1)
    parts = [f"{layer} at densities {_density_ranges(worst.index[worst == layer])}" for layer in sorted(set(worst))]
    low, high = acc.index.min(), acc.index.max()
    ends = "; ".join(f"at {100 * d:g}% density: " + ", ".join(f"{c} {acc.loc[d, c]:.1f}%" for c in acc.columns)
                     for d in (high, low))
    text = ("Pruned alone and not retrained (accuracy averaged over k), the layer that costs the most accuracy is "
            + "; ".join(parts) + ". " + ends[0].upper() + ends[1:] + ".")
    if "fc3" in acc.columns and "fc3" not in set(worst):
        text += " At no density scanned is fc3 the most sensitive layer."
    return text
