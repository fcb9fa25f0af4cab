"""The benchmark's formats and whole-model variants, declared once.

:data:`FORMAT` holds the formats of one product ``Y = W X`` (:mod:`.products`): each
:class:`Format` names its library and storage layout, how its operand is built from
the pruned weight (``build``), how it takes the input (``input``) and is called
(``call``), its label in the figures and, when cachegrind simulates it, its
cache-simulation entry (:class:`CacheSim`: the ``fmt`` of the cache rows, the kernel
functions counted, label and colour).  :data:`VARIANT` holds the whole-model forwards
(:mod:`.models`): each :class:`Variant` names its builder, its label and group in the
figures, and whether it is a dense forward or a sparse candidate of the speed-up
tables.  The products, the model forwards, the tables, the findings, the plots and
the cache simulation all read these two tables: a new kernel backend is a
:class:`Format` entry (its builder, and its ``call`` when the product is not
``operand @ X``) and, for the whole model, a :class:`Variant` entry with its builder.

The names are the ``format`` / ``variant`` / ``fmt`` values of the stored rows and of
the committed figure tables: they never change.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..bsr import LeanMLP, auto_backends, linear_layers, to_bsr_model, to_scipy_bsr, to_scipy_csr, to_torch_bsr
from ..bsr.fused import NumbaMLP
from ..bsr.kernels import bound_kernel, kernel_arrays
from ..masks import remove_masks

# How a product takes its input X ((cols,) or (cols, batch) float32): as a numpy array or a torch tensor, as is or
# zero-padded to a multiple of k (the library BSR formats).
INPUTS = ("numpy", "numpy_padded", "torch", "torch_padded")
# cachegrind's name of code without a symbol: numba's JIT code (its counts come from the difference of two runs)
JIT_CODE = r"^(?:\?\?\?|0x[0-9a-fA-F]+)$"
SCIPY_COUNTED = "scipy's compiled sparsetools (the timed binary)"


@dataclass(frozen=True)
class CacheSim:
    """How cachegrind simulates a format: ``fmt`` (the cache rows' name and the driver's
    argument), ``kernel`` (a regular expression over cachegrind's function names: the
    functions whose counts make up one product), ``label`` and ``color`` (Figure 6) and
    ``counted`` (which machine code is counted; None: the row names the target it
    compiled for, as the numba rows do)."""

    fmt: str
    kernel: str
    label: str
    color: str
    counted: str | None = None

    @property
    def jit(self) -> bool:
        """Counted as JIT code without a symbol (numba's): the difference of two runs."""
        return self.kernel == JIT_CODE


_NO_BIAS = np.zeros(0, np.float32)


def _numba_product(kernel, x, y):
    kernel(x, y, _NO_BIAS, False)
    return y


def numba_call(a, x: np.ndarray, parallel: bool) -> Callable[[], np.ndarray]:
    """A call of the numba kernel of ``a`` (:func:`~blockprune_utils.bsr.kernels.kernel_arrays`)
    writing ``W x`` into an output allocated here, once (the kernels take x unpadded);
    ``parallel``: the rows split over numba's threads."""
    y = np.empty((a.shape[0],) + x.shape[1:], np.float32)
    return functools.partial(_numba_product, bound_kernel(a, x.ndim == 2, parallel), x, y)


@dataclass(frozen=True)
class Format:
    """One format of a product ``Y = W X``: ``build(w, k)`` makes the operand from the
    pruned float32 weight ``w`` (block size ``k``); ``input`` (one of :data:`INPUTS`) is
    how it takes X; ``call(operand, X, parallel)`` returns the argument-free product
    (None: ``operand @ X``)."""

    name: str
    lib: str
    layout: str  # dense, csr, bsr, ...: the rows' layout column
    label: str
    build: Callable[[torch.Tensor, int], object]
    input: str
    cache: CacheSim | None = None
    call: Callable[[object, object, bool], Callable[[], object]] | None = None

    @property
    def dense(self) -> bool:
        return self.layout == "dense"


# The counted kernel functions: the compiler inlines scipy's templated kernels (csr_matvec<int, float>) into their
# type-dispatch thunks, so the thunk (with its few dispatch instructions) is counted too; scipy's bsr_matvec hands k=1
# to csr_matvec.
FORMAT: dict[str, Format] = {f.name: f for f in (
    Format("numpy_dense", "numpy", "dense", "numpy dense", lambda w, k: w.numpy(), "numpy",
           CacheSim("dense", r"sgemv", "OpenBLAS dense", "0.6",
                    "OpenBLAS sgemv, the kernel it picks for the CPU valgrind presents (AVX2 at most)")),
    Format("torch_dense", "torch", "dense", "torch dense", lambda w, k: w, "torch"),
    Format("scipy_csr", "scipy", "csr", "scipy CSR", lambda w, k: to_scipy_csr(w), "numpy",
           CacheSim("csr", r"\bcsr_matvec(?:<|_thunk)", "scipy CSR", "#fdae6b", SCIPY_COUNTED)),
    Format("scipy_bsr", "scipy", "bsr", "scipy BSR", to_scipy_bsr, "numpy_padded",
           CacheSim("bsr", r"\b(?:bsr|csr)_matvec(?:<|_thunk)", "scipy BSR", "#9ecae1", SCIPY_COUNTED)),
    Format("torch_csr", "torch", "csr", "torch sparse CSR", lambda w, k: w.to_sparse_csr(), "torch"),
    Format("torch_bsr", "torch", "bsr", "torch sparse BSR", to_torch_bsr, "torch_padded"),
    Format("numba_csr", "numba", "csr", "numba CSR", lambda w, k: kernel_arrays(w, 1, "csr"), "numpy",
           CacheSim("numba_csr", JIT_CODE, "numba CSR", "#e6550d"), numba_call),
    Format("numba_bsr", "numba", "bsr", "numba BSR", lambda w, k: kernel_arrays(w, k, "bsr"), "numpy",
           CacheSim("numba_bsr", JIT_CODE, "numba BSR", "#3182bd"), numba_call),
)}
FORMATS = tuple(FORMAT)  # the names, in table order
DENSE_FORMATS = tuple(f.name for f in FORMAT.values() if f.dense)
SPARSE_FORMATS = tuple(f.name for f in FORMAT.values() if not f.dense)
# the simulated formats in the order of Figure 6: the sparse ones, then dense (CSR orange, BSR blue, dense grey)
SIMULATED = {f.cache.fmt: f.cache for f in sorted((f for f in FORMAT.values() if f.cache), key=lambda f: f.dense)}
# torch dense against sparse BSR on a GPU, in float32 and bfloat16 (:mod:`.gpu`)
GPU_FORMATS = ("cuda_dense_fp32", "cuda_bsr_fp32", "cuda_dense_bf16", "cuda_bsr_bf16")


def csr_bsr_pairs(cache: bool = False) -> dict[str, tuple[str, str]]:
    """{library: (its CSR format, its BSR format)} of the libraries that have both, in table
    order; ``cache``: of the simulated formats, by their cachegrind ``fmt`` names."""
    out = {}
    for lib in dict.fromkeys(f.lib for f in FORMAT.values() if not f.dense):
        of = {f.layout: f.cache.fmt if cache else f.name for f in FORMAT.values() if f.lib == lib and (f.cache or not cache)}
        if {"csr", "bsr"} <= of.keys():
            out[lib] = (of["csr"], of["bsr"])
    return out


def same_lib_dense(name: str) -> str:
    """The dense format of ``name``'s library (numpy's for a library without one)."""
    lib = FORMAT[name].lib
    return next((f.name for f in FORMAT.values() if f.dense and f.lib == lib), "numpy_dense")


@dataclass(frozen=True)
class ModelCase:
    """What a whole-model variant is built for: the pruned ``model``, block size ``k``,
    the input ``x`` (batch, features) and the keyword arguments of the automatic choice."""

    model: nn.Module
    k: int
    x: torch.Tensor
    auto_kw: dict

    @property
    def batch(self) -> int:
        return self.x.shape[0]


def _module(build: Callable[[ModelCase], nn.Module]):
    """A variant run as a torch module on the tensor input."""
    def variant(c: ModelCase):
        m = build(c)
        return (lambda: m(c.x)), None
    return variant


def _backend(backend: str):
    return _module(lambda c: to_bsr_model(c.model, c.k, backend=backend))


def _module_auto(c: ModelCase):
    choice = auto_backends(c.model, c.k, c.batch, path="module", **c.auto_kw)
    m = to_bsr_model(c.model, c.k, backend=choice)
    return (lambda: m(c.x)), choice


def _lean(fmt: str):
    def variant(c: ModelCase):
        choice = auto_backends(c.model, c.k, c.batch, path="lean", **c.auto_kw) if fmt == "auto" else None
        lean, xn = LeanMLP(c.model, c.k, choice or fmt), c.x.numpy()
        return (lambda: lean(xn)), choice
    return variant


def _numba(fmt: str):
    def variant(c: ModelCase):  # the whole model in one compiled call (one thread)
        net, xn = NumbaMLP(c.model, c.k, fmt, layers=linear_layers(c.model)), c.x.numpy()
        return (lambda: net(xn)), None
    return variant


@dataclass(frozen=True)
class Variant:
    """One whole-model forward: ``build(case)`` returns (an argument-free call of the
    forward, the automatic choice or None); ``group`` (one of :data:`GROUPS`) colours it
    in Figure 4; ``role``: ``dense`` (a dense forward: the fastest is the reference),
    ``sparse`` (a candidate for the fastest sparse forward) or ``""`` (shown only)."""

    name: str
    label: str
    group: str
    role: str
    build: Callable[[ModelCase], tuple[Callable[[], object], object]]

    @property
    def path(self) -> str:
        """The rows' ``path`` column."""
        return "lean-numpy" if self.group == "lean numpy" else "torch-module"


# the groups of Figure 4 in their order, with their colours
GROUPS = {"dense": "0.35", "torch modules": "tab:blue", "lean numpy": "tab:green", "numba": "tab:orange"}
REFERENCE = "torch_dense"  # the dense model of the speed-up columns: to_bsr_model(backend="dense")
VARIANT: dict[str, Variant] = {v.name: v for v in (
    Variant("masked", "masked (W*mask each call)", "dense", "dense", _module(lambda c: c.model.eval())),
    Variant("torch_plain", "torch dense (nn.Linear)", "dense", "dense",
            _module(lambda c: remove_masks(copy.deepcopy(c.model)).eval())),
    Variant("torch_dense", "torch dense (BSRLinear dense)", "dense", "dense", _backend("dense")),
    Variant("torch_bsr", "torch sparse BSR", "torch modules", "sparse", _backend("torch")),
    Variant("scipy_bsr", "scipy BSR module", "torch modules", "sparse", _backend("scipy")),
    Variant("module_auto", "torch modules, auto", "torch modules", "sparse", _module_auto),
    Variant("lean_dense", "lean numpy dense", "dense", "dense", _lean("dense")),
    Variant("lean_csr", "lean CSR", "lean numpy", "", _lean("csr")),
    Variant("lean_bsr", "lean BSR", "lean numpy", "sparse", _lean("bsr")),
    Variant("lean_auto", "lean auto", "lean numpy", "sparse", _lean("auto")),
    Variant("numba_csr", "numba CSR (fused)", "numba", "sparse", _numba("csr")),
    Variant("numba_bsr", "numba BSR (fused)", "numba", "sparse", _numba("bsr")),
)}
MODEL_VARIANTS = tuple(VARIANT)  # the names, in table order
DENSE_VARIANTS = tuple(v.name for v in VARIANT.values() if v.role == "dense")
SPARSE_VARIANTS = tuple(v.name for v in VARIANT.values() if v.role == "sparse")

