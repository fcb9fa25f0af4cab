"""BSR speed study (issue #4): when does block sparsity pay, and by how much.

Four measurements, each a list of tidy rows (one dict per row, with provenance):

* :func:`matrix_rows` - one product ``Y = W X`` of a pruned weight in every format
  (numpy dense, torch dense, scipy CSR, scipy BSR, torch sparse CSR, torch sparse
  BSR), for the pruned LeNet-300-100 layers (every k and round) and for larger
  synthetic block-sparse matrices, at several batch sizes and thread counts.  Every
  result is checked against a float64 dense product before it is timed; the
  speed-up over dense is the ratio of medians measured in the same run,
  interleaved (round-robin) so that drifts of a shared machine hit all formats.
* :func:`model_rows` - the whole pruned LeNet forward: the masked (parametrized)
  model, :func:`~blockprune_utils.bsr.to_bsr_model` with the dense / torch / scipy
  backends and with :func:`auto_backends`, and the lean numpy path
  :class:`LeanMLP` (dense, CSR, BSR, auto).
* :func:`cache_rows` - simulated cache misses of the CSR/BSR/dense kernels
  (:mod:`blockprune_utils.cachesim`, valgrind's cachegrind).
* :func:`storage_rows` - bytes of dense, CSR and BSR storage
  (:func:`~blockprune_utils.bsr.storage_bytes`).

Rounds follow :mod:`blockprune_utils.lenet_study`: ``round`` r >= 1 is the model
after r pruning steps (the authors' checkpoint ``pruning_{r-1}.pt``), so rounds
1..16 run from 80% to 2.8% density.  The weights are the trained, pruned models of
the LeNet study when its cache has them (``weights="trained-cache"``) and otherwise
a seeded untrained LeNet pruned by the same :class:`~blockprune_utils.schedule.BlockPruner`
schedule (``weights="untrained"``): the block pattern differs, but the per-layer
block counts - what the timings depend on - are the same.

Entry point: ``python -m blockprune_utils.bench --quick`` (a few minutes at most;
prints the speed-up tables) or ``python -m blockprune_utils.bench`` (the paper
profile; every result row, also to ``--out`` CSV).  Results are cached in
``results/bench*/<hash>/`` (:class:`~blockprune_utils.cache.ResultStore`), one file
per row keyed by its sweep axes (matrix, format, batch, threads); the hash covers
the timing settings *and the machine* (CPU model, core count, library versions), so
timings from another machine are never reused.  ``--rerun`` measures again.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from .blocks import block_grid, expand_block_mask
from .bsr import storage_bytes, to_bsr_model, to_scipy_bsr, to_scipy_csr, to_torch_bsr
from .cache import ResultStore, provenance
from .masks import dense_state_dict, load_masked_state_dict, remove_masks
from .models import LENET_RATES, LeNet300100
from .schedule import BlockPruner, layer_densities, total_density

BENCH_VERSION = 1  # bump when the meaning of a row changes
LAYERS = ("fc1", "fc2", "fc3")
FORMATS = ("numpy_dense", "torch_dense", "scipy_csr", "scipy_bsr", "torch_csr", "torch_bsr")
DENSE_FORMATS = ("numpy_dense", "torch_dense")
SPARSE_FORMATS = tuple(f for f in FORMATS if f not in DENSE_FORMATS)
FORMAT_LIB = {f: f.split("_")[0] for f in FORMATS}
GPU_FORMATS = ("cuda_dense_fp32", "cuda_bsr_fp32", "cuda_dense_bf16", "cuda_bsr_bf16")
MODEL_VARIANTS = ("masked", "torch_plain", "torch_dense", "torch_bsr", "scipy_bsr", "module_auto",
                  "lean_dense", "lean_csr", "lean_bsr", "lean_auto")
DENSE_VARIANTS = ("masked", "torch_plain", "torch_dense", "lean_dense")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures.  ``threads``: 1 and/or 0 (= all cores).
    ``budget_s`` is the timing budget per (format, group); repeats are adapted to it
    within [min_repeats, max_repeats]."""

    profile: str
    dataset: str = "mnist"
    seed: int = 0
    lenet_profile: str = "paper"
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
    cache_rounds: tuple = (6, 11, 16)
    cache_products: int = 20
    cache_dense: bool = True
    budget_s: float = 0.006
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
        budget_s=0.004, min_repeats=3, max_repeats=40,
    ),
}


def get_config(profile: str | BenchConfig, **overrides) -> BenchConfig:
    if isinstance(profile, BenchConfig):
        cfg = profile
    elif profile in PROFILES:
        cfg = PROFILES[profile]
    else:
        raise ValueError(f"unknown bench profile {profile!r}; choose one of {sorted(PROFILES)}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def all_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine() -> dict:
    """What timings depend on besides the code: the CPU and the libraries."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import scipy

    return {"cpu": cpu, "cores": all_threads(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}


def row_provenance(device: str = "cpu") -> dict:
    """:func:`~blockprune_utils.cache.provenance` plus the CPU model and core count."""
    m = machine()
    return {**provenance(device), "cpu_model": m["cpu"], "cores": m["cores"]}


# What a cached row's meaning depends on, per store.  The sweep axes (k, rounds,
# layers, batches, threads, formats, sizes) are not here: they are in the row keys,
# so a profile that adds a k or a batch size reuses every row it shares with another.
_STORE_FIELDS = {
    "bench": ("dataset", "seed", "lenet_profile", "budget_s", "min_repeats", "max_repeats", "min_sample_s", "version"),
    "bench_cache": ("dataset", "seed", "lenet_profile", "version"),
}


def _store(study: str, cfg: BenchConfig, root=None, **extra) -> ResultStore:
    fields = _STORE_FIELDS.get(study, _STORE_FIELDS["bench"])
    return ResultStore(study, {"bench": {f: getattr(cfg, f) for f in fields}, "machine": machine(), **extra}, root=root)


# --------------------------------------------------------------------------- threads


def _openblas_setter():
    """numpy's bundled OpenBLAS ``set_num_threads`` (ctypes), or None."""
    import ctypes
    import glob

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
    try:
        import threadpoolctl  # noqa: F401

        return "threadpoolctl"
    except ImportError:
        return "openblas-ctypes" if _openblas_setter() is not None else "none"


@contextlib.contextmanager
def num_threads(n: int):
    """Run the block with ``n`` threads in torch and in numpy's BLAS (0 = all cores).

    numpy's BLAS is limited with threadpoolctl when it is installed, else through
    the ``openblas_set_num_threads`` of the OpenBLAS numpy bundles (ctypes); with
    neither, numpy's threads are left as they are (``blas_control()`` says which).
    scipy's sparse kernels are single-threaded whatever is set."""
    n = all_threads() if n in (0, None) else int(n)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    restore = None
    try:
        import threadpoolctl

        ctl = threadpoolctl.threadpool_limits(limits=n, user_api="blas")
        restore = ctl.restore_original_limits
    except ImportError:
        pair = _openblas_setter()
        if pair is not None:
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


def _threads_label(n: int) -> str:
    return "all" if n in (0, None) else str(n)


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    median_ns: float
    q25_ns: float
    q75_ns: float
    min_ns: float
    repeats: int
    inner: int

    def as_row(self) -> dict:
        return dataclasses.asdict(self)


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
    collection is off while timing."""
    import random

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


def close_enough(y, ref, bound, rtol: float) -> tuple[bool, float]:
    """Whether ``|y - ref| <= rtol * bound`` everywhere (``bound`` = |W| |X|, the
    natural scale of the rounding error of a sum of products); the largest ratio."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != ref.shape:
        return False, float("inf")
    err = np.abs(y - ref) / (bound + 1e-30)
    worst = float(err.max()) if err.size else 0.0
    return bool(np.isfinite(worst) and worst <= rtol), worst


RTOL = {"float32": 1e-4, "bfloat16": 3e-2}


# --------------------------------------------------------------------------- matrices


@dataclass
class Matrix:
    """One weight matrix to benchmark (float32, pruned pattern as zeros)."""

    name: str
    family: str  # "lenet" or "synthetic"
    layer: str
    k: int
    weight: torch.Tensor = field(repr=False)
    round: int | None = None
    weights: str = "random"
    _meta: dict | None = field(default=None, repr=False, compare=False)

    def meta(self) -> dict:
        if self._meta is None:
            self._meta = self._compute_meta()
        return dict(self._meta)

    def _compute_meta(self) -> dict:
        w = self.weight
        rows, cols = w.shape
        nz = int(torch.count_nonzero(w))
        st = storage_bytes(w, self.k)
        R, C = block_grid(w.shape, self.k)
        return {"matrix": self.name, "family": self.family, "layer": self.layer, "rows": rows, "cols": cols, "k": self.k,
                "round": self.round, "weights": self.weights, "nnz": nz, "density": nz / w.numel(),
                "nnz_blocks": st.nnz_blocks, "block_density": st.nnz_blocks / (R * C)}


def _trained_loader():
    """``lenet_study.pruned_lenet`` when that module is there, else None."""
    try:
        from . import lenet_study

        return lenet_study.pruned_lenet
    except (ImportError, AttributeError):
        return None


def untrained_pruned_lenets(k: int, rounds, seed: int = 0) -> dict[int, dict]:
    """State dicts (with masks) of a seeded, untrained LeNet-300-100 after each of
    ``rounds`` pruning steps of ``BlockPruner(k, LENET_RATES)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet300100()
    pruner = BlockPruner(k, LENET_RATES)
    out = {}
    for r in range(1, max(rounds) + 1):
        pruner.step(model)
        if r in rounds:
            out[r] = {n: v.clone() for n, v in model.state_dict().items()}
    return out


@functools.lru_cache(maxsize=None)
def _lenet_states(dataset: str, k: int, rounds: tuple, seed: int, lenet_profile: str) -> dict[int, tuple[dict, str]]:
    trained = _trained_loader()
    out, missing = {}, []
    for r in rounds:
        model = None
        if trained is not None:
            try:
                model = trained(dataset, k, r, seed=seed, profile=lenet_profile)
            except Exception:  # a cache that cannot be read counts as absent; the fallback is sound
                model = None
        if model is not None:
            out[r] = ({n: v.detach().clone() for n, v in model.state_dict().items()}, "trained-cache")
        else:
            missing.append(r)
    if missing:
        for r, sd in untrained_pruned_lenets(k, tuple(missing), seed).items():
            out[r] = (sd, "untrained")
    return out


def pruned_lenet_model(k: int, round: int, *, dataset: str = "mnist", seed: int = 0, lenet_profile: str = "paper",
                       rounds: tuple | None = None) -> tuple[LeNet300100, str]:
    """The masked LeNet of (k, round) and where its weights came from
    (``"trained-cache"`` or ``"untrained"``).  ``rounds``: all rounds the caller
    will ask for (the untrained fallback prunes once for all of them)."""
    states = _lenet_states(dataset, int(k), tuple(rounds or (round,)), int(seed), lenet_profile)
    sd, source = states[round]
    model = LeNet300100()
    load_masked_state_dict(model, sd)
    return model.eval(), source


def _cfg_model(cfg: BenchConfig, k: int, round: int) -> tuple[LeNet300100, str]:
    return pruned_lenet_model(k, round, dataset=cfg.dataset, seed=cfg.seed, lenet_profile=cfg.lenet_profile,
                              rounds=cfg.all_rounds)


def _tag(source: str) -> str:
    return "trained" if source == "trained-cache" else "untrained"


def describe_weights(sources, dataset: str = "mnist") -> str:
    """Honest words for where the LeNet weights of a set of rows came from."""
    sources = set(s for s in sources if s in ("trained-cache", "untrained"))
    trained = f"LeNet-300-100 trained on {dataset} and block-pruned by the LeNet study (its cache)"
    untrained = ("untrained LeNet-300-100 (seeded init, no data) block-pruned by the same schedule "
                 "(same per-layer block counts)")
    if sources == {"trained-cache"}:
        return trained
    if sources == {"untrained"}:
        return untrained
    if sources:
        return f"mixed: {trained} where cached, else {untrained}"
    return "synthetic random block-sparse matrices"


def lenet_matrices(cfg: BenchConfig) -> list[Matrix]:
    out = []
    for k in cfg.ks:
        for r in cfg.rounds:
            model, source = _cfg_model(cfg, k, r)
            dense = dense_state_dict(model)
            tag = _tag(source)
            for layer in cfg.layers:
                w = dense[f"{layer}.weight"].detach().float().contiguous()
                out.append(Matrix(f"lenet-{layer}-k{k}-r{r}-{tag}", "lenet", layer, int(k), w, int(r), source))
    return out


def synthetic_matrix(n: int, k: int, block_density: float, seed: int = 0) -> torch.Tensor:
    """An n x n float32 matrix with round(block_density * #blocks) random k x k blocks
    of standard normal values (at least one), all others zero."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + n * 101 + k)
    R, C = block_grid((n, n), k)
    keep = max(1, round(block_density * R * C))
    mask = torch.zeros(R * C, dtype=torch.bool)
    mask[torch.randperm(R * C, generator=g)[:keep]] = True
    return torch.randn(n, n, generator=g) * expand_block_mask(mask.reshape(R, C), (n, n), k)


def synthetic_matrices(cfg: BenchConfig) -> list[Matrix]:
    return [Matrix(f"syn{n}-k{k}-bd{d}-s{cfg.seed}", "synthetic", f"{n}x{n}", int(k), synthetic_matrix(n, k, d, cfg.seed))
            for n in cfg.synthetic_sizes for k in cfg.synthetic_ks for d in cfg.synthetic_densities]


# --------------------------------------------------------------------------- one product, every format


def build_operands(w: torch.Tensor, k: int, formats=FORMATS) -> tuple[dict, dict]:
    """The matrix in each format (built once per matrix, shared by every batch and
    thread count), and the errors of formats that could not be built."""
    builders = {
        "numpy_dense": lambda: w.numpy(),
        "torch_dense": lambda: w,
        "scipy_csr": lambda: to_scipy_csr(w),
        "scipy_bsr": lambda: to_scipy_bsr(w, k),
        "torch_csr": lambda: w.to_sparse_csr(),
        "torch_bsr": lambda: to_torch_bsr(w, k),
    }
    ops, errors = {}, {}
    for f in formats:
        try:
            ops[f] = builders[f]()
        except Exception as e:  # a format torch/scipy cannot build here is recorded, not fatal
            errors[f] = f"{type(e).__name__}: {e}"
    return ops, errors


def _product_fns(ops: dict, shape, k: int, x: np.ndarray) -> dict:
    """Callables computing ``W X`` in each built format.  ``x``: (cols,) or (cols, b);
    the BSR formats get it zero-padded to a multiple of k (outside the timing; their
    padded output rows are cropped only when checked)."""
    cols = shape[1]
    Cp = block_grid(shape, k)[1] * k
    xp = np.zeros((Cp,) + x.shape[1:], dtype=np.float32)
    xp[:cols] = x
    xt, xpt = torch.from_numpy(x), torch.from_numpy(xp)
    inputs = {"numpy_dense": x, "torch_dense": xt, "scipy_csr": x, "scipy_bsr": xp, "torch_csr": xt, "torch_bsr": xpt}
    return {f: functools.partial(_matmul, A, inputs[f]) for f, A in ops.items()}


def _matmul(A, X):
    return A @ X


def _as_numpy(y, rows: int) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().float().cpu().numpy()
    return np.asarray(y)[:rows]


def measure_matrix(m: Matrix, batch: int, threads: int, cfg: BenchConfig, formats=None, prov=None,
                   ops=None) -> list[dict]:
    """Rows for one (matrix, batch, threads): every format checked, then timed.
    ``ops``: :func:`build_operands` of the matrix, when the caller has them."""
    formats = tuple(formats or cfg.formats)
    w = m.weight
    if ops is None:
        ops = build_operands(w, m.k, formats)
    ops, errors = {f: A for f, A in ops[0].items() if f in formats}, dict(ops[1])
    rows, cols = w.shape
    rng = np.random.default_rng(cfg.seed + 7 * batch)
    x = rng.standard_normal((cols,) if batch == 1 else (cols, batch)).astype(np.float32)
    w64 = w.double().numpy()
    ref = w64 @ x.astype(np.float64)
    bound = np.abs(w64) @ np.abs(x.astype(np.float64))
    base = {**m.meta(), "batch": batch, "threads_label": _threads_label(threads), "blas_control": blas_control(),
            "dtype": "float32"}
    out = []
    with num_threads(threads) as n, torch.inference_mode():
        prov = {**(prov or row_provenance("cpu")), "threads": n}
        fns = _product_fns(ops, w.shape, m.k, x)
        checks = {}
        for f, fn in list(fns.items()):
            try:
                ok, err = close_enough(_as_numpy(fn(), rows), ref, bound, RTOL["float32"])
            except Exception as e:
                errors[f] = f"{type(e).__name__}: {e}"
                del fns[f]
                continue
            checks[f] = (ok, err)
            if not ok:
                errors[f] = f"result differs from the dense product (max error {err:.3g} of |W||X|)"
                del fns[f]
        timings = time_calls(fns, budget_s=cfg.budget_s, min_repeats=cfg.min_repeats, max_repeats=cfg.max_repeats,
                             min_sample_s=cfg.min_sample_s)
    dense_ok = {f: timings[f].median_ns for f in DENSE_FORMATS if f in timings}
    best_dense = min(dense_ok, key=dense_ok.get) if dense_ok else None
    for f in formats:
        t = timings.get(f)
        same = "torch_dense" if FORMAT_LIB[f] == "torch" else "numpy_dense"
        row = {**prov, **base, "format": f, "lib": FORMAT_LIB[f], "layout": f.split("_")[1], "device": prov["device"],
               "ok": f in timings, "error": errors.get(f), "max_rel_err": checks.get(f, (None, None))[1],
               **(t.as_row() if t else {"median_ns": None, "q25_ns": None, "q75_ns": None, "min_ns": None,
                                        "repeats": 0, "inner": 0}),
               "dense_format": best_dense, "dense_ns": dense_ok.get(best_dense),
               "same_lib_dense_ns": dense_ok.get(same)}
        row["speedup"] = row["dense_ns"] / t.median_ns if t and row["dense_ns"] else None
        row["speedup_same_lib"] = row["same_lib_dense_ns"] / t.median_ns if t and row["same_lib_dense_ns"] else None
        out.append(row)
    return out


def _row_key(matrix: str, fmt: str, batch: int, threads: int, device: str = "cpu") -> dict:
    return {"matrix": matrix, "format": fmt, "batch": int(batch), "threads": _threads_label(threads), "device": device}


def _cached_groups(store, groups, keys_of, measure, rerun: bool, progress: bool, desc: str) -> list[dict]:
    from tqdm import tqdm

    rows = []
    for g in tqdm(groups, desc=desc, disable=not progress, leave=False):
        keys = keys_of(g)
        if store is not None and not rerun and all(store.has(key) for key in keys):
            rows += [json.loads(store.row_path(key).read_text()) for key in keys]
            continue
        new = measure(g)
        for key, row in zip(keys, new):
            if store is not None:
                store.write_row(key, row)
            rows.append({**row, **key, **({"config_hash": store.hash} if store is not None else {})})
    return rows


def matrix_rows(cfg: BenchConfig | str = "quick", *, families=("lenet", "synthetic"), rerun: bool = False,
                progress: bool = False, store_root=None, cache: bool = True) -> list[dict]:
    """Every (matrix, batch, threads, format) row of the profile (cached)."""
    cfg = get_config(cfg)
    store = _store("bench", cfg, store_root) if cache else None
    mats = (lenet_matrices(cfg) if "lenet" in families else []) + (synthetic_matrices(cfg) if "synthetic" in families else [])
    prov = row_provenance("cpu")

    def combos(m):
        if m.family == "lenet":
            batches = cfg.batches
        else:
            batches = [b for b in cfg.synthetic_batches if b == 1 or m.weight.shape[0] <= cfg.synthetic_batch_max_n]
        return [(b, t) for b in batches for t in cfg.threads]

    def measure(m):
        ops = build_operands(m.weight, m.k, cfg.formats)
        return [row for b, t in combos(m) for row in measure_matrix(m, b, t, cfg, prov=prov, ops=ops)]

    return _cached_groups(
        store, mats,
        keys_of=lambda m: [_row_key(m.name, f, b, t) for b, t in combos(m) for f in cfg.formats],
        measure=measure, rerun=rerun, progress=progress, desc="products")


# --------------------------------------------------------------------------- the lean numpy forward


def _sparsetools():
    """scipy's compiled sparse kernels (private module), or None."""
    try:
        from scipy.sparse import _sparsetools

        return _sparsetools if hasattr(_sparsetools, "bsr_matvec") else None
    except ImportError:
        return None


class _LeanLayer:
    """``y = W x + b`` into preallocated float32 buffers in (features, batch) layout."""

    def __init__(self, fmt: str, weight: torch.Tensor, bias: torch.Tensor, k: int):
        self.fmt, self.k = fmt, int(k)
        w = weight.detach().float().contiguous()
        self.out_features, self.in_features = w.shape
        bias = np.zeros(self.out_features, np.float32) if bias is None else bias.detach().float().numpy()
        st = _sparsetools()
        self.kernel = "sparsetools" if st is not None and fmt != "dense" else ("blas" if fmt == "dense" else "scipy-matmul")
        if fmt == "dense":
            self.W = w.numpy()
            self.n_out, self.n_in = self.out_features, self.in_features
        elif fmt == "csr":
            self.A = to_scipy_csr(w)
            self.n_out, self.n_in = self.A.shape
        elif fmt == "bsr":
            self.A = to_scipy_bsr(w, k)
            self.n_out, self.n_in = self.A.shape  # padded to multiples of k
            self.data = np.ascontiguousarray(self.A.data).ravel()
        else:
            raise ValueError(f"unknown lean format {fmt!r}; choose dense, csr or bsr")
        self.b1 = np.zeros(self.n_out, np.float32)
        self.b1[: self.out_features] = bias
        self.b2 = self.b1[:, None]
        self.st = st

    def ops(self, x: np.ndarray, y: np.ndarray) -> list[Callable[[], object]]:
        """The layer as argument-free calls bound to views of the buffers ``x`` (at
        least n_in rows) and ``y`` (at least n_out rows), built once per batch size so
        that a forward pays no slicing or argument set-up."""
        xi, yo = x[: self.n_in], y[: self.n_out]
        b = self.b1 if x.ndim == 1 else self.b2
        P = functools.partial
        if self.fmt == "dense":
            return [P(np.matmul, self.W, xi, yo), P(np.add, yo, b, yo)]
        st, A = self.st, self.A
        if st is None:  # no private kernels in this scipy: the public product (allocates)
            return [P(_product_into, A, xi, yo, b)]
        if self.fmt == "csr":
            kernel = (P(st.csr_matvec, self.n_out, self.n_in, A.indptr, A.indices, A.data, xi, yo) if x.ndim == 1 else
                      P(st.csr_matvecs, self.n_out, self.n_in, x.shape[1], A.indptr, A.indices, A.data, xi, yo))
        else:
            k, R, C = self.k, self.n_out // self.k, self.n_in // self.k
            kernel = (P(st.bsr_matvec, R, C, k, k, A.indptr, A.indices, self.data, xi, yo) if x.ndim == 1 else
                      P(st.bsr_matvecs, R, C, x.shape[1], k, k, A.indptr, A.indices, self.data, xi, yo))
        return [P(np.copyto, yo, b), kernel]  # the kernels accumulate: y = b, then y += W x

    def run(self, x: np.ndarray, y: np.ndarray) -> None:
        for op in self.ops(x, y):
            op()


def _product_into(A, x, y, b) -> None:
    y[...] = A @ x + b


LEAN_FORMATS = ("dense", "csr", "bsr")


class LeanMLP:
    """An inference-only forward of a pruned LeNet (Linear, ReLU, ..., Linear) in numpy.

    Each layer is ``dense`` (numpy BLAS), ``csr`` or ``bsr`` (scipy's compiled
    sparse kernels called directly on precomputed arrays, no scipy.sparse object
    overhead per call).  Activations live in preallocated (features, batch) float32
    buffers; each buffer is as long as the largest (padded) size that touches it, and
    padding rows stay zero (the zero-padded BSR blocks and zero bias entries produce
    zeros), so a BSR layer needs no copy to pad its input.  The whole cost - input
    transpose into the buffer, every layer, bias, ReLU - is inside ``__call__``.
    The returned array is a view of an internal buffer (copy it to keep it).
    """

    def __init__(self, model: nn.Module, k=1, formats="bsr", layers=LAYERS):
        sd = dense_state_dict(model)
        self.names = tuple(layers)
        self.formats = {n: (formats[n] if isinstance(formats, Mapping) else formats) for n in self.names}
        ks = {n: (k[n] if isinstance(k, Mapping) else k) for n in self.names}
        self.layers = [_LeanLayer(self.formats[n], sd[f"{n}.weight"], sd.get(f"{n}.bias"), ks[n]) for n in self.names]
        for a, b in zip(self.layers, self.layers[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"layer sizes do not chain: {a.out_features} -> {b.in_features}")
        self.in_features = self.layers[0].in_features
        self.out_features = self.layers[-1].out_features
        self.kernel = ",".join(sorted({layer.kernel for layer in self.layers}))
        self._plans: dict[int, tuple] = {}

    def buffers(self, batch: int) -> list[np.ndarray]:
        return self._plan(batch)[0]

    def _plan(self, batch: int):
        """(buffers, input view, ops, output view) for one batch size, built once."""
        if batch not in self._plans:
            L = self.layers
            sizes = [L[0].n_in] + [max(a.n_out, b.n_in) for a, b in zip(L, L[1:])] + [L[-1].n_out]
            bufs = [np.zeros((s,) if batch == 1 else (s, batch), np.float32) for s in sizes]
            ops = []
            for i, layer in enumerate(L):
                ops += layer.ops(bufs[i], bufs[i + 1])
                if i < len(L) - 1:  # ReLU in place (against a zero array: cheaper than a scalar)
                    zeros = np.zeros_like(bufs[i + 1])
                    ops.append(functools.partial(np.maximum, bufs[i + 1], zeros, out=(bufs[i + 1],)))
            out = bufs[-1][: self.out_features]
            self._plans[batch] = (bufs, bufs[0][: self.in_features], tuple(ops), out[None, :] if batch == 1 else out.T)
        return self._plans[batch]

    def __call__(self, x) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
        batch = x.shape[0]
        _, xin, ops, out = self._plans.get(batch) or self._plan(batch)
        np.copyto(xin, x[0] if batch == 1 else x.T)
        for op in ops:
            op()
        return out


# --------------------------------------------------------------------------- automatic per-layer choice


def _layer_weights(model: nn.Module, layers=LAYERS) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    sd = dense_state_dict(model)
    return {n: (sd[f"{n}.weight"].float(), sd.get(f"{n}.bias")) for n in layers}


def _module_candidates(w, b, k):
    from .bsr import BACKENDS, BSRLinear

    return {be: BSRLinear(w, b, k, backend=be) for be in BACKENDS}


def _lean_candidates(w, b, k):
    return {fmt: _LeanLayer(fmt, w, b, k) for fmt in LEAN_FORMATS}


def _run_ops(ops) -> None:
    for op in ops:
        op()


def _run_and_read(fn, y: np.ndarray, rows: int) -> np.ndarray:
    """Run a lean layer and read its (batch, rows) output from the (features, batch) buffer."""
    fn()
    return y[:rows].reshape(rows, -1).T


def _measurably_faster(t: Timing, ref: Timing, margin: float) -> bool:
    return t.median_ns < (1 - margin) * ref.median_ns and t.q75_ns < ref.q25_ns


def auto_choice(model: nn.Module, k, batch: int, *, path: str = "module", threads: int = 1, budget_s: float = 0.01,
                margin: float = 0.05, seed: int = 0, layers=LAYERS, min_repeats: int = 5, max_repeats: int = 100,
                verify_model: bool = True):
    """:func:`auto_backends` with its evidence: (choice, rows of per-layer timings,
    and of the whole-model check with ``layer="model"``)."""
    if path not in ("module", "lean"):
        raise ValueError(f"path must be 'module' (BSRLinear backends) or 'lean' (LeanMLP formats), got {path!r}")
    rng = np.random.default_rng(seed)
    choice, rows, failed = {}, [], set()
    with num_threads(threads), torch.inference_mode():
        for name, (w, b) in _layer_weights(model, layers).items():
            kk = k[name] if isinstance(k, Mapping) else k
            x = rng.standard_normal((batch, w.shape[1])).astype(np.float32)
            ref = x.astype(np.float64) @ w.double().numpy().T + (0 if b is None else b.double().numpy())
            bound = np.abs(x.astype(np.float64)) @ np.abs(w.double().numpy().T) + (0 if b is None else np.abs(b.double().numpy()))
            if path == "module":
                cands = _module_candidates(w, b, kk)
                xt = torch.from_numpy(x)
                fns = {n: (lambda m=m: m(xt)) for n, m in cands.items()}
                outputs = {n: (lambda f=f: f().numpy()) for n, f in fns.items()}
            else:
                cands = _lean_candidates(w, b, kk)
                fns, outputs = {}, {}
                for n, layer in cands.items():
                    xin = np.zeros((layer.n_in,) if batch == 1 else (layer.n_in, batch), np.float32)
                    xin[: w.shape[1]] = x[0] if batch == 1 else x.T
                    yout = np.zeros((layer.n_out,) if batch == 1 else (layer.n_out, batch), np.float32)
                    fns[n] = functools.partial(_run_ops, tuple(layer.ops(xin, yout)))
                    outputs[n] = functools.partial(_run_and_read, fns[n], yout, w.shape[0])
            ok = {}
            for n in list(fns):
                try:
                    ok[n] = close_enough(np.asarray(outputs[n]()).reshape(ref.shape), ref, bound, RTOL["float32"])
                except Exception:
                    ok[n] = (False, float("inf"))
            good = {n: f for n, f in fns.items() if ok[n][0]}
            timings = time_calls(good, budget_s=budget_s, min_repeats=min_repeats, max_repeats=max_repeats)
            dense = timings.get("dense")
            pick = "dense"
            sparse = {n: t for n, t in timings.items() if n != "dense"}
            if dense is None and sparse:
                pick = min(sparse, key=lambda n: sparse[n].median_ns)
            elif sparse:
                best = min(sparse, key=lambda n: sparse[n].median_ns)
                if _measurably_faster(sparse[best], dense, margin):
                    pick = best
            choice[name] = pick
            failed |= {n for n in fns if not ok[n][0]}
            for n in fns:
                t = timings.get(n)
                rows.append({"layer": name, "candidate": n, "path": path, "batch": batch, "k": kk, "ok": ok[n][0],
                             "max_rel_err": ok[n][1], "median_ns": t.median_ns if t else None,
                             "q25_ns": t.q25_ns if t else None, "q75_ns": t.q75_ns if t else None, "chosen": n == pick})
        if verify_model and tuple(layers) == LAYERS:
            choice = _verify_on_model(model, k, batch, path, choice, failed, rows, budget_s=budget_s, margin=margin,
                                      min_repeats=min_repeats, max_repeats=max_repeats, seed=seed)
    return choice, rows


def _verify_on_model(model, k, batch, path, choice, failed, rows, *, budget_s, margin, min_repeats, max_repeats, seed):
    """The per-layer choice timed as a whole model against all-dense and each uniform
    format (a layer's cost also depends on the memory layout its input arrives in,
    which a per-layer timing does not see).  The fastest wins if it is measurably
    faster than all-dense; otherwise all-dense.  Formats that failed a check on any
    layer are not candidates."""
    names = list(choice)
    fmts = ("dense", "torch", "scipy") if path == "module" else LEAN_FORMATS
    cands = {"per-layer": dict(choice)}
    for f in fmts:
        if f not in failed:
            cands[f"all-{f}"] = {n: f for n in names}
    unique = {}
    for label, c in cands.items():
        if c not in unique.values():
            unique[label] = c
    x = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((batch, 784)).astype(np.float32))
    ref, bound = _reference_forward(model, x), _reference_forward(model, x, bound=True)
    fns = {}
    for label, c in unique.items():
        if path == "module":
            m = to_bsr_model(model, k, backend=c)
            fns[label] = functools.partial(m, x)
        else:
            fns[label] = functools.partial(LeanMLP(model, k, c), x.numpy())
        try:
            good = close_enough(_as_numpy(fns[label](), batch), ref, bound, RTOL["float32"])[0]
        except Exception:
            good = False
        if not good:
            del fns[label]
    timings = time_calls(fns, budget_s=budget_s, min_repeats=min_repeats, max_repeats=max_repeats)
    dense = timings.get("all-dense")
    best = min(timings, key=lambda n: timings[n].median_ns) if timings else "all-dense"
    pick = best if dense is None or best == "all-dense" or _measurably_faster(timings[best], dense, margin) else "all-dense"
    for label, c in unique.items():
        t = timings.get(label)
        rows.append({"layer": "model", "candidate": label, "choice": json.dumps(c, sort_keys=True), "path": path,
                     "batch": batch, "ok": t is not None, "median_ns": t.median_ns if t else None,
                     "q25_ns": t.q25_ns if t else None, "q75_ns": t.q75_ns if t else None, "chosen": label == pick})
    return dict(unique.get(pick, {n: "dense" for n in names}))


def auto_backends(model: nn.Module, k, batch: int, **kwargs) -> dict[str, str]:
    """The fastest measured backend of each pruned layer at ``batch``.

    ``path="module"`` (default) chooses among the :class:`~blockprune_utils.bsr.BSRLinear`
    backends (``torch``, ``scipy``, ``dense``; the result goes straight into
    ``to_bsr_model(model, k, backend=...)``); ``path="lean"`` among the
    :class:`LeanMLP` formats (``dense``, ``csr``, ``bsr``).  Every candidate's
    output is first checked against a float64 dense reference and a candidate that
    fails is never chosen.  A sparse candidate is chosen only when it is measurably
    faster than dense: its median below ``(1 - margin)`` times dense's *and* its
    upper quartile below dense's lower quartile; otherwise the layer stays dense.
    With ``verify_model`` (default) the per-layer choice is then timed as a whole
    forward against all-dense and each all-one-format model, by the same rule, so
    that the result is never measurably slower than the dense model."""
    return auto_choice(model, k, batch, **kwargs)[0]


# --------------------------------------------------------------------------- whole model


def model_variants(model: nn.Module, k: int, batch: int, threads: int, cfg: BenchConfig, variants=MODEL_VARIANTS):
    """Callables of each whole-model variant on one input, their outputs' checkers,
    and the auto choices.  Returns (fns, outputs, notes)."""
    x = torch.from_numpy(np.random.default_rng(cfg.seed + batch).standard_normal((batch, 784)).astype(np.float32))
    xn = x.numpy()
    fns, notes = {}, {}
    auto_kw = dict(threads=threads, budget_s=cfg.budget_s, min_repeats=cfg.min_repeats, max_repeats=cfg.max_repeats,
                   seed=cfg.seed)
    for v in variants:
        if v == "masked":
            m = model.eval()
        elif v == "torch_plain":
            m = remove_masks(copy.deepcopy(model)).eval()
        elif v in ("torch_dense", "torch_bsr", "scipy_bsr"):
            m = to_bsr_model(model, k, backend={"torch_dense": "dense", "torch_bsr": "torch", "scipy_bsr": "scipy"}[v])
        elif v == "module_auto":
            choice = auto_backends(model, k, batch, path="module", **auto_kw)
            notes[v] = choice
            m = to_bsr_model(model, k, backend=choice)
        elif v.startswith("lean_"):
            fmt = v[len("lean_"):]
            if fmt == "auto":
                fmt = auto_backends(model, k, batch, path="lean", **auto_kw)
                notes[v] = fmt
            lean = LeanMLP(model, k, fmt)
            fns[v] = (lambda lean=lean: lean(xn))
            continue
        else:
            raise ValueError(f"unknown model variant {v!r}")
        fns[v] = (lambda m=m: m(x))
    return x, fns, notes


def measure_model(k: int, round: int, batch: int, threads: int, cfg: BenchConfig, variants=MODEL_VARIANTS,
                  prov=None) -> list[dict]:
    """Rows for one (k, round, batch, threads): each whole-model variant checked
    against a float64 forward of the dense weights, then timed."""
    model, source = _cfg_model(cfg, k, round)
    dens = layer_densities(model, LAYERS)
    meta = {"family": "lenet-model", "k": int(k), "round": int(round), "weights": source, "batch": int(batch),
            "density": total_density(model, LAYERS), **{f"density_{n}": d for n, d in dens.items()},
            "threads_label": _threads_label(threads), "blas_control": blas_control(), "dtype": "float32"}
    with num_threads(threads) as n, torch.inference_mode():
        prov = {**(prov or row_provenance("cpu")), "threads": n}
        x, fns, notes = model_variants(model, k, batch, threads, cfg, variants)
        ref64 = _reference_forward(model, x)
        bound = _reference_forward(model, x, bound=True)
        checks, errors = {}, {}
        for v, f in list(fns.items()):
            try:
                y = f()
                checks[v] = close_enough(_as_numpy(y, batch), ref64, bound, RTOL["float32"])
            except Exception as e:
                checks[v], errors[v] = (False, float("inf")), f"{type(e).__name__}: {e}"
            if not checks[v][0]:
                errors.setdefault(v, f"output differs from the float64 forward (max error {checks[v][1]:.3g})")
                del fns[v]
        timings = time_calls(fns, budget_s=cfg.budget_s, min_repeats=cfg.min_repeats, max_repeats=cfg.max_repeats,
                             min_sample_s=cfg.min_sample_s)
    dense_ns = timings["torch_dense"].median_ns if "torch_dense" in timings else None
    best_dense = {v: timings[v].median_ns for v in DENSE_VARIANTS if v in timings}
    best_name = min(best_dense, key=best_dense.get) if best_dense else None
    lean_dense = timings["lean_dense"].median_ns if "lean_dense" in timings else None
    rows = []
    for v in variants:
        t = timings.get(v)
        kernel = None
        if v.startswith("lean_"):
            kernel = "sparsetools" if _sparsetools() is not None else "scipy-matmul"
        row = {**prov, **meta, "variant": v, "path": "lean-numpy" if v.startswith("lean_") else "torch-module",
               "kernel": kernel, "ok": t is not None, "error": errors.get(v), "max_rel_err": checks.get(v, (None, None))[1],
               "auto_choice": json.dumps(notes[v], sort_keys=True) if v in notes else None,
               **(t.as_row() if t else {"median_ns": None, "q25_ns": None, "q75_ns": None, "min_ns": None,
                                        "repeats": 0, "inner": 0}),
               "dense_ns": dense_ns, "best_dense_variant": best_name, "best_dense_ns": best_dense.get(best_name),
               "lean_dense_ns": lean_dense}
        row["speedup"] = dense_ns / t.median_ns if t and dense_ns else None
        row["speedup_vs_best_dense"] = row["best_dense_ns"] / t.median_ns if t and row["best_dense_ns"] else None
        row["speedup_vs_lean_dense"] = lean_dense / t.median_ns if t and lean_dense else None
        rows.append(row)
    return rows


def _reference_forward(model: nn.Module, x: torch.Tensor, bound: bool = False) -> np.ndarray:
    """float64 forward of the dense (masked) weights; with ``bound`` the same forward
    with |W|, |b| and |x| (the scale of rounding errors, for :func:`close_enough`)."""
    sd = dense_state_dict(model)
    h = x.double().numpy()
    h = np.abs(h) if bound else h
    for i, n in enumerate(LAYERS):
        W, b = sd[f"{n}.weight"].double().numpy(), sd[f"{n}.bias"].double().numpy()
        if bound:
            W, b = np.abs(W), np.abs(b)
        h = h @ W.T + b
        if i < len(LAYERS) - 1:
            h = np.maximum(h, 0)
    return h


def model_rows(cfg: BenchConfig | str = "quick", *, rerun: bool = False, progress: bool = False, store_root=None,
               cache: bool = True) -> list[dict]:
    cfg = get_config(cfg)
    store = _store("bench_model", cfg, store_root) if cache else None
    prov = row_provenance("cpu")
    groups = [(k, r, b, t) for k in cfg.model_ks for r in cfg.model_rounds for b in cfg.model_batches for t in cfg.model_threads]

    def keys_of(g):
        k, r, b, t = g
        tag = _tag(_cfg_model(cfg, k, r)[1])
        return [{"k": int(k), "round": int(r), "weights": tag, "variant": v, "batch": int(b), "threads": _threads_label(t)}
                for v in MODEL_VARIANTS]

    return _cached_groups(store, groups, keys_of, lambda g: measure_model(*g, cfg, prov=prov), rerun, progress, "models")


# --------------------------------------------------------------------------- storage and cache simulation


def storage_rows(cfg: BenchConfig | str = "quick") -> list[dict]:
    """Bytes of dense, CSR and BSR storage of every LeNet layer (each k and round)
    and of their sum over the three layers (``layer="all"``)."""
    cfg = get_config(cfg)
    rows = []
    for k in cfg.ks:
        for r in cfg.rounds:
            model, source = _cfg_model(cfg, k, r)
            dense = dense_state_dict(model)
            total = {"dense": 0, "csr": 0, "bsr": 0, "nnz": 0, "numel": 0}
            for layer in LAYERS:
                w = dense[f"{layer}.weight"].float()
                s = storage_bytes(w, k)
                total = {"dense": total["dense"] + s.dense, "csr": total["csr"] + s.csr, "bsr": total["bsr"] + s.bsr,
                         "nnz": total["nnz"] + s.nnz, "numel": total["numel"] + w.numel()}
                for fmt in ("dense", "csr", "bsr"):
                    rows.append({"family": "lenet", "layer": layer, "k": int(k), "round": int(r), "weights": source,
                                 "density": s.nnz / w.numel(), "nnz": s.nnz, "nnz_blocks": s.nnz_blocks,
                                 "format": fmt, "bytes": getattr(s, fmt)})
            for fmt in ("dense", "csr", "bsr"):
                rows.append({"family": "lenet", "layer": "all", "k": int(k), "round": int(r), "weights": source,
                             "density": total["nnz"] / total["numel"], "nnz": total["nnz"], "nnz_blocks": None,
                             "format": fmt, "bytes": total[fmt]})
    return rows


def cache_cases(cfg: BenchConfig):
    """The cachegrind set: LeNet fc1 at ``cache_ks`` x ``cache_rounds`` in CSR and
    BSR, plus (``cache_dense``) one dense run (dense work does not depend on the pattern)."""
    from .cachesim import CacheCase

    cases = []
    for k in cfg.cache_ks:
        for r in cfg.cache_rounds:
            model, source = _cfg_model(cfg, k, r)
            w = dense_state_dict(model)["fc1.weight"].float()
            tag = _tag(source)
            meta = {"family": "lenet", "layer": "fc1", "round": int(r), "weights": source,
                    "density": float(torch.count_nonzero(w)) / w.numel()}
            for fmt in ("csr", "bsr"):
                cases.append(CacheCase(f"lenet-fc1-k{k}-r{r}-{tag}", fmt, w, int(k), meta))
            if cfg.cache_dense and not any(c.fmt == "dense" for c in cases):
                cases.append(CacheCase(f"lenet-fc1-k{k}-r{r}-{tag}", "dense", w, int(k), meta))
    return cases


def cache_rows(cfg: BenchConfig | str = "quick", *, progress: bool = False, store_root=None,
               workers: int | None = None) -> list[dict]:
    """cachegrind rows (empty when valgrind is not installed)."""
    from .cachesim import cachesim_rows, valgrind_path

    cfg = get_config(cfg)
    if valgrind_path() is None:
        return []
    from .cachesim import CACHE, KERNELS

    store = _store("bench_cache", cfg, store_root, cache=CACHE, kernels=KERNELS)
    return cachesim_rows(cache_cases(cfg), n=cfg.cache_products, workers=workers or min(2, all_threads()), store=store,
                         progress=progress)


# --------------------------------------------------------------------------- GPU


def gpu_rows(cfg: BenchConfig | str = "quick", *, rerun: bool = False, progress: bool = False, store_root=None,
             device: str = "cuda") -> list[dict]:
    """torch dense vs torch sparse BSR (``to_sparse_bsr``) on the GPU, fp32 and bf16,
    for the profile's LeNet and synthetic matrices.  Returns [] (and says so) when
    CUDA is not available."""
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU benchmark is skipped", file=sys.stderr)
        return []
    cfg = get_config(cfg)
    store = _store("bench_gpu", cfg, store_root)
    prov = row_provenance(device)
    mats = lenet_matrices(cfg) + synthetic_matrices(cfg)
    groups = [(m, b) for m in mats for b in sorted(set(cfg.batches) | set(cfg.synthetic_batches))]

    def measure(g):
        m, batch = g
        return measure_gpu(m, batch, cfg, device=device, prov=prov)

    return _cached_groups(store, groups, lambda g: [_row_key(g[0].name, f, g[1], "gpu", "cuda") for f in GPU_FORMATS],
                          measure, rerun, progress, "gpu")


def measure_gpu(m: Matrix, batch: int, cfg: BenchConfig, device: str = "cuda", prov=None) -> list[dict]:
    w = m.weight
    rows_, cols = w.shape
    k = m.k
    Cp = block_grid(w.shape, k)[1] * k
    x = torch.from_numpy(np.random.default_rng(cfg.seed + batch).standard_normal((cols, batch)).astype(np.float32))
    xp = torch.zeros(Cp, batch)
    xp[:cols] = x
    w64 = w.double().numpy()
    ref = w64 @ x.double().numpy()
    bound = np.abs(w64) @ np.abs(x.double().numpy())
    fns, errors, checks = {}, {}, {}
    with torch.inference_mode():
        for dt_name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            try:
                W = w.to(device, dt)
                X = x.to(device, dt)
                fns[f"cuda_dense_{dt_name}"] = (lambda W=W, X=X: W @ X)
            except Exception as e:
                errors[f"cuda_dense_{dt_name}"] = f"{type(e).__name__}: {e}"
            try:
                A = to_torch_bsr(w, k).to(device=device, dtype=dt)
                XP = xp.to(device, dt)
                fns[f"cuda_bsr_{dt_name}"] = (lambda A=A, XP=XP: A @ XP)
            except Exception as e:
                errors[f"cuda_bsr_{dt_name}"] = f"{type(e).__name__}: {e}"
        for f, fn in list(fns.items()):
            rtol = RTOL["bfloat16" if f.endswith("bf16") else "float32"]
            try:
                checks[f] = close_enough(_as_numpy(fn(), rows_), ref, bound, rtol)
            except Exception as e:
                errors[f], checks[f] = f"{type(e).__name__}: {e}", (False, float("inf"))
            if not checks[f][0]:
                errors.setdefault(f, f"result differs from the dense product (max error {checks[f][1]:.3g})")
                del fns[f]
        timings = time_calls(fns, budget_s=cfg.budget_s, min_repeats=cfg.min_repeats, max_repeats=cfg.max_repeats,
                             min_sample_s=cfg.min_sample_s, device=device)
    out = []
    for f in GPU_FORMATS:
        t = timings.get(f)
        dense = timings.get(f.replace("_bsr_", "_dense_"))
        out.append({**(prov or row_provenance(device)), **m.meta(), "batch": batch, "format": f, "lib": "torch",
                    "layout": f.split("_")[1], "dtype": f.split("_")[2], "threads_label": "gpu", "ok": t is not None,
                    "error": errors.get(f), "max_rel_err": checks.get(f, (None, None))[1],
                    **(t.as_row() if t else {"median_ns": None, "repeats": 0}),
                    "dense_ns": dense.median_ns if dense else None,
                    "speedup": dense.median_ns / t.median_ns if t and dense else None})
    return out


# --------------------------------------------------------------------------- tables


def frame(rows):
    import pandas as pd

    return pd.DataFrame(rows)


def speedup_table(rows, layers=None, threads: str = "1"):
    """Speed-up over the best dense format, per (family, layer, k, round/density)
    row and (format, batch) column."""
    df = frame(rows)
    df = df[(df["threads_label"] == threads) & df["format"].isin(SPARSE_FORMATS)]
    if layers is not None:
        df = df[df["layer"].isin(layers)]
    df = df.assign(density_pct=(100 * df["density"]).round(1))
    return df.pivot_table(index=["layer", "k", "density_pct"], columns=["format", "batch"], values="speedup",
                          aggfunc="first").sort_index(ascending=[True, True, False]).round(2)


def model_table(rows, threads: str = "1"):
    """Whole-model latency (µs) per (k, round, batch) and variant."""
    df = frame(rows)
    df = df[df["threads_label"] == threads].assign(us=lambda d: d["median_ns"] / 1e3,
                                                   density_pct=lambda d: (100 * d["density"]).round(1))
    return df.pivot_table(index=["batch", "k", "density_pct"], columns="variant", values="us", aggfunc="first")[
        [v for v in MODEL_VARIANTS if v in set(df["variant"])]].round(1)


def performance_bar(rows, round: int = 16, batch: int = 1, threads: str = "1"):
    """The issue's bar: at ``round`` (2.8% density) and ``batch``, the whole-model
    dense forward (``to_bsr_model(backend="dense")``) over the fastest block-sparse
    forward (BSR or auto, either path), per k, and the gap to the ideal 1/density.
    Also the same ratio against the fastest dense forward of any path (the fair,
    harder comparison) and lean-vs-lean (same harness)."""
    import pandas as pd

    df = frame(rows)
    df = df[(df["round"] == round) & (df["batch"] == batch) & (df["threads_label"] == threads) & df["ok"]]
    sparse = ("torch_bsr", "scipy_bsr", "module_auto", "lean_bsr", "lean_auto")
    out = []
    for k, g in df.groupby("k"):
        t = dict(zip(g["variant"], g["median_ns"]))
        cand = {v: t[v] for v in sparse if v in t}
        if not cand or "torch_dense" not in t:
            continue
        best = min(cand, key=cand.get)
        dens = float(g["density"].iloc[0])
        best_dense = min(t[v] for v in DENSE_VARIANTS if v in t)
        ratio = t["torch_dense"] / cand[best]
        out.append({"k": k, "density_pct": float(np.round(100 * dens, 2)), "weights": g["weights"].iloc[0],
                    "dense_us": t["torch_dense"] / 1e3, "best_sparse": best, "best_sparse_us": cand[best] / 1e3,
                    "ratio_vs_dense": ratio, "ideal": 1 / dens, "gap_to_ideal": (1 / dens) / ratio,
                    "ratio_vs_best_dense": best_dense / cand[best],
                    "lean_auto_vs_lean_dense": (t["lean_dense"] / t["lean_auto"]
                                                if {"lean_dense", "lean_auto"} <= t.keys() else None),
                    "meets_5x": ratio >= 5})
    return pd.DataFrame(out).round(2)


# --------------------------------------------------------------------------- entry point


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m blockprune_utils.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the quick profile (small, a minute or two)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="profile name (default: paper, or quick with --quick)")
    p.add_argument("--out", help="write every result row to this CSV (one file; a 'part' column tells which study)")
    p.add_argument("--gpu", action="store_true", help="also time torch dense vs BSR on CUDA (skipped without a GPU)")
    p.add_argument("--only", default="matrices,models,storage,cache",
                   help="comma list of parts: matrices, models, storage, cache (default: all)")
    p.add_argument("--rerun", action="store_true", help="measure again, overwriting cached rows")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    profile = a.profile or ("quick" if a.quick else "paper")
    cfg = get_config(profile)
    parts = set(a.only.split(","))
    progress = not a.no_progress
    import pandas as pd

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.max_rows", 400)
    t0 = time.perf_counter()
    print(f"profile {profile}; {machine()}; numpy BLAS threads via {blas_control()}; "
          f"scipy kernels: {'sparsetools (direct)' if _sparsetools() else 'scipy.sparse @'}")
    frames = []
    if "matrices" in parts:
        rows = matrix_rows(cfg, progress=progress, rerun=a.rerun)
        frames.append(frame(rows).assign(part="matrices"))
        bad = [r for r in rows if not r["ok"]]
        for thr in sorted({r["threads_label"] for r in rows}):
            print(f"\nspeed-up over the best dense format (threads={thr}; >1 = faster than dense):")
            print(speedup_table(rows, threads=thr).to_string())
        if bad:
            print(f"\n{len(bad)} format(s) failed: " + "; ".join(f"{r['matrix']} {r['format']}: {r['error']}" for r in bad[:10]))
    if "models" in parts:
        rows = model_rows(cfg, progress=progress, rerun=a.rerun)
        frames.append(frame(rows).assign(part="models"))
        for thr in sorted({r["threads_label"] for r in rows}):
            print(f"\nwhole-model forward latency, µs (threads={thr}):")
            print(model_table(rows, threads=thr).to_string())
            last = max(cfg.model_rounds)
            for b in cfg.model_batches:
                bar = performance_bar(rows, round=last, batch=b, threads=thr)
                print(f"\nperformance bar (round {last}, batch {b}, threads={thr}): dense / fastest block-sparse forward")
                print(bar.to_string(index=False))
    if "storage" in parts:
        rows = storage_rows(cfg)
        frames.append(frame(rows).assign(part="storage"))
        s = frame(rows)
        s = s[s["layer"] == "all"].pivot_table(index=["k", "round"], columns="format", values="bytes")
        print("\nstorage of the three LeNet layers, bytes:")
        print(s.to_string())
    if "cache" in parts:
        from .cachesim import valgrind_path

        if valgrind_path() is None:
            print("\nvalgrind is not installed: no cache simulation (apt-get install valgrind)")
        else:
            rows = cache_rows(cfg, progress=progress)
            frames.append(frame(rows).assign(part="cache"))
            c = frame(rows)[["matrix", "fmt", "k", "density", "data_refs", "d1_misses", "ll_misses", "d1_miss_ratio",
                             "ll_miss_ratio"]]
            print("\ncachegrind, per product (warm caches):")
            print(c.round(4).to_string(index=False))
    if a.gpu:
        rows = gpu_rows(cfg, progress=progress, rerun=a.rerun)
        if rows:
            frames.append(frame(rows).assign(part="gpu"))
            g = frame(rows)
            print("\nGPU speed-up of BSR over dense (same dtype):")
            print(g[g["layout"] == "bsr"].pivot_table(index=["matrix"], columns=["dtype", "batch"], values="speedup").round(2)
                  .to_string())
    if a.out and frames:
        pd.concat(frames, ignore_index=True).to_csv(a.out, index=False)
        print(f"\nrows written to {a.out}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
