"""Whole-model sparse forward of a pruned MLP in one compiled (numba) call.

:class:`NumbaMLP` runs ``Linear -> ReLU -> ... -> Linear`` (LeNet-300-100: fc1,
fc2, fc3) with the BSR or CSR kernels of :mod:`.kernels`: every layer, bias and
ReLU (between layers, none after the last) runs inside ONE call of a compiled
function, so a forward costs one numba dispatch plus a dict lookup in Python.

The model is packed into flat arrays - ``wi`` (int32: a header of offsets, then
every layer's indices and indptr) and ``wf`` (float32: every layer's values,
then its bias) - and, per batch size, copied into one float32 buffer (``wi`` as
int32 bits, ``wf``, then the activations) built on first use: the compiled
forward takes just ``(x, buf)``, the fewest arrays to unbox per call.  Batched,
the input is transposed into the (features, batch) layout with 8 x 8 vector
tiles and the output transposed back; at batch 1 the first layer reads the
caller's row directly.  Shapes that k does not divide are exact: the kernels
never read or write beyond a layer's real (unpadded) sizes.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from torch import nn

from ..masks import dense_state_dict
from . import kernels
from .kernels import FORMATS, bsr_kernel, kernel_arrays

LAYERS = ("fc1", "fc2", "fc3")
_HEAD = 4  # wi[:4] = number of layers, largest hidden size, len(wi), len(wf); then 8 ints per layer
_META = 8  # rows of indptr, nnz(b), data offset, indices offset, indptr offset, bias offset, n_in, n_out
_F32 = np.dtype(np.float32)
# the compiled forwards embed the kernels: a change of kernels.py must invalidate their disk cache too
_KERNELS_SOURCE = hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest()[:16]


def layer_product(code, data, indices, indptr, x, y, bias, relu):
    """Run a kernel from numba-compiled code, chosen at compile time by the literal
    ``code = k + 16 * parallel`` (k = 1: CSR) and by ``x.ndim``; ``data`` is flat
    (nnzb * k * k,).  Referring to the kernels through this overload, rather than
    holding their dispatchers in closures, keeps numba's disk cache keys deterministic."""
    raise TypeError("layer_product can only be called from numba-compiled code")


@overload(layer_product, prefer_literal=True)
def _layer_product(code, data, indices, indptr, x, y, bias, relu):
    if not isinstance(code, types.IntegerLiteral):
        return None
    k, parallel = code.literal_value % 16, code.literal_value >= 16
    kernel = bsr_kernel(k, x.ndim == 2, parallel)
    if k == 1:
        return lambda code, data, indices, indptr, x, y, bias, relu: kernel(data, indices, indptr, x, y, bias, relu)
    return lambda code, data, indices, indptr, x, y, bias, relu: kernel(data.reshape((data.shape[0] // (k * k), k, k)),
                                                                        indices, indptr, x, y, bias, relu)


@njit(cache=True, nogil=True)
def _layer_arrays(n, wf, wi):
    """(values (flat), indices, indptr, bias) of layer ``n`` of a packed model."""
    m = _HEAD + _META * n
    rows, nnz, doff, ioff = np.int64(wi[m]), np.int64(wi[m + 1]), np.int64(wi[m + 2]), np.int64(wi[m + 3])
    poff, boff, n_out = np.int64(wi[m + 4]), np.int64(wi[m + 5]), np.int64(wi[m + 7])
    return wf[doff: boff], wi[ioff: ioff + nnz], wi[poff: poff + rows + 1], wf[boff: boff + n_out]


def fused_kernel(fmt: str, k: int, batched: bool, parallel: bool):
    """The compiled whole-model forward ``(x, buf)`` for one format and k: ``x``
    (batch, n_in) float32 (batch 1 when not ``batched``), ``buf`` a plan's buffer
    (see :class:`NumbaMLP`).  CSR and BSR with k = 1 share one compiled function."""
    return _fused_kernel(k if fmt == "bsr" else 1, bool(batched), bool(parallel))


@functools.lru_cache(maxsize=None)
def _fused_kernel(kk: int, batched: bool, parallel: bool):
    code = kk + 16 * parallel  # picks the layer kernel at compile time
    tag = (kk, batched, parallel, _KERNELS_SOURCE)  # closure cells: numba's disk cache keys on them

    if not batched:
        @njit(cache=True, nogil=True)
        def forward1(x, buf):
            _ = tag
            wi = buf.view(np.int32)
            n_layers, size, ni, nf = np.int64(wi[0]), np.int64(wi[1]), np.int64(wi[2]), np.int64(wi[3])
            wf, work = buf[ni: ni + nf], buf[ni + nf:]
            n_out = np.int64(wi[_HEAD + 7])
            first_dst = work[2 * size: 2 * size + n_out] if n_layers == 1 else work[:n_out]
            d, ind, ptr, b = _layer_arrays(0, wf, wi)
            layer_product(code, d, ind, ptr, np.ascontiguousarray(x[0]), first_dst, b, n_layers > 1)
            for n in range(1, n_layers):  # hidden buffers used in turn, the last layer writes the output
                m = _HEAD + _META * n
                src = ((n - 1) % 2) * size
                dst = 2 * size if n == n_layers - 1 else (n % 2) * size
                d, ind, ptr, b = _layer_arrays(n, wf, wi)
                layer_product(code, d, ind, ptr, work[src: src + np.int64(wi[m + 6])], work[dst: dst + np.int64(wi[m + 7])], b,
                              n < n_layers - 1)

        return forward1

    @njit(cache=True, nogil=True)
    def forward(x, buf):
        _ = tag
        wi = buf.view(np.int32)
        n_layers, size, ni, nf = np.int64(wi[0]), np.int64(wi[1]), np.int64(wi[2]), np.int64(wi[3])
        wf, work = buf[ni: ni + nf], buf[ni + nf:]
        B, n_in = x.shape
        xt = work[: n_in * B].reshape((n_in, B))
        _transpose(np.ascontiguousarray(x), xt)
        src = xt
        for n in range(n_layers):
            n_out = np.int64(wi[_HEAD + _META * n + 7])
            off = n_in * B + (n % 2) * size * B
            dst = work[off: off + n_out * B].reshape((n_out, B))
            d, ind, ptr, b = _layer_arrays(n, wf, wi)
            layer_product(code, d, ind, ptr, src, dst, b, n < n_layers - 1)
            src = dst
        n_out = src.shape[0]
        off = n_in * B + 2 * size * B
        _transpose(src, work[off: off + n_out * B].reshape((B, n_out)))

    return forward


_LO, _HI = (0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)  # unpacklo / unpackhi per 128-bit lane
_S0, _S1 = (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)  # pairs of pairs
_P0, _P1 = (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)  # 128-bit halves


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

        def shuf(x, y, mask):
            return builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), 8), list(mask)))

        i0, j0 = args[1], args[2]
        rows = [builder.load(ptr(0, builder.add(i0, i0.type(r)), j0), align=4, typ=vec) for r in range(8)]
        t = [shuf(rows[2 * p], rows[2 * p + 1], _LO if q == 0 else _HI) for p in range(4) for q in range(2)]
        u = [shuf(t[4 * h + q // 2], t[4 * h + q // 2 + 2], _S0 if q % 2 == 0 else _S1) for h in range(2) for q in range(4)]
        for c in range(8):
            o = shuf(u[c % 4], u[c % 4 + 4], _P0 if c < 4 else _P1)
            builder.store(o, ptr(1, builder.add(j0, j0.type(c)), i0), align=4)
        return context.get_dummy_value()

    if not (isinstance(a, types.Array) and isinstance(out, types.Array) and a.ndim == out.ndim == 2
            and a.dtype == out.dtype == types.float32 and a.layout == out.layout == "C"):
        return None
    return types.void(a, types.intp, types.intp, out), codegen


@njit(cache=True, nogil=True)
def _transpose(a, out):
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


def _weights(model_or_weights, layers) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    if isinstance(model_or_weights, nn.Module):
        sd = dense_state_dict(model_or_weights)
    elif isinstance(model_or_weights, Mapping):
        sd = model_or_weights
    elif isinstance(model_or_weights, Sequence):
        return [(torch.as_tensor(w), None if b is None else torch.as_tensor(b)) for w, b in model_or_weights]
    else:
        raise TypeError(f"expected an nn.Module, a state_dict or a list of (weight, bias), got {type(model_or_weights).__name__}")
    missing = [n for n in layers if f"{n}.weight" not in sd]
    if missing:
        raise KeyError(f"no weight for layer(s) {missing}; the model has {sorted(k for k in sd if k.endswith('.weight'))}")
    return [(sd[f"{n}.weight"], sd.get(f"{n}.bias")) for n in layers]


class NumbaMLP:
    """Inference-only sparse forward of a pruned MLP (Linear, ReLU, ..., Linear).

    ``model_or_weights``: a (masked) model, its state_dict (``"fc1.weight"`` keys)
    or a list of (weight, bias) pairs; ``fmt`` ``"bsr"`` (block size ``k``, 1..8)
    or ``"csr"``; ``layers`` the Linear layers in order; ``parallel`` splits each
    layer's rows over numba's threads.  Calling it on a (batch, n_in) float32
    array or tensor (extra dimensions are flattened) returns the (batch, n_out)
    output as a numpy array that is a view of an internal buffer, overwritten by
    the next call with the same batch size (copy it to keep it; not thread-safe).

    Each batch size gets a plan on first use (its compiled forward, its buffer,
    its output view); the buffer repeats the packed model, which is small once
    pruned (LeNet at 2.9% density: about 40 KB).
    """

    def __init__(self, model_or_weights, k: int = 1, fmt: str = "bsr", layers: Sequence[str] = LAYERS, parallel: bool = False):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
        pairs = _weights(model_or_weights, tuple(layers))
        arrays = [kernel_arrays(w.float(), k, fmt) for w, _ in pairs]
        for a, b in zip(arrays, arrays[1:]):
            if a.shape[0] != b.shape[1]:
                raise ValueError(f"layer sizes do not chain: {a.shape} then {b.shape}")
        self.fmt, self.k, self.parallel = fmt, arrays[0].k, bool(parallel)
        self.shapes = [a.shape for a in arrays]
        self.in_features, self.out_features = arrays[0].shape[1], arrays[-1].shape[0]
        self._size = max([a.shape[0] for a in arrays[:-1]] + [self.out_features])
        head = np.zeros(_HEAD + _META * len(arrays), np.int64)
        wf, wi, nf, ni = [], [head], 0, head.size
        for n, (a, (_, bias)) in enumerate(zip(arrays, pairs)):
            b = np.zeros(a.shape[0], np.float32) if bias is None else torch.as_tensor(bias).detach().float().cpu().numpy().ravel()
            if b.shape[0] != a.shape[0]:
                raise ValueError(f"layer {n}: bias of {b.shape[0]} entries for {a.shape[0]} outputs")
            head[_HEAD + _META * n: _HEAD + _META * (n + 1)] = [a.indptr.size - 1, a.indices.size, nf, ni, ni + a.indices.size,
                                                               nf + a.data.size, a.shape[1], a.shape[0]]
            wf += [a.data.ravel(), b]
            wi += [a.indices, a.indptr]
            nf, ni = nf + a.data.size + b.size, ni + a.indices.size + a.indptr.size
        if ni + nf >= 2**31:
            raise ValueError(f"model too large for int32 offsets ({ni + nf} entries)")
        head[:4] = len(arrays), self._size, ni, nf
        packed_i = np.concatenate(wi).astype(np.int32).view(np.float32)  # int32 bits, read back with buf.view(np.int32)
        self._packed = np.concatenate([packed_i, np.concatenate(wf).astype(np.float32)])
        self._plans: dict[tuple, tuple] = {}

    def _plan(self, batch: int) -> tuple:
        """(compiled forward, buffer, output view) for one batch size, built once."""
        key = (batch, self.in_features)
        if key not in self._plans:
            batched = batch != 1
            fn = fused_kernel(self.fmt, self.k, batched, self.parallel)
            xpart = self.in_features * batch if batched else 0
            buf = np.zeros(self._packed.size + xpart + (2 * self._size + self.out_features) * batch, np.float32)
            buf[: self._packed.size] = self._packed
            off = self._packed.size + xpart + 2 * self._size * batch
            out = buf[off: off + self.out_features * batch].reshape(batch, self.out_features)
            self._plans[key] = (fn, buf, out)
        return self._plans[key]

    def _as_input(self, x) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"input must be (batch, {self.in_features}), got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"input must hold real numbers, got dtype {x.dtype}")
        x = np.ascontiguousarray(x.reshape(x.shape[0], -1), np.float32)
        if x.shape[1] != self.in_features:
            raise ValueError(f"input has {x.shape[1]} features per sample (shape {x.shape}), the model takes {self.in_features}")
        return x

    def __call__(self, x) -> np.ndarray:
        # fast path: a float32 (batch, n_in) array whose plan exists - one dict lookup, one compiled call
        plan = self._plans.get(x.shape) if type(x) is np.ndarray and x.dtype is _F32 else None
        if plan is None:
            x = self._as_input(x)
            plan = self._plan(x.shape[0])
        plan[0](x, plan[1])
        return plan[2]

    def __repr__(self) -> str:
        sizes = " -> ".join(str(s[1]) for s in self.shapes)
        return f"NumbaMLP({sizes} -> {self.out_features}, fmt={self.fmt}, k={self.k}, parallel={self.parallel})"
