"""Compiled (numba) block-sparse kernels of a training step, for any block size k.

For a weight W (n_out, n_in) stored as k x k blocks (BSR: ``data`` (nnzb, k, k),
int32 ``indices`` / ``indptr``) or as single entries (CSR: k = 1, ``data``
(nnz,)), in the (features, batch) layout of activations (``x`` (n_in, B), ``y``
(n_out, B), float32, C-contiguous, the batch innermost and contiguous):

- :func:`block_apply_kernel` - ``y = A x (+ bias)`` where A is W (the forward
  product) or W^T (the input gradient ``dx = W^T dy``), its blocks visited in the
  order of a block-row structure and read through a permutation with any row /
  column stride: W^T is W's blocks, transposed, in the order of W's block columns
  (:func:`transposed_structure`), so both products write whole rows of their
  output per block row and split over threads without races;
- :func:`block_grad_kernel` / :func:`csr_grad_kernel` - the weight gradient at
  the stored blocks only, ``g[p] = dy[rows of p] x[cols of p]^T``, i.e. ``dy x^T``
  sampled at the live blocks (the dense product is never formed).

The batch is cut into chunks of 16 samples; per stored block, every chunk keeps 4
rows of y in vector registers while the block's columns go by
(:func:`.vec.rows_axpy`), and the weight gradient keeps 4 x 2 dot products in
registers (:func:`.vec.dot_tile`); leftover rows, columns and samples run in the
same loops with fewer accumulators or in plain loops.  k is a run-time value (one
compiled kernel per direction and threading serves every k), and blocks on the
matrix's edges - shapes that k does not divide - touch only the real rows and
columns (the padding of ``data`` is written as 0 by the gradient).  Products are
FMAs in a fixed order: results agree with a float64 product to float32
rounding.  Like :mod:`.jit` it imports no torch.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
from numba import njit, prange

from .jit import FASTMATH, unique_jit
from .vec import LANES, dot_tile, rows_axpy

CHUNK = 16  # samples per vector accumulator of the products
# the kernels inline the intrinsics of .vec: a change there must invalidate their disk cache too (a closure cell)
_VEC = hashlib.sha256(Path(__file__).with_name("vec.py").read_bytes()).hexdigest()[:16]
ROWS = 4  # rows of y (or of g) per register tile


def _options(parallel: bool) -> dict:
    return dict(cache=True, nogil=True, parallel=parallel, fastmath=set(FASTMATH))


def transposed_structure(indices: np.ndarray, indptr: np.ndarray, n_block_cols: int):
    """(indices, indptr, perm) of W^T's block-row structure: block column j of W
    holds, in order of block row, the blocks ``perm[indptrT[j]:indptrT[j+1]]`` of W,
    which sit in block rows ``indicesT[...]``."""
    indices = np.asarray(indices)
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int32), np.diff(indptr))
    perm = np.argsort(indices, kind="stable").astype(np.int32)
    ptr = np.zeros(n_block_cols + 1, np.int32)
    np.cumsum(np.bincount(indices, minlength=n_block_cols), out=ptr[1:])
    return np.ascontiguousarray(rows[perm], np.int32), ptr, perm


@njit(inline="always")
def _operands(blocks, x, y, step):
    """(k, n_in, n_out, B, the first B - B % step samples (those the vector loops take),
    flat views of the blocks (nnzb, k, k), of x (n_in, B) and of y (n_out, B))."""
    B = x.shape[1]
    return (blocks.shape[1], x.shape[0], y.shape[0], B, B - B % step,
            blocks.reshape(blocks.size), x.reshape(x.size), y.reshape(y.size))


@njit(inline="always")
def _span(i, K, n):
    """(first index, length) of block i of size K along an axis of n entries (the last block may be cut short)."""
    start = np.int64(i) * K
    return start, min(K, n - start)


@njit(inline="always")
def _grad_tile(gf, o, K, dyf, yo, xf, xo, B, rr, CC):
    """``gf[o + q*K + c] = dy row q . x row c`` (flat dy rows from ``yo``, x rows from
    ``xo``, both with stride B) over the first B - B % 8 samples, for q < rr <= ROWS and
    c < CC (literal): one ROWS x CC register tile when rr == ROWS, else row by row."""
    if rr == ROWS:
        dot_tile(gf, o, K, 1, dyf, yo, B, xf, xo, B, B, ROWS, CC)
    else:
        for q in range(rr):
            dot_tile(gf, o + q * K, K, 1, dyf, yo + q * B, B, xf, xo, B, B, 1, CC)


@functools.lru_cache(maxsize=None)
def block_apply_kernel(parallel: bool):
    """The compiled ``(data, ar, ac, indices, indptr, perm, x, y, bias, relu)``: for
    every block row i, ``y[i*k : i*k+k] = bias + sum_p A_p x[indices[p]*k : +k]``
    over p in ``indptr[i]:indptr[i+1]`` (then ReLU if ``relu``), where A_p is block
    ``perm[p]`` of ``data`` (nnzb, k, k; an empty ``perm``: block p) read as
    ``A[r, c] = data[perm[p]].flat[r*ar + c*ac]`` (``ar, ac = k, 1``: the block;
    ``1, k``: its transpose).  ``bias``: n_out entries or none."""
    tag = ("block_apply", parallel, _VEC)

    def block_apply(data, ar, ac, indices, indptr, perm, x, y, bias, relu):
        _ = tag
        K, n_in, n_out, B, BW, flat, xf, yf = _operands(data, x, y, CHUNK)
        KK = K * K
        for i in prange(indptr.shape[0] - 1):
            row0, nr = _span(i, K, n_out)
            for r in range(row0, row0 + nr):
                v = bias[r] if bias.shape[0] > 0 else np.float32(0.0)
                for b in range(B):
                    y[r, b] = v
            for p in range(indptr[i], indptr[i + 1]):
                base = (np.int64(perm[p]) if perm.shape[0] > 0 else np.int64(p)) * KK
                c0, nc = _span(indices[p], K, n_in)
                for b0 in range(0, BW, CHUNK):  # x's chunk (nc rows of 16 samples) stays in L1 for every row tile
                    r = 0
                    while r + ROWS <= nr:
                        rows_axpy(yf, (row0 + r) * B + b0, B, flat, base + r * ar, ar, ac, xf, c0 * B + b0, B, nc, ROWS, CHUNK)
                        r += ROWS
                    while r < nr:
                        rows_axpy(yf, (row0 + r) * B + b0, B, flat, base + r * ar, ar, ac, xf, c0 * B + b0, B, nc, 1, CHUNK)
                        r += 1
                if BW < B:
                    for r in range(nr):
                        for c in range(nc):
                            a = flat[base + r * ar + c * ac]
                            for b in range(BW, B):
                                y[row0 + r, b] += a * x[c0 + c, b]
            if relu:
                for r in range(row0, row0 + nr):
                    for b in range(B):
                        v = y[r, b]  # "+ 0" as in .jit: no masked store
                        y[r, b] = np.float32(0.0) if v < 0 else v + np.float32(0.0)

    return unique_jit(block_apply, f"block_apply_{'parallel' if parallel else 'serial'}", **_options(parallel))


@functools.lru_cache(maxsize=None)
def block_grad_kernel(parallel: bool):
    """The compiled ``(dy, x, indices, indptr, g)``: ``g[p] = dy[i*k : i*k+k] @
    x[j*k : j*k+k].T`` for every stored block p at (block row i, block column
    j = indices[p]), over the batch; ``g`` (nnzb, k, k) is overwritten (entries
    beyond the matrix's edge: 0)."""
    tag = ("block_grad", parallel, _VEC)

    def block_grad(dy, x, indices, indptr, g):
        _ = tag
        K, n_in, n_out, B, B8, gf, xf, dyf = _operands(g, x, dy, LANES)
        KK = K * K
        for i in prange(indptr.shape[0] - 1):
            row0, nr = _span(i, K, n_out)
            for p in range(indptr[i], indptr[i + 1]):
                base = np.int64(p) * KK
                c0, nc = _span(indices[p], K, n_in)
                if nr < K or nc < K:
                    for t in range(KK):
                        gf[base + t] = 0.0
                r = 0
                while r < nr:
                    rr = min(ROWS, nr - r)
                    c = 0
                    while c + 2 <= nc:
                        _grad_tile(gf, base + r * K + c, K, dyf, (row0 + r) * B, xf, (c0 + c) * B, B, rr, 2)
                        c += 2
                    if c < nc:
                        _grad_tile(gf, base + r * K + c, K, dyf, (row0 + r) * B, xf, (c0 + c) * B, B, rr, 1)
                    r += rr
                if B8 < B:
                    for r in range(nr):
                        for c in range(nc):
                            s = gf[base + r * K + c]
                            for b in range(B8, B):
                                s += dy[row0 + r, b] * x[c0 + c, b]
                            gf[base + r * K + c] = s

    return unique_jit(block_grad, f"block_grad_{'parallel' if parallel else 'serial'}", **_options(parallel))


@functools.lru_cache(maxsize=None)
def csr_grad_kernel(parallel: bool):
    """The compiled ``(dy, x, indices, indptr, g)``: ``g[p] = dy[i] . x[indices[p]]``
    over the batch for every stored entry p of row i (two entries of a row share
    the loads of dy's row); ``g`` (nnz,) is overwritten."""
    tag = ("csr_grad", parallel, _VEC)

    def csr_grad(dy, x, indices, indptr, g):
        _ = tag
        dyf, xf = dy.reshape(dy.size), x.reshape(x.size)
        B = x.shape[1]
        B8 = B - B % LANES
        for i in prange(indptr.shape[0] - 1):
            yo = np.int64(i) * B
            p = np.int64(indptr[i])
            p1 = np.int64(indptr[i + 1])
            while p + 2 <= p1:  # the second x row at a stride from the first
                j0, j1 = np.int64(indices[p]), np.int64(indices[p + 1])
                dot_tile(g, p, 0, 1, dyf, yo, 0, xf, j0 * B, (j1 - j0) * B, B, 1, 2)
                p += 2
            if p < p1:
                dot_tile(g, p, 0, 1, dyf, yo, 0, xf, np.int64(indices[p]) * B, 0, B, 1, 1)
            if B8 < B:
                for q in range(indptr[i], indptr[i + 1]):
                    s = g[q]
                    j = indices[q]
                    for b in range(B8, B):
                        s += dy[i, b] * x[j, b]
                    g[q] = s

    return unique_jit(csr_grad, f"csr_grad_{'parallel' if parallel else 'serial'}", **_options(parallel))


_NO_PERM = np.zeros(0, np.int32)
_apply_serial, _apply_parallel = block_apply_kernel(False), block_apply_kernel(True)


@njit(cache=True, nogil=True)
def wide_mm_serial(data, indices, indptr, x, y, bias, relu):
    """The forward product of :mod:`.jit`'s signature for k > 8: ``x`` (n_in, B)."""
    _apply_serial(data, data.shape[1], 1, indices, indptr, _NO_PERM, x, y, bias, relu)


@njit(cache=True, nogil=True)
def wide_mm_parallel(data, indices, indptr, x, y, bias, relu):
    _apply_parallel(data, data.shape[1], 1, indices, indptr, _NO_PERM, x, y, bias, relu)


@njit(cache=True, nogil=True)
def wide_mv_serial(data, indices, indptr, x, y, bias, relu):
    """As :func:`wide_mm_serial` for a single sample: ``x`` (n_in,)."""
    _apply_serial(data, data.shape[1], 1, indices, indptr, _NO_PERM, x.reshape((x.shape[0], 1)),
                  y.reshape((y.shape[0], 1)), bias, relu)


@njit(cache=True, nogil=True)
def wide_mv_parallel(data, indices, indptr, x, y, bias, relu):
    _apply_parallel(data, data.shape[1], 1, indices, indptr, _NO_PERM, x.reshape((x.shape[0], 1)),
                    y.reshape((y.shape[0], 1)), bias, relu)


def wide_kernel(batched: bool, parallel: bool):
    """The forward kernel ``(data, indices, indptr, x, y, bias, relu)`` of :mod:`.jit`'s
    conventions for any k (used there for k > 8)."""
    return {(False, False): wide_mv_serial, (False, True): wide_mv_parallel, (True, False): wide_mm_serial,
            (True, True): wide_mm_parallel}[bool(batched), bool(parallel)]
