"""Words and tables for notebook 03.  From the result rows, so that no sentence
states more than the numbers shown: what results exist, experiment A against the
authors' README, how the set-ups differ, and what the rows say (these functions take
result sets: ``{profile name: StudyResult}``).  From a profile: its training phases
as a table, and its time arithmetic on the CPU it was made for.
"""
from __future__ import annotations

import math

import pandas as pd

from ...infra.figures import is_quick
from .cli import CPU_COMMAND, gpu_command
from .config import AUTHORS_README, CPU_RATES, CifarProfile, Phase, TrunkSchedule, cifar_profile
from .export import StudyResult

CHANCE_PP = 10.0  # CIFAR-10: ten balanced classes
N_TRAIN, N_TEST = 50_000, 10_000  # its training and test images
LABELS = {"paper": "paper profile (made for one GPU)", "cpu": "cpu profile (made for 2 CPU cores)",
          "quick": "quick profile (tests the code; not a result)"}


def label(profile: str) -> str:
    return LABELS.get(profile, f"{profile} profile")


def header(res: StudyResult) -> str:
    """One line naming a result set: rows, data, profile, seeds, device, commits."""
    return (f"**{label(res.profile)}**: {len(res.rows)} result rows · data **{res.source}** · profile `{res.profile}` "
            f"· seeds {res.seeds} · device `{res.device}` · commit `{res.commits}`"
            + ("" if res.complete else " · **incomplete run**"))


def status(sets: dict, quick: bool) -> str:
    """What the notebook can show, and how to make what is missing."""
    if quick:
        return "This run computed the quick profile on this machine: " + header(next(iter(sets.values())))
    lines = [header(res) for res in sets.values()]
    if "paper" not in sets:
        lines.append("**No GPU run has been made yet**: there are no `figures/cifar_paper_results_*.csv`, so no "
                     f"paper-profile figures are drawn. On a CUDA machine: `{gpu_command('A')}` (and `--experiment B`).")
    if "cpu" not in sets:
        lines.append("**No CPU run has been made yet**: there is no `figures/cifar_cpu_experiment_a.csv`, so no "
                     f"cpu-profile figures are drawn. On this 2-core CPU, about 90 minutes: `{CPU_COMMAND}`.")
    if not sets:
        lines.append("The sections below therefore show no numbers; the method and set-up are described all the same.")
    return "\n\n".join(f"- {line}" for line in lines)


def _a(rows: pd.DataFrame, k: int = 2) -> pd.DataFrame:
    a = rows[rows["experiment"] == "A"]
    return a[a["k"] == (k if (a["k"] == k).any() else a["k"].min())]


def noise_points(acc: float, n_test: int) -> float:
    """Sampling noise of a test accuracy (one standard error, in points)."""
    return 100 * math.sqrt(max(acc * (1 - acc), 1e-12) / max(n_test, 1))


def head_numbers(rows: pd.DataFrame) -> dict | None:
    """Experiment A at k = 2: unpruned and last-round accuracy (mean over seeds), the
    seeds' sd, the test set's sampling noise, the head density reached."""
    a = _a(rows)
    if a.empty or a["round"].max() == 0:
        return None
    last = a[a["round"] == a["round"].max()]
    acc0, acc = float(a.loc[a["round"] == 0, "test_acc"].mean()), float(last["test_acc"].mean())
    sd = 100 * float(last["test_acc"].std(ddof=1)) if len(last) > 1 else 0.0
    best = pd.to_numeric(last["test_acc_best_epoch"], errors="coerce").mean()
    return {"k": int(a["k"].iloc[0]), "round": int(last["round"].iloc[0]), "seeds": len(last),
            "density": float(last["density"].mean()), "unpruned": 100 * acc0, "pruned": 100 * acc,
            "best": 100 * float(best), "change": 100 * (acc - acc0), "sd": sd,
            "noise": noise_points(acc, int(last["n_test"].iloc[0]))}


def change_words(change: float, tol: float) -> str:
    if abs(change) <= tol:
        return f"about the same ({change:+.2f} points, within ±{tol:.2f})"
    return f"{'higher' if change > 0 else 'lower'} by {abs(change):.2f} points (more than ±{tol:.2f})"


def head_sentence(rows: pd.DataFrame) -> str:
    """Unpruned against the last round of A (k = 2), in words measured against the noise."""
    n = head_numbers(rows)
    if n is None:
        return "_No pruning round of A in these rows._"
    tol = max(n["sd"], n["noise"])
    seeds = f"mean of {n['seeds']} seeds, sd {n['sd']:.2f}" if n["seeds"] > 1 else "one seed"
    return (f"After round {n['round']} (k={n['k']}, head density {100 * n['density']:.1f}%) the test accuracy is "
            f"**{n['pruned']:.2f}%** ({seeds}) against **{n['unpruned']:.2f}%** unpruned: "
            f"{change_words(n['change'], tol)}; ±{tol:.2f} is the larger of the seeds' sd and the test set's sampling "
            f"noise. Kept at the best epoch on test (the authors' selection) it would read {n['best']:.2f}%.")


def authors_table(sets: dict) -> pd.DataFrame:
    """Unpruned against about 97%-sparse head: the authors' README and each result set."""
    ref = AUTHORS_README
    rows = [{"source": "authors' README (their run)", "seeds": 1, "unpruned %": 100 * ref["unpruned_acc"],
             "head density %": 100 * (1 - ref["pruned_head_sparsity"]), "pruned %": 100 * ref["pruned_acc"],
             "change (points)": 100 * (ref["pruned_acc"] - ref["unpruned_acc"]), "± noise": float("nan"),
             "best epoch on test %": 100 * ref["pruned_acc"]}]
    for name, res in sets.items():
        n = head_numbers(res.rows)
        if n is not None:
            rows.append({"source": f"{label(name)}, k={n['k']}, round {n['round']}", "seeds": n["seeds"],
                         "unpruned %": n["unpruned"], "head density %": 100 * n["density"], "pruned %": n["pruned"],
                         "change (points)": n["change"], "± noise": max(n["sd"], n["noise"]),
                         "best epoch on test %": n["best"]})
    return pd.DataFrame(rows).round(2)


def authors_sentence(sets: dict) -> str:
    """How each result set's change compares with the authors' +0.36 points."""
    ref = 100 * (AUTHORS_README["pruned_acc"] - AUTHORS_README["unpruned_acc"])
    parts = []
    for name, res in sets.items():
        n = head_numbers(res.rows)
        if n is None:
            continue
        tol = max(n["sd"], n["noise"])
        if is_quick(res.profile):
            verdict = "a quick run, which tests the code: no claim"
        elif n["unpruned"] < 2 * CHANCE_PP:
            verdict = f"no claim: the unpruned network is near chance level ({CHANCE_PP:g}%)"
        elif abs(n["change"]) <= tol:
            verdict = "within the noise of no change, so it neither confirms nor contradicts the authors' gain"
        elif n["change"] > 0:
            verdict = "a gain, like the authors'"
        else:
            verdict = "a loss, unlike the authors' gain"
        parts.append(f"{label(name)}: {n['change']:+.2f} ± {tol:.2f} points at head density {100 * n['density']:.1f}%, "
                     f"{verdict}")
    if not parts:
        return "_No result set has a pruning round of A to compare with the authors' README._"
    return (f"The authors' README reports {ref:+.2f} points (90.37% -> 90.73%) from a single run. " + "; ".join(parts)
            + ". The set-ups differ (table below), so equal numbers are not expected.")


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _baseline_words(name: str) -> str:
    ph = cifar_profile(name).baseline
    if isinstance(ph, TrunkSchedule):
        return (f"{_epochs(ph.epochs)}, SGD (Nesterov) one-cycle to lr {ph.lr}, label smoothing {ph.label_smoothing}, "
                f"image size {'/'.join(str(s) for s in ph.sizes)} per epoch, batch {ph.batch_size}; last epoch kept")
    return (f"{_epochs(ph.epochs)}, Adam lr {ph.lr} ({ph.schedule}), weight decay {ph.weight_decay}, batch "
            f"{ph.batch_size}; last epoch kept")


def setup_table(sets: dict) -> pd.DataFrame:
    """How the authors' set-up and each result set's profile differ."""
    cols = {"aspect": ["data", "baseline training", "head retraining per round", "trunk during head retraining",
                       "head output", "seeds"],
            "authors": ["CIFAR-10 (original)", "300 epochs, Adam lr 1e-4, weight decay 5e-4, batch 1024; best test "
                        "epoch kept", "up to 300 epochs, Adam lr 1e-4; best test epoch kept",
                        "conv and BN weights frozen; BN running statistics still update (train mode); augmented images",
                        "softmax fed to CrossEntropyLoss (double softmax)", "one run"]}
    for name, res in sets.items():
        p = cifar_profile(name)
        r = p.a.retrain
        trunk = ("fully frozen (eval mode, BN statistics too): features of un-augmented images, cached once"
                 if p.head_on_features else "as the authors' (train mode, augmented images)")
        seeds = (f"{len(res.seeds)} head seeds on one trunk" if p.head_on_features else f"{len(res.seeds)} seed(s)")
        cols[label(name)] = [res.source, _baseline_words(name),
                             f"{_epochs(r.epochs)}, Adam lr {r.lr}, batch {r.batch_size}; last epoch kept (best recorded)",
                             trunk, "softmax, as the authors'" if p.model.authors_softmax else "logits", seeds]
    return pd.DataFrame(cols)


def ks_sentence(rows: pd.DataFrame) -> str:
    """A at every k: which block size ends highest and lowest, against the noise."""
    a = rows[rows["experiment"] == "A"]
    last = a[a["round"] == a["round"].max()]
    if a["k"].nunique() < 2 or a["round"].max() == 0:
        return ""
    g = last.groupby("k").agg(acc=("test_acc", "mean"), sd=("test_acc", "std"), density=("density", "mean"))
    g = 100 * g.fillna(0)
    hi, lo = g["acc"].idxmax(), g["acc"].idxmin()
    spread = g.loc[hi, "acc"] - g.loc[lo, "acc"]
    tol = max(float(g["sd"].max()), noise_points(float(last["test_acc"].mean()), int(last["n_test"].iloc[0])))
    verdict = ("larger than" if spread > tol else "within") + f" the noise (±{tol:.2f})"
    return (f"After round {int(last['round'].iloc[0])} (head density {g['density'].min():.1f}-{g['density'].max():.1f}%),"
            f" k={hi} ends highest ({g.loc[hi, 'acc']:.2f}%) and k={lo} lowest ({g.loc[lo, 'acc']:.2f}%): a spread of "
            f"{spread:.2f} points, {verdict}.")


def b_sentence(rows: pd.DataFrame) -> str:
    """B: at the last round, the damage right after pruning and the accuracy after retraining per k."""
    b = rows[rows["experiment"] == "B"]
    if b.empty or b["round"].max() == 0:
        return ""
    rows_last = b[b["round"] == b["round"].max()]
    last = rows_last.groupby("k")[["test_acc_pruned", "test_acc", "density"]].mean() * 100
    tol = noise_points(float(rows_last["test_acc"].mean()), int(rows_last["n_test"].iloc[0]))

    def ranked(col: str, when: str) -> str:
        v = last[col]
        if v.max() - v.min() <= tol:
            return f"{when} every k is within ±{tol:.2f} points of the others ({v.min():.2f}-{v.max():.2f}%)"
        return (f"{when} k={v.idxmax()} is highest ({v.max():.2f}%) and k={v.idxmin()} lowest ({v.min():.2f}%), "
                f"more than the noise (±{tol:.2f}) apart")

    return (f"At round {int(b['round'].max())} (density {last['density'].mean():.1f}%), "
            f"{ranked('test_acc_pruned', 'right after pruning')}; {ranked('test_acc', 'after retraining')}.")


# ------------------------------------------------------------------ a profile in words and numbers


def _baseline_row(p: CifarProfile) -> dict:
    ph = p.baseline
    if isinstance(ph, TrunkSchedule):
        sizes = ", ".join(str(s) for s in ph.sizes)
        return {"phase": "baseline (all parameters)", "epochs": ph.epochs, "optimizer": "SGD, Nesterov 0.9",
                "lr": ph.lr, "schedule": f"one-cycle (warm-up {ph.warmup_frac:.0%})", "batch": ph.batch_size,
                "weight decay (L2)": ph.weight_decay,
                "pruning": f"from scratch; label smoothing {ph.label_smoothing}; image size per epoch: {sizes}"}
    return _phase_row("baseline (all parameters)", ph, "from scratch")


def _phase_row(what: str, ph: Phase, extra: str) -> dict:
    return {"phase": what, "epochs": ph.epochs, "optimizer": "Adam", "lr": ph.lr, "schedule": ph.schedule,
            "batch": ph.batch_size, "weight decay (L2)": ph.weight_decay, "pruning": extra}


def profile_table(profile) -> pd.DataFrame:
    """The training phases of a profile as a small table (for the notebook)."""
    p = cifar_profile(profile)
    on = "on cached trunk features, trunk frozen (BN included)" if p.head_on_features else "convs+BN frozen"
    seeds = f"; head seeds {list(p.seeds)}, one trunk (seed {p.trunk_seed})" if p.head_on_features else ""
    rows = [_baseline_row(p),
            _phase_row("A: head retraining per round", p.a.retrain,
                       f"k in {list(p.a.ks)}, {p.a.rounds} rounds, p={dict(p.a.rates)}, {on}{seeds}")]
    if "B" in p.experiments:
        rows.append(_phase_row("B: retraining per round", p.b.retrain,
                               f"k in {list(p.b.ks)}, {p.b.rounds} rounds, p={p.b.rate} per layer"))
    d = p.data
    images = "all" if d.train_per_class is None else f"{d.train_per_class}/class train, {d.test_per_class}/class test"
    rows.append({**{key: "" for key in rows[0]}, "phase": "data", "pruning": f"{images}, {d.image_size}x{d.image_size}"})
    return pd.DataFrame(rows, dtype=object)


def cpu_minutes(profile="cpu", rates=CPU_RATES) -> dict:
    """Expected minutes of each stage of a profile with a :class:`TrunkSchedule` on the
    full data set, from measured throughputs (``rates``: training images/s per image
    size, inference images/s at 32x32, seconds per head epoch on the cached features)."""
    p = cifar_profile(profile)
    if not isinstance(p.baseline, TrunkSchedule):
        raise ValueError(f"profile {p.name!r} trains no TrunkSchedule baseline")
    train_s = sum(N_TRAIN / rates["train"][s] for s in p.baseline.sizes)
    features_s = (N_TRAIN + N_TEST) / rates["infer"]
    head_s = len(p.a.ks) * len(p.seeds) * p.a.rounds * p.a.retrain.epochs * rates["head_epoch_s"]
    out = {"trunk training": train_s / 60, "features": features_s / 60, "head pruning": head_s / 60,
           "data decode + notebook": 1.0}
    out["total"] = math.fsum(out.values())
    return out
