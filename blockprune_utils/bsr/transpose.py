"""A vectorised transpose of 2-D float32 arrays for numba-compiled code.

numba does not vectorise a transpose by itself; :func:`transpose` moves 8 x 8
tiles with eight vector loads, 24 shuffles and eight vector stores
(:func:`_transpose8`), which the fused forward (:mod:`.fused`) uses to turn the
caller's (batch, features) rows into the kernels' (features, batch) layout and
back.  Like :mod:`.jit` it imports no torch.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_LO, _HI = (0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)  # unpacklo / unpackhi per 128-bit lane
_S0, _S1 = (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)  # pairs of pairs
_P0, _P1 = (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)  # 128-bit halves


def shuffle(builder, a, b, mask):
    """The LLVM shufflevector of ``a`` and ``b`` with a constant ``mask``."""
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(mask)), list(mask)))


def columns8(builder, rows):
    """The 8 columns (<8 x float> each) of 8 rows of 8 floats: 24 shuffles."""
    t = [shuffle(builder, rows[2 * p], rows[2 * p + 1], _LO if q == 0 else _HI) for p in range(4) for q in range(2)]
    u = [shuffle(builder, t[4 * h + q // 2], t[4 * h + q // 2 + 2], _S0 if q % 2 == 0 else _S1)
         for h in range(2) for q in range(4)]
    return [shuffle(builder, u[c % 4], u[c % 4 + 4], _P0 if c < 4 else _P1) for c in range(8)]


@intrinsic
def _transpose8(typingctx, a, i0, j0, out):
    """out[j0:j0+8, i0:i0+8] = a[i0:i0+8, j0:j0+8].T with eight vector loads, 24
    shuffles and eight vector stores (numba does not vectorise a transpose by itself)."""
    def codegen(context, builder, sig, args):
        arrays = [context.make_array(t)(context, builder, v) for t, v in ((sig.args[0], args[0]), (sig.args[3], args[3]))]
        vec = ir.VectorType(ir.FloatType(), 8)

        def ptr(which, r, c):
            arr, t = arrays[which], sig.args[0 if which == 0 else 3]
            p = cgutils.get_item_pointer2(context, builder, arr.data, cgutils.unpack_tuple(builder, arr.shape, 2),
                                          cgutils.unpack_tuple(builder, arr.strides, 2), t.layout, [r, c])
            return builder.bitcast(p, vec.as_pointer())

        i0, j0 = args[1], args[2]
        rows = [builder.load(ptr(0, builder.add(i0, i0.type(r)), j0), align=4, typ=vec) for r in range(8)]
        for c, o in enumerate(columns8(builder, rows)):
            builder.store(o, ptr(1, builder.add(j0, j0.type(c)), i0), align=4)
        return context.get_dummy_value()

    if not (isinstance(a, types.Array) and isinstance(out, types.Array) and a.ndim == out.ndim == 2
            and a.dtype == out.dtype == types.float32 and a.layout == out.layout == "C"):
        return None
    return types.void(a, types.intp, types.intp, out), codegen


@njit(cache=True, nogil=True)
def transpose(a, out):
    """out = a.T for 2-D float32 arrays: 8 x 8 tiles of C-contiguous arrays go
    through :func:`_transpose8`, column bands first so that reads stay in L1."""
    n, m = a.shape
    n8, m8 = n - n % 8, m - m % 8
    for j0 in range(0, m8, 8):
        for i0 in range(0, n8, 8):
            _transpose8(a, i0, j0, out)
    for j in range(m8, m):
        for i in range(n):
            out[j, i] = a[i, j]
    for j in range(m8):
        for i in range(n8, n):
            out[j, i] = a[i, j]
