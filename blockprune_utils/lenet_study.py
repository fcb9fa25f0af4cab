"""LeNet-300-100 on MNIST and Fashion-MNIST: accuracy vs density and block size.

The study (issue #3), per (dataset, seed):

* ``baseline``: train the dense network once (shared by every k and variant; its
  own row, ``k=0, round=0``, and its own checkpoint);
* ``block``: for each block size k, ``rounds`` rounds of per-layer block pruning
  (mean |w| block scores; fc1/fc2 lose 20% of their surviving blocks per round,
  fc3 10%) each followed by a short retraining;
* ``random_retrain``: the same rounds with *random* block masks that have exactly
  the per-layer block counts of ``block`` (fixed random block scores drawn once
  per run, so the masks are nested across rounds), retrained the same way from
  the baseline weights;
* ``random_scratch``: the random mask of a few rounds, on a freshly initialised
  network trained from scratch with that mask;
* ``sensitivity``: from the baseline, prune *one* layer at a time to each density
  of a grid (no retraining) and record the test accuracy.

Every finished row is written atomically to a :class:`~blockprune_utils.cache.ResultStore`
under the hash of the :class:`RunConfig` (everything that determines a run except
the sweep axes k, seed and variant) and skipped on a rerun.  Each prune+retrain run
keeps its latest checkpoint (model, data-order generator, the last row), so a
killed sweep resumes from its last finished round; seed 0 of ``block`` also keeps
a checkpoint of every round, which :func:`pruned_lenet` returns.

``authors=True`` reproduces the authors' choices (softmax output into
CrossEntropyLoss, no ``zero_grad`` in retraining, Adam re-created every epoch,
checkpoint selection on test (MNIST) or train (Fashion-MNIST) accuracy, their
learning rates and batch sizes); the default is correct training with selection on
a held-out validation split of the training set.  Epoch counts are the profile's in
both cases (the authors' 1000 epochs per round are out of reach).

Entry points: :func:`run_study` (the notebook) and :func:`main`
(``python -m blockprune_utils.sweep --study lenet --profile paper --dataset mnist``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .blocks import block_mask_of, block_scores, expand_block_mask
from .cache import ResultStore, config_hash, provenance
from .data import Split, load_mnist_like, train_val_split
from .masks import get_mask, set_mask
from .models import LENET_RATES, LeNet300100
from .paths import results_dir
from .pruning import prune_to_density
from .schedule import BlockPruner, install_block_mask, layer_densities, random_scores, total_density
from .train import TrainConfig, evaluate, train

STUDY = "lenet"
LAYERS = ("fc1", "fc2", "fc3")
VARIANTS = ("block", "sensitivity", "random_retrain", "random_scratch")  # the order a sweep runs them
STUDY_VERSION = 1  # bump when the meaning of a row changes, so old caches are not reused


# --------------------------------------------------------------------------- configuration


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


@dataclass(frozen=True)
class TrainingConfig:
    """The three training phases, and which split selects the kept checkpoint:
    ``"val"`` (ours), ``"test"`` or ``"train"`` (the authors' MNIST / Fashion-MNIST)."""

    baseline: TrainConfig = TrainConfig(epochs=15, lr=1e-3, batch_size=128)
    retrain: TrainConfig = TrainConfig(epochs=1, lr=1e-3, batch_size=128)
    scratch: TrainConfig = TrainConfig(epochs=10, lr=1e-3, batch_size=128)
    select_on: str = "val"
    authors_softmax: bool = False
    eval_batch: int = 10000

    def __post_init__(self):
        if self.select_on not in ("val", "test", "train"):
            raise ValueError(f"select_on must be 'val', 'test' or 'train', got {self.select_on!r}")


@dataclass(frozen=True)
class PruningConfig:
    """The pruning schedule: ``rounds`` prune+retrain rounds at per-layer ``rates``
    (a tuple of (layer, p) pairs; LENET_RATES by default), the block ``score``, the
    rounds at which the ``random_scratch`` control is trained, and the density grid
    of the per-layer sensitivity scan."""

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
    """Everything that determines one run except the sweep axes (k, seed, variant);
    its hash names the results folder."""

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


# Chosen from timings on the 2-core CPU (see notebooks/01_lenet_mnist.ipynb): one
# single-threaded LeNet epoch on 55,000 images at batch 128 takes ~1.4 s; the paper
# profile is 15 baseline epochs, 1 retraining epoch per round at Adam lr 1e-3 (lr 3e-4
# recovered less in one epoch), 10 scratch epochs at 2 rounds: ~980 epochs per dataset.
PROFILES: dict[str, Profile] = {
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
    ),
    "paper": Profile(
        name="paper",
        data=DataConfig(val_size=5000),
        training=TrainingConfig(),
        pruning=PruningConfig(),
        ks=(1, 2, 3, 4, 5, 6),
        seeds=(0, 1, 2),
    ),
}

# The authors' optimiser settings (PAPER.md section 1.4 and 2): baseline (lr, batch),
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
    training = dataclasses.replace(
        t,
        baseline=dataclasses.replace(t.baseline, lr=s["baseline"][0], batch_size=s["baseline"][1], select="last"),
        retrain=dataclasses.replace(t.retrain, lr=s["retrain"][0], batch_size=s["retrain"][1], zero_grad=False,
                                    reset_optimizer_each_epoch=True),
        scratch=dataclasses.replace(t.scratch, lr=s["baseline"][0], batch_size=s["baseline"][1], select="last"),
        select_on=s["select_on"],
        authors_softmax=True,
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_size=0), training=training, authors=True)


def run_config(profile: str | Profile = "paper", dataset: str = "mnist", authors: bool = False) -> RunConfig:
    """The :class:`RunConfig` of a profile for one dataset (with the authors' choices
    when ``authors``)."""
    prof = get_profile(profile)
    cfg = RunConfig(data=dataclasses.replace(prof.data, dataset=dataset), training=prof.training, pruning=prof.pruning)
    return authors_config(cfg) if authors else cfg


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[profile]


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=8)
def load_splits(data: DataConfig) -> tuple[Split, Split, Split]:
    """(train, val, test) tensors in memory, loaded once per process per config."""
    full = load_mnist_like(data.dataset, train=True)
    tr, va = train_val_split(full, data.val_size, data.split_seed)
    if data.n_train is not None:
        tr = tr.subset(slice(0, data.n_train))
    test = load_mnist_like(data.dataset, train=False)
    if data.n_test is not None:
        test = test.subset(slice(0, data.n_test))
    return tr, va, test


# --------------------------------------------------------------------------- helpers


def seed_for(*parts) -> int:
    """A stable 63-bit seed from any parts (independent of Python's hash salt)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def new_model(cfg: RunConfig, init_seed: int) -> LeNet300100:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return LeNet300100(authors_softmax=cfg.training.authors_softmax)


def pack_model(model: LeNet300100, k: int) -> dict:
    """A compact, exact checkpoint of a (masked) LeNet: per layer the block mask and
    the surviving weight values, plus the biases."""
    out = {"k": int(k), "layers": {}, "bias": {}}
    for name in LAYERS:
        mod = getattr(model, name)
        w = mod.weight.detach()
        mask = get_mask(mod).bool()
        out["layers"][name] = {"block_mask": block_mask_of(mask, k), "values": w[mask].clone(), "shape": tuple(w.shape)}
        out["bias"][name] = mod.bias.detach().clone()
    return out


def unpack_model(pack: dict, authors_softmax: bool = False) -> LeNet300100:
    """The masked LeNet of a :func:`pack_model` checkpoint."""
    model = LeNet300100(authors_softmax=authors_softmax)
    k = pack["k"]
    with torch.no_grad():
        for name in LAYERS:
            mod, layer = getattr(model, name), pack["layers"][name]
            mask = expand_block_mask(layer["block_mask"], layer["shape"], k).to(torch.float32)
            w = torch.zeros(layer["shape"])
            w[mask.bool()] = layer["values"]
            mod.weight.copy_(w)
            if not bool(mask.all()):
                set_mask(mod, mask)
            mod.bias.copy_(pack["bias"][name])
    return model


def _densities(model) -> dict:
    d = layer_densities(model, LAYERS)
    row = {f"density_{n}": v for n, v in d.items()}
    row["density_total"] = total_density(model, LAYERS)
    return row


def _blocks(model, k) -> dict:
    return {f"blocks_{n}": int(block_mask_of(get_mask(getattr(model, n)), k).sum()) for n in LAYERS}


@dataclass
class _Context:
    cfg: RunConfig
    store: ResultStore
    profile: str
    prov: dict
    progress: bool
    on_row: Optional[Callable[[dict, dict], None]]
    splits: tuple = field(default=())

    @property
    def dataset(self) -> str:
        return self.cfg.data.dataset

    def selection(self, phase: TrainConfig) -> Optional[Split]:
        """The split a training phase selects its checkpoint on (None: keep the last epoch)."""
        if phase.select == "last":
            return None
        tr, va, te = self.splits
        return {"val": va if len(va) else None, "test": te, "train": tr}[self.cfg.training.select_on]

    def evals(self, model) -> dict:
        tr, va, te = self.splits
        b = self.cfg.training.eval_batch
        return {"test_acc": evaluate(model, te, b), "val_acc": evaluate(model, va, b) if len(va) else None}

    def key(self, k, round, seed, variant, **extra) -> dict:
        return {"dataset": self.dataset, "k": int(k), "round": int(round), "seed": int(seed), "variant": variant, **extra}

    def write(self, key: dict, row: dict) -> None:
        if self.store.has(key):
            return
        self.store.write_row(key, {**row, "profile": self.profile, "authors": self.cfg.authors, **self.prov})
        if self.on_row is not None:
            self.on_row(key, row)


# --------------------------------------------------------------------------- the runs


def _baseline(ctx: _Context, seed: int) -> LeNet300100:
    """The trained dense network of ``seed`` (from its checkpoint when there is one)."""
    run_key = {"dataset": ctx.dataset, "seed": int(seed), "variant": "baseline"}
    key = ctx.key(0, 0, seed, "baseline")
    ck = ctx.store.load_checkpoint(run_key)
    if ck is None:
        t0 = time.perf_counter()
        model = new_model(ctx.cfg, seed_for("init", seed))
        gen = torch.Generator().manual_seed(seed_for("baseline-data", seed))
        tr, _, _ = ctx.splits
        phase = ctx.cfg.training.baseline
        hist = train(model, tr, phase, gen, val=ctx.selection(phase))
        row = {**ctx.evals(model), **_densities(model), **_blocks(model, 1), "epochs": ctx.cfg.training.baseline.epochs,
               "train_loss": hist["history"][-1]["train_loss"] if hist["history"] else None,
               "wall_s": time.perf_counter() - t0}
        ck = {"state": pack_model(model, 1), "row": row}
        ctx.store.save_checkpoint(run_key, ck)
    ctx.write(key, ck["row"])
    return unpack_model(ck["state"], ctx.cfg.training.authors_softmax)


def _prune_run(ctx: _Context, base: LeNet300100, k: int, seed: int, variant: str) -> None:
    """``rounds`` rounds of prune + retrain for one (k, seed, variant), resumable."""
    rounds = ctx.cfg.pruning.rounds
    keys = [ctx.key(k, r, seed, variant) for r in range(1, rounds + 1)]
    if all(ctx.store.has(key) for key in keys):
        return
    run_key = {"dataset": ctx.dataset, "k": int(k), "seed": int(seed), "variant": variant}
    snapshots = variant == "block" and seed == 0
    gen = torch.Generator().manual_seed(seed_for("retrain-data", seed, k, variant))
    ck = ctx.store.load_checkpoint(run_key)
    if ck is not None:
        model = unpack_model(ck["state"], ctx.cfg.training.authors_softmax)
        gen.set_state(ck["gen"])
        start = ck["round"] + 1
        ctx.write(keys[ck["round"] - 1], ck["row"])
    else:
        model = copy.deepcopy(base)
        start = 1
    pruner = BlockPruner(k, ctx.cfg.pruning.rate_map, score=_run_scores(ctx, model, k, seed, variant))
    tr = ctx.splits[0]
    from tqdm import tqdm

    for r in tqdm(range(start, rounds + 1), desc=f"{ctx.dataset} {variant} k={k} seed={seed}", leave=False,
                  disable=not ctx.progress, initial=start - 1, total=rounds):
        t0 = time.perf_counter()
        pruner.step(model)
        pruned_acc = evaluate(model, ctx.splits[2], ctx.cfg.training.eval_batch)  # before retraining
        model.zero_grad(set_to_none=True)
        phase = ctx.cfg.training.retrain
        # with one epoch there is nothing to select: skip the per-epoch evaluation
        hist = train(model, tr, phase, gen, val=ctx.selection(phase) if phase.epochs > 1 else None)
        row = {**ctx.evals(model), "test_acc_pruned": pruned_acc, **_densities(model), **_blocks(model, k),
               "epochs": ctx.cfg.training.retrain.epochs,
               "train_loss": hist["history"][-1]["train_loss"] if hist["history"] else None,
               "wall_s": time.perf_counter() - t0}
        pack = pack_model(model, k)
        if snapshots:
            ctx.store.save_checkpoint({**run_key, "round": r, "kind": "snapshot"}, pack)
        ctx.store.save_checkpoint(run_key, {"round": r, "state": pack, "gen": gen.get_state(), "row": row})
        ctx.write(keys[r - 1], row)


def _run_scores(ctx: _Context, model, k: int, seed: int, variant: str):
    if variant == "block":
        return ctx.cfg.pruning.score
    gen = torch.Generator().manual_seed(seed_for("random-mask", seed, k))
    return random_scores(model, LAYERS, k, gen)


def random_masks(cfg: RunConfig, k: int, seed: int, round: int) -> LeNet300100:
    """A fresh (untrained) model carrying the random block mask of ``round``: the
    mask that ``random_retrain`` has after that round (the masks depend only on the
    fixed random scores, not on the weights)."""
    model = new_model(cfg, seed_for("init", seed))
    scores = random_scores(model, LAYERS, k, torch.Generator().manual_seed(seed_for("random-mask", seed, k)))
    pruner = BlockPruner(k, cfg.pruning.rate_map, score=scores)
    for _ in range(round):
        pruner.step(model)
    return model


def _scratch(ctx: _Context, k: int, seed: int) -> None:
    for r in ctx.cfg.pruning.scratch_rounds:
        key = ctx.key(k, r, seed, "random_scratch")
        if ctx.store.has(key):
            continue
        t0 = time.perf_counter()
        masked = random_masks(ctx.cfg, k, seed, r)
        model = new_model(ctx.cfg, seed_for("scratch-init", seed, k, r))
        for n in LAYERS:
            set_mask(getattr(model, n), get_mask(getattr(masked, n)).clone())
        gen = torch.Generator().manual_seed(seed_for("scratch-data", seed, k, r))
        hist = train(model, ctx.splits[0], ctx.cfg.training.scratch, gen, val=ctx.selection(ctx.cfg.training.scratch))
        row = {**ctx.evals(model), **_densities(model), **_blocks(model, k), "epochs": ctx.cfg.training.scratch.epochs,
               "train_loss": hist["history"][-1]["train_loss"] if hist["history"] else None,
               "wall_s": time.perf_counter() - t0}
        ctx.write(key, row)


def _sensitivity(ctx: _Context, base: LeNet300100, k: int, seed: int) -> None:
    grid = ctx.cfg.pruning.sensitivity_densities
    for name in LAYERS:
        mod = getattr(base, name)
        scores = block_scores(mod.weight, k, ctx.cfg.pruning.score)
        for i, d in enumerate(grid):
            key = ctx.key(k, i, seed, "sensitivity", layer=name)
            if ctx.store.has(key):
                continue
            t0 = time.perf_counter()
            model = copy.deepcopy(base)
            alive = prune_to_density(scores, torch.ones_like(scores, dtype=torch.bool), d)
            install_block_mask(getattr(model, name), alive, k)
            row = {"test_acc": evaluate(model, ctx.splits[2], ctx.cfg.training.eval_batch), "val_acc": None,
                   "target_density": float(d), **_densities(model), **_blocks(model, k), "epochs": 0,
                   "wall_s": time.perf_counter() - t0}
            ctx.write(key, row)


# --------------------------------------------------------------------------- public API


def store_for(cfg: RunConfig, root=None) -> ResultStore:
    return ResultStore(STUDY, cfg, root=root)


def run_study(profile: str | Profile = "quick", dataset: str = "mnist", ks=None, seeds=None, variants=None,
              progress: bool = True, authors: bool = False, config: RunConfig | None = None,
              on_row: Optional[Callable[[dict, dict], None]] = None, results_root=None):
    """Run (or read from the cache) the LeNet study; returns the tidy DataFrame of
    the requested rows (baseline rows included).

    ``ks``/``seeds``/``variants`` default to the profile's; ``config`` overrides the
    profile's :class:`RunConfig` (tests); ``on_row(key, row)`` is called after each
    row is written."""
    prof = get_profile(profile)
    cfg = config if config is not None else run_config(prof, dataset, authors)
    dataset = cfg.data.dataset
    ks = tuple(prof.ks if ks is None else ks)
    seeds = tuple(prof.seeds if seeds is None else seeds)
    variants = tuple(prof.variants if variants is None else variants)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    store = store_for(cfg, results_root)
    prov = {k: v for k, v in provenance("cpu").items()}
    ctx = _Context(cfg=cfg, store=store, profile=prof.name, prov=prov, progress=progress, on_row=on_row)
    if not _all_done(ctx, ks, seeds, variants):
        ctx.splits = load_splits(cfg.data)
        from tqdm import tqdm

        # variant-major: a sweep stopped early still has every seed of the first variants
        jobs = [(seed, k, v) for v in variants for seed in seeds for k in ks]
        bases: dict[int, LeNet300100] = {}
        for seed, k, v in tqdm(jobs, desc=f"lenet {dataset}", disable=not progress):
            if seed not in bases:
                bases[seed] = _baseline(ctx, seed)
            if v in ("block", "random_retrain"):
                _prune_run(ctx, bases[seed], k, seed, v)
            elif v == "random_scratch":
                _scratch(ctx, k, seed)
            elif v == "sensitivity":
                _sensitivity(ctx, bases[seed], k, seed)
    return select_rows(store.frame(), ks, seeds, variants)


def _expected_keys(ctx: _Context, ks, seeds, variants):
    p = ctx.cfg.pruning
    for seed in seeds:
        yield ctx.key(0, 0, seed, "baseline")
        for k in ks:
            for v in variants:
                if v in ("block", "random_retrain"):
                    yield from (ctx.key(k, r, seed, v) for r in range(1, p.rounds + 1))
                elif v == "random_scratch":
                    yield from (ctx.key(k, r, seed, v) for r in p.scratch_rounds)
                else:
                    yield from (ctx.key(k, i, seed, v, layer=n) for n in LAYERS for i in range(len(p.sensitivity_densities)))


def _all_done(ctx, ks, seeds, variants) -> bool:
    return all(ctx.store.has(key) for key in _expected_keys(ctx, ks, seeds, variants))


def select_rows(df, ks, seeds, variants):
    """The rows of the requested axes (and the baselines of the requested seeds)."""
    if df.empty:
        return df
    keep = (df["seed"].isin(seeds)) & (((df["variant"] == "baseline")) | (df["k"].isin(ks) & df["variant"].isin(variants)))
    out = df[keep].sort_values(["variant", "k", "seed", "round"] + (["layer"] if "layer" in df else [])).reset_index(drop=True)
    return out


def cached_frame(profile: str = "paper", dataset: str = "mnist", authors: bool = False, results_root=None):
    """All cached rows of a profile/dataset (no computation; empty when none)."""
    import pandas as pd

    cfg = run_config(profile, dataset, authors)
    folder = Path(results_root or results_dir()) / STUDY / config_hash(cfg)
    return store_for(cfg, results_root).frame() if folder.exists() else pd.DataFrame()


def pruned_lenet(dataset: str, k: int, round: int, seed: int = 0, profile: str = "paper",
                 authors: bool = False, results_root=None, config: RunConfig | None = None) -> LeNet300100 | None:
    """The block-pruned LeNet-300-100 (variant ``block``) of ``(dataset, k, round,
    seed)`` from the cache, with its masks; ``round=0`` is the dense baseline.
    None when it is not cached (every round is kept for seed 0; for other seeds only
    a run's last finished round).  ``config`` replaces the profile's RunConfig."""
    cfg = config if config is not None else run_config(profile, dataset, authors)
    folder = Path(results_root or results_dir()) / STUDY / config_hash(cfg)
    if not folder.exists():
        return None
    store = store_for(cfg, results_root)
    soft = cfg.training.authors_softmax
    if round == 0:
        ck = store.load_checkpoint({"dataset": dataset, "seed": int(seed), "variant": "baseline"})
        return None if ck is None else unpack_model(ck["state"], soft)
    run_key = {"dataset": dataset, "k": int(k), "seed": int(seed), "variant": "block"}
    pack = store.load_checkpoint({**run_key, "round": int(round), "kind": "snapshot"})
    if pack is None:
        ck = store.load_checkpoint(run_key)
        pack = ck["state"] if ck is not None and ck["round"] == round else None
    return None if pack is None else unpack_model(pack, soft)


def weight_frame(dataset: str, ks: Sequence[int], round: int, seed: int = 0, profile: str = "paper",
                 authors: bool = False, results_root=None, config: RunConfig | None = None):
    """Tidy table of the surviving weights (k, layer, row, col, value) of the
    block-pruned models of ``round`` (the data behind the weight-matrix figure);
    ks whose model is not cached are left out."""
    import pandas as pd

    parts = []
    for k in ks:
        model = pruned_lenet(dataset, k, round, seed, profile, authors, results_root, config)
        if model is None:
            continue
        for name in LAYERS:
            w = getattr(model, name).weight.detach()
            r, c = torch.nonzero(w, as_tuple=True)
            parts.append(pd.DataFrame({"k": k, "layer": name, "rows": w.shape[0], "cols": w.shape[1],
                                       "row": r.numpy(), "col": c.numpy(), "value": w[r, c].numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["k", "layer", "rows", "cols", "row", "col", "value"])


def baseline_summary(df):
    """Dense baseline test accuracy: mean, sd and number of seeds."""
    base = df[df["variant"] == "baseline"]
    return {"acc_mean": base["test_acc"].mean(), "acc_sd": base["test_acc"].std(), "n_seeds": base["seed"].nunique()}


def summary_at(df, targets: Sequence[float] = (0.087, 0.028), variants: Sequence[str] = ("block",)):
    """Test accuracy (mean, sd over seeds) per variant and k at the rounds nearest the
    target densities (rounds picked on ``block``; variants lacking a round are left out)."""
    import pandas as pd

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


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blockprune_utils.sweep --study lenet",
                                     description="LeNet-300-100 block-pruning sweep (results cached under RESULTS_DIR)")
    parser.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--ks", type=int, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS)
    parser.add_argument("--authors", action="store_true", help="reproduce the authors' training choices")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for this small MLP)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    df = run_study(args.profile, args.dataset, ks=args.ks, seeds=args.seeds, variants=args.variants,
                   progress=not args.no_progress, authors=args.authors)
    cfg = run_config(args.profile, args.dataset, args.authors)
    print(f"lenet {args.dataset} profile={args.profile} authors={args.authors}: {len(df)} rows in "
          f"{store_for(cfg).dir} ({time.perf_counter() - t0:.1f} s)")
    if not df.empty:
        summary = df[df["variant"].isin(["baseline", "block"])].groupby(["variant", "k", "round"])["test_acc"].mean()
        print(summary.tail(20).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
