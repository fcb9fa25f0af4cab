"""What a benchmark run measures and where its rows go: :class:`BenchConfig` and its
named profiles; what a row records of the machine (:func:`machine`,
:func:`row_provenance`); the result stores of the row families (:func:`bench_store`)
and reading / writing groups of rows through them (:func:`stored_groups`).

The formats and model variants are declared in :mod:`.formats`; the timing itself
(:func:`~blockprune_utils.bsr.timing.time_calls`, interleaved medians), the
correctness check and thread control come from :mod:`blockprune_utils.bsr.timing`,
which the automatic backend choice uses too."""
from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy
import torch
from tqdm import tqdm

from ..bsr.timing import KERNEL_ERRORS, RTOL, all_threads, as_numpy, close_enough, time_calls
from ..infra.provenance import provenance
from ..infra.store import ResultStore, Schema, key_name
from ..studies.base import get_profile
from .formats import FORMATS
from .isa import numba_target

BENCH_VERSION = 2  # bump when the meaning of a row changes
LAYERS = ("fc1", "fc2", "fc3")


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures.  ``threads``: 1 and/or 0 (= all cores).
    ``budget_s`` is the timing budget per (format, group); repeats are adapted to it
    within [min_repeats, max_repeats].  ``lenet_profile`` names the LeNet study
    profile whose trained, pruned models are used when its store has them (None: the
    untrained fallback only)."""

    profile: str
    dataset: str = "mnist"
    seed: int = 0
    lenet_profile: str | None = "paper"
    ks: tuple = (1, 2, 3, 4, 5, 6)
    rounds: tuple = tuple(range(1, 17))
    layers: tuple = LAYERS
    batches: tuple = (1, 64, 256)
    threads: tuple = (1, 0)
    formats: tuple = FORMATS
    synthetic_sizes: tuple = (1024, 4096)
    synthetic_ks: tuple = (2, 4, 8)
    synthetic_densities: tuple = (0.25, 0.1, 0.04, 0.01)
    synthetic_batches: tuple = (1, 64)
    synthetic_batch_max_n: int = 1024  # batches > 1 only for matrices up to this size (4096^2 x 64 is slow)
    model_ks: tuple = (1, 2, 3, 4, 5, 6)
    model_rounds: tuple = (1, 6, 11, 16)
    model_batches: tuple = (1, 256)
    model_threads: tuple = (1, 0)
    cache_ks: tuple = (2, 4, 6)
    # the sparsest round only: each case is a valgrind run (two for a numba kernel, each
    # loading numba under valgrind), 1-2 minutes apiece on the 2-core machine
    cache_rounds: tuple = (16,)
    cache_products: int = 20
    cache_batches: tuple = (1, 256)  # numba kernels only: scipy's driver runs matrix-vector products
    cache_dense: bool = True
    budget_s: float = 0.006
    # whole-model forwards: a dense forward at batch 256 takes ~2 ms, and 6 ms would leave
    # it the minimum number of samples (5)
    model_budget_s: float = 0.05
    min_repeats: int = 5
    max_repeats: int = 60
    min_sample_s: float = 20e-6
    version: int = BENCH_VERSION

    @property
    def all_rounds(self) -> tuple:
        """Every round any part of the run needs (one pruning pass per k serves all)."""
        return tuple(sorted(set(self.rounds) | set(self.model_rounds) | set(self.cache_rounds)))


PROFILES: dict[str, BenchConfig] = {
    "paper": BenchConfig(profile="paper"),
    "quick": BenchConfig(
        profile="quick", lenet_profile="quick", ks=(2, 4), rounds=(1, 8, 16), layers=("fc1", "fc2"),
        batches=(1, 64), threads=(1,), synthetic_sizes=(1024,), synthetic_ks=(4,),
        synthetic_densities=(0.1, 0.01), synthetic_batches=(1,), model_ks=(2, 4), model_rounds=(16,),
        model_batches=(1, 256), model_threads=(1,), cache_ks=(4,), cache_rounds=(16,), cache_products=10, cache_dense=False,
        cache_batches=(),  # numba under valgrind takes minutes per case; tests/test_bench_cachegrind.py runs one
        budget_s=0.004, model_budget_s=0.03, min_repeats=3, max_repeats=40,
    ),
}


def get_config(profile: str | BenchConfig, **overrides) -> BenchConfig:
    """The named profile (or ``profile`` itself), with ``overrides`` replacing fields."""
    cfg = get_profile(PROFILES, profile, "bench profile")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


# What a stored row's meaning depends on, per store.  The sweep axes (k, rounds,
# layers, batches, threads, formats, sizes) are not here: they are in the row keys,
# so a profile that adds a k or a batch size reuses every row it shares with another.
TIMING_FIELDS = ("dataset", "seed", "lenet_profile", "budget_s", "min_repeats", "max_repeats", "min_sample_s", "version")
MODEL_TIMING_FIELDS = (*TIMING_FIELDS, "model_budget_s")
WEIGHT_FIELDS = ("dataset", "seed", "lenet_profile", "version")


# Columns of every timing row besides the provenance ones: the CPU model, core count and
# the instruction set the numba kernels were compiled for (avx512, avx2, ...: .isa).
MACHINE_COLUMNS = ("cpu_model", "cores", "isa")


def machine() -> dict:
    """What timings depend on besides the code: the CPU model, its cores, the instruction
    set numba compiles the kernels for (``isa``: avx512, avx2, ...) and the libraries."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": all_threads(), "isa": numba_target().isa, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}


def row_provenance(device: str = "cpu") -> dict:
    """:func:`~blockprune_utils.infra.provenance.provenance` plus the CPU model, core count and ISA."""
    m = machine()
    return {**provenance(device), "cpu_model": m["cpu"], "cores": m["cores"], "isa": m["isa"]}


def threads_label(n: int | None) -> str:
    """The thread setting as a row label: ``"all"`` for 0/None (all cores), else the number."""
    return "all" if n in (0, None) else str(n)


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def built(builders: dict) -> tuple[dict, dict]:
    """Call every argument-free builder: ({name: what it built}, {name: why it could not
    be built}); a format a library cannot build here is recorded, not fatal."""
    out, errors = {}, {}
    for name, build in builders.items():
        try:
            out[name] = build()
        except KERNEL_ERRORS as e:
            errors[name] = error_text(e)
    return out, errors


def checked_timings(fns: dict, n_out: int, ref, bound, cfg: BenchConfig, *, budget_s: float, differs: str,
                    errors: dict | None = None, rtol=None, device: str = "cpu", raised_is_checked: bool = True):
    """Check every argument-free call of ``fns`` against the float64 result ``ref`` (``bound``:
    its rounding scale, :func:`~blockprune_utils.bsr.timing.close_enough`; ``n_out`` output
    rows), then time those that pass, interleaved (:func:`~blockprune_utils.bsr.timing.time_calls`).
    Returns (timings, checks {name: (ok, max error)}, errors {name: why}): a call that raises
    (recorded as checked with an infinite error when ``raised_is_checked``) or whose result
    differs (``differs.format(max error)``) is not timed.  ``rtol(name)``: the tolerance of
    a call (default float32's); ``errors``: those of calls that could not be built."""
    fns, checks, errors = dict(fns), {}, dict(errors or {})
    for f, fn in list(fns.items()):
        try:
            checks[f] = close_enough(as_numpy(fn(), n_out), ref, bound, rtol(f) if rtol else RTOL["float32"])
        except KERNEL_ERRORS as e:
            errors[f] = error_text(e)
            if not raised_is_checked:
                del fns[f]
                continue
            checks[f] = (False, float("inf"))
        if not checks[f][0]:
            errors.setdefault(f, differs.format(checks[f][1]))
            del fns[f]
    timings = time_calls(fns, budget_s=budget_s, min_repeats=cfg.min_repeats, max_repeats=cfg.max_repeats,
                         min_sample_s=cfg.min_sample_s, device=device)
    return timings, checks, errors


def bench_store(study: str, cfg: BenchConfig, schema: Schema, root=None, *, fields=TIMING_FIELDS,
                per_machine: bool = True, **extra) -> ResultStore:
    """The store of one row family: its config hash covers ``fields`` of ``cfg``,
    ``extra`` and (``per_machine``) the machine (CPU model, cores, library versions),
    so timings from another machine are never reused."""
    config = {"bench": {f: getattr(cfg, f) for f in fields}, **({"machine": machine()} if per_machine else {}), **extra}
    return ResultStore(study, config, schema, root=root)


def stored_groups(store, schema: Schema, groups: Sequence, keys_of: Callable[[object], list[dict]],
                  measure: Callable[[object], list[dict]], *, rerun: bool = False, progress: bool = False,
                  desc: str = "") -> list[dict]:
    """The rows of every group: read from ``store`` when it has all of a group's keys
    (and not ``rerun``), else measured by ``measure(group)`` (full rows of ``schema``,
    one per key of ``keys_of(group)``) and stored.  Without a store (``store=None``)
    nothing is read or written."""
    rows = []
    for g in tqdm(groups, desc=desc, disable=not progress, leave=False):
        keys = keys_of(g)
        if store is not None and not rerun:
            found = [store.get(key) for key in keys]
            if all(r is not None for r in found):
                rows += found
                continue
        measured = measure(g)
        if sorted(map(key_name, keys)) != sorted(key_name({c: r[c] for c in schema.key}) for r in measured):
            raise RuntimeError(f"{desc}: the measured rows do not match the keys of their group")
        if store is not None:
            measured = [store.put({c: r[c] for c in schema.key}, {c: r[c] for c in schema.values}, r) for r in measured]
        rows += measured
    return rows
