"""The measurement harness of the benchmark: what the machine is, the provenance of
a row, thread labels, and reading / writing groups of rows through a result store.

The timing itself (:func:`time_calls`, interleaved medians), the correctness check
(:func:`close_enough`) and thread control (:func:`num_threads`) come from
:mod:`blockprune_utils.bsr.timing`, which the automatic backend choice uses too.
"""
from __future__ import annotations

import platform
from typing import Callable, Sequence

import numpy as np
import scipy
import torch
from tqdm import tqdm

from ..bsr.timing import (
    KERNEL_ERRORS,
    RTOL,
    TIMING_COLUMNS,
    Timing,
    all_threads,
    as_numpy,
    blas_control,
    close_enough,
    num_threads,
    time_calls,
    timing_values,
)
from ..infra.provenance import provenance
from ..infra.store import Schema, key_name
from .isa import numba_target

__all__ = ["KERNEL_ERRORS", "RTOL", "TIMING_COLUMNS", "Timing", "all_threads", "as_numpy", "blas_control",
           "close_enough", "num_threads", "time_calls", "timing_values", "machine", "row_provenance",
           "MACHINE_COLUMNS", "threads_label", "error_text", "stored_groups"]

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
