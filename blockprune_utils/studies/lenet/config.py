"""Configuration of the LeNet-300-100 study: frozen dataclasses, the profile table,
the authors' settings, and the row schema.

:class:`RunConfig` holds everything that determines a run except the sweep axes
(k, seed, variant); its hash names the results folder, so a change of any setting
gives a new folder and finished rows are never reused for another set-up.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ...infra.store import Schema
from ...models import LENET_LAYERS as LAYERS
from ...models import LENET_RATES
from ...train import TrainConfig
from ..base import ProfileTable, get_profile

STUDY = "lenet"
DATASETS = ("mnist", "fashion_mnist")
VARIANTS = ("block", "dense_control", "sensitivity", "random_retrain", "random_scratch", "baseline_scan", "retrain_scan",
            "authors", "epochs_scan", "budget", "neuron", "narrow_dense")
# 2: fixed row schema (every row has every column) and the one checkpoint format;
# 3: Adam's fused kernel (same method, different rounding);
# 4: retraining trains layers below the crossover density on their live blocks only (same method, different rounding).
STUDY_VERSION = 4

SCHEMA = Schema(
    key=("dataset", "variant", "k", "round", "seed", "layer", "setting"),
    values=("test_acc", "val_acc", "test_acc_pruned", "target_density",
            *(f"density_{n}" for n in LAYERS), "density_total", *(f"blocks_{n}" for n in LAYERS),
            "epochs", "train_loss", "wall_s", "profile", "authors"),
    types=(*((c, str) for c in ("dataset", "variant", "layer", "setting", "profile")),
           *((c, int) for c in ("k", "round", "seed", "epochs", *(f"blocks_{n}" for n in LAYERS))),
           *((c, float) for c in ("test_acc", "val_acc", "test_acc_pruned", "target_density", "density_total",
                                  *(f"density_{n}" for n in LAYERS), "train_loss", "wall_s")),
           ("authors", bool)),
)
"""One row per (dataset, variant, k, round, seed, layer, setting).  ``variant``:

* ``baseline`` (k = 0, round 0): the trained dense network;
* ``block``, ``random_retrain`` (rounds 1..R): pruned, then retrained, per round;
* ``dense_control`` (k = 0, rounds 1..R): the dense network retrained for the same
  epochs with the same schedule as the pruning rounds, without pruning;
* ``random_scratch`` (its rounds): a random block mask trained from scratch;
* ``sensitivity``: ``round`` indexes the density grid, ``layer`` is the one layer pruned;
* ``baseline_scan`` (``round`` = epoch) and ``retrain_scan`` (rounds 1..R): the
  schedule candidates named by ``setting``, judged on the validation split only
  (their ``test_acc`` is not recorded);
* ``epochs_scan`` (rounds 1..R): block pruning with E epochs per round (``epochs``
  = E, ``setting`` names the schedule), judged on the validation split only;
* ``budget`` (rounds 1..R): block pruning with E epochs per round, test accuracy
  recorded (the budget figure; the profile's own E is the ``block`` run);
* ``neuron`` (k = 0, rounds 1..R): whole hidden units removed by the norm of their
  incoming weights, retrained as ``block`` (:mod:`.neurons`);
* ``narrow_dense`` (k = 0, its rounds): a dense LeNet with fewer hidden units,
  as many weights as the schedule keeps at that round, trained from scratch.

``layer`` is ``all`` and ``setting`` is ``default`` where they do not apply.
``test_acc_pruned`` is the accuracy right after a pruning step, before retraining."""


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split.  ``val_size`` images of the training set are
    held out for checkpoint selection (the same split for every seed);
    ``n_train``/``n_test`` limit the sizes (the quick profile)."""

    dataset: str = "mnist"
    val_size: int = 5000
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    split_seed: int = 0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {DATASETS}")


@dataclass(frozen=True)
class TrainingConfig:
    """The three training phases, and which split selects the kept checkpoint:
    ``"val"`` (ours), ``"test"`` or ``"train"`` (the authors' MNIST / Fashion-MNIST).
    ``sparse``: the pruned variants train each masked layer whose density is below the
    measured crossover as a block-sparse layer of its live weights
    (:func:`blockprune_utils.bsr.sparse_training.sparse_layers`: same updates, faster);
    False: always the masked dense layers."""

    baseline: TrainConfig = TrainConfig(epochs=15, lr=1e-3, batch_size=128)
    retrain: TrainConfig = TrainConfig(epochs=1, lr=1e-3, batch_size=128)
    scratch: TrainConfig = TrainConfig(epochs=10, lr=1e-3, batch_size=128)
    select_on: str = "val"
    authors_softmax: bool = False
    eval_batch: int = 10000
    sparse: bool = True

    def __post_init__(self):
        if self.select_on not in ("val", "test", "train"):
            raise ValueError(f"select_on must be 'val', 'test' or 'train', got {self.select_on!r}")


@dataclass(frozen=True)
class PruningConfig:
    """The pruning schedule: ``rounds`` prune+retrain rounds at per-layer ``rates``
    (a tuple of (layer, p) pairs), the block ``score``, the rounds at which the
    ``random_scratch`` control is trained, and the density grid of the per-layer
    sensitivity scan."""

    rounds: int = 16
    rates: tuple = tuple(LENET_RATES.items())
    score: str = "mean_abs"
    scratch_rounds: tuple = (11, 16)
    sensitivity_densities: tuple = (0.8, 0.5, 0.3, 0.2, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        bad = [r for r in self.scratch_rounds if not 1 <= r <= self.rounds]
        if bad:
            raise ValueError(f"scratch_rounds {bad} are outside 1..{self.rounds}")
        for d in self.sensitivity_densities:
            if not 0 < d <= 1:
                raise ValueError(f"sensitivity densities must be in (0, 1], got {d}")

    @property
    def rate_map(self) -> dict[str, float]:
        return dict(self.rates)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run except the sweep axes (k, seed, variant)."""

    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    pruning: PruningConfig = PruningConfig()
    authors: bool = False
    study_version: int = STUDY_VERSION


@dataclass(frozen=True)
class Profile:
    """A named set-up: the run configuration (less the dataset) and the sweep axes."""

    name: str
    data: DataConfig
    training: TrainingConfig
    pruning: PruningConfig
    ks: tuple = (1, 2, 3, 4, 5, 6)
    seeds: tuple = (0, 1, 2)
    variants: tuple = VARIANTS
    baseline_candidates: tuple = ()  # (setting, TrainConfig): baseline schedules scanned on seed 0
    retrain_candidates: tuple = ()  # (setting, TrainConfig): retraining schedules, block pruning at scan_k, seed 0
    scan_k: int = 4
    authors_ks: tuple = (2, 4, 6)  # the authors' set-up: seed 0 at these k with our epoch budget ...
    authors_retrain_epochs: tuple = (1, 3)  # ... (the first entry) and these retraining epochs per round ...
    authors_long_ks: tuple = (4,)  # ... at these k for the longer budgets
    epochs_candidates: tuple = (1, 2, 4, 8)  # epochs per round scanned (epochs_scan, seed 0, on validation) ...
    epochs_scan_ks: tuple = (1, 4)  # ... at these k, with the retraining's learning rate ...
    epochs_scan_lrs: tuple = ()  # ... and these learning rates too (re-chosen with the epochs)
    budget_epochs: tuple = (1, 2, 4, 8)  # the budget variant: block pruning with these epochs per round ...
    budget_ks: tuple = (1, 2, 4, 6)  # ... at these k, seed 0
    narrow_rounds: tuple = (11, 16)  # the narrow dense nets match the weight count of these rounds
    dataset_epochs: tuple = ()  # (dataset, E): epochs per round of a data set whose scan picks another E

    @property
    def epochs_per_round(self) -> int:
        """Retraining epochs per pruning round: the one field (``training.retrain``)
        every retrained variant and the dense control use (see :meth:`epochs_for`)."""
        return self.training.retrain.epochs

    def epochs_for(self, dataset: str) -> int:
        """The epochs per round of ``dataset``: its entry of ``dataset_epochs``, else
        :attr:`epochs_per_round`."""
        return int(dict(self.dataset_epochs).get(dataset, self.epochs_per_round))

    def authors_ks_for(self, retrain_epochs: int) -> tuple:
        """The k run in the authors' set-up with ``retrain_epochs`` epochs per round."""
        return self.authors_ks if retrain_epochs == self.authors_retrain_epochs[0] else self.authors_long_ks


@dataclass(frozen=True)
class EpochsRule:
    """How the epochs per round are chosen from ``epochs_scan`` (validation only): per
    candidate schedule (E, and the learning rate where several are scanned), the mean
    validation accuracy over the late rounds (those after the first ``late_after``
    fraction of the rounds: rounds 9..16 of 16) and over the scanned k; the rule picks
    the fewest epochs whose best schedule is within ``tol`` (0.1 pp) of the best, and
    that schedule's learning rate."""

    tol: float = 0.001
    late_after: float = 0.5

    def late_rounds(self, rounds: int) -> range:
        return range(int(rounds * self.late_after) + 1, rounds + 1)


EPOCHS_RULE = EpochsRule()

# The paper profile's epochs per round: one field (``training.retrain``) for block
# pruning, its random controls, neuron pruning and the dense control.  It is what
# EPOCHS_RULE picks from the paper profile's epochs_scan rows (both data sets pick 2;
# notebooks 01 and 05 recompute the pick and say whether the profile still agrees, via
# ``budget.epochs_verdict``; a data set whose scan picks another E gets an entry in
# the profile's ``dataset_epochs``).  The learning-rate scan (``retrain_candidates``)
# runs at these epochs per round, so the rate is re-chosen for them.
PAPER_EPOCHS_PER_ROUND = 2


def _cosine(epochs: int, lr: float = 1e-3) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, batch_size=128, schedule="cosine")


def setting_name(t: TrainConfig) -> str:
    """A short name of a training phase's schedule, e.g. ``cosine-lr0.001-30ep``."""
    return f"{t.schedule}-lr{t.lr:g}-{t.epochs}ep"


def candidates(*phases: TrainConfig) -> tuple:
    return tuple((setting_name(t), t) for t in phases)


# One single-threaded LeNet epoch on 55,000 images at batch 128 takes ~1.4 s on one
# core.  The paper profile's baseline (Adam, cosine decay from 2e-3 over 20 epochs) and
# the retraining per round (PAPER_EPOCHS_PER_ROUND epochs of Adam, cosine decay from 3e-3) are what the rules
# of ``summary.scan_choice`` picked on the validation split from the scans
# ``baseline_candidates`` and ``retrain_candidates`` (notebook 01 shows them and checks
# that the profile still agrees with its rules); the dense control gets the same
# retraining.
PROFILES: dict[str, Profile] = ProfileTable({
    "quick": Profile(
        name="quick",
        data=DataConfig(val_size=1000, n_train=4000, n_test=2000),
        training=TrainingConfig(
            baseline=TrainConfig(epochs=1, lr=1e-3, batch_size=128),
            retrain=TrainConfig(epochs=1, lr=1e-3, batch_size=128),
            scratch=TrainConfig(epochs=1, lr=1e-3, batch_size=128),
        ),
        pruning=PruningConfig(rounds=3, scratch_rounds=(3,), sensitivity_densities=(0.5, 0.2, 0.05)),
        ks=(1, 4),
        seeds=(0,),
        baseline_candidates=candidates(_cosine(1), _cosine(2)),
        retrain_candidates=candidates(TrainConfig(epochs=1, lr=1e-3, batch_size=128), _cosine(1)),
        authors_ks=(4,),
        authors_retrain_epochs=(1,),
        epochs_candidates=(1, 2),
        budget_epochs=(1, 2),
        budget_ks=(1, 4),
        narrow_rounds=(3,),
    ),
    "paper": Profile(
        name="paper",
        data=DataConfig(val_size=5000),
        training=TrainingConfig(baseline=_cosine(20, 2e-3), retrain=_cosine(PAPER_EPOCHS_PER_ROUND, 3e-3),
                                scratch=_cosine(10, 2e-3)),
        pruning=PruningConfig(),
        baseline_candidates=candidates(_cosine(30), _cosine(20, 2e-3), _cosine(30, 2e-3), _cosine(40, 2e-3)),
        retrain_candidates=candidates(TrainConfig(epochs=PAPER_EPOCHS_PER_ROUND, lr=1e-3, batch_size=128),
                                      _cosine(PAPER_EPOCHS_PER_ROUND), _cosine(PAPER_EPOCHS_PER_ROUND, 3e-3)),
        authors_retrain_epochs=(PAPER_EPOCHS_PER_ROUND, 3 * PAPER_EPOCHS_PER_ROUND),
    ),
}, "LeNet profile")

# The authors' optimiser settings (docs/paper_notes.md): baseline (lr, batch),
# retrain (lr, batch), and the split their retraining selects checkpoints on.
AUTHORS_SETTINGS = {
    "mnist": {"baseline": (1e-4, 50), "retrain": (1e-6, 50), "select_on": "test"},
    "fashion_mnist": {"baseline": (5e-4, 128), "retrain": (1e-5, 128), "select_on": "train"},
}


def authors_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the authors' choices: softmax output, no zero_grad and Adam
    re-created every epoch in retraining, their lr/batch, baseline = last epoch,
    retraining checkpoints selected on test (MNIST) or train (Fashion-MNIST)
    accuracy, no validation split (they train on all 60,000 images)."""
    s = AUTHORS_SETTINGS[cfg.data.dataset]
    t = cfg.training
    const = {"schedule": "constant"}  # they use no learning-rate schedule
    training = dataclasses.replace(
        t,
        baseline=dataclasses.replace(t.baseline, lr=s["baseline"][0], batch_size=s["baseline"][1], select="last", **const),
        retrain=dataclasses.replace(t.retrain, lr=s["retrain"][0], batch_size=s["retrain"][1], zero_grad=False,
                                    reset_optimizer_each_epoch=True, **const),
        scratch=dataclasses.replace(t.scratch, lr=s["baseline"][0], batch_size=s["baseline"][1], select="last", **const),
        select_on=s["select_on"],
        authors_softmax=True,
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_size=0), training=training, authors=True)


def lenet_profile(profile: str | Profile) -> Profile:
    return get_profile(PROFILES, profile, "LeNet profile")


def run_config(profile: str | Profile = "paper", dataset: str = "mnist", authors: bool = False,
               retrain_epochs: int | None = None) -> RunConfig:
    """The :class:`RunConfig` of a profile for one data set (with the authors'
    choices when ``authors``; ``retrain_epochs`` replaces the epochs per round,
    which are otherwise :meth:`Profile.epochs_for` the data set)."""
    prof = lenet_profile(profile)
    training = prof.training
    if retrain_epochs is None and dataset in dict(prof.dataset_epochs):
        retrain_epochs = prof.epochs_for(dataset)
    if retrain_epochs is not None:
        training = dataclasses.replace(training, retrain=dataclasses.replace(training.retrain, epochs=retrain_epochs))
    cfg = RunConfig(data=dataclasses.replace(prof.data, dataset=dataset), training=training, pruning=prof.pruning)
    return authors_config(cfg) if authors else cfg


def with_authors(cfg: RunConfig, retrain_epochs: int) -> RunConfig:
    """The authors' set-up of ``cfg`` with ``retrain_epochs`` epochs per round."""
    t = cfg.training
    training = dataclasses.replace(t, retrain=dataclasses.replace(t.retrain, epochs=retrain_epochs))
    return authors_config(dataclasses.replace(cfg, training=training))


def authors_configs(profile: str | Profile, dataset: str, config: RunConfig | None = None) -> dict[int, RunConfig]:
    """The authors' set-up for each retraining budget of the profile (epochs per round)."""
    prof = lenet_profile(profile)
    base = config if config is not None else run_config(prof, dataset)
    return {e: with_authors(base, e) for e in prof.authors_retrain_epochs}
