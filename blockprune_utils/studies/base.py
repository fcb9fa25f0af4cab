"""The skeleton every study is declared on.

A study is

* a **profile table**: named, frozen configurations (``quick`` for tests, ``paper``
  for the full study, ...), looked up with :func:`get_profile`;
* a frozen **run configuration** (a dataclass) whose hash names its
  :class:`~blockprune_utils.infra.store.ResultStore` folder, and a declared
  :class:`~blockprune_utils.infra.store.Schema` of its rows;
* **task functions**: module-level functions of plain arguments, each writing its
  rows to the store and skipping what is there, declared as
  :class:`~blockprune_utils.infra.tasks.Task` (which names the tasks it needs first,
  e.g. a seed's baseline before its pruning runs) and run by
  :func:`~blockprune_utils.infra.tasks.run_tasks` in-process or on a Dask cluster.

:func:`resumable_rounds` is the prune -> retrain loop of a study, on top of
:func:`~blockprune_utils.schedule.prune_retrain`: one row per round, and after every
round one checkpoint (model, pruner, data-order generator, row) from which a killed
run resumes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..infra.store import ResultStore
from ..masks import compact_state_dict, load_masked_state_dict
from ..schedule import BlockPruner, prune_retrain


class UnknownName(KeyError, ValueError):
    """A name that is not in a table (a KeyError and a ValueError), with a readable message."""

    def __str__(self) -> str:
        return str(self.args[0])


class ProfileTable(dict):
    """A study's profiles by name; looking up an unknown name raises
    :class:`UnknownName` naming the allowed ones (``table["nope"]`` as a notebook
    parameter gives a clear error)."""

    def __init__(self, entries: Mapping[str, Any], kind: str = "profile"):
        super().__init__(entries)
        self.kind = kind

    def __missing__(self, name):
        raise UnknownName(f"unknown {self.kind} {name!r}; choose one of {sorted(self)}")


def check_axis(name: str, values, minimum: int | None = None, maximum: int | None = None, why: str = "") -> tuple:
    """``values`` of a sweep axis of whole numbers as a tuple, checked: not empty, no
    repeats, each in ``minimum..maximum`` (``why`` says what the limit is)."""
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} is empty; give at least one value")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)
           or (minimum is not None and v < minimum) or (maximum is not None and v > maximum)]
    if bad:
        allowed = (f" in {minimum}..{maximum}" if minimum is not None and maximum is not None
                   else f" >= {minimum}" if minimum is not None else f" <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name} {bad} not allowed: each must be a whole number{allowed}{why}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} {list(values)} repeats {repeated}: give each value once")
    return values


def get_profile(table: Mapping[str, Any], profile, kind: str = "profile"):
    """``table[profile]`` (or ``profile`` itself when it is already a profile object)."""
    if not isinstance(profile, str):
        return profile
    if profile not in table:
        raise ValueError(f"unknown {kind} {profile!r}; choose one of {sorted(table)}")
    return table[profile]


def checkpoint(model: nn.Module, round: int, row: Mapping | None = None, pruner: BlockPruner | None = None,
               generator: torch.Generator | None = None) -> dict:
    """The one checkpoint format of the studies."""
    return {"round": int(round), "model": compact_state_dict(model), "row": dict(row) if row is not None else None,
            "pruner": pruner.state_dict() if pruner is not None else None,
            "generator": generator.get_state() if generator is not None else None}


def restore(ckpt: Mapping, model: nn.Module, pruner: BlockPruner | None = None,
            generator: torch.Generator | None = None) -> nn.Module:
    """Load a :func:`checkpoint` into ``model`` (and the pruner and generator)."""
    load_masked_state_dict(model, ckpt["model"])
    if pruner is not None and ckpt.get("pruner") is not None:
        pruner.load_state_dict(ckpt["pruner"])
    if generator is not None and ckpt.get("generator") is not None:
        generator.set_state(ckpt["generator"])
    return model


def _copy_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is None:
        return None
    twin = torch.Generator(device=generator.device)
    twin.set_state(generator.get_state())
    return twin


def load_restored(store: ResultStore, run_key: Mapping, model: nn.Module, pruner: BlockPruner | None = None,
                  generator: torch.Generator | None = None,
                  check: Callable[[Mapping, BlockPruner | None], None] | None = None) -> Mapping | None:
    """The run's checkpoint loaded into ``model`` (and the pruner and generator), or
    None when there is none or it cannot be used.  The checkpoint is first restored
    into copies, then given to ``check(checkpoint, restored pruner copy)``, which may
    raise, all inside the store's guarded read: one of the wrong content (no
    ``model``, another network's shapes, a pruner of another k) is moved aside with a
    warning and leaves ``model``, ``pruner`` and ``generator`` as they were."""
    def trial(ck):
        if not isinstance(ck, Mapping) or "model" not in ck or "round" not in ck:
            have = sorted(ck) if isinstance(ck, Mapping) else type(ck).__name__
            raise ValueError(f"not a study checkpoint (has {have}; needs 'round' and 'model')")
        twin = copy.deepcopy(pruner)
        restore(ck, copy.deepcopy(model), twin, _copy_generator(generator))
        if check is not None:
            check(ck, twin)
        return ck

    ckpt = store.load_checkpoint(run_key, use=trial)
    if ckpt is not None:
        restore(ckpt, model, pruner, generator)
    return ckpt


@dataclass
class RoundsRun:
    """A resumable prune -> retrain run: ``rounds`` rounds, the row of round r stored
    under ``key_of(r)``, the latest checkpoint under ``run_key`` (and, with
    ``snapshots``, one per round under ``run_key`` + ``round``)."""

    store: ResultStore
    run_key: dict
    key_of: Callable[[int], dict]
    prov: Mapping
    rounds: int
    snapshots: bool = False
    keys: list = field(init=False)

    def __post_init__(self):
        self.keys = [self.key_of(r) for r in range(1, self.rounds + 1)]

    def done(self) -> bool:
        return all(self.store.has(key) for key in self.keys)

    def snapshot_key(self, round: int) -> dict:
        return {**self.run_key, "round": int(round), "kind": "snapshot"}


def resumable_rounds(run: RoundsRun, model: nn.Module, pruner: BlockPruner,
                     retrain: Callable[[nn.Module, int], Any],
                     row_of: Callable[[int, nn.Module, Any], Mapping],
                     generator: torch.Generator | None = None,
                     proceed: Callable[[int], bool] | None = None) -> int:
    """Run the rounds of ``run`` that are not finished; returns the rounds done now.

    ``retrain(model, r)`` runs after round r's pruning step (it may evaluate the
    pruned model first) and returns what ``row_of(r, model, result)`` needs to make
    the row's values.  The model must start as the unpruned one; a checkpoint of the
    run, when there is one, replaces it and the pruner's and generator's state.
    ``proceed(r)``, asked before round r, can stop the run early; it resumes later."""
    if run.done():
        return 0
    def check(ck, restored: BlockPruner):
        if not isinstance(ck["round"], int) or not 1 <= ck["round"] <= run.rounds:
            raise ValueError(f"round {ck['round']!r} is outside this run's rounds 1..{run.rounds}")
        if restored.round != ck["round"]:
            raise ValueError(f"its pruner is at round {restored.round}, the checkpoint says round {ck['round']}")
        run.store.schema.make(run.keys[ck["round"] - 1], ck["row"], run.prov, run.store.hash)

    ckpt = load_restored(run.store, run.run_key, model, pruner, generator, check)
    if ckpt is not None:
        if not run.store.has(run.keys[ckpt["round"] - 1]):  # killed between checkpoint and row
            run.store.put(run.keys[ckpt["round"] - 1], ckpt["row"], run.prov)
    start = pruner.round

    def on_round(r: int, m: nn.Module, result) -> None:
        values = row_of(r, m, result)
        ck = checkpoint(m, r, values, pruner, generator)
        if run.snapshots:
            run.store.save_checkpoint(run.snapshot_key(r), ck)
        run.store.save_checkpoint(run.run_key, ck)
        run.store.put(run.keys[r - 1], values, run.prov)

    prune_retrain(model, pruner, run.rounds, retrain, on_round, proceed)
    return pruner.round - start
