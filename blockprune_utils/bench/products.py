"""One product ``Y = W X`` of a pruned weight in every format of :mod:`.formats`.

Formats: numpy dense, torch dense, scipy CSR, scipy BSR, torch sparse CSR, torch
sparse BSR, and the numba CSR and BSR kernels of :mod:`blockprune_utils.bsr.kernels`
(written alike, so that their ratio compares the formats; serial at one thread,
``prange`` over the rows with all threads).  Every result is checked against a
float64 dense product before it is timed (a format that disagrees or cannot be built is recorded with its error and
not timed); the speed-up over dense is the ratio of medians measured in the same
run, interleaved, so that drifts of a shared machine hit all formats alike.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..blocks import block_grid
from ..bsr import quiet_sparse_beta
from ..bsr.timing import TIMING_COLUMNS, blas_control, num_threads, timing_values
from ..infra.store import Schema
from .config import (
    MACHINE_COLUMNS,
    BenchConfig,
    bench_store,
    built,
    checked_timings,
    get_config,
    row_provenance,
    stored_groups,
    threads_label,
)
from .formats import DENSE_FORMATS, FORMAT, FORMATS, same_lib_dense
from .weights import MATRIX_META, Matrix, lenet_matrices, synthetic_matrices

MATRIX_SCHEMA = Schema(
    key=("matrix", "format", "batch", "threads_label"),
    values=(*MATRIX_META, "lib", "layout", "dtype", "blas_control", "ok", "error", "max_rel_err", *TIMING_COLUMNS,
            "dense_format", "dense_ns", "same_lib_dense_ns", "speedup", "speedup_same_lib", *MACHINE_COLUMNS),
)


def build_operands(w: torch.Tensor, k: int, formats=FORMATS) -> tuple[dict, dict]:
    """The matrix in each format (built once per matrix, shared by every batch and
    thread count), and the errors of formats that could not be built."""
    with quiet_sparse_beta():
        return built({f: functools.partial(FORMAT[f].build, w, k) for f in formats})


def _matmul(A, X):
    return A @ X


def product_fns(ops: dict, shape, k: int, x: np.ndarray, parallel: bool = False) -> dict:
    """Callables computing ``W X`` in each built format: the format's ``call`` (default
    ``A @ X``) of its operand and ``x`` as its ``input`` says.  ``x``: (cols,) or
    (cols, b); the padded inputs are zero-padded to a multiple of k (outside the
    timing; the padded output rows are cropped only when checked).  ``parallel``: the
    numba kernels split the rows over numba's threads."""
    cols = shape[1]
    Cp = block_grid(shape, k)[1] * k
    xp = np.zeros((Cp,) + x.shape[1:], dtype=np.float32)
    xp[:cols] = x
    xt, xpt = torch.from_numpy(x), torch.from_numpy(xp)
    inputs = {"numpy": x, "numpy_padded": xp, "torch": xt, "torch_padded": xpt}
    fns = {}
    for f, A in ops.items():
        call, X = FORMAT[f].call, inputs[FORMAT[f].input]
        fns[f] = call(A, X, parallel) if call is not None else functools.partial(_matmul, A, X)
    return fns


def measure_matrix(m: Matrix, batch: int, threads: int, cfg: BenchConfig, formats=None, prov=None,
                   ops=None) -> list[dict]:
    """Rows (of :data:`MATRIX_SCHEMA`) for one (matrix, batch, threads): every format
    checked, then timed.  ``ops``: :func:`build_operands` of the matrix, when the caller has them."""
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
    with num_threads(threads) as n, torch.inference_mode():
        prov = {**(prov or row_provenance("cpu")), "threads": n}
        fns = product_fns(ops, w.shape, m.k, x, parallel=n > 1)
        timings, checks, errors = checked_timings(
            fns, rows, ref, bound, cfg, budget_s=cfg.budget_s, errors=errors, raised_is_checked=False,
            differs="result differs from the dense product (max error {:.3g} of |W||X|)")
    dense_ok = {f: timings[f].median_ns for f in DENSE_FORMATS if f in timings}
    best_dense = min(dense_ok, key=dense_ok.get) if dense_ok else None
    meta = m.meta()
    key = {"batch": int(batch), "threads_label": threads_label(threads), "matrix": meta.pop("matrix")}
    out = []
    for f in formats:
        t = timings.get(f)
        same = dense_ok.get(same_lib_dense(f))
        dense_ns = dense_ok.get(best_dense)
        values = {**meta, "lib": FORMAT[f].lib, "layout": FORMAT[f].layout, "dtype": "float32",
                  "blas_control": blas_control(), "ok": t is not None, "error": errors.get(f),
                  "max_rel_err": checks.get(f, (None, None))[1], **timing_values(t),
                  "dense_format": best_dense, "dense_ns": dense_ns, "same_lib_dense_ns": same,
                  "speedup": dense_ns / t.median_ns if t and dense_ns else None,
                  "speedup_same_lib": same / t.median_ns if t and same else None,
                  **{c: prov[c] for c in MACHINE_COLUMNS}}
        out.append(MATRIX_SCHEMA.make({**key, "format": f}, values, prov, None))
    return out


def matrix_rows(cfg: BenchConfig | str = "quick", *, families=("lenet", "synthetic"), rerun: bool = False,
                progress: bool = False, store_root=None, cache: bool = True) -> list[dict]:
    """Every (matrix, format, batch, threads) row of the profile, read from the
    ``bench`` store or measured (``cache=False``: measured, nothing stored)."""
    cfg = get_config(cfg)
    store = bench_store("bench", cfg, MATRIX_SCHEMA, store_root) if cache else None
    mats = (lenet_matrices(cfg) if "lenet" in families else []) + (synthetic_matrices(cfg) if "synthetic" in families else [])
    prov = row_provenance("cpu")

    def combos(m):
        if m.family == "lenet":
            batches = cfg.batches
        else:
            batches = [b for b in cfg.synthetic_batches if b == 1 or m.weight.shape[0] <= cfg.synthetic_batch_max_n]
        return [(b, t) for b in batches for t in cfg.threads]

    def keys_of(m):
        return [{"matrix": m.name, "format": f, "batch": int(b), "threads_label": threads_label(t)}
                for b, t in combos(m) for f in cfg.formats]

    def measure(m):
        ops = build_operands(m.weight, m.k, cfg.formats)
        return [row for b, t in combos(m) for row in measure_matrix(m, b, t, cfg, prov=prov, ops=ops)]

    return stored_groups(store, MATRIX_SCHEMA, mats, keys_of, measure, rerun=rerun, progress=progress, desc="products")
