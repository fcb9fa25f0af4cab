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
_I64 = ir.IntType(64)  # the intp of the offsets and strides


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


def _vector_op(args, arrays, m, n, width, emit):
    """The typing of a vector intrinsic ``op(*args, m, n)``: None unless the ``args``
    at the positions ``arrays`` are 1-D arrays of one float dtype and ``m``, ``n``
    integer literals; else its signature (void; the other ``args`` as intp) and a
    codegen that calls ``emit(context, builder, sig, values, vec, fma, m, n)`` with
    the run-time ``values`` of ``args``, ``vec`` the vector type of ``width(m, n)``
    lanes of the arrays' dtype and ``fma`` its fused multiply-add, m and n as ints."""
    m_, n_ = _literal(m), _literal(n)
    if m_ is None or n_ is None or not _same_float(*(args[i] for i in arrays)):
        return None

    def codegen(context, builder, sig, values):
        vec = ir.VectorType(context.get_data_type(sig.args[arrays[0]].dtype), width(m_, n_))
        emit(context, builder, sig, values[:len(args)], vec, _fma(builder, vec), m_, n_)
        return context.get_dummy_value()

    return types.void(*(a if i in arrays else types.intp for i, a in enumerate(args)), m, n), codegen


@intrinsic
def rows_axpy(typingctx, y, yoff, ys, a, aoff, ar, ac, x, xoff, xs, nc, RR, W):
    """For r < RR: ``y[yoff + r*ys : +W] += sum_{c < nc} a[aoff + r*ar + c*ac] * x[xoff + c*xs : +W]``
    with the RR accumulators in registers (y, a, x: 1-D float32 arrays; RR, W literal)."""
    def emit(context, builder, sig, values, vec, fma, rr_, w_):
        y_, yoff_, ys_, a_, aoff_, ar_, ac_, x_, xoff_, xs_, nc_ = values
        accs = []
        for r in range(rr_):
            slot = cgutils.alloca_once(builder, vec)
            off = builder.add(yoff_, builder.mul(ys_, _I64(r)))
            builder.store(builder.load(_ptr(context, builder, sig.args[0], y_, off, vec), align=4, typ=vec), slot)
            accs.append((slot, off))
        with cgutils.for_range(builder, nc_) as loop:
            c = loop.index
            xv = builder.load(_ptr(context, builder, sig.args[7], x_, builder.add(xoff_, builder.mul(c, xs_)), vec),
                              align=4, typ=vec)
            abase = builder.add(aoff_, builder.mul(c, ac_))
            for r, (slot, _) in enumerate(accs):
                av = builder.load(_ptr(context, builder, sig.args[3], a_, builder.add(abase, builder.mul(ar_, _I64(r))), None))
                builder.store(builder.call(fma, [_splat(builder, av, vec), xv, builder.load(slot)]), slot)
        for slot, off in accs:
            builder.store(builder.load(slot), _ptr(context, builder, sig.args[0], y_, off, vec), align=4)

    return _vector_op((y, yoff, ys, a, aoff, ar, ac, x, xoff, xs, nc), (0, 3, 7), RR, W, lambda rr_, w_: w_, emit)


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
    def emit(context, builder, sig, values, vec, fma, rr_, cc_):
        g_, goff_, gr_, gc_, dy_, dyoff_, dys_, x_, xoff_, xs_, n_ = values
        slots = [[cgutils.alloca_once(builder, vec) for _ in range(cc_)] for _ in range(rr_)]
        zero = ir.Constant(vec, [0.0] * LANES)
        for row in slots:
            for s in row:
                builder.store(zero, s)
        steps = builder.udiv(n_, _I64(LANES))
        with cgutils.for_range(builder, steps) as loop:
            b = builder.mul(loop.index, _I64(LANES))
            def row(n, arr, off, stride, r):
                p = _ptr(context, builder, sig.args[n], arr, builder.add(builder.add(off, builder.mul(stride, _I64(r))), b), vec)
                return builder.load(p, align=4, typ=vec)

            dv = [row(4, dy_, dyoff_, dys_, r) for r in range(rr_)]
            xv = [row(7, x_, xoff_, xs_, c) for c in range(cc_)]
            for r in range(rr_):
                for c in range(cc_):
                    s = slots[r][c]
                    builder.store(builder.call(fma, [dv[r], xv[c], builder.load(s)]), s)
        for r in range(rr_):
            for c in range(cc_):
                off = builder.add(goff_, builder.add(builder.mul(gr_, _I64(r)), builder.mul(gc_, _I64(c))))
                builder.store(_hsum(builder, builder.load(slots[r][c])), _ptr(context, builder, sig.args[0], g_, off, None))

    return _vector_op((g, goff, gr, gc, dy, dyoff, dys, x, xoff, xs, n), (0, 4, 7), RR, CC, lambda rr_, cc_: LANES, emit)
