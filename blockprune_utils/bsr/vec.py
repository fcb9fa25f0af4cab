"""Explicit vector loops for numba-compiled code: the inner products of the
training kernels (:mod:`.train_kernels`) spelt out as LLVM vector instructions.

numba leaves LLVM's SLP vectoriser off and vectorises a loop only when it is the
innermost one and free of reductions (no reassociation is allowed: only FMA
contraction), so the two register-blocked micro-kernels of a block product are
written here as intrinsics over flat float32 or float64 arrays (offsets and strides in
elements):

- :func:`rows_axpy`: ``RR`` rows of ``W`` samples of ``y`` kept in vector registers
  while ``nc`` columns of a small matrix ``A`` multiply ``nc`` rows of ``x``
  (``y[r, :W] += sum_c A[r, c] * x[c, :W]``) - the forward product and the input
  gradient, ``A`` read with any row / column stride (a block or its transpose);
- :func:`dot_tile`: ``RR x CC`` dot products of rows of ``dy`` and ``x`` over the
  first ``n - n % 8`` samples, 8 lanes per accumulator, summed across lanes at the
  end - the weight gradient at one block.

The arrays are float32 or float64 (one dtype per call).  Vector widths are LLVM's
generic ``<W x float>``: the backend splits them into
whatever the host has (for float32: two 8-lane registers on AVX2, one 16-lane on AVX-512), so
nothing depends on the instruction set.  Like :mod:`.jit` it imports no torch.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8  # lanes per accumulator of dot_tile


def _ptr(context, builder, arrty, arr, off, vec):
    data = context.make_array(arrty)(context, builder, arr).data
    p = builder.gep(data, [off])
    return builder.bitcast(p, vec.as_pointer()) if vec is not None else p


def _fma(builder, vec):
    w, bits = vec.count, 64 if isinstance(vec.element, ir.DoubleType) else 32
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fmuladd.v{w}f{bits}")


def _same_float(*arrays) -> bool:
    """All 1-D arrays of one float dtype (float32 or float64)."""
    return all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == arrays[0].dtype for a in arrays) and \
        arrays[0].dtype in (types.float32, types.float64)


def _splat(builder, value, vec):
    undef = ir.Constant(vec, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count))


def _literal(t):
    return t.literal_value if isinstance(t, types.IntegerLiteral) else None


@intrinsic
def rows_axpy(typingctx, y, yoff, ys, a, aoff, ar, ac, x, xoff, xs, nc, RR, W):
    """For r < RR: ``y[yoff + r*ys : +W] += sum_{c < nc} a[aoff + r*ar + c*ac] * x[xoff + c*xs : +W]``
    with the RR accumulators in registers (y, a, x: 1-D float32 arrays; RR, W literal)."""
    rr_, w_ = _literal(RR), _literal(W)
    if rr_ is None or w_ is None or not _same_float(y, a, x):
        return None

    def codegen(context, builder, sig, args):
        y_, yoff_, ys_, a_, aoff_, ar_, ac_, x_, xoff_, xs_, nc_ = args[:11]
        vec = ir.VectorType(context.get_data_type(sig.args[0].dtype), w_)
        fma = _fma(builder, vec)
        i64 = ir.IntType(64)
        accs = []
        for r in range(rr_):
            slot = cgutils.alloca_once(builder, vec)
            off = builder.add(yoff_, builder.mul(ys_, i64(r)))
            builder.store(builder.load(_ptr(context, builder, sig.args[0], y_, off, vec), align=4, typ=vec), slot)
            accs.append((slot, off))
        with cgutils.for_range(builder, nc_) as loop:
            c = loop.index
            xv = builder.load(_ptr(context, builder, sig.args[7], x_, builder.add(xoff_, builder.mul(c, xs_)), vec),
                              align=4, typ=vec)
            abase = builder.add(aoff_, builder.mul(c, ac_))
            for r, (slot, _) in enumerate(accs):
                av = builder.load(_ptr(context, builder, sig.args[3], a_, builder.add(abase, builder.mul(ar_, i64(r))), None))
                builder.store(builder.call(fma, [_splat(builder, av, vec), xv, builder.load(slot)]), slot)
        for slot, off in accs:
            builder.store(builder.load(slot), _ptr(context, builder, sig.args[0], y_, off, vec), align=4)
        return context.get_dummy_value()

    i = types.intp
    return types.void(y, i, i, a, i, i, i, x, i, i, i, RR, W), codegen


def _hsum(builder, v):
    """The sum of the lanes of v, pairwise (halves added until one lane is left)."""
    n = v.type.count
    while n > 1:
        h = n // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), h), list(range(h))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), h), list(range(h, n))))
        v, n = builder.fadd(lo, hi), h
    return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))


@intrinsic
def dot_tile(typingctx, g, goff, gr, gc, dy, dyoff, dys, x, xoff, xs, n, RR, CC):
    """For r < RR, c < CC: ``g[goff + r*gr + c*gc] = sum_{b < n - n % 8} dy[dyoff + r*dys + b] *
    x[xoff + c*xs + b]`` (overwrites g; the caller adds the last n % 8 samples), RR*CC
    accumulators of 8 lanes in registers (RR, CC literal)."""
    rr_, cc_ = _literal(RR), _literal(CC)
    if rr_ is None or cc_ is None or not _same_float(g, dy, x):
        return None

    def codegen(context, builder, sig, args):
        g_, goff_, gr_, gc_, dy_, dyoff_, dys_, x_, xoff_, xs_, n_ = args[:11]
        vec = ir.VectorType(context.get_data_type(sig.args[0].dtype), LANES)
        fma = _fma(builder, vec)
        i64 = ir.IntType(64)
        slots = [[cgutils.alloca_once(builder, vec) for _ in range(cc_)] for _ in range(rr_)]
        zero = ir.Constant(vec, [0.0] * LANES)
        for row in slots:
            for s in row:
                builder.store(zero, s)
        steps = builder.udiv(n_, i64(LANES))
        with cgutils.for_range(builder, steps) as loop:
            b = builder.mul(loop.index, i64(LANES))
            def row(n, arr, off, stride, r):
                p = _ptr(context, builder, sig.args[n], arr, builder.add(builder.add(off, builder.mul(stride, i64(r))), b), vec)
                return builder.load(p, align=4, typ=vec)

            dv = [row(4, dy_, dyoff_, dys_, r) for r in range(rr_)]
            xv = [row(7, x_, xoff_, xs_, c) for c in range(cc_)]
            for r in range(rr_):
                for c in range(cc_):
                    s = slots[r][c]
                    builder.store(builder.call(fma, [dv[r], xv[c], builder.load(s)]), s)
        for r in range(rr_):
            for c in range(cc_):
                off = builder.add(goff_, builder.add(builder.mul(gr_, i64(r)), builder.mul(gc_, i64(c))))
                builder.store(_hsum(builder, builder.load(slots[r][c])), _ptr(context, builder, sig.args[0], g_, off, None))
        return context.get_dummy_value()

    i = types.intp
    return types.void(g, i, i, i, dy, i, i, x, i, i, i, RR, CC), codegen
