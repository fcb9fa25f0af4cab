"""BSR speed benchmark: when does block sparsity pay, and by how much.

Four row families, each declared as a :class:`~blockprune_utils.infra.store.Schema`
and kept in a :class:`~blockprune_utils.infra.store.ResultStore`:

* :func:`matrix_rows` (:mod:`.products`) - one product ``Y = W X`` of a pruned
  weight in every format (numpy dense, torch dense, scipy CSR, scipy BSR, torch
  sparse CSR, torch sparse BSR, numba CSR and BSR), for the pruned LeNet-300-100
  layers (every k and round) and for larger synthetic block-sparse matrices, at
  several batch sizes and thread counts.  Every result is checked against a float64 dense product before it
  is timed; the speed-up over dense is the ratio of medians measured in the same
  run, interleaved (round-robin) so that drifts of a shared machine hit all formats.
* :func:`model_rows` (:mod:`.models`) - the whole pruned LeNet forward: the masked
  model, :func:`~blockprune_utils.bsr.to_bsr_model` with the dense / torch / scipy
  backends and with :func:`~blockprune_utils.bsr.auto_backends`, and the lean numpy
  path :class:`~blockprune_utils.bsr.LeanMLP` (dense, CSR, BSR, auto), and the fused
  numba forward :class:`~blockprune_utils.bsr.NumbaMLP` (CSR, BSR).
* :func:`cache_rows` (the :mod:`.cachesim` package) - simulated cache misses of the
  CSR / BSR / dense kernels of scipy, OpenBLAS and numba (valgrind's cachegrind).
* :func:`storage_rows` (:mod:`.storage`) - bytes of dense, CSR and BSR storage.

The formats and whole-model variants are declared once, in :mod:`.formats`: a new
kernel backend is an entry there plus its builder.  :mod:`.config` holds the
profiles, what a row records of the machine, and the result stores.
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

This package exports what notebook 02 uses; everything else is imported from its
module.
"""
from ..bsr.timing import all_threads, blas_control
from . import findings
from .cachesim import cache_rows
from .config import get_config, machine
from .gpu import gpu_available, gpu_rows
from .models import model_rows
from .products import matrix_rows
from .storage import storage_rows
from .tables import frame, gpu_table, kernel_bar, model_table, speedup_summary, speedup_table, storage_table
from .training import epoch_table
from .weights import describe_weights

__all__ = ["all_threads", "blas_control", "cache_rows", "describe_weights", "epoch_table", "findings", "frame", "get_config",
           "gpu_available", "gpu_rows", "gpu_table", "kernel_bar", "machine", "matrix_rows", "model_rows", "model_table",
           "speedup_summary", "speedup_table", "storage_rows", "storage_table"]
