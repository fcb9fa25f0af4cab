"""Configuration of the ResNet18 / CIFAR-10 study: frozen dataclasses, the profile
table, the row schema, and the configuration each results store is keyed by.

The study has three stores (see :func:`store_config`): ``baseline`` (the trained,
unpruned network of each seed), ``A`` and ``B`` (the two pruning experiments).  Each
is named by the hash of everything that determines its rows except the sweep axes
(experiment, k, round, seed), so a change of any setting gives a new folder and
finished rows are never reused for another set-up.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import pandas as pd

from ...infra.store import Schema
from ...models import RESNET_HEAD_RATES
from ...train import TrainConfig
from ..base import get_profile

STUDY = "cifar"
EXPERIMENTS = ("A", "B")
HEAD_LAYERS = tuple(RESNET_HEAD_RATES)
# 2: round 0 = the unpruned model, rounds 1..R after r pruning steps; declared row schema.
STUDY_VERSION = 2
# The authors' README (github.com/ZJia77/Block-pruning): a reference, not our result.
AUTHORS_README = {"unpruned_acc": 0.9037, "pruned_acc": 0.9073, "pruned_head_sparsity": 0.97}

SCHEMA = Schema(
    key=("experiment", "k", "round", "seed"),
    values=("test_acc", "test_acc_best_epoch", "test_acc_pruned", "train_loss", "epochs",
            "density", "density_head", "density_conv", "density_model", "layer_density", "n_pruned_layers",
            "wall_s", "data_source", "n_train", "n_test", "image_size", "profile", "amp", "channels_last",
            "torchvision"),
)
"""One row per (experiment, k, round, seed).  ``experiment`` is ``baseline`` (k = 0,
round 0: the trained dense network), ``A`` or ``B``; a pruning run has round 0 (the
baseline's accuracy, its layers dense) and rounds 1..R (after r pruning steps and the
retraining that follows).  ``density`` is the kept fraction of the layers the run
prunes, ``layer_density`` the same per layer (a dict), ``test_acc_pruned`` the
accuracy right after the pruning step, ``test_acc_best_epoch`` the best per-epoch
test accuracy of the retraining (the authors' selection)."""


@dataclass(frozen=True)
class DataConfig:
    """Which images.  ``None`` per class = all (5,000 train / 1,000 test).
    ``image_size`` < 32 mean-pools the augmented images (the quick CPU profile);
    ``synthetic`` (tests only) uses class-dependent colour blobs instead of CIFAR-10."""

    train_per_class: Optional[int] = None
    test_per_class: Optional[int] = None
    image_size: int = 32
    synthetic: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """ResNet18Cifar; ``authors_softmax`` copies the authors' softmax head feeding
    CrossEntropyLoss (a double softmax).  ``amp``: bf16 autocast on CUDA."""

    hidden: int = 300
    authors_softmax: bool = False
    channels_last: bool = False
    amp: bool = True


@dataclass(frozen=True)
class Phase:
    """One training phase: Adam (L2 weight decay as the authors'), one optimizer per
    phase, learning rate ``lr`` times the schedule (``constant``, or ``cosine``: linear
    warm-up over ``warmup_frac`` of the steps, then cosine decay to 0)."""

    epochs: int
    lr: float
    batch_size: int = 1024
    weight_decay: float = 5e-4
    schedule: str = "constant"
    warmup_frac: float = 0.0

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")

    def train_config(self) -> TrainConfig:
        """``select="last"``: the weights of the last epoch go on; the per-epoch test
        accuracies are still recorded, so the authors' best-on-test selection can be
        reported beside."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer="adam",
                           weight_decay=self.weight_decay, select="last")

    def lr_schedule(self) -> Optional[Callable[[float], float]]:
        """The factor on ``lr`` as a function of progress in [0, 1), or None (constant)."""
        if self.schedule == "constant":
            return None
        w = self.warmup_frac

        def cosine(progress: float) -> float:
            if progress < w:
                return (progress + 1e-3) / w
            return 0.5 * (1 + math.cos(math.pi * (progress - w) / (1 - w)))

        return cosine


@dataclass(frozen=True)
class HeadPruning:
    """Experiment A: the authors' head-only block pruning, convs and BN frozen."""

    k: int = 2
    rounds: int = 16
    rates: tuple = tuple(RESNET_HEAD_RATES.items())
    retrain: Phase = Phase(epochs=3, lr=1e-4)


@dataclass(frozen=True)
class ConvPruning:
    """Experiment B: block pruning of the convolutions (all parameters retrained).
    ``ks`` are the block sizes swept (k = 1: element-wise); each prunable layer loses
    ``rate`` of its surviving blocks per round."""

    ks: tuple = (1, 2, 4, 8)
    rounds: int = 8
    rate: float = 0.3
    include_stem: bool = False
    include_shortcuts: bool = True
    include_head: bool = False
    retrain: Phase = Phase(epochs=2, lr=3e-4, schedule="cosine", warmup_frac=0.1)


@dataclass(frozen=True)
class CifarProfile:
    """A named set-up: data, model, the baseline's training, both experiments, the seeds."""

    name: str
    data: DataConfig
    model: ModelConfig
    baseline: Phase
    a: HeadPruning
    b: ConvPruning
    seeds: tuple = (0,)
    eval_batch: int = 5000


PROFILES: dict[str, CifarProfile] = {
    # Under a minute on a CPU: 200 training and 100 test images, mean-pooled to 8x8 after
    # augmentation (ResNet18 costs ~16x less than at 32x32); a smoke test of the whole
    # pipeline, its accuracies mean nothing.
    "quick": CifarProfile(
        name="quick",
        data=DataConfig(train_per_class=20, test_per_class=10, image_size=8),
        model=ModelConfig(),
        baseline=Phase(epochs=1, lr=1e-3, batch_size=100),
        a=HeadPruning(rounds=2, retrain=Phase(epochs=1, lr=1e-4, batch_size=100)),
        b=ConvPruning(rounds=2, retrain=Phase(epochs=1, lr=3e-4, batch_size=100, schedule="cosine", warmup_frac=0.1)),
        eval_batch=1000,
    ),
    # One H100: the whole data set on the GPU as uint8, augmented there, bf16 autocast,
    # channels_last, batch 1024 (the authors').  The authors' 300 epochs of Adam lr 1e-4
    # (and up to 300 per pruning round) are shortened to a 30-epoch baseline with Adam
    # lr 1e-3 and a warm-up + cosine schedule, 3 head-retraining epochs per round at the
    # authors' lr 1e-4 (A), and a reduced B: 8 rounds of p = 0.3 (density 70% -> 5.8%)
    # with 2 retraining epochs each.
    "paper": CifarProfile(
        name="paper",
        data=DataConfig(),
        model=ModelConfig(channels_last=True),
        baseline=Phase(epochs=30, lr=1e-3, schedule="cosine", warmup_frac=0.15),
        a=HeadPruning(),
        b=ConvPruning(),
        eval_batch=5000,
    ),
}


def cifar_profile(profile: str | CifarProfile) -> CifarProfile:
    """The profile of that name (or ``profile`` itself)."""
    return get_profile(PROFILES, profile, "CIFAR profile")


def with_axes(profile: str | CifarProfile, seeds=None, ks=None) -> CifarProfile:
    """The profile with other seeds and/or other block sizes for B (None keeps its own)."""
    p = cifar_profile(profile)
    if ks is not None:
        p = dataclasses.replace(p, b=dataclasses.replace(p.b, ks=tuple(int(k) for k in ks)))
    if seeds is not None:
        p = dataclasses.replace(p, seeds=tuple(int(s) for s in seeds))
    return p


def store_config(profile: CifarProfile, part: str, source: str) -> dict:
    """The configuration the store of ``part`` (``baseline``, ``A`` or ``B``) is keyed
    by: the data (and its source label), the model and the baseline's training, plus
    the experiment's settings.  B's block sizes are a row-key axis, not part of it,
    so a run of fewer ks reuses the rows of the others."""
    cfg = {"study_version": STUDY_VERSION, "part": part, "data": profile.data, "model": profile.model,
           "baseline": profile.baseline, "source": source}
    if part == "A":
        cfg["a"] = profile.a
    elif part == "B":
        cfg["b"] = {f.name: getattr(profile.b, f.name) for f in dataclasses.fields(profile.b) if f.name != "ks"}
    elif part != "baseline":
        raise ValueError(f"unknown part {part!r}; choose 'baseline', 'A' or 'B'")
    return cfg


def profile_table(profile):
    """The training phases of a profile as a small table (for the notebook)."""
    p = cifar_profile(profile)
    rows = []
    for what, ph, extra in [
        ("baseline (all parameters)", p.baseline, "from scratch"),
        ("A: head retraining per round", p.a.retrain, f"k={p.a.k}, {p.a.rounds} rounds, p={dict(p.a.rates)}, convs+BN frozen"),
        ("B: retraining per round", p.b.retrain, f"k in {list(p.b.ks)}, {p.b.rounds} rounds, p={p.b.rate} per layer"),
    ]:
        rows.append({"phase": what, "epochs": ph.epochs, "optimizer": "Adam", "lr": ph.lr, "schedule": ph.schedule,
                     "batch": ph.batch_size, "weight decay (L2)": ph.weight_decay, "pruning": extra})
    d = p.data
    images = "all" if d.train_per_class is None else f"{d.train_per_class}/class train, {d.test_per_class}/class test"
    rows.append({**{key: "" for key in rows[0]}, "phase": "data", "pruning": f"{images}, {d.image_size}x{d.image_size}"})
    return pd.DataFrame(rows, dtype=object)
