"""Configuration of the ResNet18 / CIFAR-10 study: frozen dataclasses, the profile
table, the row schema, and the configuration each results store is keyed by.

The study has three stores (see :func:`store_config`): ``baseline`` (the trained,
unpruned network of each seed; in the ``cpu`` profile also its epoch checkpoints and
the cached trunk features), ``A`` and ``B`` (the two pruning experiments).  Each is
named by the hash of everything that determines its rows except the sweep axes
(experiment, k, round, seed), so a change of any setting gives a new folder and
finished rows are never reused for another set-up.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

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
class CifarDataConfig:
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
    """Experiment A: the authors' head-only block pruning, convs and BN frozen.
    ``k`` is the authors' block size; ``compare_ks`` are further block sizes run
    beside it (a row axis, like B's ``ks``)."""

    k: int = 2
    rounds: int = 16
    rates: tuple = tuple(RESNET_HEAD_RATES.items())
    retrain: Phase = Phase(epochs=3, lr=1e-4)
    compare_ks: tuple = ()

    @property
    def ks(self) -> tuple:
        """The block sizes of A's runs: the authors' k first."""
        return (self.k, *(k for k in self.compare_ks if k != self.k))


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
class TrunkSchedule:
    """Whole-network training made for a small budget (the ``cpu`` profile), run one
    epoch at a time with a checkpoint after each: SGD with Nesterov momentum, a
    one-cycle learning rate (cosine warm-up from ``lr / start_div`` to ``lr`` over
    ``warmup_frac`` of the steps, then cosine decay to ``lr / end_div``), label
    smoothing, and progressive resizing: epoch e trains on images resized to
    ``sizes[e]`` (the last size should be the test size, ``CifarDataConfig.image_size``)."""

    sizes: tuple = (16, 16, 16, 16, 24, 32)
    lr: float = 0.2
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_frac: float = 0.25
    start_div: float = 10.0
    end_div: float = 1000.0

    @property
    def epochs(self) -> int:
        return len(self.sizes)

    def lr_at(self, progress: float) -> float:
        """The learning rate at ``progress`` in [0, 1) of all steps."""
        lo, w = self.lr / self.start_div, self.warmup_frac
        if progress < w:
            return lo + (self.lr - lo) * 0.5 * (1 - math.cos(math.pi * progress / w))
        end = self.lr / self.end_div
        return end + (self.lr - end) * 0.5 * (1 + math.cos(math.pi * (progress - w) / (1 - w)))


@dataclass(frozen=True)
class CifarProfile:
    """A named set-up: data, model, the baseline's training, both experiments, the seeds.

    ``baseline`` is a :class:`Phase` (trained by :func:`blockprune_utils.train.train`)
    or a :class:`TrunkSchedule` (trained epoch by epoch, resumable).  With
    ``head_on_features`` one trunk (seed ``trunk_seed``) is trained, its 512-d
    features are cached, and A prunes and retrains the head on them; ``seeds`` are
    then the seeds of the head's retraining.  ``experiments`` are what ``all`` runs."""

    name: str
    data: CifarDataConfig
    model: ModelConfig
    baseline: Phase | TrunkSchedule
    a: HeadPruning
    b: ConvPruning
    seeds: tuple = (0,)
    eval_batch: int = 5000
    head_on_features: bool = False
    trunk_seed: int = 0
    experiments: tuple = EXPERIMENTS


# Measured on the 2-core CPU this profile is made for (ResNet18 CIFAR form, channels_last,
# 2 threads, batch 128-256): training images/s at each image size, inference images/s at
# 32x32, and seconds per head epoch on 50,000 cached features (batch 1024).
CPU_RATES = {"train": {16: 110.0, 24: 56.0, 32: 35.0}, "infer": 157.0, "head_epoch_s": 1.0}

PROFILES: dict[str, CifarProfile] = {
    # Under a minute on a CPU: 200 training and 100 test images, mean-pooled to 8x8 after
    # augmentation (ResNet18 costs ~16x less than at 32x32); a smoke test of the whole
    # pipeline, its accuracies mean nothing.
    "quick": CifarProfile(
        name="quick",
        data=CifarDataConfig(train_per_class=20, test_per_class=10, image_size=8),
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
        data=CifarDataConfig(),
        model=ModelConfig(channels_last=True),
        baseline=Phase(epochs=30, lr=1e-3, schedule="cosine", warmup_frac=0.15),
        a=HeadPruning(),
        b=ConvPruning(),
        eval_batch=5000,
    ),
    # Experiment A end to end in under 100 minutes on 2 CPU cores (rates: CPU_RATES).
    # Trunk: 6 epochs of all 50,000 images, 4 at 16x16 (455 s each), 1 at 24x24 (893 s),
    # 1 at 32x32 (1429 s): 1820 + 893 + 1429 = 4142 s = 69 min, in resumable epochs.
    # Features of the frozen trunk at 32x32, train + test: 60,000 / 157 = 382 s = 6.4 min,
    # once (this also gives the unpruned test accuracy: no per-epoch test evaluation).
    # Head: k in {2 (the authors'), 1, 4, 8} x 3 seeds x 16 rounds x 3 epochs = 576 head
    # epochs on cached features, about 1 s each: ~10 min.  Decoding the JPEGs (first
    # run only) and rendering the notebook take ~1 min: about 86 min in all.  No
    # augmented feature views: each costs another 50,000 / 157 = 318 s of inference and
    # multiplies the head's epochs; the head only fine-tunes at lr 1e-4 from its trained
    # state, on features of a trunk trained 6 epochs (small train/test gap).
    "cpu": CifarProfile(
        name="cpu",
        data=CifarDataConfig(),
        model=ModelConfig(channels_last=True),
        baseline=TrunkSchedule(),
        a=HeadPruning(compare_ks=(1, 4, 8), retrain=Phase(epochs=3, lr=1e-4, batch_size=1024)),
        b=ConvPruning(),
        seeds=(0, 1, 2),
        eval_batch=500,
        head_on_features=True,
        experiments=("A",),
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
    the experiment's settings.  Block sizes (B's ``ks``, A's ``compare_ks``) are a
    row-key axis, not part of it, so a run of fewer ks reuses the rows of the others.
    A run on cached trunk features (``head_on_features``) names its trunk seed."""
    cfg = {"study_version": STUDY_VERSION, "part": part, "data": profile.data, "model": profile.model,
           "baseline": profile.baseline, "source": source}
    if profile.head_on_features:
        cfg["head_on_features"] = {"trunk_seed": profile.trunk_seed}
    if part == "A":
        cfg["a"] = _without(profile.a, "compare_ks")
    elif part == "B":
        cfg["b"] = _without(profile.b, "ks")
    elif part != "baseline":
        raise ValueError(f"unknown part {part!r}; choose 'baseline', 'A' or 'B'")
    return cfg


def _without(obj, name: str) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != name}
