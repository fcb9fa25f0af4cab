"""The runs of the ResNet18 / CIFAR-10 study: the baseline and the pruning runs of
experiments A and B, and the time budget they run under.

Per seed, one baseline (ResNet18Cifar trained from scratch, all parameters) is shared
by both experiments:

* **A (the authors')**: block-prune only the FC head (``head.0`` 300x512 and
  ``head.2`` 10x300) with k = 2, 16 rounds of p = 0.2 per layer
  (:data:`~blockprune_utils.models.RESNET_HEAD_RATES`); convolutions and BN are
  frozen (``requires_grad=False``, only the head's parameters go to the optimizer)
  while BN running statistics still update, because retraining runs in ``train()``
  mode.
* **B (beyond the paper)**: block-prune the convolution weights, each conv as its
  (out, in*kh*kw) matrix, with k in {2, 4, 8} and the element-wise k = 1 baseline:
  every 3x3 conv of the four stages and the three 1x1 shortcut convs, each layer
  losing the same fraction of its surviving blocks per round.  The 3x3 stem conv
  (64x27, 0.015% of the weights, the most sensitive layer) stays dense, and so does
  the head: A studies it already, and with k = 8 the 10x300 output layer would have
  only two block rows for ten classes, an artefact that would confound the
  comparison across k (``ConvPruning.include_head`` switches it on).  All parameters
  are retrained after each round.

In a profile with ``head_on_features`` (``cpu``) the baseline is a trunk trained by
:mod:`.trunk`, and A prunes and retrains the head alone on the trunk's cached
:class:`Features`, with several head seeds.

Round 0 of a pruning run is the unpruned baseline; round r is the model after r
pruning steps, each followed by retraining.  Every round is one row of its
experiment's store and one checkpoint (:func:`~blockprune_utils.studies.base.checkpoint`),
so a killed run resumes where it stopped (:func:`~blockprune_utils.studies.base.resumable_rounds`).
A :class:`Budget` stops a command before a round that would end past its time limit.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torchvision
from torch import nn

from ...data import Split
from ...infra.provenance import provenance
from ...infra.seeds import derive_seed
from ...infra.store import ResultStore
from ...masks import density
from ...models import ResNet18Cifar
from ...schedule import BlockPruner, layer_densities
from ...train import evaluate, train
from ..base import RoundsRun, checkpoint, load_restored, resumable_rounds
from .config import HEAD_LAYERS, SCHEMA, STUDY, CifarDataConfig, CifarProfile, Phase, cifar_profile, store_config
from .data import CifarTransform, load_cifar10_splits, synthetic_cifar
from .network import FeatureHead, amp_label, autocast, build_model, conv_prune_layers, freeze_backbone, layout, weight_layers


class Budget:
    """A time budget: ``seconds`` from now (None: unlimited); ``log`` is told once
    when it runs out.  A round of a unit (an experiment, the trunk) is expected to
    take as long as that unit's previous round did; before each round
    :meth:`allows` says whether it still fits.  A run stopped this way resumes from
    its checkpoints when the same command runs again."""

    def __init__(self, seconds: Optional[float] = None, log: Callable[[str], None] = print):
        self.seconds, self.log = seconds, log
        self.start = time.perf_counter()
        self.last: dict[str, float] = {}
        self.stopped = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def spent(self, unit: str, seconds: float) -> None:
        """A round of ``unit`` (an experiment) took ``seconds``."""
        self.last[unit] = seconds

    def allows(self, unit: str) -> bool:
        """Whether a round of ``unit`` still fits; once it does not, no round does."""
        if self.stopped or self.seconds is None:
            return not self.stopped
        elapsed = self.elapsed()
        if elapsed + self.last.get(unit, 0.0) > self.seconds:
            self.stopped = True
            self.log(f"time budget {self.seconds:.0f} s reached after {elapsed:.0f} s: stopping before the next "
                     f"{unit} round (run the same command again to resume from the stored rows and checkpoints)")
        return not self.stopped


def cifar_or_synthetic(d: CifarDataConfig, download: bool = True) -> tuple[Split, Split, str]:
    """(train, test, source label) of a data configuration (uint8 images on the CPU):
    CIFAR-10, or the synthetic stand-in of the tests."""
    if d.synthetic:
        return synthetic_cifar(10 * (d.train_per_class or 10), 10 * (d.test_per_class or 5))
    return load_cifar10_splits(d.train_per_class, d.test_per_class, download=download)


@dataclass(frozen=True)
class Plan:
    """What the pruning runs of an experiment do: block sizes, rounds, per-layer
    rates, the retraining phase, and whether only the head is retrained."""

    experiment: str
    ks: tuple
    rounds: int
    rates: dict
    retrain: Phase
    head_only: bool


def plan(p: CifarProfile, experiment: str) -> Plan:
    """The :class:`Plan` of experiment ``A`` or ``B`` in profile ``p``."""
    if experiment == "A":
        return Plan("A", p.a.ks, p.a.rounds, dict(p.a.rates), p.a.retrain, head_only=True)
    if experiment == "B":
        names = conv_prune_layers(layout(p.model.hidden), p.b)
        return Plan("B", tuple(p.b.ks), p.b.rounds, {n: p.b.rate for n in names}, p.b.retrain, head_only=False)
    raise ValueError(f"unknown experiment {experiment!r}; choose 'A' or 'B'")


def row_key(experiment: str, k: int, round: int, seed: int) -> dict:
    return {"experiment": experiment, "k": int(k), "round": int(round), "seed": int(seed)}


class ProfileRun:
    """One profile run on one device: what its baselines and pruning runs share - the
    data (uint8, on the device), the augmentation, the provenance, the stores, the
    time budget and the log.  ``data`` = (train, test, source) skips loading;
    ``budget_s`` starts the time budget (:class:`Budget`, None: unlimited) now."""

    def __init__(self, profile, device="cpu", *, data=None, budget_s: float | None = None, download: bool = True,
                 log=print, results_root=None):
        self.log_fn, self.results_root = log, results_root
        self.p = cifar_profile(profile)
        self.budget = Budget(budget_s, self.log)
        self.device = torch.device(device)
        t0 = time.perf_counter()
        train_split, test_split, self.source = data if data is not None else cifar_or_synthetic(self.p.data, download)
        self.train_split, self.test_split = train_split.to(self.device), test_split.to(self.device)
        self.log(f"data: {self.source}, {len(self.train_split)} train / {len(self.test_split)} test images "
                 f"(uint8 on {self.device}) in {time.perf_counter() - t0:.1f} s")
        self.transform = CifarTransform(self.device, seed=0, image_size=self.p.data.image_size,
                                        channels_last=self.p.model.channels_last)
        self.prov = provenance(self.device)
        self.stores: dict[str, ResultStore] = {}

    def log(self, msg: str) -> None:
        self.log_fn(f"[cifar {self.p.name} {self.budget.elapsed():7.1f}s] {msg}")

    def store(self, part: str) -> ResultStore:
        """The store of ``baseline``, ``A`` or ``B``."""
        if part not in self.stores:
            self.stores[part] = ResultStore(STUDY, store_config(self.p, part, self.source), SCHEMA, self.results_root)
        return self.stores[part]

    def evaluate(self, model) -> float:
        with autocast(self.device, self.p.model.amp):
            return evaluate(model, self.test_split, batch_size=self.p.eval_batch, transform=self.transform)

    def fit(self, model, phase: Phase, seed: int, params=None) -> dict:
        """Train ``model`` for one phase; minibatch order and augmentation drawn from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        self.transform.reseed(seed)
        with autocast(self.device, self.p.model.amp):
            return train(model, self.train_split, phase.train_config(), gen, val=self.test_split,
                         transform=self.transform, params=params, lr_schedule=phase.lr_schedule())

    def values(self, model, layers, *, hist=None, acc=None, acc_pruned=None, wall_s=0.0) -> dict:
        """The value columns of a row for the network ``model`` as it is now (``layers``:
        those the run prunes).  ``acc`` defaults to the last epoch's test accuracy of ``hist``."""
        accs = [h["val_acc"] for h in (hist or {}).get("history", [])]
        if acc is None:
            acc = accs[-1] if accs else self.evaluate(model)
        return {
            "test_acc": acc, "test_acc_best_epoch": max(accs) if accs else acc, "test_acc_pruned": acc_pruned,
            "train_loss": hist["history"][-1]["train_loss"] if accs else None, "epochs": len(accs),
            "density": density(model, layers), "density_head": density(model, HEAD_LAYERS),
            "density_conv": density(model, [n for n in layers if n not in HEAD_LAYERS]),
            "density_model": density(model, weight_layers(model)),
            "layer_density": layer_densities(model, layers) if layers else {},
            "n_pruned_layers": len(layers), "wall_s": wall_s, "data_source": self.source,
            "n_train": len(self.train_split), "n_test": len(self.test_split), "image_size": self.p.data.image_size,
            "profile": self.p.name, "amp": amp_label(self.device, self.p.model.amp),
            "channels_last": self.p.model.channels_last, "torchvision": torchvision.__version__,
        }


@dataclass
class Baseline:
    """The trained, unpruned network of a seed: its checkpoint (with its row values)
    and the network itself on the run's device, to be copied, never trained."""

    seed: int
    ckpt: dict
    network: ResNet18Cifar

    @property
    def row(self) -> dict:
        return self.ckpt["row"]

    def model(self) -> ResNet18Cifar:
        """A fresh copy of the network."""
        return copy.deepcopy(self.network)


@dataclass
class Features:
    """A trunk's features of the training and test images, on the run's device (see
    :func:`~.trunk.trunk_features`): a head is evaluated and retrained on them."""

    train: Split
    test: Split
    fingerprint: str

    def accuracy(self, head: nn.Module) -> float:
        """Test accuracy of ``head`` on the test features (that of the whole network)."""
        return evaluate(head.to(self.test.x.device), self.test)

    def fit(self, head: nn.Module, phase: Phase, seed: int) -> dict:
        """Retrain ``head`` for one phase on the training features; minibatch order drawn from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        return train(head, self.train, phase.train_config(), gen, val=self.test, lr_schedule=phase.lr_schedule())


def phase_baseline(run: ProfileRun, seed: int) -> Baseline:
    """The baseline of ``seed`` in a profile whose baseline is a :class:`~.config.Phase`:
    from its checkpoint, or trained now (and stored)."""

    def train(model) -> dict:
        ph = run.p.baseline
        run.log(f"baseline seed {seed}: training {ph.epochs} epochs (Adam lr {ph.lr}, {ph.schedule}, batch {ph.batch_size})")
        t0 = time.perf_counter()
        hist = run.fit(model, ph, derive_seed("baseline", seed))
        wall = time.perf_counter() - t0
        ck = checkpoint(model, 0, run.values(model, [], hist=hist, wall_s=wall))
        run.log(f"baseline seed {seed}: test acc {ck['row']['test_acc']:.4f} (best epoch "
                f"{ck['row']['test_acc_best_epoch']:.4f}) in {wall:.0f} s = {wall / max(ph.epochs, 1):.1f} s/epoch")
        return ck

    return stored_baseline(run, seed, train)


def stored_baseline(run: ProfileRun, seed: int, train: Callable[[ResNet18Cifar], dict | None]) -> Baseline | None:
    """The baseline of ``seed`` from its stored checkpoint, or ``train(model)`` - the
    checkpoint of a freshly built network it trained, or None when a time budget
    stopped it - stored; the baseline's row stored either way."""
    store = run.store("baseline")
    run_key = {"experiment": "baseline", "seed": int(seed)}
    model = build_model(run.p.model, seed, run.device)
    ck = load_restored(store, run_key, model, check=lambda c, _: float(c["row"]["test_acc"]))
    if ck is None:
        ck = train(model)
        if ck is None:
            return None
        store.save_checkpoint(run_key, ck)
    else:
        run.log(f"baseline seed {seed}: stored, test acc {ck['row']['test_acc']:.4f}")
    store.cached(row_key("baseline", 0, 0, seed), lambda: ck["row"], run.prov)
    return Baseline(int(seed), ck, model)


def round0_row(run: ProfileRun, pl: Plan, k: int, base: Baseline, seed: int) -> None:
    """Store round 0 of a pruning run: the baseline, with this run's layers (dense).
    ``seed`` is the run's seed (a head seed on cached features, else the baseline's)."""
    def values() -> dict:
        v = run.values(base.model(), list(pl.rates), acc=base.row["test_acc"])
        return {**v, **{c: base.row[c] for c in ("test_acc_best_epoch", "train_loss", "epochs", "wall_s")}}

    run.store(pl.experiment).cached(row_key(pl.experiment, k, 0, seed), values, run.prov)


def start_model(pl: Plan, base: Baseline) -> ResNet18Cifar:
    """The model a pruning run starts from: the baseline, its backbone frozen for A."""
    model = base.model()
    if pl.head_only:
        freeze_backbone(model)
    return model


def prune_run(run: ProfileRun, pl: Plan, k: int, base: Baseline, upto: int, seed: int | None = None,
              feats: Features | None = None) -> None:
    """Bring the pruning run (experiment, k, seed) to round ``upto``: resume from its
    checkpoint (or start from the baseline), then prune and retrain each missing
    round, storing its row and checkpoint.  Stops before a round that the time budget
    has no room for.  With ``feats`` (A on cached trunk features) the head alone is
    pruned and retrained on them, and ``seed`` is the head seed; without, ``seed`` is
    the baseline's."""
    e, seed = pl.experiment, base.seed if seed is None else seed
    store = run.store(e)
    if all(store.has(row_key(e, k, r, seed)) for r in range(1, upto + 1)):
        return
    model = start_model(pl, base) if feats is None else FeatureHead(base.network.head).to(run.device)
    # the network a row describes: the model itself, or the trunk (untouched, dense) with this head
    network = model if feats is None else nn.ModuleDict({"backbone": base.network.backbone, "head": model.head})
    layers = list(pl.rates)
    # The run spans all its rounds, so any checkpoint of it resumes; ``proceed`` stops it after round ``upto``.
    rr = RoundsRun(store, {"experiment": e, "k": int(k), "seed": int(seed)}, lambda r: row_key(e, k, r, seed),
                   run.prov, pl.rounds)

    def retrain(m, r):
        gen_seed = derive_seed("retrain", e, seed, k, r)
        if feats is not None:
            return feats.accuracy(m), feats.fit(m, pl.retrain, gen_seed)
        params = list(m.head.parameters()) if pl.head_only else None
        return run.evaluate(m), run.fit(m, pl.retrain, gen_seed, params)

    def row_of(r, m, result) -> dict:
        acc_pruned, hist = result
        wall = time.perf_counter() - started[0]
        run.budget.spent(e, wall)
        v = run.values(network, layers, hist=hist, acc_pruned=acc_pruned, wall_s=wall)
        run.log(f"{e} k={k} seed {seed} round {r}: density {v['density']:.3%} | acc pruned {acc_pruned:.4f} "
                f"-> retrained {v['test_acc']:.4f} | {wall:.1f} s")
        return v

    started = [0.0]

    def proceed(r: int) -> bool:  # stop after round ``upto``, or when the next round does not fit the budget
        started[0] = time.perf_counter()  # the round's wall time starts with its pruning step
        return r <= upto and run.budget.allows(e)

    resumable_rounds(rr, model, BlockPruner(k, pl.rates), retrain, row_of, proceed=proceed)


def run_experiment(run: ProfileRun, experiment: str, base: Baseline, on_round=None,
                   feats: Features | None = None) -> None:
    """All rounds of ``experiment``, round-major over the block sizes (round 1 of every
    k, then round 2, ...), so a run stopped by the time budget has every k down to
    similar densities; ``on_round()`` runs after each (round, k) (it exports the rows
    so far).  The runs are those of the baseline's seed, or with ``feats`` (A on
    cached trunk features) those of every head seed of the profile."""
    pl = plan(run.p, experiment)
    if feats is not None and not pl.head_only:
        raise ValueError(f"experiment {experiment} prunes the convolutions: it cannot run on cached trunk features")
    seeds = (base.seed,) if feats is None else run.p.seeds
    for k in pl.ks:
        for seed in seeds:
            round0_row(run, pl, k, base, seed)
    for r in range(1, pl.rounds + 1):
        for k in pl.ks:
            for seed in seeds:
                prune_run(run, pl, k, base, r, seed, feats)
                if run.budget.stopped:
                    break
            if on_round is not None:
                on_round()
            if run.budget.stopped:
                return
