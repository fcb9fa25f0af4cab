"""A profile in words and numbers for the notebook: its training phases as a table,
and the time arithmetic of a profile on the CPU it was made for."""
from __future__ import annotations

import math

import pandas as pd

from .config import CPU_RATES, CifarProfile, Phase, TrunkSchedule, cifar_profile

N_TRAIN, N_TEST = 50_000, 10_000


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
