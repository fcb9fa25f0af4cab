"""BSR speed benchmark: when does block sparsity pay, and by how much.

Four row families, each declared as a :class:`~blockprune_utils.infra.store.Schema`
and kept in a :class:`~blockprune_utils.infra.store.ResultStore`:

* :func:`matrix_rows` (:mod:`.products`) - one product ``Y = W X`` of a pruned
  weight in every format (numpy dense, torch dense, scipy CSR, scipy BSR, torch
  sparse CSR, torch sparse BSR), for the pruned LeNet-300-100 layers (every k and
  round) and for larger synthetic block-sparse matrices, at several batch sizes and
  thread counts.  Every result is checked against a float64 dense product before it
  is timed; the speed-up over dense is the ratio of medians measured in the same
  run, interleaved (round-robin) so that drifts of a shared machine hit all formats.
* :func:`model_rows` (:mod:`.models`) - the whole pruned LeNet forward: the masked
  model, :func:`~blockprune_utils.bsr.to_bsr_model` with the dense / torch / scipy
  backends and with :func:`~blockprune_utils.bsr.auto_backends`, and the lean numpy
  path :class:`~blockprune_utils.bsr.LeanMLP` (dense, CSR, BSR, auto), and the fused
  numba forward :class:`~blockprune_utils.bsr.NumbaMLP` (CSR, BSR).
* :func:`cache_rows` (:mod:`.cachesim`) - simulated cache misses of the CSR / BSR /
  dense kernels of scipy, OpenBLAS and numba (valgrind's cachegrind; :mod:`.valgrind`).
* :func:`storage_rows` (:mod:`.storage`) - bytes of dense, CSR and BSR storage.

:mod:`.training` times block-sparse training and a transformer-sized MLP (the
``training`` part: the last two lines of the command line, "kernel bar" and
"training bar") and measures the crossover density below which layers train sparse.
:func:`gpu_rows` (:mod:`.gpu`) adds torch dense against sparse BSR on CUDA.  The
weights (:mod:`.weights`) are the LeNet study's trained, pruned models when its
store has them, else a seeded untrained LeNet pruned by the same schedule.
:mod:`.findings` words what the rows say (the conclusion of notebook 02).

Entry point: ``python -m blockprune_utils.bench --quick`` (a few minutes at most;
prints the speed-up tables) or ``python -m blockprune_utils.bench`` (the paper
profile; ``--out`` writes every row to a CSV).  Rows are stored under
``results/bench*/<hash>/``, one file per row keyed by its sweep axes (matrix,
format, batch, threads); the hash covers the timing settings *and the machine*
(CPU model, core count, library versions), so timings from another machine are
never reused.  ``--rerun`` measures again.
"""
from .cachesim import CACHE_SCHEMA, CacheCase, cache_cases, cache_rows, valgrind_path
from .cli import main
from .config import (
    DENSE_FORMATS,
    DENSE_VARIANTS,
    FORMATS,
    GPU_FORMATS,
    LAYERS,
    MODEL_VARIANTS,
    PROFILES,
    SPARSE_FORMATS,
    SPARSE_VARIANTS,
    BenchConfig,
    get_config,
)
from .gpu import GPU_SCHEMA, gpu_available, gpu_rows, measure_gpu
from .harness import all_threads, blas_control, machine, num_threads, row_provenance
from .models import MODEL_SCHEMA, measure_model, model_rows
from .products import MATRIX_SCHEMA, build_operands, matrix_rows, measure_matrix
from .storage import STORAGE_SCHEMA, storage_rows
from .tables import frame, gpu_table, kernel_bar, model_table, speedup_summary, speedup_table, storage_table
from .training import epoch_table, mlp_bar, training_bar, training_crossover
from .weights import (
    Matrix,
    describe_weights,
    lenet_matrices,
    pruned_lenet_model,
    synthetic_matrices,
    synthetic_matrix,
    untrained_pruned_lenets,
)

__all__ = [
    "CACHE_SCHEMA", "CacheCase", "cache_cases", "cache_rows", "valgrind_path", "main", "DENSE_FORMATS", "DENSE_VARIANTS",
    "FORMATS", "GPU_FORMATS", "LAYERS", "MODEL_VARIANTS", "PROFILES", "SPARSE_FORMATS", "SPARSE_VARIANTS", "BenchConfig",
    "get_config", "GPU_SCHEMA", "gpu_available", "gpu_rows", "measure_gpu", "all_threads", "blas_control", "machine",
    "num_threads", "row_provenance", "MODEL_SCHEMA", "measure_model", "model_rows", "MATRIX_SCHEMA", "build_operands",
    "matrix_rows",
    "measure_matrix", "STORAGE_SCHEMA", "storage_rows", "frame", "gpu_table", "kernel_bar", "model_table", "speedup_summary",
    "speedup_table", "storage_table", "Matrix", "describe_weights", "lenet_matrices", "pruned_lenet_model",
    "synthetic_matrices", "synthetic_matrix", "untrained_pruned_lenets",
]
__all__ += ["epoch_table", "mlp_bar", "training_bar", "training_crossover"]
