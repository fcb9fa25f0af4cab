"""Whole-model sparse forward of a pruned MLP in one compiled (numba) call.

:class:`NumbaMLP` runs ``Linear -> ReLU -> ... -> Linear`` (LeNet-300-100: fc1,
fc2, fc3) with the BSR or CSR kernels of :mod:`.kernels`: every layer, bias and
ReLU (between layers, none after the last) runs inside ONE call of a compiled
function, so a forward costs one numba dispatch plus a dict lookup in Python.

The model is packed into flat arrays - ``wi`` (int32: a header of offsets, then
every layer's indices and indptr) and ``wf`` (float32: every layer's values,
then its bias) - and, per batch size, copied into one float32 buffer (``wi`` as
int32 bits, ``wf``, the output, then the work space) built on first use: the
compiled forward takes just ``(x, buf)``, the fewest arrays to unbox per call.

Batched, the kernels want the (features, batch) layout while the caller's rows are
(batch, features): the batch is cut into tiles of ``tile`` samples, and each tile
is transposed (8 x 8 vector tiles) into a work buffer, run through every layer
there, and its output rows transposed into place.  Each sample's arithmetic - and
so its result, bit for bit - does not depend on the tiling.  The default tile of
256 samples makes LeNet's batch 256 one tile: smaller tiles keep the transposed
input in the L2 cache, but every tile repeats each stored block's set-up in the
kernel (the timings of smaller tiles that chose 256: ``docs/kernel_notes.md``).
Bigger batches run in tiles of 256, which bounds the work buffer.  At batch 1 the
first layer reads the caller's row directly.  Shapes that k does not divide are
exact: the kernels never read or write beyond a layer's real (unpadded) sizes.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from numba import njit, types
from numba.extending import overload
from torch import nn

from ..masks import dense_state_dict
from ..models import LENET_LAYERS as LAYERS
from . import jit as _jit
from . import train_kernels as _train_kernels
from . import transpose as _transpose_module
from . import vec as _vec
from .jit import unique_jit
from .kernels import FORMATS, bsr_kernel, kernel_arrays
from .transpose import transpose as transpose_into

_HEAD = 4  # wi[:4] = number of layers, largest hidden size, len(wi), len(wf); then 8 ints per layer
_META = 8  # rows of indptr, nnz(b), data offset, indices offset, indptr offset, bias offset, n_in, n_out
_F32 = np.dtype(np.float32)
TILE = 256  # samples per batch tile (see the module docstring)
# the compiled forwards embed the kernels and the transpose: a change of either must invalidate their disk cache too
_SOURCES = hashlib.sha256(b"".join(Path(m.__file__).read_bytes()
                                   for m in (_jit, _transpose_module, _vec, _train_kernels))).hexdigest()[:16]


def layer_product(code, data, indices, indptr, x, y, bias, relu):
    """Run a kernel from numba-compiled code, chosen at compile time by the literal
    ``code = k + 128 * parallel`` (k = 1: CSR) and by ``x.ndim``; ``data`` is flat
    (nnzb * k * k,).  Referring to the kernels through this overload, rather than
    holding their dispatchers in closures, keeps numba's disk cache keys deterministic;
    each implementation is named after its variant (see :func:`.jit.unique_jit`)."""
    raise TypeError("layer_product can only be called from numba-compiled code")


@overload(layer_product, prefer_literal=True)
def _layer_product(code, data, indices, indptr, x, y, bias, relu):
    if not isinstance(code, types.IntegerLiteral):
        return None
    k, parallel = code.literal_value % 128, code.literal_value >= 128
    kernel = bsr_kernel(k, x.ndim == 2, parallel)
    if k == 1:
        def impl(code, data, indices, indptr, x, y, bias, relu):
            return kernel(data, indices, indptr, x, y, bias, relu)
    else:
        def impl(code, data, indices, indptr, x, y, bias, relu):
            return kernel(data.reshape((data.shape[0] // (k * k), k, k)), indices, indptr, x, y, bias, relu)
    # a name unique to the variant (see jit.unique_jit: numba names machine code after it)
    impl.__name__ = impl.__qualname__ = f"layer_product_k{k}_{'parallel' if parallel else 'serial'}_{x.ndim}d"
    return impl


@njit(cache=True, nogil=True)
def _layer_arrays(n, wf, wi):
    """(values (flat), indices, indptr, bias) of layer ``n`` of a packed model."""
    m = _HEAD + _META * n
    rows, nnz, doff, ioff = np.int64(wi[m]), np.int64(wi[m + 1]), np.int64(wi[m + 2]), np.int64(wi[m + 3])
    poff, boff, n_out = np.int64(wi[m + 4]), np.int64(wi[m + 5]), np.int64(wi[m + 7])
    return wf[doff: boff], wi[ioff: ioff + nnz], wi[poff: poff + rows + 1], wf[boff: boff + n_out]


def fused_kernel(fmt: str, k: int, batched: bool, parallel: bool, tile: int = TILE):
    """The compiled whole-model forward ``(x, buf)`` for one format and k: ``x``
    (batch, n_in) float32 (batch 1 when not ``batched``), ``buf`` a plan's buffer
    (see :class:`NumbaMLP`); ``tile``: samples per batch tile.  CSR and BSR with
    k = 1 share one compiled function."""
    return _fused_kernel(k if fmt == "bsr" else 1, bool(batched), bool(parallel), int(tile) if batched else 0)


@functools.lru_cache(maxsize=None)
def _fused_kernel(kk: int, batched: bool, parallel: bool, tile: int):
    code = kk + 128 * parallel  # picks the layer kernel at compile time
    tag = (kk, batched, parallel, tile, _SOURCES)  # closure cells: numba's disk cache keys on them

    name = f"fused_forward_k{kk}_{'parallel' if parallel else 'serial'}"
    if not batched:
        def forward1(x, buf):
            _ = tag
            wi = buf.view(np.int32)
            n_layers, size, ni, nf = np.int64(wi[0]), np.int64(wi[1]), np.int64(wi[2]), np.int64(wi[3])
            wf, work = buf[ni: ni + nf], buf[ni + nf:]
            n_last = np.int64(wi[_HEAD + _META * (n_layers - 1) + 7])
            h = work[n_last:]  # the output first, then two hidden buffers used in turn
            n_out = np.int64(wi[_HEAD + 7])
            d, ind, ptr, b = _layer_arrays(0, wf, wi)
            layer_product(code, d, ind, ptr, np.ascontiguousarray(x[0]), work[:n_out] if n_layers == 1 else h[:n_out], b,
                          n_layers > 1)
            for n in range(1, n_layers):
                m = _HEAD + _META * n
                src = ((n - 1) % 2) * size
                dst = (n % 2) * size
                d, ind, ptr, b = _layer_arrays(n, wf, wi)
                layer_product(code, d, ind, ptr, h[src: src + np.int64(wi[m + 6])],
                              work[:n_last] if n == n_layers - 1 else h[dst: dst + np.int64(wi[m + 7])], b, n < n_layers - 1)

        return unique_jit(forward1, f"{name}_vector", cache=True, nogil=True)

    def forward(x, buf):
        _ = tag
        wi = buf.view(np.int32)
        n_layers, size, ni, nf = np.int64(wi[0]), np.int64(wi[1]), np.int64(wi[2]), np.int64(wi[3])
        wf, work = buf[ni: ni + nf], buf[ni + nf:]
        B, n_in = x.shape
        n_last = np.int64(wi[_HEAD + _META * (n_layers - 1) + 7])
        tw = min(tile, B)
        xf = np.ascontiguousarray(x).reshape(B * n_in)
        out, tmp = work[: B * n_last], work[B * n_last:]  # the (batch, n_out) output, then the tile's buffers
        for b0 in range(0, B, tw):
            T = min(tw, B - b0)
            src = tmp[: n_in * T].reshape((n_in, T))
            transpose_into(xf[b0 * n_in: (b0 + T) * n_in].reshape((T, n_in)), src)
            for n in range(n_layers):
                n_out = np.int64(wi[_HEAD + _META * n + 7])
                off = n_in * tw + (n % 2) * size * tw
                dst = tmp[off: off + n_out * T].reshape((n_out, T))
                d, ind, ptr, b = _layer_arrays(n, wf, wi)
                layer_product(code, d, ind, ptr, src, dst, b, n < n_layers - 1)
                src = dst
            transpose_into(src, out[b0 * n_last: (b0 + T) * n_last].reshape((T, n_last)))

    return unique_jit(forward, f"{name}_tile{tile}", cache=True, nogil=True)


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
    or a list of (weight, bias) pairs; ``fmt`` ``"bsr"`` (block size ``k``, 1..64)
    or ``"csr"``; ``layers`` the Linear layers in order; ``block_masks`` (BSR, one
    per layer or None) the blocks to store (default: those holding a non-zero);
    ``parallel`` splits each layer's rows over numba's threads; ``tile`` the samples
    per batch tile (see the module docstring).  Calling it on a (batch, n_in)
    float32 array or tensor (extra dimensions are flattened) returns the (batch,
    n_out) output as a numpy array that is a view of an internal buffer, overwritten
    by the next call with the same batch size (copy it to keep it; not thread-safe).

    Each batch size gets a plan on first use (its compiled forward, its buffer,
    its output view); the buffer repeats the packed model, which is small once
    pruned (LeNet at 2.9% density: about 40 KB).
    """

    def __init__(self, model_or_weights, k: int = 1, fmt: str = "bsr", layers: Sequence[str] = LAYERS,
                 parallel: bool = False, *, block_masks: Sequence | None = None, tile: int = TILE):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
            raise ValueError(f"tile must be a positive number of samples, got {tile!r}")
        pairs = _weights(model_or_weights, tuple(layers))
        masks = list(block_masks) if block_masks is not None else [None] * len(pairs)
        if len(masks) != len(pairs):
            raise ValueError(f"{len(masks)} block masks for {len(pairs)} layers")
        arrays = [kernel_arrays(torch.as_tensor(w).float(), k, fmt, m if fmt == "bsr" else None)
                  for (w, _), m in zip(pairs, masks)]
        for a, b in zip(arrays, arrays[1:]):
            if a.shape[0] != b.shape[1]:
                raise ValueError(f"layer sizes do not chain: {a.shape} then {b.shape}")
        self.fmt, self.k, self.parallel, self.tile = fmt, arrays[0].k, bool(parallel), int(tile)
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
        """(compiled forward, buffer, output view) for one batch size, built once.  The
        buffer: the packed model, the (batch, n_out) output, then the work space (two
        hidden buffers; batched, also the input tile, all ``tile`` samples wide)."""
        key = (batch, self.in_features)
        if key not in self._plans:
            batched = batch != 1
            fn = fused_kernel(self.fmt, self.k, batched, self.parallel, self.tile)
            width = min(self.tile, batch) if batched else 1
            work = (self.in_features * width if batched else 0) + 2 * self._size * width
            buf = np.zeros(self._packed.size + self.out_features * batch + work, np.float32)
            buf[: self._packed.size] = self._packed
            off = self._packed.size
            out = buf[off: off + self.out_features * batch].reshape(batch, self.out_features)
            self._plans[key] = (fn, buf, out)
        return self._plans[key]

    def __getstate__(self) -> dict:  # copies and pickles rebuild their plans (compiled functions, buffers) on use
        return {**self.__dict__, "_plans": {}}

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
            if x.shape[0] == 0:
                return np.zeros((0, self.out_features), np.float32)
            plan = self._plan(x.shape[0])
        plan[0](x, plan[1])
        return plan[2]

    def __repr__(self) -> str:
        sizes = " -> ".join(str(s[1]) for s in self.shapes)
        return (f"NumbaMLP({sizes} -> {self.out_features}, fmt={self.fmt}, k={self.k}, parallel={self.parallel}, "
                f"tile={self.tile})")
