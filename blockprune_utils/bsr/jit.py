"""The compiled (numba) BSR and CSR x dense product kernels, without argument checks.

This module imports only numpy, numba and llvmlite (no torch, nothing of the
package), so that a process that only runs the kernels - the cachegrind driver of
the benchmark - can load it by its file path.  :mod:`.kernels` is the checked
public interface; its docstring describes the kernels' conventions and loops.

Shared conventions: float32 values, int32 ``indices``/``indptr``, C-contiguous
operands; ``x`` is (n_in,) or (n_in, batch) - the (features, batch) layout; the
kernels **overwrite** ``y`` with ``W @ x (+ bias)``, then ReLU if asked.  For
k <= SMALL_K, k is a compile-time constant: one kernel per (k, batched, parallel),
compiled on first use and cached on disk (``cache=True``); for larger k (up to MAX_K)
:func:`.kernels.bsr_kernel` picks the kernels of :mod:`.train_kernels`, which take k
at run time.
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

MAX_K = 64  # largest block size of the kernels
SMALL_K = 8  # largest block size with a kernel compiled for it; larger ones run the kernels of .train_kernels
FASTMATH = frozenset({"contract"})
_U = np.uint64


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


def _mode(parallel: bool) -> str:
    return "parallel" if parallel else "serial"


def unique_jit(fn, name: str, **options):
    """``njit(**options)(fn)`` with ``fn`` renamed to ``name``, a name unique to the
    compiled variant.  numba names the machine code after the function's qualified
    name and a per-process counter; closures of one factory all share a qualified
    name, so a variant loaded from the disk cache (named in another process) could
    carry the very symbol of a different variant compiled in this one, and a call
    from cached code could bind to the wrong variant.  Distinct names rule that out."""
    fn.__name__ = fn.__qualname__ = name
    return njit(**options)(fn)


@functools.lru_cache(maxsize=None)
def csr_kernel(batched: bool, parallel: bool):
    """The compiled CSR kernel ``(data, indices, indptr, x, y, bias, relu)``,
    unchecked; ``bias`` has n_out entries or none."""
    tag = ("csr", batched, parallel)  # a closure cell: numba's disk cache keys on it

    if not batched:
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

        return unique_jit(csr_mv, f"csr_mv_{_mode(parallel)}", **_options(parallel))

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

    return unique_jit(csr_mm, f"csr_mm_{_mode(parallel)}", **_options(parallel))


@functools.lru_cache(maxsize=None)
def bsr_kernel(k: int, batched: bool, parallel: bool):
    """The compiled BSR kernel for block size k <= SMALL_K, ``(data, indices, indptr,
    x, y, bias, relu)``, unchecked; ``data`` is (nnzb, k, k).  k = 1 is the CSR
    kernel, which takes ``data.reshape(-1)``.  Larger k: :func:`.kernels.bsr_kernel`."""
    K = check_k(k)
    if K == 1:
        return csr_kernel(batched, parallel)
    if K > SMALL_K:
        raise ValueError(f"k={k} has no kernel compiled for it here (k <= {SMALL_K}); "
                         f"blockprune_utils.bsr.kernels.bsr_kernel serves every k up to {MAX_K}")
    KU, KK = _U(K), K * K
    tag = ("bsr", K, batched, parallel)

    if not batched:
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

        return unique_jit(bsr_mv, f"bsr_mv_k{K}_{_mode(parallel)}", **_options(parallel))

    RR = K if K <= 6 else 1  # output rows per pass sharing the loads of x

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

    return unique_jit(bsr_mm, f"bsr_mm_k{K}_{_mode(parallel)}", **_options(parallel))


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


def check_k(k) -> int:
    """k as an int when the kernels are compiled for it (1 <= k <= MAX_K), else a ValueError."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"block size k={k!r} is out of range: the numba kernels are compiled for 1 <= k <= {MAX_K}")
    return int(k)
