"""Block Sparse Row storage and inference: conversion of block-pruned weights to
scipy / torch BSR (and CSR for comparison) and storage bytes (:mod:`.convert`); the
numba BSR / CSR kernels (:mod:`.jit`, checked in :mod:`.kernels`) and the fused
whole-model forward (:mod:`.fused`); torch modules - BSRLinear, FusedMLP
(:mod:`.layers`), to_bsr_model (:mod:`.model`), which Linear layers of any model can be swapped
(:mod:`.swap`) and multi-head attention with a BSR output projection
(:mod:`.attention`); the lean numpy inference path of pruned MLPs (:mod:`.lean`);
the measured per-layer backend choice (:mod:`.auto`) and the timing helpers both use
(:mod:`.timing`); bytes and latency of a converted model (:mod:`.summary`); training
on the live blocks only - the numba kernels of a training step (:mod:`.train_kernels`,
:mod:`.vec`), the trainable BlockSparseLinear (:mod:`.sparse_linear`) and the switch
below the measured crossover density (:mod:`.sparse_training`)."""
from .attention import BSRMultiheadAttention, attention_supported
from .auto import auto_backends, auto_choice, auto_layer_backends, layer_rows
from .convert import (
    INDEX_DTYPE,
    Storage,
    bsr_arrays,
    padded_shape,
    quiet_sparse_beta,
    storage_bytes,
    to_scipy_bsr,
    to_scipy_csr,
    to_torch_bsr,
)
from .fused import TILE, NumbaMLP
from .kernels import MAX_K, KernelArrays, bsr_matmul, csr_matmul, kernel_arrays
from .layers import AUTO, BACKENDS, FUSED, BSRLinear, FusedMLP, backends_of, unsupported
from .lean import LEAN_FORMATS, LeanLayer, LeanMLP, lean_kernel, linear_layers, reference_forward
from .model import to_bsr_model
from .sparse_linear import BlockSparseLinear
from .sparse_training import crossover_density, sparse_layers
from .summary import backend_table, compare_models, storage_table
from .timing import Timing, blas_control, close_enough, num_threads, time_calls

__all__ = ["BACKENDS", "FUSED", "INDEX_DTYPE", "BSRLinear", "FusedMLP", "Storage", "bsr_arrays", "padded_shape",
           "quiet_sparse_beta", "storage_bytes", "to_bsr_model", "to_scipy_bsr", "to_scipy_csr", "to_torch_bsr"]
__all__ += ["auto_backends", "auto_choice", "LEAN_FORMATS", "LeanLayer", "LeanMLP", "lean_kernel", "linear_layers",
            "reference_forward", "Timing", "blas_control", "close_enough", "num_threads", "time_calls"]
__all__ += ["BSRMultiheadAttention", "attention_supported", "backend_table", "compare_models", "storage_table", "AUTO",
            "auto_layer_backends", "backends_of", "layer_rows",
            "unsupported"]
__all__ += ["NumbaMLP", "TILE", "MAX_K", "KernelArrays", "bsr_matmul", "csr_matmul", "kernel_arrays"]
__all__ += ["BlockSparseLinear", "crossover_density", "sparse_layers"]
