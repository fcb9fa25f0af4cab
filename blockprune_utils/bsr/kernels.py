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
four partial sums per row.  k is a compile-time constant: one kernel per (k,
batched, parallel), compiled on first use and cached on disk (``cache=True``:
``__pycache__`` beside this file, or numba's user cache directory when that is
read-only).  k = 1 is CSR.  Products are contracted into FMAs (``fastmath=
{"contract"}``, no other fast-math flag) and sums are grouped per block / per
four entries, a reassociation of the dense order: results agree with a float64
product to float32 rounding.  BSR shapes need not be multiples of k: the
logical matrix is (y.shape[0], x.shape[0]) and the kernels never read x nor
write y beyond it (padded operands work too).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..blocks import as_matrix, block_grid, check_block_size
from .convert import INDEX_DTYPE, bsr_arrays, to_scipy_csr

MAX_K = 8
FASTMATH = frozenset({"contract"})
FORMATS = ("bsr", "csr")
_U = np.uint64
_EMPTY = np.zeros(0, np.float32)


@intrinsic
def _stack_f32(typingctx, n):
    """A float32 buffer of a literal size n on the stack: LLVM turns it into
    registers once the loops indexing it are unrolled."""
    if not isinstance(n, types.IntegerLiteral):
        return None

    def codegen(context, builder, sig, args):
        size = ir.Constant(ir.IntType(64), n.literal_value)
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=size)

    return types.CPointer(types.float32)(n), codegen


@intrinsic
def _vfma(typingctx, acc, i, a, j, b, k, width):
    """acc[i:i+w] += a[j:j+w] * b[k:k+w] (1-D float32 arrays) as one <w x float>
    multiply-add: numba leaves LLVM's SLP vectoriser off, so this is spelt out."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    w = width.literal_value

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.FloatType(), w)

        def ptr(n):
            data = context.make_array(sig.args[n])(context, builder, args[n]).data
            return builder.bitcast(builder.gep(data, [args[n + 1]]), vec.as_pointer())

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fmuladd.v{w}f32")
        va, vb, vacc = (builder.load(ptr(n), align=4, typ=vec) for n in (2, 4, 0))
        builder.store(builder.call(fma, [va, vb, vacc]), ptr(0), align=4)
        return context.get_dummy_value()

    return types.void(acc, types.intp, a, types.intp, b, types.intp, width), codegen


def _options(parallel: bool) -> dict:
    return dict(cache=True, nogil=True, parallel=parallel, fastmath=set(FASTMATH))


@functools.lru_cache(maxsize=None)
def csr_kernel(batched: bool, parallel: bool):
    """The compiled CSR kernel ``(data, indices, indptr, x, y, bias, relu)``,
    unchecked; ``bias`` has n_out entries or none."""
    tag = ("csr", batched, parallel)  # a closure cell: numba's disk cache keys on it

    if not batched:
        @njit(**_options(parallel))
        def csr_mv(data, indices, indptr, x, y, bias, relu):
            _ = tag
            for i in prange(indptr.shape[0] - 1):
                j, j1 = _U(indptr[i]), _U(indptr[i + 1])
                s0 = s1 = s2 = s3 = np.float32(0.0)
                while j + _U(4) <= j1:
                    s0 += data[j] * x[_U(indices[j])]
                    s1 += data[j + _U(1)] * x[_U(indices[j + _U(1)])]
                    s2 += data[j + _U(2)] * x[_U(indices[j + _U(2)])]
                    s3 += data[j + _U(3)] * x[_U(indices[j + _U(3)])]
                    j += _U(4)
                while j < j1:
                    s0 += data[j] * x[_U(indices[j])]
                    j += _U(1)
                v = (s0 + s1) + (s2 + s3) + (bias[i] if bias.shape[0] > 0 else np.float32(0.0))
                y[i] = np.float32(0.0) if relu and v < 0 else v

        return csr_mv

    @njit(**_options(parallel))
    def csr_mm(data, indices, indptr, x, y, bias, relu):
        _ = tag
        B = x.shape[1]
        for i in prange(indptr.shape[0] - 1):
            _fill_rows(y, i, 1, bias)
            j, j1 = _U(indptr[i]), _U(indptr[i + 1])
            while j + _U(4) <= j1:  # four stored entries per pass over the batch
                a0, a1, a2, a3 = data[j], data[j + _U(1)], data[j + _U(2)], data[j + _U(3)]
                c0, c1, c2, c3 = _U(indices[j]), _U(indices[j + _U(1)]), _U(indices[j + _U(2)]), _U(indices[j + _U(3)])
                for b in range(B):
                    s = y[i, b]
                    s += a0 * x[c0, b]
                    s += a1 * x[c1, b]
                    s += a2 * x[c2, b]
                    s += a3 * x[c3, b]
                    y[i, b] = s
                j += _U(4)
            while j < j1:
                a, c = data[j], _U(indices[j])
                for b in range(B):
                    y[i, b] += a * x[c, b]
                j += _U(1)
            if relu:
                _relu_rows(y, i, 1)

    return csr_mm


@functools.lru_cache(maxsize=None)
def bsr_kernel(k: int, batched: bool, parallel: bool):
    """The compiled BSR kernel for block size k, ``(data, indices, indptr, x, y,
    bias, relu)``, unchecked; ``data`` is (nnzb, k, k).  k = 1 is the CSR kernel,
    which takes ``data.reshape(-1)``."""
    K = _check_k(k)
    if K == 1:
        return csr_kernel(batched, parallel)
    KU, KK = _U(K), K * K
    tag = ("bsr", K, batched, parallel)

    if not batched:
        @njit(**_options(parallel))
        def bsr_mv(data, indices, indptr, x, y, bias, relu):
            _ = tag
            n_in, n_out = _U(x.shape[0]), y.shape[0]
            flat = data.reshape(data.shape[0] * KK)
            for i in prange(indptr.shape[0] - 1):
                acc = numba.carray(_stack_f32(KK), (KK,))  # row r of the block row: lanes acc[r*k : r*k+k]
                xs = numba.carray(_stack_f32(K), (K,))
                for t in range(KK):
                    acc[t] = 0.0
                for j in range(_U(indptr[i]), _U(indptr[i + 1])):
                    c = _U(indices[j]) * KU
                    if c + KU <= n_in:
                        for r in range(K):
                            _vfma(acc, r * K, flat, j * KU * KU + _U(r * K), x, c, K)
                    else:  # edge block: the missing columns of x read as 0 (they meet the zero padding)
                        for cc in range(K):
                            xs[cc] = x[c + _U(cc)] if c + _U(cc) < n_in else np.float32(0.0)
                        for r in range(K):  # (one call site per source: a select between x and xs costs 2x)
                            _vfma(acc, r * K, flat, j * KU * KU + _U(r * K), xs, 0, K)
                row0 = i * K
                for r in range(K):
                    if row0 + r < n_out:
                        v = bias[row0 + r] if bias.shape[0] > 0 else np.float32(0.0)
                        for t in range(K):
                            v += acc[r * K + t]
                        y[row0 + r] = np.float32(0.0) if relu and v < 0 else v

        return bsr_mv

    RR = K if K <= 6 else 1  # output rows per pass sharing the loads of x

    @njit(**_options(parallel))
    def bsr_mm(data, indices, indptr, x, y, bias, relu):
        _ = tag
        n_in, n_out, B = _U(x.shape[0]), y.shape[0], x.shape[1]
        for i in prange(indptr.shape[0] - 1):
            av = numba.carray(_stack_f32(KK), (K, K))  # the block and x's k rows in registers: LLVM need not
            xs = numba.carray(_stack_f32(K), (K,))  # reload them after each store to y (possible aliasing)
            row0 = i * K
            nr = min(K, n_out - row0)
            _fill_rows(y, row0, nr, bias)
            for j in range(_U(indptr[i]), _U(indptr[i + 1])):
                c = _U(indices[j]) * KU
                if nr == K and c + KU <= n_in:
                    for r in range(K):
                        for cc in range(K):
                            av[r, cc] = data[j, r, cc]
                    for r0 in range(0, K, RR):  # one pass over the batch, x loaded once for RR rows
                        for b in range(B):
                            for cc in range(K):
                                xs[cc] = x[c + _U(cc), b]
                            for rr in range(RR):
                                ru = _U(row0 + r0 + rr)
                                s = y[ru, b]
                                for cc in range(K):
                                    s += av[r0 + rr, cc] * xs[cc]
                                y[ru, b] = s
                else:  # edge block: only the rows and columns that exist
                    for r in range(nr):
                        for cc in range(min(KU, n_in - c)):
                            a = data[j, r, cc]
                            for b in range(B):
                                y[row0 + r, b] += a * x[c + cc, b]
            if relu:
                _relu_rows(y, row0, nr)

    return bsr_mm


@njit(cache=True, nogil=True)
def _fill_rows(y, row0, nr, bias):
    for r in range(row0, row0 + nr):
        v = bias[r] if bias.shape[0] > 0 else np.float32(0.0)
        for b in range(y.shape[1]):
            y[r, b] = v


@njit(cache=True, nogil=True)
def _relu_rows(y, row0, nr):
    for r in range(row0, row0 + nr):
        for b in range(y.shape[1]):
            v = y[r, b]  # "+ 0": storing v itself lets LLVM emit a masked store (microcoded on AMD)
            y[r, b] = np.float32(0.0) if v < 0 else v + np.float32(0.0)


def _check_k(k) -> int:
    k = check_block_size(k)
    if k > MAX_K:
        raise ValueError(f"block size k={k} is out of range: the numba kernels are compiled for 1 <= k <= {MAX_K}")
    return k


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
    kernel(data.reshape(-1) if k == 1 else data, indices, indptr, x, y, _EMPTY if bias is None else bias, bool(relu))
    return y


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
