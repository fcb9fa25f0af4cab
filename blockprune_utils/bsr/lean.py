"""A lean numpy inference path for pruned MLPs (Linear, ReLU, ..., Linear).

:class:`LeanMLP` runs the whole forward over preallocated float32 buffers, each
layer as numpy BLAS (``dense``) or as scipy's compiled CSR / BSR kernels called
directly on precomputed arrays (``csr``, ``bsr``), without the per-call overhead of
torch modules or of ``scipy.sparse`` objects.

The compiled kernels live in ``scipy.sparse._sparsetools``, a private scipy
module; this is the one place of the package that touches it.  A scipy without it
(or without its matvec kernels) makes the path fall back to the public ``A @ x``
product, which allocates; :func:`lean_kernel` says which is in use.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..masks import dense_state_dict
from .convert import to_scipy_bsr, to_scipy_csr

try:  # private scipy module: optional, the public product is the fallback
    from scipy.sparse import _sparsetools
except ImportError:
    _sparsetools = None
if _sparsetools is not None and not hasattr(_sparsetools, "bsr_matvec"):
    _sparsetools = None

LEAN_FORMATS = ("dense", "csr", "bsr")


def lean_kernel() -> str:
    """The kernels of the sparse lean layers: ``"sparsetools"`` (scipy's compiled
    kernels called directly) or ``"scipy-matmul"`` (the public ``A @ x``)."""
    return "sparsetools" if _sparsetools is not None else "scipy-matmul"


def sparsetools_path() -> str | None:
    """The file of scipy's compiled sparse kernels (an extension module), or None."""
    return _sparsetools.__file__ if _sparsetools is not None else None


def linear_layers(model: nn.Module) -> tuple[str, ...]:
    """Names of the model's Linear layers, in module order."""
    return tuple(n for n, m in model.named_modules() if isinstance(m, nn.Linear))


def _product_into(A, x, y, b) -> None:
    y[...] = A @ x + b


class LeanLayer:
    """``y = W x + b`` of one layer into preallocated float32 buffers in (features,
    batch) layout.  ``fmt``: ``dense``, ``csr`` or ``bsr`` (block size ``k``, the
    weight zero-padded to multiples of k; ``n_in``/``n_out`` are the padded sizes)."""

    def __init__(self, fmt: str, weight: torch.Tensor, bias: torch.Tensor | None, k: int):
        self.fmt, self.k = fmt, int(k)
        w = weight.detach().float().contiguous()
        self.out_features, self.in_features = w.shape
        bias = np.zeros(self.out_features, np.float32) if bias is None else bias.detach().float().numpy()
        if fmt == "dense":
            self.kernel = "blas"
            self.W = w.numpy()
            self.n_out, self.n_in = self.out_features, self.in_features
        elif fmt == "csr":
            self.kernel = lean_kernel()
            self.A = to_scipy_csr(w)
            self.n_out, self.n_in = self.A.shape
        elif fmt == "bsr":
            self.kernel = lean_kernel()
            self.A = to_scipy_bsr(w, k)
            self.n_out, self.n_in = self.A.shape  # padded to multiples of k
            self.data = np.ascontiguousarray(self.A.data).ravel()
        else:
            raise ValueError(f"unknown lean format {fmt!r}; choose one of {LEAN_FORMATS}")
        self.b1 = np.zeros(self.n_out, np.float32)
        self.b1[: self.out_features] = bias
        self.b2 = self.b1[:, None]

    def ops(self, x: np.ndarray, y: np.ndarray) -> list[Callable[[], object]]:
        """The layer as argument-free calls bound to views of the buffers ``x`` (at
        least n_in rows) and ``y`` (at least n_out rows), built once per batch size so
        that a forward pays no slicing or argument set-up."""
        xi, yo = x[: self.n_in], y[: self.n_out]
        b = self.b1 if x.ndim == 1 else self.b2
        P = functools.partial
        if self.fmt == "dense":
            return [P(np.matmul, self.W, xi, yo), P(np.add, yo, b, yo)]
        st, A = _sparsetools, self.A
        if st is None:
            return [P(_product_into, A, xi, yo, b)]
        if self.fmt == "csr":
            kernel = (P(st.csr_matvec, self.n_out, self.n_in, A.indptr, A.indices, A.data, xi, yo) if x.ndim == 1 else
                      P(st.csr_matvecs, self.n_out, self.n_in, x.shape[1], A.indptr, A.indices, A.data, xi, yo))
        else:
            k, R, C = self.k, self.n_out // self.k, self.n_in // self.k
            kernel = (P(st.bsr_matvec, R, C, k, k, A.indptr, A.indices, self.data, xi, yo) if x.ndim == 1 else
                      P(st.bsr_matvecs, R, C, x.shape[1], k, k, A.indptr, A.indices, self.data, xi, yo))
        return [P(np.copyto, yo, b), kernel]  # the kernels accumulate: y = b, then y += W x

    def run(self, x: np.ndarray, y: np.ndarray) -> None:
        for op in self.ops(x, y):
            op()


class LeanMLP:
    """An inference-only numpy forward of a (pruned) MLP: Linear, ReLU, ..., Linear.

    ``layers``: the Linear layers in forward order (default: every Linear of the
    model, in module order); ``k`` and ``formats`` are one value or a dict
    layer-name -> value.  Each layer is ``dense`` (numpy BLAS), ``csr`` or ``bsr``
    (see :class:`LeanLayer`).  Activations live in preallocated (features, batch)
    float32 buffers; each buffer is as long as the largest (padded) size that touches
    it, and padding rows stay zero (the zero-padded BSR blocks and zero bias entries
    produce zeros), so a BSR layer needs no copy to pad its input.  The whole cost -
    input transpose into the buffer, every layer, bias, ReLU - is inside ``__call__``,
    which takes a (batch, ...) array or tensor and returns (batch, out_features).
    The returned array is a view of an internal buffer (copy it to keep it).
    """

    def __init__(self, model: nn.Module, k=1, formats="bsr", layers=None):
        sd = dense_state_dict(model)
        self.names = tuple(layers) if layers is not None else linear_layers(model)
        self.formats = {n: (formats[n] if isinstance(formats, Mapping) else formats) for n in self.names}
        ks = {n: (k[n] if isinstance(k, Mapping) else k) for n in self.names}
        self.layers = [LeanLayer(self.formats[n], sd[f"{n}.weight"], sd.get(f"{n}.bias"), ks[n]) for n in self.names]
        for a, b in zip(self.layers, self.layers[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"layer sizes do not chain: {a.out_features} -> {b.in_features}")
        self.in_features = self.layers[0].in_features
        self.out_features = self.layers[-1].out_features
        self.kernel = ",".join(sorted({layer.kernel for layer in self.layers}))
        self._plans: dict[int, tuple] = {}

    def buffers(self, batch: int) -> list[np.ndarray]:
        return self._plan(batch)[0]

    def _plan(self, batch: int):
        """(buffers, input view, ops, output view) for one batch size, built once."""
        if batch not in self._plans:
            L = self.layers
            sizes = [L[0].n_in] + [max(a.n_out, b.n_in) for a, b in zip(L, L[1:])] + [L[-1].n_out]
            bufs = [np.zeros((s,) if batch == 1 else (s, batch), np.float32) for s in sizes]
            ops = []
            for i, layer in enumerate(L):
                ops += layer.ops(bufs[i], bufs[i + 1])
                if i < len(L) - 1:  # ReLU in place (against a zero array: cheaper than a scalar)
                    zeros = np.zeros_like(bufs[i + 1])
                    ops.append(functools.partial(np.maximum, bufs[i + 1], zeros, out=(bufs[i + 1],)))
            out = bufs[-1][: self.out_features]
            self._plans[batch] = (bufs, bufs[0][: self.in_features], tuple(ops), out[None, :] if batch == 1 else out.T)
        return self._plans[batch]

    def __call__(self, x) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
        batch = x.shape[0]
        _, xin, ops, out = self._plans.get(batch) or self._plan(batch)
        np.copyto(xin, x[0] if batch == 1 else x.T)
        for op in ops:
            op()
        return out


def reference_forward(model: nn.Module, x, layers=None, bound: bool = False) -> np.ndarray:
    """float64 forward of the dense (masked) weights of the MLP ``layers`` (Linear,
    ReLU, ..., Linear; default every Linear); with ``bound`` the same forward with
    |W|, |b| and |x| (the scale of rounding errors, for :func:`.timing.close_enough`)."""
    sd = dense_state_dict(model)
    names = tuple(layers) if layers is not None else linear_layers(model)
    h = torch.as_tensor(x).double().reshape(len(x), -1).numpy()
    h = np.abs(h) if bound else h
    for i, n in enumerate(names):
        W = sd[f"{n}.weight"].double().numpy()
        b = sd[f"{n}.bias"].double().numpy() if f"{n}.bias" in sd else np.zeros(W.shape[0])
        if bound:
            W, b = np.abs(W), np.abs(b)
        h = h @ W.T + b
        if i < len(names) - 1:
            h = np.maximum(h, 0)
    return h
