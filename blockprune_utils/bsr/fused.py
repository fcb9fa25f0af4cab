"""Whole-model sparse forward of a pruned MLP in one compiled (numba) call.

:class:`NumbaMLP` runs ``Linear -> ReLU -> ... -> Linear`` (LeNet-300-100:
fc1, fc2, fc3) with the BSR or CSR kernels of :mod:`.kernels`; every layer,
bias and ReLU (between layers, none after the last) happens inside ONE call of
a compiled function, so the Python cost per forward is one dispatch.

To keep that dispatch cheap the model is packed into two flat arrays: ``wf``
(float32: every layer's values, then its bias) and ``wi`` (int32: a header of
offsets, then every layer's indices and indptr).  Activations live in one
preallocated float32 array per batch size (built on first use, like
``LeanMLP``): the transposed input (features, batch), two hidden buffers used
in turn, and the output.  At batch 1 the first layer reads the caller's row
directly (no copy).  Shapes that k does not divide are exact: the kernels never
read or write beyond a layer's real (unpadded) sizes.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from numba import njit, types
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic, overload
from torch import nn

from ..masks import dense_state_dict
from . import kernels
from .kernels import FORMATS, kernel_arrays, layer_product

LAYERS = ("fc1", "fc2", "fc3")
_HEAD = 2  # wi[0] = number of layers, wi[1] = largest hidden size; then 8 ints per layer
_META = 8  # rows of indptr, nnz(b), data offset, indices offset, indptr offset, bias offset, n_in, n_out
_F32 = np.dtype(np.float32)
# the compiled forwards embed the kernels: a change of kernels.py must invalidate their disk cache too
_KERNELS_SOURCE = hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest()[:16]


def _fused_layer(code, l, wf, wi, src, dst, relu):
    """Layer ``l`` of a packed model, ``dst = W src + b`` (then ReLU if ``relu``);
    numba-compiled code only, the kernel is chosen at compile time from the literal
    ``code`` (see :func:`.kernels.layer_product`)."""
    raise TypeError("_fused_layer can only be called from numba-compiled code")


@overload(_fused_layer, prefer_literal=True)
def _fused_layer_impl(code, l, wf, wi, src, dst, relu):
    if not isinstance(code, types.IntegerLiteral):
        return None
    kk = code.literal_value % 16

    def impl(code, l, wf, wi, src, dst, relu):
        m = _HEAD + _META * l
        rows, nnz, doff, ioff = np.int64(wi[m]), np.int64(wi[m + 1]), np.int64(wi[m + 2]), np.int64(wi[m + 3])
        poff, boff, n_out = np.int64(wi[m + 4]), np.int64(wi[m + 5]), np.int64(wi[m + 7])
        data = wf[doff: doff + nnz * kk * kk]
        layer_product(code, data if kk == 1 else data.reshape((nnz, kk, kk)), wi[ioff: ioff + nnz],
                      wi[poff: poff + rows + 1], src, dst, wf[boff: boff + n_out], relu)

    return impl


@functools.lru_cache(maxsize=None)
def fused_kernel(fmt: str, k: int, batched: bool, parallel: bool):
    """The compiled whole-model forward ``(x, wf, wi, work)`` for one format and k:
    ``x`` (batch, n_in) float32 (batch 1 when not ``batched``)."""
    kk = k if fmt == "bsr" else 1
    code = kk + 16 * bool(parallel)  # picks the layer kernel at compile time
    tag = (fmt, kk, batched, bool(parallel), _KERNELS_SOURCE)  # closure cells: numba's disk cache keys on them

    if not batched:
        @njit(cache=True, nogil=True)
        def forward1(x, wf, wi, work):
            _ = tag
            n_layers, size = np.int64(wi[0]), np.int64(wi[1])
            n_out = np.int64(wi[_HEAD + 7])
            _fused_layer(code, 0, wf, wi, np.ascontiguousarray(x[0]), work[2 * size: 2 * size + n_out] if n_layers == 1 else work[:n_out], n_layers > 1)
            for l in range(1, n_layers):
                m = _HEAD + _META * l
                src = ((l - 1) % 2) * size
                off = 2 * size if l == n_layers - 1 else (l % 2) * size
                _fused_layer(code, l, wf, wi, work[src: src + np.int64(wi[m + 6])], work[off: off + np.int64(wi[m + 7])], l < n_layers - 1)

        return forward1

    @njit(cache=True, nogil=True)
    def forward(x, wf, wi, work):
        _ = tag
        n_layers, size = np.int64(wi[0]), np.int64(wi[1])
        B, n_in = x.shape
        xt = work[: n_in * B].reshape((n_in, B))
        _transpose(np.ascontiguousarray(x), xt)
        base = n_in * B
        src = xt
        for l in range(n_layers):
            n_out = np.int64(wi[_HEAD + _META * l + 7])
            off = base + (l % 2) * size * B
            dst = work[off: off + n_out * B].reshape((n_out, B))
            _fused_layer(code, l, wf, wi, src, dst, l < n_layers - 1)
            src = dst
        n_out = src.shape[0]
        off = base + 2 * size * B
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
        self.layers = tuple(layers) if not isinstance(model_or_weights, Sequence) else tuple(range(len(pairs)))
        self.shapes = [a.shape for a in arrays]
        self.in_features, self.out_features = arrays[0].shape[1], arrays[-1].shape[0]
        self._size = max([a.shape[0] for a in arrays[:-1]] + [self.out_features])
        wf, wi = [], [np.array([len(arrays), self._size] + [0] * (_META * len(arrays)), np.int64)]
        nf, ni = 0, wi[0].size
        for l, (a, (_, bias)) in enumerate(zip(arrays, pairs)):
            b = np.zeros(a.shape[0], np.float32) if bias is None else bias.detach().float().cpu().numpy().reshape(-1)
            if b.shape[0] != a.shape[0]:
                raise ValueError(f"layer {self.layers[l]!r}: bias of {b.shape[0]} entries for {a.shape[0]} outputs")
            wi[0][_HEAD + _META * l: _HEAD + _META * (l + 1)] = [a.indptr.size - 1, a.indices.size, nf, ni, ni + a.indices.size,
                                                                   nf + a.data.size, a.shape[1], a.shape[0]]
            wf += [a.data.ravel(), b]
            wi += [a.indices, a.indptr]
            nf, ni = nf + a.data.size + b.size, ni + a.indices.size + a.indptr.size
        if max(nf, ni) >= 2**31:
            raise ValueError(f"model too large for int32 offsets ({max(nf, ni)} entries)")
        self._wf = np.ascontiguousarray(np.concatenate(wf), np.float32)
        self._wi = np.ascontiguousarray(np.concatenate(wi), np.int32)
        self._plans: dict[int, tuple] = {}

    def _plan(self, batch: int) -> tuple:
        """(compiled forward, work array, output view) for one batch size, built once."""
        if batch not in self._plans:
            batched = batch != 1
            fn = fused_kernel(self.fmt, self.k, batched, self.parallel)
            xpart = self.in_features * batch if batched else 0
            work = np.zeros(xpart + (2 * self._size + self.out_features) * batch, np.float32)
            off = xpart + 2 * self._size * batch
            out = work[off: off + self.out_features * batch].reshape(batch, self.out_features)
            self._plans[batch] = (fn, work, out)
        return self._plans[batch]

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
            raise ValueError(f"input has {x.shape[1]} features per sample, the model takes {self.in_features}")
        return x

    def __call__(self, x) -> np.ndarray:
        if type(x) is not np.ndarray or x.dtype is not _F32 or x.ndim != 2 or x.shape[1] != self.in_features:
            x = self._as_input(x)
        fn, work, out = self._plans.get(x.shape[0]) or self._plan(x.shape[0])
        fn(x, self._wf, self._wi, work)
        return out

    def __repr__(self) -> str:
        return f"NumbaMLP({' -> '.join(str(s[1]) for s in self.shapes)} -> {self.out_features}, fmt={self.fmt}, k={self.k}, " \
               f"parallel={self.parallel})"
