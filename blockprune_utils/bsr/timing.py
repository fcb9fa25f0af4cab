"""Timing of competing implementations of one computation, and thread control.

:func:`time_calls` times several argument-free callables in interleaved rounds
(medians and quartiles per call); :func:`close_enough` checks a result against a
float64 reference before it is timed; :func:`num_threads` runs a block with a given
number of torch and numpy-BLAS threads.  The automatic backend choice
(:mod:`.auto`) and the speed benchmark (:mod:`blockprune_utils.bench`) both use them.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import gc
import glob
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

try:  # optional: without it numpy's BLAS threads are set through OpenBLAS's own call (ctypes)
    import threadpoolctl
except ImportError:
    threadpoolctl = None

# Tolerance of a result, in units of |W| |X| (the scale of the rounding error of a sum of products).
RTOL = {"float32": 1e-4, "bfloat16": 3e-2}

# What a backend raises for an operation it does not support (a missing kernel, a
# dtype or layout it cannot take): such a candidate is recorded as failed, not fatal.
KERNEL_ERRORS = (RuntimeError, ValueError, TypeError)


# --------------------------------------------------------------------------- threads


def all_threads() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _openblas_setter():
    """numpy's bundled OpenBLAS ``(set_num_threads, get_num_threads)`` (ctypes), or None."""
    libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                                   ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                                   ("openblas_set_num_threads", "openblas_get_num_threads")):
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes = [ctypes.c_int]
                getter.restype = ctypes.c_int
                return setter, getter
    return None


def blas_control() -> str:
    """How numpy's BLAS threads are set: ``threadpoolctl``, ``openblas-ctypes`` or ``none``."""
    if threadpoolctl is not None:
        return "threadpoolctl"
    return "openblas-ctypes" if _openblas_setter() is not None else "none"


@contextlib.contextmanager
def num_threads(n: int | None):
    """Run the block with ``n`` threads in torch and in numpy's BLAS (0 or None = all
    cores); yields the number set.

    numpy's BLAS is limited with threadpoolctl when it is installed, else through
    the ``openblas_set_num_threads`` of the OpenBLAS numpy bundles (ctypes); with
    neither, numpy's threads are left as they are (:func:`blas_control` says which).
    scipy's sparse kernels are single-threaded whatever is set."""
    n = all_threads() if n in (0, None) else int(n)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    restore = None
    if threadpoolctl is not None:
        restore = threadpoolctl.threadpool_limits(limits=n, user_api="blas").restore_original_limits
    elif (pair := _openblas_setter()) is not None:
        setter, getter = pair
        before = getter()
        setter(n)
        restore = functools.partial(setter, before)
    try:
        yield n
    finally:
        torch.set_num_threads(old)
        if restore is not None:
            restore()


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Time per call (ns): median, quartiles and minimum of ``repeats`` samples, each
    the mean of ``inner`` back-to-back calls."""

    median_ns: float
    q25_ns: float
    q75_ns: float
    min_ns: float
    repeats: int
    inner: int

    def as_row(self) -> dict:
        return dataclasses.asdict(self)


TIMING_COLUMNS = tuple(f.name for f in dataclasses.fields(Timing))


def timing_values(t: Timing | None) -> dict:
    """The timing columns of a result row (None and 0 repeats for an untimed call)."""
    return t.as_row() if t is not None else {**dict.fromkeys(TIMING_COLUMNS), "repeats": 0, "inner": 0}


def _sync_for(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def time_calls(fns: Mapping[str, Callable[[], object]], *, budget_s: float = 0.01, min_repeats: int = 5,
               max_repeats: int = 100, min_sample_s: float = 20e-6, warm_below_s: float = 1e-3,
               device: str = "cpu", seed: int = 0) -> dict[str, Timing]:
    """Median time per call of each function, all measured in the same rounds.

    Each function is called once to warm up, then timed once to choose ``inner``
    (calls per sample, so that a sample lasts at least ``min_sample_s``) and its
    repeat count (``budget_s`` worth, clamped to [min_repeats, max_repeats]).  The
    samples are then taken in rounds over all functions, in a fresh (seeded) random
    order each round, so that a slow phase of a shared machine hits every function
    alike and no function always follows the same other one.  A function faster
    than ``warm_below_s`` is called once, untimed, just before each of its samples:
    otherwise the previous function's data (a dense weight streams a megabyte
    through the caches) would evict its operands and it would be timed cold, and
    unequally so for different predecessors.  The times are therefore those of
    *warm, repeated* calls (repeated inference with the same weights).  Garbage
    collection is off while timing; ``device="cuda..."`` synchronises around samples."""
    sync = _sync_for(device)
    names = list(fns)
    plan = {}
    rng = random.Random(seed)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for name in names:
            f = fns[name]
            f()
            sync()
            t0 = time.perf_counter_ns()
            f()
            sync()
            once = max(time.perf_counter_ns() - t0, 1)
            inner = max(1, math.ceil(min_sample_s * 1e9 / once))
            reps = int(min(max_repeats, max(min_repeats, budget_s * 1e9 // (once * inner))))
            plan[name] = (inner, reps, once < warm_below_s * 1e9)
        samples = {n: [] for n in names}
        rounds = max(p[1] for p in plan.values()) if plan else 0
        order = list(names)
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                inner, reps, warm = plan[name]
                if len(samples[name]) >= reps:
                    continue
                f = fns[name]
                if warm:
                    f()
                sync()
                t0 = time.perf_counter_ns()
                for _ in range(inner):
                    f()
                sync()
                samples[name].append((time.perf_counter_ns() - t0) / inner)
    finally:
        if gc_was:
            gc.enable()
    out = {}
    for name in names:
        s = np.asarray(samples[name], dtype=np.float64)
        out[name] = Timing(float(np.median(s)), float(np.percentile(s, 25)), float(np.percentile(s, 75)),
                           float(s.min()), len(s), plan[name][0])
    return out


def measurably_faster(t: Timing, ref: Timing, margin: float) -> bool:
    """Whether ``t`` beats ``ref`` beyond noise: its median below ``(1 - margin)``
    times ``ref``'s and its upper quartile below ``ref``'s lower quartile."""
    return t.median_ns < (1 - margin) * ref.median_ns and t.q75_ns < ref.q25_ns


def close_enough(y, ref, bound, rtol: float) -> tuple[bool, float]:
    """Whether ``|y - ref| <= rtol * bound`` everywhere (``bound`` = |W| |X|, the
    natural scale of the rounding error of a sum of products); the largest ratio."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != ref.shape:
        return False, float("inf")
    err = np.abs(y - ref) / (bound + 1e-30)
    worst = float(err.max()) if err.size else 0.0
    return bool(np.isfinite(worst) and worst <= rtol), worst


def as_numpy(y, rows: int) -> np.ndarray:
    """A result (numpy array or torch tensor, any device) as a numpy array of its first ``rows`` rows."""
    if isinstance(y, torch.Tensor):
        y = y.detach().float().cpu().numpy()
    return np.asarray(y)[:rows]
