"""Words and tables of the LeNet study for notebook 01, read off the result rows (a
DataFrame of :data:`~.config.SCHEMA` rows): the figure captions, the tables beside
the figures (key densities, dense control, the authors' set-up, random controls) and
the closing reading.  Nothing here writes a file (:mod:`.publish` does)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import pandas as pd

from .config import lenet_profile, run_config
from .summary import KEY_DENSITIES, baseline_summary, controls_summary, mean_sd, nearest_round, summary_at

FIGURES = ("schedule_scan", "acc_vs_density", "acc_vs_k", "random_controls", "weights", "sensitivity")


# ------------------------------------------------------------------------ captions
def summary_caption(prof) -> str:
    """The caption of ``lenet_summary`` for the profile ``prof``."""
    return (f"LeNet-300-100 test accuracy (%, mean ± sd over seeds, number of seeds in brackets) of the dense baseline "
            f"and, at the pruning rounds nearest {' and '.join(f'{100 * d:.1f}%' for d in KEY_DENSITIES)} total "
            f"density, of the dense control (the baseline retrained for the same epochs, no pruning), block pruning, "
            f"the random block masks (retrained / from scratch) and the authors' set-up "
            f"({min(prof.authors_retrain_epochs)} retraining epoch(s) per round, seed 0); neuron pruning (whole hidden units "
            f"removed, k = 0) and the narrow dense nets (as many weights as those rounds keep, trained from scratch).  "
            f"The CSV has every round.")


def accuracy_vs_k_caption(dataset: str, table: pd.DataFrame, seeds) -> str:
    """Caption of an accuracy-vs-k figure, from its table."""
    at = table.sort_values("round")["at"].drop_duplicates().str.replace("~", "")
    return (f"LeNet-300-100 on {dataset}: test accuracy vs block size k at the pruning rounds nearest 10%, 5% and "
            f"{min(table['density']) * 100:.1f}% total density ({', '.join(at)}); mean ± sd over seeds {list(seeds)}.")


# the captions of notebook 01's figures but acc_vs_k, after "LeNet-300-100 on <dataset>: ", filled in by caption()
_CAPTIONS = {
    "schedule_scan": "validation accuracy of the baseline schedule candidates per epoch (left) and of block pruning "
                     "(k = {prof.scan_k}, seed 0) per round with each retraining candidate (right); the profile's choices "
                     "are marked in the tables of notebook 01.",
    "acc_vs_density": "test accuracy vs total weight density after each of {cfg.pruning.rounds} rounds of per-layer "
                      "block pruning (mean |w| scores; fc1/fc2 -20%, fc3 -10% of surviving blocks per round) + "
                      "{cfg.training.retrain.epochs} retraining epoch(s), for block sizes k={ks}; mean ± sd over "
                      "seeds {seeds}.",
    "random_controls": "block pruning vs random block masks with the same per-layer block counts (retrained from the "
                       "baseline like block pruning, or trained from scratch for {cfg.training.scratch.epochs} epochs at "
                       "rounds {scratch_rounds}), per k; mean ± sd over seeds {seeds}.",
    "weights": "kept weights (black) of fc1, fc2, fc3 after round {cfg.pruning.rounds} of block pruning for "
               "each block size k (seed 0), and a 60x60 zoom of fc1; the CSV gives the kept-weight counts per layer "
               "(the full coordinates come from blockprune_utils.studies.lenet.weight_frame).",
    "sensitivity": "test accuracy when only one layer is block-pruned to a given density from the dense baseline "
                   "(no retraining), per block size k; mean ± sd over seeds {seeds}.",
}


def caption(figure: str, profile: str, dataset: str, seeds: Sequence[int], table: pd.DataFrame | None = None) -> str:
    """The caption of notebook 01's figure ``figure`` (one of :data:`FIGURES`) for a run
    of ``profile`` on ``dataset`` drawn from ``seeds``; ``acc_vs_k`` reads its rounds
    off the figure's ``table``."""
    if figure not in FIGURES:
        raise ValueError(f"no LeNet figure {figure!r}; the figures are {FIGURES}")
    prof, cfg = lenet_profile(profile), run_config(profile, dataset)
    if figure == "acc_vs_k":
        if table is None:
            raise ValueError("the acc_vs_k caption reads its rounds off the figure's table: pass table=")
        return accuracy_vs_k_caption(dataset, table, seeds)
    return f"LeNet-300-100 on {dataset}: " + _CAPTIONS[figure].format(
        prof=prof, cfg=cfg, seeds=seeds, ks=list(prof.ks), scratch_rounds=list(cfg.pruning.scratch_rounds))


# ------------------------------------------------------------- the set-up and the results table
def training_phases(cfg) -> pd.DataFrame:
    """The three training phases of the run configuration ``cfg`` (baseline,
    retraining, random-scratch control), one row each."""
    return pd.DataFrame([{"phase": n, **dataclasses.asdict(getattr(cfg.training, n))}
                         for n in ("baseline", "retrain", "scratch")]).set_index("phase")


def baseline_sentence(df: pd.DataFrame, dataset: str) -> str:
    """The dense baseline's test accuracy, with its spread over seeds."""
    base = baseline_summary(df)
    spread = f"± {100 * base['acc_sd']:.2f} % over {base['n_seeds']} seeds" if base["n_seeds"] > 1 else "(one seed: no spread)"
    return f"dense baseline ({dataset}): {100 * base['acc_mean']:.2f} % test accuracy {spread}"


def _key_rows(df: pd.DataFrame) -> pd.DataFrame:
    at = summary_at(df, targets=KEY_DENSITIES).drop_duplicates(["round", "k"])
    at["column"] = [f"round {r} (~{100 * d:.1f}%)" for r, d in zip(at["round"], at.groupby("round")["density"].transform("mean"))]
    return at


def key_density_table(df: pd.DataFrame) -> pd.DataFrame:
    """Block pruning's test accuracy ('mean ± sd' in %, one row per k) at the rounds
    nearest :data:`~.summary.KEY_DENSITIES`, one column per round."""
    return mean_sd(_key_rows(df), index="k", columns="column")


def key_density_sentence(df: pd.DataFrame, profile: str) -> str:
    """Which rounds :func:`key_density_table` shows, and where a short run ends."""
    shown = sorted(_key_rows(df)["column"].unique())
    return (f"rounds nearest {' and '.join(f'{100 * t:.1f}%' for t in KEY_DENSITIES)} density in this run: {', '.join(shown)}"
            + ("" if len(shown) == 2 else f" (this {profile} run ends at round {int(df['round'].max())})"))


def _key_round_numbers(df: pd.DataFrame) -> list[int]:
    return sorted({nearest_round(df, t) for t in KEY_DENSITIES})


# ---------------------------------------------------------------- the dense control
def dense_control_table(df: pd.DataFrame) -> pd.DataFrame:
    """The dense control against block pruning per k at the rounds nearest the key
    densities ('mean ± sd' in %, one row per method, one column per round); empty
    without dense-control rows."""
    if (df["variant"] == "dense_control").sum() == 0:
        return pd.DataFrame()
    rounds = _key_round_numbers(df)
    sub = df[df["variant"].isin(["dense_control", "block"]) & df["round"].isin(rounds)]
    g = sub.groupby(["round", "variant", "k"]).agg(acc_mean=("test_acc", "mean"), acc_sd=("test_acc", "std")).reset_index()
    g["label"] = [("dense control" if v == "dense_control" else f"block k={k}") for v, k in zip(g["variant"], g["k"])]
    return mean_sd(g, index="label", columns="round")


def dense_control_sentence(df: pd.DataFrame) -> str:
    """The dense control's accuracy after its extra epochs, against the dense baseline."""
    ctrl = df[df["variant"] == "dense_control"]
    if ctrl.empty:
        return "no dense-control rows in this run"
    base = baseline_summary(df)
    last_round = ctrl["round"].max()
    last = ctrl[ctrl["round"] == last_round]["test_acc"]
    extra = int(ctrl[ctrl["seed"] == ctrl["seed"].min()].query("round <= @last_round")["epochs"].sum())
    return (f"dense baseline {100 * base['acc_mean']:.2f}%; dense control after {extra} more epochs "
            f"({int(last_round)} rounds): "
            f"{100 * last.mean():.2f}% ({100 * (last.mean() - base['acc_mean']):+.2f} pp)")


# ------------------------------------------------------------ the authors' set-up
def authors_table(df: pd.DataFrame, authors: pd.DataFrame, ks: Sequence[int]) -> pd.DataFrame:
    """Test accuracy (%, seed 0) of block pruning at the ``ks`` in this study's set-up
    and in the authors' (``authors``: rows of :func:`~.study.authors_frame`, one set-up
    per retraining budget), at the rounds nearest the key densities; empty without
    rows of the authors' set-up."""
    if authors.empty:
        return pd.DataFrame()
    rounds = _key_round_numbers(df)
    ours = df[(df["variant"] == "block") & (df["seed"] == 0) & df["k"].isin(ks) & df["round"].isin(rounds)]
    rows = [ours.assign(setup="this study")]
    rows += [g.assign(setup=f"authors, {b} epoch(s)/round") for b, g in authors[authors["variant"] == "block"].groupby("budget")]
    both = pd.concat(rows, ignore_index=True)
    both = both[both["round"].isin(rounds)]
    table = both.pivot_table(index=["setup", "k"], columns="round", values="test_acc", aggfunc="mean") * 100
    block = df[df["variant"] == "block"]
    table.columns = [f"round {r} (~{100 * block[block['round'] == r]['density_total'].mean():.1f}%)" for r in table.columns]
    return table.round(2)


def authors_baseline_sentence(df: pd.DataFrame, authors: pd.DataFrame) -> str:
    """The dense baselines (seed 0) of the authors' set-ups and of this study."""
    if authors.empty:
        return "no rows of the authors' set-up in this run"
    bases = authors[authors["variant"] == "baseline"].groupby("budget")["test_acc"].first() * 100
    ours = df[(df["variant"] == "baseline") & (df["seed"] == 0)]["test_acc"].iloc[0]
    return (f"authors' dense baseline (seed 0): {({f'{b} ep/round config': round(v, 2) for b, v in bases.items()})} "
            f"| ours (seed 0): {100 * ours:.2f}")


# ------------------------------------------------------------- reading the results
def end_of_pruning(df: pd.DataFrame) -> str:
    """One line per k: block pruning's accuracy and density at the last round, against
    the dense baseline and the equal-training dense control."""
    base = baseline_summary(df)
    blk = df[df["variant"] == "block"]
    last_round = int(blk["round"].max())
    end = blk[blk["round"] == last_round].groupby("k")[["test_acc", "density_total"]].mean()
    ctrl_last = df[(df["variant"] == "dense_control") & (df["round"] == last_round)]["test_acc"].mean()
    lines = []
    for k, r in end.iterrows():
        vs_ctrl = ("" if ctrl_last != ctrl_last
                   else f", {100 * (r.test_acc - ctrl_last):+.2f} pp vs the equal-training dense control")
        lines.append(f"k={k}: {100 * r.test_acc:.2f}% at {100 * r.density_total:.1f}% density "
                     f"({100 * (r.test_acc - base['acc_mean']):+.2f} pp vs the dense baseline{vs_ctrl})")
    return "\n".join(lines)


def random_gap_table(df: pd.DataFrame) -> pd.DataFrame:
    """The random controls minus block pruning, in percentage points (negative: block
    pruning is better), per (round, k); empty without control rows."""
    ctrl = controls_summary(df)
    if ctrl.empty:
        return pd.DataFrame()
    wide = ctrl.pivot_table(index=["round", "k"], columns="variant", values="acc_mean")
    return (wide.sub(wide["block"], axis=0) * 100).drop(columns="block").round(2)


def retraining_and_time(df: pd.DataFrame) -> str:
    """The accuracy retraining recovers per k, and the wall time recorded per variant."""
    blk = df[df["variant"] == "block"]
    recovery = blk.assign(recovered=100 * (blk["test_acc"] - blk["test_acc_pruned"]))
    wall = df.groupby("variant")["wall_s"].sum() / 60
    return ("mean accuracy recovered by retraining (pp), per k: "
            f"{recovery.groupby('k')['recovered'].mean().round(2).to_dict()}\n\n"
            f"wall time recorded in the cache (minutes, summed over rows): {wall.round(1).to_dict()}, "
            f"total {wall.sum():.1f} min")
