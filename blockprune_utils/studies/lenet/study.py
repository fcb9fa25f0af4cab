"""The LeNet-300-100 study as a graph of tasks, and reading its results.

:func:`tasks` declares the sweep: one task per (dataset, seed) baseline, and per
(k, seed) one pruning run of each variant, the scratch controls and the sensitivity
scan, each depending on its seed's baseline.  :func:`run_study` runs what the store
lacks (in this process, or on a Dask cluster through :mod:`blockprune_utils.sweep`)
and returns the tidy rows; :func:`cached_frame`, :func:`pruned_lenet` and
:func:`weight_frame` only read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ...infra.provenance import git_commit
from ...infra.store import open_store
from ...infra.tasks import Task, run_tasks
from ...models import LeNet300100
from ...train import TrainConfig
from ..base import check_axis, restore
from . import neurons
from . import runs as R
from .config import (
    LAYERS,
    SCHEMA,
    STUDY,
    VARIANTS,
    Profile,
    RunConfig,
    authors_configs,
    lenet_profile,
    run_config,
    setting_name,
)
from .runs import key, new_model, store_for
from .summary import select_rows

# The largest block size: a larger block would cover the whole of fc3 (10 x 100), so
# its 10% rate would never prune it.
MAX_K = 10


def _axes(prof: Profile, ks, seeds, variants):
    """The sweep axes (the profile's where None), checked before any work."""
    ks = check_axis("ks", prof.ks if ks is None else ks, 1, MAX_K,
                    " (a larger block would cover all of layer fc3, 10 x 100, which then is never pruned)")
    seeds = check_axis("seeds", prof.seeds if seeds is None else seeds, 0)
    variants = tuple(prof.variants if variants is None else variants)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    if len(set(variants)) != len(variants):
        raise ValueError(f"variants {list(variants)} repeat a value: give each once")
    return ks, seeds, variants


@dataclass(frozen=True)
class Unit:
    """One unit of work of one configuration: a task's arguments, its rows, its cost."""

    kind: str
    seed: int
    k: int = 0
    round: int = 0
    setting: str = "default"
    phase: TrainConfig | None = None
    keys: tuple = ()
    cost: float = 1.0

    @property
    def name(self) -> str:
        parts = [self.kind, f"k={self.k}"] + ([f"round={self.round}"] if self.round else []) + \
            ([self.setting] if self.setting != "default" else []) + [f"seed={self.seed}"]
        return "/".join(parts)


def units(cfg: RunConfig, prof: Profile, ks, seeds, variants) -> list[Unit]:
    """The units of work of a sweep of one configuration (baselines not included)."""
    t, p = cfg.training, cfg.pruning
    rounds = range(1, p.rounds + 1)
    out = []
    for seed in seeds:
        for v in variants:
            if v in ("block", "random_retrain"):
                out += [Unit(v, seed, k, keys=tuple(key(cfg, v, k, r, seed) for r in rounds),
                             cost=p.rounds * t.retrain.epochs) for k in ks]
            elif v in ("dense_control", "neuron"):
                out.append(Unit(v, seed, 0, keys=tuple(key(cfg, v, 0, r, seed) for r in rounds),
                                cost=p.rounds * t.retrain.epochs))
            elif v == "narrow_dense":
                out += [Unit(v, seed, 0, r, keys=(key(cfg, v, 0, r, seed),), cost=t.baseline.epochs)
                        for r in prof.narrow_rounds if 1 <= r <= p.rounds]
            elif v == "random_scratch":
                out += [Unit(v, seed, k, r, keys=(key(cfg, v, k, r, seed),), cost=t.scratch.epochs)
                        for k in ks for r in p.scratch_rounds]
            elif v == "sensitivity":
                grid = range(len(p.sensitivity_densities))
                out += [Unit(v, seed, k, keys=tuple(key(cfg, v, k, i, seed, n) for n in LAYERS for i in grid), cost=0.1)
                        for k in ks]
    if 0 in seeds and "baseline_scan" in variants:
        out += [Unit("baseline_scan", 0, 0, setting=name, phase=ph, cost=ph.epochs,
                     keys=tuple(key(cfg, "baseline_scan", 0, e, 0, setting=name) for e in range(1, ph.epochs + 1)))
                for name, ph in prof.baseline_candidates]
    if 0 in seeds and "retrain_scan" in variants:
        out += [Unit("retrain_scan", 0, prof.scan_k, setting=name, phase=ph, cost=p.rounds * ph.epochs,
                     keys=tuple(key(cfg, "retrain_scan", prof.scan_k, r, 0, setting=name) for r in rounds))
                for name, ph in prof.retrain_candidates]
    for v, ks_e, epochs, lrs in (("epochs_scan", prof.epochs_scan_ks, prof.epochs_candidates, prof.epochs_scan_lrs),
                                 ("budget", prof.budget_ks, prof.budget_epochs, ())):
        if 0 not in seeds or v not in variants:
            continue
        for e, lr in ((e, lr) for e in epochs for lr in dict.fromkeys((t.retrain.lr, *lrs))):
            ph = dataclasses.replace(t.retrain, epochs=e, lr=lr)
            if v == "budget" and ph == t.retrain:
                continue  # the profile's own epochs per round: that run is ``block``
            out += [Unit(v, 0, k, setting=setting_name(ph), phase=ph, cost=p.rounds * e,
                         keys=tuple(key(cfg, v, k, r, 0, setting=setting_name(ph)) for r in rounds)) for k in ks_e]
    return out


def expected_keys(cfg: RunConfig, ks, seeds, variants, profile: str | Profile = "quick"):
    """The row keys a sweep of these axes produces in ``cfg``'s store."""
    prof = lenet_profile(profile)
    for seed in seeds:
        yield key(cfg, "baseline", 0, 0, seed)
    for u in units(cfg, prof, ks, seeds, variants):
        yield from u.keys


def _config_tasks(cfg: RunConfig, prof: Profile, unit_list: list[Unit], prefix: str, common: dict, results_root,
                  skip_done: bool) -> list[Task]:
    store = store_for(cfg, results_root)
    todo = [u for u in unit_list if not (skip_done and all(store.has(kk) for kk in u.keys))]
    out = []
    for seed in sorted({u.seed for u in unit_list}):
        base_name = f"{prefix}/baseline/seed={seed}"
        children = [Task(f"{prefix}/{u.name}", _run_task,
                         ((u.kind, cfg, prof.name, u.seed, u.k, u.round, u.setting, u.phase), common),
                         deps=() if u.kind in ("baseline_scan", "narrow_dense") else (base_name,), cost=float(u.cost))
                    for u in todo if u.seed == seed]
        needs_base = any(c.deps for c in children)
        if needs_base or not (skip_done and store.has(key(cfg, "baseline", 0, 0, seed))):
            out.append(Task(base_name, _run_task, (("baseline", cfg, prof.name, seed), common),
                            cost=float(cfg.training.baseline.epochs)))
        out += children
    return out


def tasks(profile: str | Profile = "paper", datasets: Sequence[str] = ("mnist",), ks=None, seeds=None, variants=None,
          authors: bool = False, config: RunConfig | None = None, results_root=None, data_root=None,
          commit: str | None = None, skip_done: bool = True) -> list[Task]:
    """The tasks of a LeNet sweep; with ``skip_done``, tasks whose rows are all in the
    store are left out (a baseline stays while a task that needs it remains).  The
    ``authors`` variant runs the authors' set-up (seed 0, the profile's
    ``authors_ks`` with the first of ``authors_retrain_epochs``, ``authors_long_ks``
    with the others; one configuration per retraining budget)."""
    prof = lenet_profile(profile)
    ks, seeds, variants = _axes(prof, ks, seeds, variants)
    if len(set(datasets)) != len(tuple(datasets)):
        raise ValueError(f"datasets {list(datasets)} repeat a value: give each once")
    common = {"results_root": None if results_root is None else str(results_root),
              "data_root": None if data_root is None else str(data_root), "commit": commit or git_commit()}
    out: list[Task] = []
    for dataset in datasets:
        cfg = config if config is not None else run_config(prof, dataset, authors)
        ds = cfg.data.dataset
        out += _config_tasks(cfg, prof, units(cfg, prof, ks, seeds, variants), f"lenet/{ds}", common, results_root,
                             skip_done)
        if "authors" in variants and not cfg.authors:
            for e, cfg_a in authors_configs(prof, ds, cfg).items():
                out += _config_tasks(cfg_a, prof, units(cfg_a, prof, prof.authors_ks_for(e), (0,), ("block",)),
                                     f"lenet/{ds}/authors-{e}ep", common, results_root, skip_done)
    return out


def _run_task(args: tuple, common: dict) -> int:
    return task(*args, **common)


def run_study(profile: str | Profile = "quick", dataset: str = "mnist", ks=None, seeds=None, variants=None,
              progress: bool = True, authors: bool = False, config: RunConfig | None = None,
              results_root=None, workers: int | None = 1, scheduler: str | None = None):
    """Run (or read from the store) the LeNet study for one data set; returns the
    tidy DataFrame of the requested rows (baseline rows included).  ``workers=1``
    runs in this process; more workers, or a Dask ``scheduler`` address, run the
    tasks in parallel (see :mod:`blockprune_utils.infra.tasks`)."""
    prof = lenet_profile(profile)
    cfg = config if config is not None else run_config(prof, dataset, authors)
    ks, seeds, variants = _axes(prof, ks, seeds, variants)
    todo = tasks(prof, (cfg.data.dataset,), ks, seeds, variants, config=cfg, results_root=results_root)
    if todo:
        run_tasks(todo, workers=workers, scheduler=scheduler, progress=progress, desc=f"lenet {cfg.data.dataset}")
    return select_rows(store_for(cfg, results_root).frame(), ks, seeds, variants)


def cached_frame(profile: str = "paper", dataset: str = "mnist", authors: bool = False, results_root=None):
    """All stored rows of a profile and data set (no computation; empty when none)."""
    store = open_store(STUDY, run_config(profile, dataset, authors), SCHEMA, results_root)
    return store.frame() if store is not None else pd.DataFrame(columns=list(SCHEMA.columns))


def pruned_lenet(dataset: str, k: int, round: int, seed: int = 0, profile: str = "paper", authors: bool = False,
                 results_root=None, config: RunConfig | None = None) -> LeNet300100 | None:
    """The block-pruned LeNet-300-100 (variant ``block``) of ``(dataset, k, round,
    seed)`` from the store, with its masks; ``round=0`` is the dense baseline.  None
    when it is not stored (every round is kept for seed 0; for other seeds only a
    run's last finished round)."""
    cfg = config if config is not None else run_config(profile, dataset, authors)
    store = open_store(STUDY, cfg, SCHEMA, results_root)
    if store is None:
        return None
    def load(run_key):  # (round, model), restored inside the store's guarded read
        return store.load_checkpoint(run_key, use=lambda ck: (ck["round"], restore(ck, new_model(cfg, 0))))

    if round == 0:
        got = load({"dataset": dataset, "seed": int(seed), "variant": "baseline"})
    else:
        run_key = {"dataset": dataset, "k": int(k), "seed": int(seed), "variant": "block", "setting": "default"}
        got = load({**run_key, "round": int(round), "kind": "snapshot"})
        if got is None:
            got = load(run_key)
            got = got if got is not None and got[0] == round else None
    return None if got is None else got[1]


def weight_frame(dataset: str, ks: Sequence[int], round: int, seed: int = 0, profile: str = "paper",
                 authors: bool = False, results_root=None, config: RunConfig | None = None):
    """Tidy table of the surviving weights (k, layer, row, col, value) of the
    block-pruned models of ``round`` (the data behind the weight-matrix figure); ks
    whose model is not stored are left out."""
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


def authors_frame(profile: str, dataset: str, budget: int | None = None) -> pd.DataFrame:
    """Stored rows of the authors' set-up, with their retraining budget (epochs per
    round) as a ``budget`` column; ``budget`` picks one."""
    parts = []
    for e, cfg in authors_configs(profile, dataset).items():
        store = open_store(STUDY, cfg, SCHEMA)
        if store is not None and (budget is None or budget == e):
            parts.append(store.frame().assign(budget=e))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*SCHEMA.columns, "budget"])


def task(kind: str, cfg: RunConfig, profile: str, seed: int, k: int = 0, round: int = 0, setting: str = "default",
         phase: TrainConfig | None = None, *, results_root=None, data_root=None, commit=None, threads: int = 1) -> int:
    """One task of the sweep (see :func:`blockprune_utils.studies.lenet.tasks`);
    returns the number of rows the store holds afterwards."""
    torch.set_num_threads(threads)
    run = R.Run(cfg, profile, results_root, data_root, commit)
    if kind == "baseline":
        R.baseline(run, seed)
    elif kind == "baseline_scan":
        R.baseline_scan(run, setting, phase)
    elif kind in ("block", "random_retrain", "dense_control", "retrain_scan", "epochs_scan", "budget"):
        R.prune_run(run, seed, k, kind, phase, setting)
    elif kind in ("neuron", "narrow_dense"):
        if kind == "neuron":
            neurons.neuron_run(run, seed)
        else:
            neurons.narrow_run(run, seed, round)
    elif kind == "random_scratch":
        R.scratch_run(run, seed, k, round)
    elif kind == "sensitivity":
        R.sensitivity_run(run, seed, k)
    else:
        raise ValueError(f"unknown LeNet task kind {kind!r}")
    folder = Path(run.store.dir) / "rows"
    return sum(1 for _ in folder.glob("*.json"))
