"""Block-sparse (BSR) and CSR x dense product kernels compiled with numba.

Both formats share the conventions, so that timing one against the other compares
the formats: float32 values, int32 ``indices``/``indptr`` (as :func:`bsr_arrays` /
:func:`to_scipy_csr` build them), C-contiguous operands; ``x`` is (n_in,) or
(n_in, batch) - the (features, batch) layout of ``LeanMLP``; the kernels
**overwrite** ``y`` with ``W @ x (+ bias)``, then ReLU if asked (NaN kept, as
``torch.relu`` does).  Indices are used unsigned in the loops (no negative-index
wrap-around per access); the public functions check them.

Batched, the innermost loop runs over the contiguous batch and is vectorised: BSR
makes one pass over the batch per stored block and loads x's k rows once for k
output rows (one row per pass for k = 7, 8, which would spill registers); CSR sums
four stored entries of a row per pass, the same saving on the loads and stores of
y.  Matrix-vector: BSR accumulates a block row as k vectors of k lanes
(contiguous loads of the row-major blocks, one horizontal sum per row); CSR keeps
four partial sums per row.  For k <= 8, k is a compile-time constant: one kernel per (k,
batched, parallel), defined in :mod:`.jit` (which imports no torch), compiled on
first use and cached on disk (``cache=True``: ``__pycache__`` beside that file, or
numba's user cache directory when that is read-only); k = 9 .. 64 share the
kernels of :mod:`.train_kernels` (blocks as small dense products, 16 samples by 4
rows of y in registers).  k = 1 is CSR.  Products are contracted into FMAs (``fastmath=
{"contract"}``, no other fast-math flag) and sums are grouped per block / per
four entries, a reassociation of the dense order: results agree with a float64
product to float32 rounding.  BSR shapes need not be multiples of k: the
logical matrix is (y.shape[0], x.shape[0]) and the kernels never read x nor
write y beyond it (padded operands work too).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from ..blocks import as_matrix, block_grid, check_block_size
from . import jit
from .convert import INDEX_DTYPE, bsr_arrays, to_scipy_csr
from .jit import MAX_K, SMALL_K, check_k, csr_kernel
from .train_kernels import wide_kernel

__all__ = ["FORMATS", "MAX_K", "KernelArrays", "bound_kernel", "bsr_kernel", "bsr_matmul", "csr_kernel", "csr_matmul",
           "kernel_arrays"]

FORMATS = ("bsr", "csr")
_EMPTY = np.zeros(0, np.float32)


def bsr_kernel(k: int, batched: bool, parallel: bool):
    """The compiled BSR kernel for block size k, ``(data, indices, indptr, x, y,
    bias, relu)``, unchecked; ``data`` is (nnzb, k, k).  k = 1 is the CSR kernel,
    which takes ``data.reshape(-1)``; k <= SMALL_K a kernel compiled for that k
    (:func:`.jit.bsr_kernel`); larger k share one kernel that takes k from
    ``data``'s shape, blocks as small dense products (:func:`.train_kernels.wide_kernel`)."""
    return jit.bsr_kernel(k, batched, parallel) if check_k(k) <= SMALL_K else wide_kernel(batched, parallel)


def _check_k(k) -> int:
    return check_k(check_block_size(k))


def _check_array(a, name: str, dtype, ndims) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimension(s), got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} of shape {a.shape} must be C-contiguous (use np.ascontiguousarray)")


def _check_operands(data, indices, indptr, k, x, y, bias, check_indices) -> None:
    """Cheap checks of dtypes and shapes; with ``check_indices`` also the O(nnz) index checks."""
    for a, name, dtype, ndims in ((data, "data", np.float32, (3,) if k > 1 else (1, 3)), (indices, "indices", INDEX_DTYPE, (1,)),
                                  (indptr, "indptr", INDEX_DTYPE, (1,)), (x, "x", np.float32, (1, 2)),
                                  (y, "y", np.float32, (1, 2))):
        _check_array(a, name, dtype, ndims)
    if x.ndim != y.ndim or (x.ndim == 2 and x.shape[1] != y.shape[1]):
        raise ValueError(f"x of shape {x.shape} and y of shape {y.shape} differ in batch size (or one is 1-D)")
    if not y.flags.writeable or np.may_share_memory(x, y):
        raise ValueError("y must be writeable and must not overlap x: the kernels write the product into it")
    if data.ndim == 3 and data.shape[1:] != (k, k):
        raise ValueError(f"data of shape {data.shape} does not hold {k} x {k} blocks (k={k})")
    rows, cols = block_grid((y.shape[0], x.shape[0]), k)
    if indptr.shape[0] != rows + 1:
        raise ValueError(f"indptr has {indptr.shape[0]} entries, but y of shape {y.shape} needs {rows + 1} (k={k})")
    if indices.shape[0] != data.shape[0]:
        raise ValueError(f"indices has {indices.shape[0]} entries but data holds {data.shape[0]}")
    if bias is not None:
        _check_array(bias, "bias", np.float32, (1,))
        if bias.shape[0] != y.shape[0]:
            raise ValueError(f"bias has {bias.shape[0]} entries, y has {y.shape[0]} rows")
    if check_indices:
        if indptr[0] != 0 or indptr[-1] != indices.shape[0] or (np.diff(indptr) < 0).any():
            raise ValueError(f"indptr must rise from 0 to {indices.shape[0]}, got {indptr}")
        bad = indices[(indices < 0) | (indices >= cols)]
        if bad.size:
            raise ValueError(f"column index {bad[0]} is out of range for x with {x.shape[0]} rows ({cols} block columns, k={k})")


def bsr_matmul(data, indices, indptr, k, x, y, parallel=False, *, bias=None, relu=False, check=True):
    """``y = W @ x (+ bias)`` (then ReLU if ``relu``) for a BSR weight W, written into ``y``; returns y.

    ``data`` (nnzb, k, k), ``indices`` (nnzb,), ``indptr`` (ceil(n_out/k) + 1,) as
    :func:`bsr_arrays` returns them; ``x`` (n_in,) or (n_in, batch) float32,
    ``y`` (n_out,) or (n_out, batch) float32, both C-contiguous; n_in / n_out
    need not be multiples of k.  ``parallel`` splits the block rows over numba's
    threads.  ``check=False`` skips the O(nnz) index checks (never pass
    unchecked indices: out-of-range ones read outside x).
    """
    k = _check_k(k)
    _check_operands(data, indices, indptr, k, x, y, bias, check)
    kernel = bsr_kernel(k, x.ndim == 2, bool(parallel))
    kernel(_kernel_data(data, k), indices, indptr, x, y, _EMPTY if bias is None else bias, bool(relu))
    return y


def _kernel_data(data: np.ndarray, k: int) -> np.ndarray:
    """The values as the kernel of block size k takes them (k = 1 runs the CSR kernel: flat)."""
    return data.reshape(-1) if k == 1 else data


def csr_matmul(data, indices, indptr, x, y, parallel=False, *, bias=None, relu=False, check=True):
    """``y = W @ x (+ bias)`` (then ReLU if ``relu``) for a CSR weight W, written into ``y``;
    returns y.  Arrays as :func:`to_scipy_csr` holds them; otherwise like :func:`bsr_matmul`."""
    _check_array(data, "data", np.float32, (1,))
    _check_operands(data, indices, indptr, 1, x, y, bias, check)
    csr_kernel(x.ndim == 2, bool(parallel))(data, indices, indptr, x, y, _EMPTY if bias is None else bias, bool(relu))
    return y


class KernelArrays(NamedTuple):
    """A weight in kernel form: ``fmt`` "bsr" (``data`` (nnzb, k, k)) or "csr"
    (``data`` (nnz,), k = 1); ``shape`` is the logical (n_out, n_in), unpadded."""

    fmt: str
    k: int
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple


def kernel_arrays(weight, k: int = 1, fmt: str = "bsr", block_mask=None) -> KernelArrays:
    """The float32 / int32 arrays the kernels take, from a torch weight (out, in):
    ``bsr`` the blocks of ``block_mask`` (default: those holding a non-zero),
    zero-padded to k x k; ``csr`` the non-zeros (k is ignored)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown kernel format {fmt!r}; choose one of {FORMATS}")
    weight = as_matrix(torch.as_tensor(weight)).detach().cpu()
    if fmt == "csr":
        m = to_scipy_csr(weight)
        data, indices, indptr, k = m.data, m.indices, m.indptr, 1
    else:
        k = _check_k(k)
        data, indices, indptr, _ = bsr_arrays(weight, k, block_mask)
        data = data.reshape(-1, k, k)
    c = np.ascontiguousarray
    return KernelArrays(fmt, k, c(data, np.float32), c(indices, INDEX_DTYPE), c(indptr, INDEX_DTYPE), tuple(weight.shape))


def bound_kernel(a: KernelArrays, batched: bool, parallel: bool = False):
    """The compiled kernel of ``a`` with its arrays bound, ``f(x, y, bias, relu)``, and
    no checks: for timing loops, whose operands the caller has checked once (empty
    ``bias``: none)."""
    kernel = csr_kernel(batched, parallel) if a.fmt == "csr" else bsr_kernel(a.k, batched, parallel)
    return functools.partial(kernel, _kernel_data(a.data, a.k), a.indices, a.indptr)
