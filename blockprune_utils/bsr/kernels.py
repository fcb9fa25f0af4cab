"""Block-sparse (BSR) and CSR x dense product kernels compiled with numba.

Both formats are written in the same style, so that timing one against the
other compares the formats and not the effort spent on each:

* values float32, ``indices``/``indptr`` int32 (as :func:`bsr_arrays` and
  :func:`to_scipy_csr` build them), everything C-contiguous;
* ``x`` is ``(n_in,)`` (matrix-vector) or ``(n_in, batch)``, the (features,
  batch) layout of ``LeanMLP``: in the batched kernels the innermost loop runs
  over the contiguous batch dimension, which LLVM vectorises;
* the kernels **overwrite** ``y``: ``y = W @ x (+ bias)``, optionally followed
  by ReLU (NaN is kept, like ``torch.relu``);
* indices are used unsigned inside the loops, which removes numpy's negative
  index wrap-around from every access (measured: about 1.4x on a
  matrix-vector product); the checks of the public functions guarantee them
  in range.

The batched kernels stream each output row over the batch once per stored
block (BSR: the k products of one block row are summed in registers and added
to y, so y is loaded and stored once per k products) or once per four stored
entries (CSR: four entries of a row per pass, the same reduction of y traffic).
The matrix-vector kernels keep a block row's k sums (BSR) or four partial sums
of a row (CSR) in registers.  The block size k is a compile-time constant:
one kernel is compiled (and cached on disk, ``cache=True``) per k, so the
k x k loops are unrolled.  k = 1 uses the CSR kernels on the 1 x 1 blocks.

Rounding: products are contracted into FMAs (``fastmath={"contract"}``, one
rounding instead of two) and sums are grouped per block / per four entries,
a reassociation of the dense order; the results agree with a float64 product
to float32 rounding.  No other fast-math flag is used (NaN/inf propagate).

BSR shapes need not be multiples of k: the logical matrix is (y.shape[0],
x.shape[0]); the zero-padded edge blocks are stored in full but the kernels
never read x nor write y beyond those shapes (padded x / y work as well).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

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


def _options(parallel: bool) -> dict:
    return dict(cache=True, nogil=True, parallel=parallel, fastmath=set(FASTMATH))


@functools.lru_cache(maxsize=None)
def csr_kernel(batched: bool, parallel: bool):
    """The compiled CSR kernel ``(data, indices, indptr, x, y, bias, relu)``,
    unchecked: ``bias`` has n_out entries or none."""
    tag = ("csr", batched, parallel)  # a closure cell: numba's disk cache keys on it

    if not batched:
        @njit(**_options(parallel))
        def csr_mv(data, indices, indptr, x, y, bias, relu):
            _ = tag
            has_bias = bias.shape[0] > 0
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
                v = (s0 + s1) + (s2 + s3)
                if has_bias:
                    v += bias[i]
                if relu and v < 0:
                    v = np.float32(0.0)
                y[i] = v

        return csr_mv

    @njit(**_options(parallel))
    def csr_mm(data, indices, indptr, x, y, bias, relu):
        _ = tag
        has_bias = bias.shape[0] > 0
        B = x.shape[1]
        for i in prange(indptr.shape[0] - 1):
            v0 = bias[i] if has_bias else np.float32(0.0)
            for b in range(B):
                y[i, b] = v0
            j, j1 = _U(indptr[i]), _U(indptr[i + 1])
            while j + _U(4) <= j1:  # four stored entries per pass over the batch
                a0, a1, a2, a3 = data[j], data[j + _U(1)], data[j + _U(2)], data[j + _U(3)]
                c0, c1 = _U(indices[j]), _U(indices[j + _U(1)])
                c2, c3 = _U(indices[j + _U(2)]), _U(indices[j + _U(3)])
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
                for b in range(B):
                    if y[i, b] < 0:
                        y[i, b] = 0.0

    return csr_mm


@functools.lru_cache(maxsize=None)
def bsr_kernel(k: int, batched: bool, parallel: bool):
    """The compiled BSR kernel for block size k, ``(data, indices, indptr, x, y,
    bias, relu)``, unchecked; ``data`` is (nnzb, k, k).  k = 1 is the CSR kernel,
    which takes ``data.reshape(-1)``."""
    K = _check_k(k)
    if K == 1:
        return csr_kernel(batched, parallel)
    KU = _U(K)
    tag = ("bsr", K, batched, parallel)

    if not batched:
        @njit(**_options(parallel))
        def bsr_mv(data, indices, indptr, x, y, bias, relu):
            _ = tag
            n_in, n_out, has_bias = _U(x.shape[0]), y.shape[0], bias.shape[0] > 0
            for i in prange(indptr.shape[0] - 1):
                acc = numba.carray(_stack_f32(K), (K,))
                xs = numba.carray(_stack_f32(K), (K,))
                for r in range(K):
                    acc[r] = 0.0
                for j in range(_U(indptr[i]), _U(indptr[i + 1])):
                    c = _U(indices[j]) * KU
                    if c + KU <= n_in:
                        for r in range(K):
                            s = data[j, r, 0] * x[c]
                            for cc in range(1, K):
                                s += data[j, r, cc] * x[c + _U(cc)]
                            acc[r] += s
                    else:  # edge block: the missing columns of x read as 0 (they meet the zero padding)
                        for cc in range(K):
                            xs[cc] = x[c + _U(cc)] if c + _U(cc) < n_in else np.float32(0.0)
                        for r in range(K):
                            s = data[j, r, 0] * xs[0]
                            for cc in range(1, K):
                                s += data[j, r, cc] * xs[cc]
                            acc[r] += s
                row0 = i * K
                for r in range(K):
                    if row0 + r < n_out:
                        v = acc[r] + bias[row0 + r] if has_bias else acc[r]
                        if relu and v < 0:
                            v = np.float32(0.0)
                        y[row0 + r] = v

        return bsr_mv

    @njit(**_options(parallel))
    def bsr_mm(data, indices, indptr, x, y, bias, relu):
        _ = tag
        n_in, n_out, has_bias = _U(x.shape[0]), y.shape[0], bias.shape[0] > 0
        B = x.shape[1]
        for i in prange(indptr.shape[0] - 1):
            row0 = i * K
            nr = min(K, n_out - row0)
            for r in range(nr):
                v0 = bias[row0 + r] if has_bias else np.float32(0.0)
                for b in range(B):
                    y[row0 + r, b] = v0
            for j in range(_U(indptr[i]), _U(indptr[i + 1])):
                c = _U(indices[j]) * KU
                if nr == K and c + KU <= n_in:
                    for r in range(K):  # one pass over the batch per block row: k products summed
                        ru = _U(row0 + r)
                        for b in range(B):
                            s = y[ru, b]
                            for cc in range(K):
                                s += data[j, r, cc] * x[c + _U(cc), b]
                            y[ru, b] = s
                else:  # edge block: only the rows and columns that exist
                    for r in range(nr):
                        for cc in range(min(KU, n_in - c)):
                            a = data[j, r, cc]
                            for b in range(B):
                                y[row0 + r, b] += a * x[c + cc, b]
            if relu:
                for r in range(nr):
                    for b in range(B):
                        if y[row0 + r, b] < 0:
                            y[row0 + r, b] = 0.0

    return bsr_mm


def layer_product(code, data, indices, indptr, x, y, bias, relu):
    """Run a kernel from numba-compiled code, chosen at compile time by the literal
    ``code = k + 16 * parallel`` (k = 1: CSR, ``data`` 1-D) and by ``x.ndim``.
    Referring to the kernels through this overload, rather than holding their
    dispatchers in closures, keeps numba's disk cache keys deterministic."""
    raise TypeError("layer_product can only be called from numba-compiled code")


@overload(layer_product, prefer_literal=True)
def _layer_product(code, data, indices, indptr, x, y, bias, relu):
    if not isinstance(code, types.IntegerLiteral):
        return None
    k, parallel = code.literal_value % 16, code.literal_value >= 16
    kernel = bsr_kernel(k, x.ndim == 2, parallel)

    def impl(code, data, indices, indptr, x, y, bias, relu):
        kernel(data, indices, indptr, x, y, bias, relu)

    return impl


def _check_k(k) -> int:
    k = check_block_size(k)
    if k > MAX_K:
        raise ValueError(f"block size k={k} is out of range: the numba kernels are compiled for 1 <= k <= {MAX_K}")
    return k


def _check_array(a, name: str, dtype, ndims) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimension(s), got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} of shape {a.shape} must be C-contiguous (use np.ascontiguousarray)")
    return a


def _check_operands(data, indices, indptr, k, x, y, bias, check_indices):
    _check_array(data, "data", np.float32, (3,) if k else (1,))
    _check_array(indices, "indices", INDEX_DTYPE, (1,))
    _check_array(indptr, "indptr", INDEX_DTYPE, (1,))
    _check_array(x, "x", np.float32, (1, 2))
    _check_array(y, "y", np.float32, (x.ndim,))
    if not y.flags.writeable:
        raise ValueError("y is read-only: the kernels write the product into it")
    if np.may_share_memory(x, y):
        raise ValueError("x and y overlap: the kernels need a separate output")
    kk = k or 1
    if k and data.shape[1:] != (k, k):
        raise ValueError(f"data of shape {data.shape} does not hold {k} x {k} blocks (k={k})")
    if x.ndim == 2 and x.shape[1] != y.shape[1]:
        raise ValueError(f"x of shape {x.shape} and y of shape {y.shape} have different batch sizes")
    rows, cols = block_grid((y.shape[0], x.shape[0]), kk)
    if indptr.shape[0] != rows + 1:
        raise ValueError(f"indptr has {indptr.shape[0]} entries, but y of shape {y.shape} needs {rows + 1} (k={kk})")
    if indices.shape[0] != data.shape[0]:
        raise ValueError(f"indices has {indices.shape[0]} entries but data holds {data.shape[0]}")
    if bias is not None:
        _check_array(bias, "bias", np.float32, (1,))
        if bias.shape[0] != y.shape[0]:
            raise ValueError(f"bias has {bias.shape[0]} entries, y has {y.shape[0]} rows")
    if check_indices:
        if indptr[0] != 0 or indptr[-1] != indices.shape[0] or (np.diff(indptr) < 0).any():
            raise ValueError(f"indptr must rise from 0 to {indices.shape[0]}, got {indptr}")
        if indices.size and (indices.min() < 0 or indices.max() >= cols):
            bad = indices[(indices < 0) | (indices >= cols)][0]
            raise ValueError(f"column index {bad} is out of range for x with {x.shape[0]} rows ({cols} block columns, k={kk})")


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
    _check_operands(data, indices, indptr, 0, x, y, bias, check)
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

    def matmul(self, x, y, parallel=False, *, bias=None, relu=False, check=True):
        """``y = W @ x (+ bias)`` with this weight (see :func:`bsr_matmul`); returns y."""
        if x.shape[0] != self.shape[1] or y.shape[0] != self.shape[0]:
            raise ValueError(f"x of shape {x.shape} and y of shape {y.shape} do not fit a {self.shape} weight")
        if self.fmt == "csr":
            return csr_matmul(self.data, self.indices, self.indptr, x, y, parallel, bias=bias, relu=relu, check=check)
        return bsr_matmul(self.data, self.indices, self.indptr, self.k, x, y, parallel, bias=bias, relu=relu, check=check)


def kernel_arrays(weight, k: int = 1, fmt: str = "bsr", block_mask=None) -> KernelArrays:
    """The float32 / int32 arrays the kernels take, from a torch weight (out, in).

    ``bsr``: the blocks of ``block_mask`` (default: the blocks holding a
    non-zero), zero-padded to k x k; ``csr``: the non-zeros (k is ignored)."""
    import torch

    if fmt not in FORMATS:
        raise ValueError(f"unknown kernel format {fmt!r}; choose one of {FORMATS}")
    weight = as_matrix(torch.as_tensor(weight)).detach().cpu()
    if fmt == "csr":
        m = to_scipy_csr(weight)
        return KernelArrays("csr", 1, np.ascontiguousarray(m.data, np.float32), np.ascontiguousarray(m.indices, INDEX_DTYPE),
                            np.ascontiguousarray(m.indptr, INDEX_DTYPE), tuple(m.shape))
    k = _check_k(k)
    data, indices, indptr, _ = bsr_arrays(weight, k, block_mask)
    return KernelArrays("bsr", k, np.ascontiguousarray(data, np.float32).reshape(-1, k, k), np.ascontiguousarray(indices),
                        np.ascontiguousarray(indptr), tuple(weight.shape))
