"""The runs of the ResNet18 / CIFAR-10 study: the baseline and the pruning runs of
experiments A and B.

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

In a profile with ``head_on_features`` (``cpu``) the baseline is trained by
:mod:`.trunk` and A runs on the trunk's cached features (:mod:`.features`).

Round 0 of a pruning run is the unpruned baseline; round r is the model after r
pruning steps, each followed by retraining.  Every round is one row of its
experiment's store and one checkpoint (:func:`~blockprune_utils.studies.base.checkpoint`),
so a killed run resumes where it stopped (:func:`~blockprune_utils.studies.base.resumable_rounds`).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision

from ...data import Split
from ...infra.provenance import provenance
from ...infra.seeds import derive_seed
from ...infra.store import ResultStore
from ...models import ResNet18Cifar
from ...schedule import BlockPruner, layer_densities, total_density
from ...train import evaluate, train
from ..base import RoundsRun, checkpoint, load_restored, resumable_rounds
from .budget import Budget
from .config import (
    HEAD_LAYERS,
    SCHEMA,
    STUDY,
    CifarProfile,
    DataConfig,
    Phase,
    TrunkSchedule,
    cifar_profile,
    store_config,
)
from .data import CifarTransform, load_cifar10_splits, synthetic_cifar
from .device import amp_label, autocast
from .network import build_model, conv_prune_layers, freeze_backbone, layout, model_density


def load_splits(d: DataConfig, download: bool = True) -> tuple[Split, Split, str]:
    """(train, test, source label) of a data configuration (uint8 images on the CPU)."""
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


class Run:
    """What every run of one profile on one device shares: the data (uint8, on the
    device), the augmentation, the provenance, the stores, the time budget and the log.
    ``data`` = (train, test, source) skips loading; ``budget_s`` starts the time
    budget (:class:`~.budget.Budget`, None: unlimited) now."""

    def __init__(self, profile, device="cpu", *, data=None, budget_s: float | None = None, download: bool = True,
                 log=print, results_root=None):
        self.log_fn, self.results_root = log, results_root
        self.p = cifar_profile(profile)
        self.budget = Budget(budget_s, self.log)
        self.device = torch.device(device)
        t0 = time.perf_counter()
        train_split, test_split, self.source = data if data is not None else load_splits(self.p.data, download)
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
        """The value columns of a row for ``model`` as it is now (``layers``: those the
        run prunes).  ``acc`` defaults to the last epoch's test accuracy of ``hist``."""
        accs = [h["val_acc"] for h in (hist or {}).get("history", [])]
        if acc is None:
            acc = accs[-1] if accs else self.evaluate(model)
        convs = [n for n in layers if n not in HEAD_LAYERS]
        return {
            "test_acc": acc, "test_acc_best_epoch": max(accs) if accs else acc, "test_acc_pruned": acc_pruned,
            "train_loss": hist["history"][-1]["train_loss"] if accs else None, "epochs": len(accs),
            "density": total_density(model, layers) if layers else 1.0,
            "density_head": total_density(model, HEAD_LAYERS),
            "density_conv": total_density(model, convs) if convs else 1.0,
            "density_model": model_density(model),
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


def baseline(run: Run, seed: int) -> Baseline | None:
    """The baseline of ``seed``: from its checkpoint, or trained now (and stored).  A
    :class:`~.config.TrunkSchedule` baseline is trained by :func:`.trunk.trunk_baseline`
    (None when the time budget stopped it)."""
    if isinstance(run.p.baseline, TrunkSchedule):
        from .trunk import trunk_baseline  # trunk builds on this module

        return trunk_baseline(run, seed)

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


def stored_baseline(run: Run, seed: int, train: Callable[[ResNet18Cifar], dict | None]) -> Baseline | None:
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


def round0_row(run: Run, pl: Plan, k: int, base: Baseline, seed: int | None = None) -> None:
    """Store round 0 of a pruning run: the baseline, with this run's layers (dense).
    ``seed`` is the run's seed when it differs from the baseline's (head seeds on
    cached features)."""
    def values() -> dict:
        v = run.values(base.model(), list(pl.rates), acc=base.row["test_acc"])
        return {**v, **{c: base.row[c] for c in ("test_acc_best_epoch", "train_loss", "epochs", "wall_s")}}

    seed = base.seed if seed is None else seed
    run.store(pl.experiment).cached(row_key(pl.experiment, k, 0, seed), values, run.prov)


def start_model(pl: Plan, base: Baseline) -> ResNet18Cifar:
    """The model a pruning run starts from: the baseline, its backbone frozen for A."""
    model = base.model()
    if pl.head_only:
        freeze_backbone(model)
    return model


def prune_run(run: Run, pl: Plan, k: int, base: Baseline, upto: int) -> None:
    """Bring the pruning run (experiment, k, seed) to round ``upto``: resume from its
    checkpoint (or start from the baseline), then prune and retrain each missing
    round, storing its row and checkpoint.  Stops before a round that the time budget
    has no room for."""
    store, e, seed = run.store(pl.experiment), pl.experiment, base.seed
    if all(store.has(row_key(e, k, r, seed)) for r in range(1, upto + 1)):
        return
    model = start_model(pl, base)
    layers = list(pl.rates)
    # The run spans all its rounds, so any checkpoint of it resumes; ``proceed`` stops it after round ``upto``.
    rr = RoundsRun(store, {"experiment": e, "k": int(k), "seed": int(seed)}, lambda r: row_key(e, k, r, seed),
                   run.prov, pl.rounds)

    def retrain(m, r):
        acc_pruned = run.evaluate(m)
        params = list(m.head.parameters()) if pl.head_only else None
        return acc_pruned, run.fit(m, pl.retrain, derive_seed("retrain", e, seed, k, r), params)

    def row_of(r, m, result) -> dict:
        acc_pruned, hist = result
        wall = time.perf_counter() - started[0]
        run.budget.spent(e, wall)
        v = run.values(m, layers, hist=hist, acc_pruned=acc_pruned, wall_s=wall)
        run.log(f"{e} k={k} seed {seed} round {r}: density {v['density']:.3%} | acc pruned {acc_pruned:.4f} "
                f"-> retrained {v['test_acc']:.4f} | {wall:.1f} s")
        return v

    started = [0.0]

    def proceed(r: int) -> bool:  # stop after round ``upto``, or when the next round does not fit the budget
        started[0] = time.perf_counter()  # the round's wall time starts with its pruning step
        return r <= upto and run.budget.allows(e)

    resumable_rounds(rr, model, BlockPruner(k, pl.rates), retrain, row_of, proceed=proceed)


def run_experiment(run: Run, experiment: str, base: Baseline, on_round=None) -> None:
    """All rounds of ``experiment`` for the baseline's seed, round-major over the
    block sizes (round 1 of every k, then round 2, ...), so a run stopped by the time
    budget has every k down to similar densities; ``on_round()`` runs after each
    (round, k) (it exports the rows so far)."""
    pl = plan(run.p, experiment)
    for k in pl.ks:
        round0_row(run, pl, k, base)
    for r in range(1, pl.rounds + 1):
        for k in pl.ks:
            prune_run(run, pl, k, base, upto=r)
            if on_round is not None:
                on_round()
            if run.budget.stopped:
                return
