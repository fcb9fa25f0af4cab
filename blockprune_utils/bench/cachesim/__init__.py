"""Simulated cache behaviour of the CSR, BSR and dense products, with valgrind's cachegrind.

What is measured
----------------
One sparse (or dense) matrix-vector product ``y += W x`` of a pruned weight, run
by the very kernels scipy (``csr_matvec`` / ``bsr_matvec`` of its compiled sparse
tools) and numpy (OpenBLAS ``sgemv``) use.  cachegrind (``valgrind
--tool=cachegrind --cache-sim=yes``) simulates a two-level data cache and counts,
per function, the data references (Dr + Dw), the first-level misses (D1mr + D1mw)
and the last-level misses (DLmr + DLmw).  The simulation is deterministic: the
same binary on the same input gives the same counts on any host, because the
cache geometry is fixed (:data:`.cachegrind.CACHE`) instead of read from the host CPU.

Isolating the product from the interpreter
------------------------------------------
A Python process under cachegrind executes ~10^9 instructions just to start and
import numpy; a LeNet-sized product is ~10^4.  Two runs (N products and 0
products) could be differenced, but the products would be a part in 10^4 of the
totals and the two runs must start identically.  cachegrind's own attribution is
used instead: every data access is charged to the function whose instruction made
it, and the product kernels (``csr_matvec<int, float>``, ``bsr_matvec<int, float>``,
OpenBLAS's ``sgemv*``) run nowhere else in the driver
(:mod:`.driver`).  So the counts charged to those functions, divided by
the number of products, are exactly the kernel's own references and misses per
product; the interpreter's call overhead (the same for every format) is left out.

The numba kernels (formats ``numba_csr`` / ``numba_bsr``, :mod:`blockprune_utils.bsr.jit`)
are JIT code without symbol names, so they are measured by the difference of two
runs instead (:func:`.valgrind.numba_product_counts`), at batch 1 (matrix-vector,
like the scipy rows) and at the profile's larger ``cache_batches`` (one product
``Y = W X`` in the kernels' (features, batch) layout).  They are counted as compiled
for what valgrind decodes (:func:`blockprune_utils.bench.isa.valgrind_target`: AVX2 at most), which on an
AVX-512 host is not the code that was timed; every row names the counted code
(``counted_target``, ``counted_isa``) and the timed instruction set (``isa``).

A case whose simulation fails (valgrind rejecting an instruction, a timeout) becomes
a row with ``ok`` false and the reason in ``error`` instead of an exception; such
rows are not stored, so the next run tries the case again.

The parent side (:mod:`.cases`: :func:`cachesim_rows`) writes the operands of a
pruned layer, built with :func:`~blockprune_utils.bsr.to_scipy_bsr` /
``to_scipy_csr``, to an ``.npz`` file, runs the driver under cachegrind
(:mod:`.valgrind`) and parses its output file (:mod:`.cachegrind`).  Which formats
are simulated, and which functions' counts make up one product of each, is declared
with the formats (:data:`blockprune_utils.bench.formats.SIMULATED`).
"""
from .cachegrind import CACHE, cache_description
from .cases import CACHE_SCHEMA, CacheCase, cache_cases, cache_rows, cachesim_rows, run_cachegrind, write_operands
from .valgrind import valgrind_path, valgrind_version

__all__ = ["CACHE", "CACHE_SCHEMA", "CacheCase", "cache_cases", "cache_description", "cache_rows", "cachesim_rows",
           "run_cachegrind", "valgrind_path", "valgrind_version", "write_operands"]
