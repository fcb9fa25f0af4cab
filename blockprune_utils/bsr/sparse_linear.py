"""A trainable block-sparse linear layer: its parameter is the stored blocks only.

:class:`BlockSparseLinear` holds a pruned ``nn.Linear``'s live weights as
``values`` - (nnzb, k, k) blocks (``fmt="bsr"``) or the (nnz,) entries of the
mask (``fmt="csr"``) - plus the bias; the structure (which blocks) is fixed
numpy arrays, not state.  It is built from a masked (or plain) ``nn.Linear``
(:meth:`BlockSparseLinear.from_linear`) and written back into it
(:meth:`BlockSparseLinear.write_back`), so checkpoints, masks and the pruner keep
working on the ordinary model; an optimizer given its parameters steps only the
live weights.

Forward and backward run the numba kernels (:mod:`.kernels`, :mod:`.train_kernels`)
in the (features, batch) layout: the input is transposed once in the forward
(and kept for the weight gradient), the output gradient once in the backward -
every conversion inside the timed call.  The output and the input gradient are
returned as transposed views of the kernels' results (a (batch, features) tensor
whose memory is (features, batch)): elementwise ops such as ReLU keep that layout,
so the next block-sparse layer (and, in the backward, the previous one) takes it
without a transpose - the layout is kept across consecutive sparse layers, and
only the network's edges convert.  The input is kept for the weight gradient
without a copy when it is such a view: it must not be changed in place before the
backward.
float32 runs the fastest kernels (k <= 8: compiled per k); float64 (for
``torch.autograd.gradcheck``) runs the run-time-k kernels.  CPU tensors only.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..blocks import as_matrix, block_grid, check_block_size, to_blocks
from ..masks import get_mask, is_masked
from .jit import MAX_K, check_k, csr_kernel
from .kernels import FORMATS, bsr_kernel
from .train_kernels import block_apply_kernel, block_grad_kernel, csr_grad_kernel, transposed_structure
from .transpose import transpose as _transpose32

_NO = np.zeros(0, np.int32)


class Structure(NamedTuple):
    """Which weights are stored: ``fmt``, ``k`` (1 for csr), logical ``shape`` (n_out,
    n_in), the row structure (``indices``, ``indptr``: block rows / rows) and that of
    the transpose (``t_indices``, ``t_indptr``, ``perm``: see
    :func:`.train_kernels.transposed_structure`), and ``mask``: the torch bool mask of
    stored blocks (bsr, the block grid) or entries (csr, the weight's shape)."""

    fmt: str
    k: int
    shape: tuple
    indices: np.ndarray
    indptr: np.ndarray
    t_indices: np.ndarray
    t_indptr: np.ndarray
    perm: np.ndarray
    mask: torch.Tensor

    @property
    def n_stored(self) -> int:
        return int(self.indices.shape[0])


def structure_of(element_mask: torch.Tensor, k: int = 1, fmt: str = "bsr") -> Structure:
    """The structure of a weight whose non-zero pattern is ``element_mask`` (n_out, n_in):
    bsr - the k x k blocks holding a live entry, which must then be live entirely
    (a block-pruning mask); csr - the live entries.  Empty rows and all-zero masks are fine."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    m = as_matrix(torch.as_tensor(element_mask)).detach().cpu() != 0
    shape = tuple(m.shape)
    if fmt == "csr":
        k, grid = 1, m
    else:
        k = check_k(check_block_size(k))
        live = to_blocks(m.float(), k).sum((2, 3))  # live entries per block
        grid = live > 0
        R, C = grid.shape
        rows, cols = torch.full((R,), float(k)), torch.full((C,), float(k))
        rows[-1:], cols[-1:] = shape[0] - (R - 1) * k, shape[1] - (C - 1) * k  # edge blocks: their real entries
        if not torch.equal(live[grid], (rows[:, None] * cols[None, :])[grid]):
            raise ValueError(f"the mask is not made of whole {k} x {k} blocks: store it with fmt='csr' (k=1) instead")
    rows, cols = np.nonzero(grid.numpy())
    indices = cols.astype(np.int32)
    indptr = np.zeros(grid.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=grid.shape[0]), out=indptr[1:])
    t_indices, t_indptr, perm = transposed_structure(indices, indptr, grid.shape[1])
    return Structure(fmt, k, shape, indices, indptr, t_indices, t_indptr, perm, grid)


def gather(s: Structure, weight: torch.Tensor) -> torch.Tensor:
    """The stored values of a dense (n_out, n_in) weight: (nnzb, k, k) or (nnz,)."""
    w = as_matrix(weight)
    if tuple(w.shape) != s.shape:
        raise ValueError(f"weight of shape {tuple(w.shape)} does not match the structure's {s.shape}")
    return w[s.mask].clone() if s.fmt == "csr" else to_blocks(w, s.k)[s.mask].clone()


def scatter(s: Structure, values: torch.Tensor) -> torch.Tensor:
    """The dense (n_out, n_in) weight holding ``values`` at the stored places, zeros elsewhere."""
    n_out, n_in = s.shape
    if s.fmt == "csr":
        w = values.new_zeros(s.shape)
        w[s.mask] = values
        return w
    R, C = block_grid(s.shape, s.k)
    padded = values.new_zeros(R * s.k, C * s.k)
    padded.view(R, s.k, C, s.k).permute(0, 2, 1, 3)[s.mask] = values
    return padded[:n_out, :n_in].clone()


# ----------------------------------------------------------------------------- products (numpy, checked)

def _check(a: np.ndarray, name: str, shape, dtype) -> None:
    if a.dtype != dtype or a.shape != tuple(shape) or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array of shape {tuple(shape)}, "
                         f"got {a.dtype} {a.shape}")


def _blocks(s: Structure, data: np.ndarray) -> np.ndarray:
    return data.reshape(-1, 1, 1) if s.fmt == "csr" else data


def forward(s: Structure, data: np.ndarray, x: np.ndarray, bias=None, parallel: bool = False) -> np.ndarray:
    """``y = W x (+ bias)`` in the (features, batch) layout: ``x`` (n_in, B) -> (n_out, B)."""
    n_out, n_in = s.shape
    _check(x, "x", (n_in, x.shape[1] if x.ndim == 2 else -1), data.dtype)
    y = np.empty((n_out, x.shape[1]), data.dtype)
    b = np.zeros(0, data.dtype) if bias is None else bias
    if data.dtype == np.float32 and s.fmt == "csr":
        csr_kernel(True, parallel)(data, s.indices, s.indptr, x, y, b, False)
    elif data.dtype == np.float32 and s.k > 1:
        bsr_kernel(s.k, True, parallel)(data, s.indices, s.indptr, x, y, b, False)
    else:
        block_apply_kernel(parallel)(_blocks(s, data), s.k, 1, s.indices, s.indptr, _NO, x, y, b, False)
    return y


def input_grad(s: Structure, data: np.ndarray, dy: np.ndarray, parallel: bool = False) -> np.ndarray:
    """``dx = W^T dy`` in the (features, batch) layout: ``dy`` (n_out, B) -> (n_in, B)."""
    n_out, n_in = s.shape
    _check(dy, "dy", (n_out, dy.shape[1] if dy.ndim == 2 else -1), data.dtype)
    dx = np.empty((n_in, dy.shape[1]), data.dtype)
    none = np.zeros(0, data.dtype)
    if data.dtype == np.float32 and s.fmt == "csr":  # the transpose's entries, gathered: four per pass of the CSR kernel
        csr_kernel(True, parallel)(data[s.perm], s.t_indices, s.t_indptr, dy, dx, none, False)
    else:
        block_apply_kernel(parallel)(_blocks(s, data), 1, s.k, s.t_indices, s.t_indptr, s.perm, dy, dx, none, False)
    return dx


def weight_grad(s: Structure, dy: np.ndarray, x: np.ndarray, parallel: bool = False) -> np.ndarray:
    """``dy x^T`` at the stored places only: (nnzb, k, k) or (nnz,), from ``dy`` (n_out, B), ``x`` (n_in, B)."""
    n_out, n_in = s.shape
    _check(dy, "dy", (n_out, dy.shape[1] if dy.ndim == 2 else -1), dy.dtype)
    _check(x, "x", (n_in, dy.shape[1]), dy.dtype)
    if s.fmt == "csr":
        g = np.empty(s.n_stored, dy.dtype)
        csr_grad_kernel(parallel)(dy, x, s.indices, s.indptr, g)
    else:
        g = np.empty((s.n_stored, s.k, s.k), dy.dtype)
        block_grad_kernel(parallel)(dy, x, s.indices, s.indptr, g)
    return g


def features_first(a: np.ndarray) -> np.ndarray:
    """(B, n) -> its C-contiguous transpose (n, B): ``a.T`` itself when that is
    C-contiguous (``a`` is a transposed view, as the layer's outputs are), else a copy
    (float32: the vectorised transpose)."""
    if a.ndim == 2 and a.T.flags.c_contiguous:
        return a.T
    a = np.ascontiguousarray(a)
    out = np.empty(a.shape[::-1], a.dtype)
    if a.dtype == np.float32:
        _transpose32(a, out)
    else:
        out[...] = a.T
    return out


# ----------------------------------------------------------------------------- autograd and the layer

class _Ops:
    """The three products of one structure, dtype and threading with their kernels
    picked once (the per-call cost of a training step matters for small layers):
    the choices of :func:`forward`, :func:`input_grad`, :func:`weight_grad`, unchecked."""

    def __init__(self, s: Structure, dtype, parallel: bool):
        self.s, self.dtype, self.none = s, np.dtype(dtype), np.zeros(0, dtype)
        f32 = self.dtype == np.float32
        apply = block_apply_kernel(parallel)
        self.fwd = (csr_kernel(True, parallel) if f32 and s.fmt == "csr" else
                    bsr_kernel(s.k, True, parallel) if f32 and s.k > 1 else None)
        self.apply, self.csr_t = apply, csr_kernel(True, parallel) if f32 and s.fmt == "csr" else None
        self.grad = csr_grad_kernel(parallel) if s.fmt == "csr" else block_grad_kernel(parallel)

    def forward(self, data, x, bias):
        s = self.s
        y = np.empty((s.shape[0], x.shape[1]), self.dtype)
        b = self.none if bias is None else bias
        if self.fwd is not None:
            self.fwd(data, s.indices, s.indptr, x, y, b, False)
        else:
            self.apply(_blocks(s, data), s.k, 1, s.indices, s.indptr, _NO, x, y, b, False)
        return y

    def input_grad(self, data, dy):
        s = self.s
        dx = np.empty((s.shape[1], dy.shape[1]), self.dtype)
        if self.csr_t is not None:
            self.csr_t(data[s.perm], s.t_indices, s.t_indptr, dy, dx, self.none, False)
        else:
            self.apply(_blocks(s, data), 1, s.k, s.t_indices, s.t_indptr, s.perm, dy, dx, self.none, False)
        return dx

    def weight_grad(self, dy, x):
        s = self.s
        g = np.empty((s.n_stored,) if s.fmt == "csr" else (s.n_stored, s.k, s.k), self.dtype)
        self.grad(dy, x, s.indices, s.indptr, g)
        return g


def _batch_first(yt: np.ndarray, lead) -> torch.Tensor:
    """The (features, batch) result as a (*lead, features) tensor: for 2-D inputs the
    transposed view, no copy (elementwise ops keep that layout, and the next sparse
    layer reads it back without a transpose); otherwise a transposed copy."""
    if len(lead) == 1:
        return torch.from_numpy(yt).t()
    return torch.from_numpy(features_first(yt)).reshape(*lead, yt.shape[0])


class _SparseLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, values, bias, ops):
        n_out, n_in = ops.s.shape
        lead = x.shape[:-1]
        xt = features_first(x.detach().reshape(-1, n_in).numpy())
        data = values.detach().numpy()
        yt = ops.forward(data, xt, None if bias is None else bias.detach().numpy())
        ctx.ops, ctx.xt, ctx.data, ctx.has_bias, ctx.lead = ops, xt, data, bias is not None, lead
        return _batch_first(yt, lead)

    @staticmethod
    def backward(ctx, gy):
        ops = ctx.ops
        n_out, n_in = ops.s.shape
        dyt = features_first(gy.detach().reshape(-1, n_out).numpy())
        gx = gv = gb = None
        if ctx.needs_input_grad[0]:
            gx = _batch_first(ops.input_grad(ctx.data, dyt), ctx.lead)
        if ctx.needs_input_grad[1]:
            gv = torch.from_numpy(ops.weight_grad(dyt, ctx.xt))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = torch.from_numpy(dyt.sum(1))
        return gx, gv, gb, None


class BlockSparseLinear(nn.Module):
    """``y = x W^T + b`` with W stored as its live blocks (``values``) only; see the
    module docstring.  ``parallel`` splits the products over numba's threads."""

    def __init__(self, s: Structure, values: torch.Tensor, bias: torch.Tensor | None = None, parallel: bool = False):
        super().__init__()
        want = (s.n_stored,) if s.fmt == "csr" else (s.n_stored, s.k, s.k)
        if tuple(values.shape) != want:
            raise ValueError(f"values of shape {tuple(values.shape)} do not match the structure's {want}")
        self.structure, self.parallel = s, bool(parallel)
        self.values = nn.Parameter(values.detach().clone().contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().contiguous())
        self.in_features, self.out_features = s.shape[1], s.shape[0]
        self._ops: dict = {}  # the kernels picked once per dtype (see _Ops)

    @classmethod
    def from_linear(cls, linear: nn.Linear, k: int = 1, fmt: str = "bsr", parallel: bool = False, *,
                    structure: Structure | None = None) -> "BlockSparseLinear":
        """The live weights of ``linear`` (its mask's; unmasked: its non-zeros), k x k blocks
        or entries; ``structure``: that of the mask, when the caller has it already."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        if structure is None:
            structure = structure_of(get_mask(linear) if is_masked(linear) else (w != 0), k, fmt)
        s = structure
        return cls(s, gather(s, w), None if linear.bias is None else linear.bias.detach(), parallel)

    def __getstate__(self) -> dict:  # copies and pickles pick their kernels again on use
        return {**self.__dict__, "_ops": {}}

    def weight(self) -> torch.Tensor:
        """The dense (n_out, n_in) weight (zeros outside the stored places)."""
        return scatter(self.structure, self.values.detach())

    @torch.no_grad()
    def write_back(self, linear: nn.Linear) -> nn.Linear:
        """Copy the stored weights (and bias) into ``linear`` - its masked parameter's
        live entries when it is masked - and return it."""
        target = linear.parametrizations.weight.original if is_masked(linear) else linear.weight
        if tuple(target.shape) != self.structure.shape:
            raise ValueError(f"linear of weight shape {tuple(target.shape)} does not match {self.structure.shape}")
        # the stored places: for a mask made of whole blocks (or stored entry by entry), the mask's live entries
        ones = torch.ones_like(self.values, dtype=torch.bool)
        live = get_mask(linear) != 0 if is_masked(linear) else scatter(self.structure, ones)
        target.copy_(torch.where(live, self.weight().to(target.dtype), target))
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.values.dtype or x.device.type != "cpu":
            raise ValueError(f"input must be a CPU {self.values.dtype} tensor, got {x.device.type} {x.dtype}")
        ops = self._ops.get(x.dtype)
        if ops is None:
            ops = self._ops[x.dtype] = _Ops(self.structure, self.values.detach().numpy().dtype, self.parallel)
        return _SparseLinearFn.apply(x, self.values, self.bias, ops)

    def extra_repr(self) -> str:
        s = self.structure
        return f"{s.shape[1]} -> {s.shape[0]}, fmt={s.fmt}, k={s.k}, stored={s.n_stored}, parallel={self.parallel}"


def rows_contiguous(module: nn.Module, args: tuple):
    """Forward pre-hook of a dense ``nn.Linear``: a block-sparse layer (this one, or a
    ``BSRLinear`` of any backend) hands on its output as a transposed view (features
    first in memory), which the sparse layers after it read in place but which makes torch's
    dense product several times slower (a 10 x 100 layer at batch 128: about 50 us
    instead of 14); such an input is copied to rows first (a few us), any other passes
    as it is."""
    x = args[0] if args else None
    if x is None or x.dim() < 2 or x.is_contiguous():
        return None
    return (x.contiguous(), *args[1:])


def hook_dense_linears(model: nn.Module) -> list:
    """Give every ``nn.Linear`` of ``model`` the :func:`rows_contiguous` pre-hook (once);
    returns the new hooks' handles (``.remove()`` takes a hook off again)."""
    return [m.register_forward_pre_hook(rows_contiguous) for m in model.modules()
            if isinstance(m, nn.Linear) and rows_contiguous not in m._forward_pre_hooks.values()]


__all__ = ["MAX_K", "BlockSparseLinear", "Structure", "features_first", "forward", "gather", "hook_dense_linears",
           "input_grad", "rows_contiguous", "scatter", "structure_of", "weight_grad"]
