"""The runs of the LeNet-300-100 study, one function per kind of task.

Per (dataset, seed):

* ``baseline``: train the dense network once (shared by every k and variant);
* ``block``: for each block size k, R rounds of per-layer block pruning (mean |w|
  block scores; fc1/fc2 lose 20% of their surviving blocks per round, fc3 10%),
  each followed by a short retraining;
* ``random_retrain``: the same rounds with random block masks that have exactly the
  per-layer block counts of ``block`` (fixed random scores drawn once per run, so
  the masks are nested), retrained the same way from the baseline weights;
* ``random_scratch``: the random mask of a round, on a freshly initialised network
  trained from scratch with that mask;
* ``sensitivity``: from the baseline, prune one layer at a time to each density of a
  grid (no retraining).

``epochs_scan`` and ``budget`` are ``block`` runs with other epochs per round (see
:mod:`.budget`); neuron pruning and the narrow dense nets are in :mod:`.neurons`.

Each run function takes a :class:`Run` (the frozen :class:`RunConfig`, the results and
data folders, the commit) and the axes, and computes only the rows its store lacks; a
prune run resumes from its last checkpoint.  :func:`.study.task` dispatches the
sweep's tasks to them.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import time

import torch

from ...blocks import block_mask_of, block_scores
from ...bsr.sparse_training import sparse_layers
from ...data import Split, load_mnist_like, train_val_split
from ...infra.provenance import provenance
from ...infra.seeds import derive_seed
from ...infra.store import ResultStore
from ...masks import density, get_mask, set_mask
from ...models import LeNet300100
from ...pruning import prune_to_density
from ...schedule import BlockPruner, install_block_mask, layer_densities, random_scores
from ...train import TrainConfig, evaluate, train
from ..base import RoundsRun, checkpoint, load_restored, restore, resumable_rounds
from .config import LAYERS, SCHEMA, STUDY, RunConfig


def store_for(cfg: RunConfig, results_root=None) -> ResultStore:
    return ResultStore(STUDY, cfg, SCHEMA, root=results_root)


@functools.lru_cache(maxsize=4)
def load_splits(data, data_root: str | None = None) -> tuple[Split, Split, Split]:
    """(train, val, test) tensors in memory, loaded once per process per config."""
    full = load_mnist_like(data.dataset, train=True, root=data_root)
    tr, va = train_val_split(full, data.val_size, data.split_seed)
    if data.n_train is not None:
        tr = tr.subset(slice(0, data.n_train))
    test = load_mnist_like(data.dataset, train=False, root=data_root)
    if data.n_test is not None:
        test = test.subset(slice(0, data.n_test))
    return tr, va, test


def new_model(cfg: RunConfig, init_seed: int) -> LeNet300100:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return LeNet300100(authors_softmax=cfg.training.authors_softmax)


def key(cfg: RunConfig, variant: str, k: int, round: int, seed: int, layer: str = "all", setting: str = "default") -> dict:
    return {"dataset": cfg.data.dataset, "variant": variant, "k": int(k), "round": int(round), "seed": int(seed),
            "layer": layer, "setting": setting}


class Run:
    """What every task of one configuration shares: store, splits, provenance."""

    def __init__(self, cfg: RunConfig, profile: str, results_root=None, data_root=None, commit=None):
        self.cfg, self.profile = cfg, profile
        self.store = store_for(cfg, results_root)
        self.prov = provenance("cpu", commit=commit)
        self.data_root = None if data_root is None else str(data_root)

    @functools.cached_property
    def splits(self) -> tuple[Split, Split, Split]:
        return load_splits(self.cfg.data, self.data_root)

    def selection(self, phase: TrainConfig) -> Split | None:
        """The split a training phase selects its checkpoint on (None: keep the last epoch)."""
        if phase.select == "last":
            return None
        tr, va, te = self.splits
        return {"val": va if len(va) else None, "test": te, "train": tr}[self.cfg.training.select_on]

    def test_acc(self, model) -> float:
        return evaluate(model, self.splits[2], self.cfg.training.eval_batch)

    def values(self, model, k: int, *, epochs: int, t0: float, hist=None, test_acc_pruned=None,
               target_density=None, evaluate_val: bool = True, evaluate_test: bool = True) -> dict:
        """The value columns of a row for ``model`` as it is now."""
        va = self.splits[1]
        dens = layer_densities(model, LAYERS)
        return {
            "test_acc": self.test_acc(model) if evaluate_test else None,
            "val_acc": evaluate(model, va, self.cfg.training.eval_batch) if evaluate_val and len(va) else None,
            "test_acc_pruned": test_acc_pruned, "target_density": target_density,
            **{f"density_{n}": v for n, v in dens.items()}, "density_total": density(model, LAYERS),
            **{f"blocks_{n}": int(block_mask_of(get_mask(getattr(model, n)), max(k, 1)).sum()) for n in LAYERS},
            "epochs": epochs,
            "train_loss": hist["history"][-1]["train_loss"] if hist and hist["history"] else None,
            "wall_s": time.perf_counter() - t0, "profile": self.profile, "authors": self.cfg.authors,
        }


def trained_sparse(cfg: RunConfig, model, k: int):
    """The context a pruned model trains in: its layers below the crossover density as
    block-sparse layers (``cfg.training.sparse``), or as they are."""
    return sparse_layers(model, LAYERS, k) if cfg.training.sparse else contextlib.nullcontext()


def baseline(run: Run, seed: int) -> LeNet300100:
    """The trained dense network of ``seed``: from its checkpoint, or trained now."""
    run_key = {"dataset": run.cfg.data.dataset, "seed": int(seed), "variant": "baseline"}
    model = new_model(run.cfg, derive_seed("init", seed))
    bkey = key(run.cfg, "baseline", 0, 0, seed)
    ck = load_restored(run.store, run_key, model,
                       check=lambda c, _: run.store.schema.make(bkey, c["row"], run.prov, run.store.hash))
    if ck is None:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(derive_seed("baseline-data", seed))
        phase = run.cfg.training.baseline
        hist = train(model, run.splits[0], phase, gen, val=run.selection(phase))
        ck = checkpoint(model, 0, run.values(model, 1, epochs=phase.epochs, t0=t0, hist=hist))
        run.store.save_checkpoint(run_key, ck)
        restore(ck, model)
    if not run.store.has(bkey):
        run.store.put(bkey, ck["row"], run.prov)
    return model


def prune_run(run: Run, seed: int, k: int, variant: str, phase: TrainConfig | None = None,
              setting: str = "default") -> None:
    """R rounds of prune + retrain for one (k, seed, variant), resumable.

    ``block``, ``retrain_scan``, ``epochs_scan`` and ``budget`` prune by block score, ``random_retrain`` by fixed
    random scores, ``dense_control`` prunes nothing (k = 0: same retraining, no
    pruning).  ``phase`` replaces the configured retraining (the scan's candidates);
    seed 0 of ``block`` keeps a snapshot of every round (for the weight figures and
    the benchmark); ``retrain_scan`` and ``epochs_scan`` rows record no test accuracy."""
    cfg = run.cfg
    rr = RoundsRun(run.store, {"dataset": cfg.data.dataset, "k": int(k), "seed": int(seed), "variant": variant,
                               "setting": setting},
                   lambda r: key(cfg, variant, k, r, seed, setting=setting), run.prov, cfg.pruning.rounds,
                   snapshots=variant == "block" and seed == 0)
    if rr.done():
        return
    model = copy.deepcopy(baseline(run, seed))
    if variant == "dense_control":
        pruner = BlockPruner(1, {n: 0.0 for n in LAYERS})
    elif variant == "random_retrain":
        scores = random_scores(model, LAYERS, k, torch.Generator().manual_seed(derive_seed("random-mask", seed, k)))
        pruner = BlockPruner(k, cfg.pruning.rate_map, score=scores)
    else:
        pruner = BlockPruner(k, cfg.pruning.rate_map, score=cfg.pruning.score)
    gen = torch.Generator().manual_seed(derive_seed("retrain-data", seed, k, variant))
    phase = phase or cfg.training.retrain
    scan = variant in ("retrain_scan", "epochs_scan")

    def retrain(m, r):
        t0 = time.perf_counter()
        pruned_acc = None if scan else run.test_acc(m)  # accuracy before retraining
        m.zero_grad(set_to_none=True)
        # with one epoch there is nothing to select: skip the per-epoch evaluation
        with trained_sparse(cfg, m, k):
            hist = train(m, run.splits[0], phase, gen, val=run.selection(phase) if phase.epochs > 1 else None)
        return t0, pruned_acc, hist

    def row_of(r, m, result):
        t0, pruned_acc, hist = result
        return run.values(m, k, epochs=phase.epochs, t0=t0, hist=hist, test_acc_pruned=pruned_acc, evaluate_test=not scan)

    resumable_rounds(rr, model, pruner, retrain, row_of, gen)


def baseline_scan(run: Run, setting: str, phase: TrainConfig) -> None:
    """Train the dense network of seed 0 with a candidate schedule; one row per epoch
    with its validation accuracy (no test accuracy: the choice is made on val)."""
    keys = [key(run.cfg, "baseline_scan", 0, e, 0, setting=setting) for e in range(1, phase.epochs + 1)]
    if all(run.store.has(kk) for kk in keys):
        return
    t0 = time.perf_counter()
    model = new_model(run.cfg, derive_seed("init", 0))
    gen = torch.Generator().manual_seed(derive_seed("baseline-data", 0))
    hist = train(model, run.splits[0], dataclasses.replace(phase, select="last"), gen, val=run.splits[1])
    base = run.values(model, 1, epochs=phase.epochs, t0=t0, evaluate_val=False, evaluate_test=False)
    for kk, h in zip(keys, hist["history"]):
        run.store.put(kk, {**base, "val_acc": h["val_acc"], "train_loss": h["train_loss"], "epochs": h["epoch"] + 1,
                           "wall_s": base["wall_s"] / phase.epochs}, run.prov)


def random_masks(cfg: RunConfig, k: int, seed: int, round: int) -> LeNet300100:
    """A fresh (untrained) model carrying the random block mask of ``round``: the mask
    that ``random_retrain`` has after that round (it depends only on the fixed random
    scores, not on the weights)."""
    model = new_model(cfg, derive_seed("init", seed))
    scores = random_scores(model, LAYERS, k, torch.Generator().manual_seed(derive_seed("random-mask", seed, k)))
    pruner = BlockPruner(k, cfg.pruning.rate_map, score=scores)
    for _ in range(round):
        pruner.step(model)
    return model


def scratch_run(run: Run, seed: int, k: int, round: int) -> None:
    """The random block mask of ``round`` on a fresh network trained from scratch."""
    rkey = key(run.cfg, "random_scratch", k, round, seed)
    if run.store.has(rkey):
        return
    t0 = time.perf_counter()
    masked = random_masks(run.cfg, k, seed, round)
    model = new_model(run.cfg, derive_seed("scratch-init", seed, k, round))
    for n in LAYERS:
        set_mask(getattr(model, n), get_mask(getattr(masked, n)).clone())
    phase = run.cfg.training.scratch
    gen = torch.Generator().manual_seed(derive_seed("scratch-data", seed, k, round))
    with trained_sparse(run.cfg, model, k):
        hist = train(model, run.splits[0], phase, gen, val=run.selection(phase))
    run.store.put(rkey, run.values(model, k, epochs=phase.epochs, t0=t0, hist=hist), run.prov)


def sensitivity_run(run: Run, seed: int, k: int) -> None:
    """Each layer alone pruned to each density of the grid, no retraining."""
    grid = run.cfg.pruning.sensitivity_densities
    keys = {(n, i): key(run.cfg, "sensitivity", k, i, seed, layer=n) for n in LAYERS for i in range(len(grid))}
    if all(run.store.has(kk) for kk in keys.values()):
        return
    base = baseline(run, seed)
    for name in LAYERS:
        scores = block_scores(getattr(base, name).weight, k, run.cfg.pruning.score)
        for i, d in enumerate(grid):
            if run.store.has(keys[name, i]):
                continue
            t0 = time.perf_counter()
            model = copy.deepcopy(base)
            alive = prune_to_density(scores, torch.ones_like(scores, dtype=torch.bool), d)
            install_block_mask(getattr(model, name), alive, k)
            run.store.put(keys[name, i], run.values(model, k, epochs=0, t0=t0, target_density=float(d),
                                                    evaluate_val=False), run.prov)
