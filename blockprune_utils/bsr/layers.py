"""Torch modules that run block-pruned layers from their sparse form.

* :class:`BSRLinear` - one Linear layer whose weight is held as torch sparse BSR
  (``"torch"``), scipy BSR (``"scipy"``), the arrays of the numba BSR kernel
  (``"numba"``) or a dense copy (``"dense"``).
* :class:`FusedMLP` - a whole pruned MLP (Linear, ReLU, ..., Linear on the
  flattened input) as ONE compiled call of :class:`~.fused.NumbaMLP`.
* :func:`convert_model` - a copy of a pruned model with its Linear layers converted
  (any backend above per layer), or, with ``backend="fused"``, the model as one
  :class:`FusedMLP`, checked first against the model's own forward; the public
  :func:`~.model.to_bsr_model` adds the measured choice (``"auto"``).

Shapes that k does not divide are exact in every backend (padding: see
:mod:`.convert`; the numba kernels never touch the padding).  ``numba`` and
``fused`` compute in float32 (the result is returned in the input's dtype) and,
like ``scipy``, serve inference only (no autograd).

The numba kernels work in the (features, batch) layout.  A ``numba`` layer returns
its (batch, out) result as the transpose of the (out, batch) array it wrote - a
view, no copy - and elementwise torch operations (ReLU, GELU, dropout in eval
mode, adding a residual of the same layout) keep that layout.  So in a chain of
numba layers only the first one transposes its input: the next ones read the
previous output as it lies in memory.  The values are those of the row-major
result; only ``.view`` calls that would merge the batch with the features need a
``.reshape`` instead.
"""
from __future__ import annotations

import copy
import warnings
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..blocks import check_block_size
from ..masks import dense_state_dict
from .attention import BSRMultiheadAttention
from .convert import padded_shape, to_scipy_bsr, to_torch_bsr
from .fused import TILE, NumbaMLP
from .jit import check_k
from .kernels import bsr_kernel, kernel_arrays
from .lean import linear_layers, reference_forward
from .sparse_linear import hook_dense_linears
from .swap import places_of, swap_plan, switch_off_fast_paths
from .timing import RTOL, close_enough
from .transpose import transpose as transpose_into

BACKENDS = ("torch", "scipy", "numba", "dense")
FUSED = "fused"  # the whole model as one FusedMLP (to_bsr_model only)
AUTO = "auto"  # each layer's backend chosen by measurement (to_bsr_model only)
WEIGHT_DTYPES = (torch.float32, torch.float64)
# How far (in units of |W||x|) a model's own float32 forward may be from the float64
# Linear-ReLU chain and still count as that chain: float32 rounding stays near 1e-6,
# while a final softmax (LeNet with authors_softmax) already deviates by about 5e-4.
STRUCTURE_RTOL = 2e-5


def unsupported(backend: str, k: int) -> str | None:
    """Why ``backend`` cannot hold k x k blocks, or None when it can (the numba
    kernels are compiled for a range of k; the other backends take any k)."""
    if backend == "numba":
        try:
            check_k(k)
        except ValueError as e:
            return str(e)
    return None


def _numpy_result(y: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A copy of a numba output (a view of a reused buffer) as a tensor of ``like``'s dtype and device."""
    return torch.from_numpy(y.copy()).to(dtype=like.dtype, device=like.device)


class BSRLinear(nn.Module):
    """A Linear layer whose weight is held in BSR form.

    ``backend``: ``"torch"`` (torch sparse BSR, CPU or GPU), ``"scipy"`` (CPU,
    ``scipy.sparse.bsr_matrix``; inference only, no autograd), ``"numba"`` (CPU,
    the compiled BSR kernel of :mod:`.kernels` with bias added inside, for the k the
    kernels are compiled for (:func:`unsupported`), float32; inference only) or
    ``"dense"`` (a dense copy: the reference the others are compared with, and what
    the automatic backend choice falls back to).  Weights must be float32 or float64.
    """

    def __init__(self, weight: torch.Tensor, bias, k: int, block_mask=None, backend: str = "torch"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown BSR backend {backend!r}; choose one of {BACKENDS}")
        self.k = check_block_size(k)
        if weight.dtype not in WEIGHT_DTYPES:
            raise ValueError(f"BSR layers hold {[str(d) for d in WEIGHT_DTYPES]} weights, got {weight.dtype}: "
                             "convert with .float() first")
        why = unsupported(backend, self.k)
        if why:
            raise ValueError(f"backend {backend!r} cannot hold k={self.k}: {why}")
        self.backend = backend
        self.out_features, self.in_features = weight.shape
        self.padded = padded_shape(weight.shape, k)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        if backend == "torch":
            self.register_buffer("weight_bsr", to_torch_bsr(weight, k, block_mask).to(weight.device))
        elif backend == "scipy":
            self.weight_scipy = to_scipy_bsr(weight.double() if weight.dtype == torch.float64 else weight.float(), k, block_mask)
        elif backend == "numba":
            a = kernel_arrays(weight.detach().cpu().float(), k, "bsr", block_mask)
            self.weight_numba = (a.data.reshape(-1) if a.k == 1 else a.data, a.indices, a.indptr)
            self.bias_numba = (np.zeros(0, np.float32) if bias is None
                               else np.ascontiguousarray(bias.detach().cpu().float().numpy().ravel()))
        else:
            self.register_buffer("weight_dense", weight.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear, k: int, block_mask=None, backend: str = "torch") -> "BSRLinear":
        return cls(linear.weight.detach(), linear.bias, k, block_mask, backend)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, k={self.k}, backend={self.backend}"

    def _numba_forward(self, x2: torch.Tensor) -> torch.Tensor:
        """``x2 @ W.T + b`` by the numba kernel, for (batch, in) rows: one sample as a
        matrix-vector product; a batch in the (in, batch) layout - read in place when
        ``x2`` is the transpose of a contiguous array (the output of a numba layer),
        transposed once otherwise - giving (out, batch), returned as its transpose."""
        xs = x2.detach().to(device="cpu", dtype=torch.float32)
        n = xs.shape[0]
        if n == 1:
            y = np.empty(self.out_features, np.float32)
            bsr_kernel(self.k, False, False)(*self.weight_numba, np.ascontiguousarray(xs[0].numpy()), y, self.bias_numba,
                                             False)
            out = torch.from_numpy(y)[None]
        else:
            if xs.T.is_contiguous():
                xt = xs.T.numpy()
            else:
                xt = np.empty((self.in_features, n), np.float32)
                transpose_into(np.ascontiguousarray(xs.numpy()), xt)
            y = np.empty((self.out_features, n), np.float32)
            bsr_kernel(self.k, True, False)(*self.weight_numba, xt, y, self.bias_numba, False)
            out = torch.from_numpy(y).T
        return out.to(dtype=x2.dtype, device=x2.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.backend == "numba":  # the bias is added inside the kernel
            y = self._numba_forward(x2) if len(x2) else x.new_zeros(0, self.out_features)
            return y.reshape(*lead, self.out_features)
        if self.backend == "dense":
            y = x2 @ self.weight_dense.T
        else:
            pad = self.padded[1] - self.in_features
            if pad:
                x2 = nn.functional.pad(x2, (0, pad))
            if self.backend == "torch":
                y = (self.weight_bsr @ x2.T.contiguous()).T
            else:
                y = torch.from_numpy(np.asarray(self.weight_scipy @ x2.T.detach().cpu().numpy()).T)
            y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


class FusedMLP(nn.Module):
    """A pruned MLP - Linear, ReLU, ..., Linear on the flattened input, as LeNet-300-100
    - whose whole forward is one call of :class:`~.fused.NumbaMLP` (numba BSR
    kernels, or ``fmt="csr"``).  ``layers``: the Linear layers in forward order
    (default every Linear of the model); ``k`` one block size (or a dict giving
    every layer the same).  Inference only, float32; takes (batch, ...) tensors and
    returns (batch, out_features) in the input's dtype.  It does not know the
    model's forward: :func:`~.model.to_bsr_model` checks that the two agree before it
    hands one out."""

    def __init__(self, model: nn.Module, k, layers=None, fmt: str = "bsr", tile: int = TILE):
        super().__init__()
        self.layers = tuple(layers) if layers is not None else linear_layers(model)
        ks = {k[n] for n in self.layers} if isinstance(k, Mapping) else {k}
        if len(ks) != 1:
            raise ValueError(f"the fused forward takes one block size for all layers, got {k!r}")
        self.k = check_block_size(ks.pop())
        self.net = NumbaMLP(dense_state_dict(model), self.k, fmt, layers=self.layers, tile=tile)
        self.in_features, self.out_features = self.net.in_features, self.net.out_features

    def extra_repr(self) -> str:
        return f"{self.net!r}, layers={list(self.layers)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros(0, self.out_features)
        return _numpy_result(self.net(x.reshape(x.shape[0], -1)), x)


def _check_fused(model: nn.Module, fused: FusedMLP, names) -> None:
    """Raise a ValueError unless the model's own forward is the MLP the fused forward
    computes (e.g. a model ending in a softmax is not), on a seeded random input
    (within :data:`STRUCTURE_RTOL`); then check the fused output itself."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, fused.in_features)).astype(np.float32))
    ref, bound = reference_forward(model, x, names), reference_forward(model, x, names, bound=True)
    try:
        with torch.no_grad():
            own = model(x.to(next(model.parameters()).dtype)).double().cpu().numpy()
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"backend 'fused' needs a model whose forward takes (batch, {fused.in_features}) inputs "
                         f"through the Linear layers {list(names)}: {type(e).__name__}: {e}") from e
    ok, err = close_enough(own, ref, bound, STRUCTURE_RTOL)
    if not ok:
        raise ValueError(f"backend 'fused' runs Linear, ReLU, ..., Linear over {list(names)}, but this model's forward "
                         f"computes something else (max deviation {err:.3g} of |W||x|); use a per-layer backend")
    ok, err = close_enough(fused(x).double().numpy(), ref, bound, RTOL["float32"])
    if not ok:
        raise RuntimeError(f"the fused forward differs from the model (max deviation {err:.3g} of |W||x|)")


def _choices(names, backend) -> dict[str, str]:
    chosen = {n: (backend[n] if isinstance(backend, Mapping) else backend) for n in names}
    bad = {n: b for n, b in chosen.items() if b not in BACKENDS + (AUTO, FUSED)}
    if bad:
        raise ValueError(f"unknown BSR backend(s) {bad}; choose one of {BACKENDS + (AUTO, FUSED)}")
    return chosen


def convert_model(model: nn.Module, k, backend="torch", layers=None, measure=None) -> nn.Module:
    """:func:`~.model.to_bsr_model`'s conversion (see there), with ``measure`` the
    function that picks the backends of the layers given ``"auto"``:
    ``measure(model_copy, {name: k}, names) -> {name: backend}``; without it
    ``"auto"`` is refused."""
    bsr_model = copy.deepcopy(model).eval()
    names = list(layers or [n for n, m in bsr_model.named_modules() if isinstance(m, nn.Linear)])
    chosen = _choices(names, backend)
    if FUSED in chosen.values():
        if set(chosen.values()) != {FUSED}:
            raise ValueError(f"backend 'fused' runs the whole model: give it to every layer, got {chosen}")
        fused = FusedMLP(bsr_model, k, names).eval()
        _check_fused(bsr_model, fused, names)
        return fused
    plan = swap_plan(bsr_model, names)
    dense = {n: s.reason for n, s in plan.items() if s.reason and s.name == n}
    if dense:
        warnings.warn("to_bsr_model leaves these Linear layers dense: "
                      + "; ".join(f"{n!r}: {r}" for n, r in dense.items()), stacklevel=3)
    todo = [n for n, s in plan.items() if s.name == n and not s.reason]
    ks = {n: check_block_size(k[n] if isinstance(k, Mapping) else k) for n in todo}
    for n in todo:
        dtype = plan[n].module.weight.dtype
        if dtype not in WEIGHT_DTYPES:
            raise ValueError(f"layer {n!r} has {dtype} weights; BSR layers hold {[str(d) for d in WEIGHT_DTYPES]}: "
                             f"convert a copy with model.float() (and feed float32 inputs) before to_bsr_model")
        why = unsupported(chosen[n], ks[n]) if chosen[n] != AUTO else None
        if why:
            raise ValueError(f"backend {chosen[n]!r} cannot hold layer {n!r} with k={ks[n]}: {why}; "
                             f"choose another of {BACKENDS} or backend='auto'")
    if any(chosen[n] == AUTO for n in todo):
        if measure is None:
            raise ValueError("backend='auto' is chosen by measurement: convert with blockprune_utils.bsr.to_bsr_model")
        auto = [n for n in todo if chosen[n] == AUTO]
        chosen.update(measure(bsr_model, {n: ks[n] for n in auto}, auto))
    attention = {n: places_of(bsr_model, plan[n].attention) for n in todo if plan[n].attention is not None}
    for n in todo:
        bsr = BSRLinear.from_linear(plan[n].module, ks[n], backend=chosen[n])
        if n in attention:  # the attention module around it is replaced, calling it as its out_proj
            wrapper = BSRMultiheadAttention(plan[n].attention, bsr)
            for parent, child in attention[n]:
                setattr(parent, child, wrapper)
            continue
        for parent, child, _ in plan[n].places:
            setattr(parent, child, bsr)
    if todo:
        switch_off_fast_paths(bsr_model)
        hook_dense_linears(bsr_model)  # BSR layers hand on transposed views: the dense layers copy them to rows
    return bsr_model


def backends_of(model: nn.Module) -> dict[str, str]:
    """Layer name -> backend of every BSR layer of a converted model (``"fused"`` for each layer of a FusedMLP)."""
    if isinstance(model, FusedMLP):
        return {n: FUSED for n in model.layers}
    return {n: m.backend for n, m in model.named_modules() if isinstance(m, BSRLinear)}
