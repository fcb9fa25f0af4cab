"""The program cachegrind runs for the numba kernels: ``1 + n`` products ``Y = W X``
of one operand file by the compiled CSR or BSR kernel.

It imports numpy and numba only: the kernels' module (:mod:`blockprune_utils.bsr.jit`,
which imports no torch) is loaded from the file path it is given, without the
package's ``__init__`` files, so neither the package nor torch is imported under valgrind.  ``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES`` (set by the parent: the timed target limited to what valgrind
decodes, :func:`blockprune_utils.bench.isa.valgrind_target`) make numba generate - or
load from its disk cache - that machine code, whatever CPU valgrind reports; the
driver prints the target its numba used.

JIT-compiled code has no symbol names, so cachegrind cannot charge it to a named
function as it does scipy's kernels.  Instead the parent runs this driver twice,
with ``n`` and with ``2 n`` counted products, and takes the difference of the
counts of the code without a symbol (the JIT code): everything else - start-up,
imports, compiling or loading the kernels, the first (cache-warming) product -
is the same in both runs and cancels.  The products run inside one compiled loop,
so no interpreter or dispatch work is counted per product.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
from numba import njit
from numba.core.registry import cpu_target

FORMATS = ("numba_csr", "numba_bsr")


JIT_MODULE = "blockprune_utils.bsr.jit"


def load_jit(path: str):
    """The kernels' module under its own name (numba's disk cache refers to it by that
    name), without running the package's ``__init__`` files (they import torch): the
    two packages above it are registered as empty namespaces when not imported yet."""
    folder = Path(path).resolve().parent
    for name, where in (("blockprune_utils", folder.parent), ("blockprune_utils.bsr", folder)):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(where)]
            sys.modules[name] = stub
    return importlib.import_module(JIT_MODULE)


def repeat_of(kernel):
    """A compiled loop calling ``kernel`` n times on the same operands."""

    @njit(nogil=True)
    def repeat(n, data, indices, indptr, x, y, bias, relu):
        for _ in range(n):
            kernel(data, indices, indptr, x, y, bias, relu)

    return repeat


def operands(z, fmt: str, batch: int):
    """(kernel arguments, k) of the operand file ``z``: the unpadded (rows, cols)
    product with x of ``batch`` columns ((cols,) at batch 1), y overwritten."""
    rows, cols = (int(v) for v in z["shape"])
    x = np.ascontiguousarray(z["x"][:cols], dtype=np.float32)
    if batch > 1:
        x = np.random.default_rng(batch).standard_normal((cols, batch)).astype(np.float32)
    y = np.zeros((rows,) + x.shape[1:], dtype=np.float32)
    if fmt == "numba_csr":
        data = np.ascontiguousarray(z["csr_data"], dtype=np.float32)
        return (data, z["csr_indices"].astype(np.int32), z["csr_indptr"].astype(np.int32), x, y), 1
    k = int(z["k"])
    data = np.ascontiguousarray(z["bsr_data"], dtype=np.float32).reshape(-1, k, k)
    if k == 1:
        data = data.reshape(-1)
    return (data, z["bsr_indices"].astype(np.int32), z["bsr_indptr"].astype(np.int32), x, y), k


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="cachesim/numba_driver.py")
    p.add_argument("--npz", required=True)
    p.add_argument("--fmt", required=True, choices=FORMATS)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--jit", required=True, help="path of blockprune_utils/bsr/jit.py")
    a = p.parse_args(argv)
    jit = load_jit(a.jit)
    args, k = operands(np.load(a.npz), a.fmt, a.batch)
    batched = a.batch > 1
    kernel = jit.csr_kernel(batched, False) if a.fmt == "numba_csr" else jit.bsr_kernel(k, batched, False)
    repeat = repeat_of(kernel)
    bias, relu = np.zeros(0, np.float32), False  # the argument types the parent ran (its disk cache holds that code)
    repeat(1, *args, bias, relu)  # compile (or load) and warm the caches: the same in both runs
    repeat(a.n, *args, bias, relu)
    _, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    print(json.dumps({"fmt": a.fmt, "n": a.n, "batch": a.batch, "checksum": float(args[-1].sum()), "cpu": cpu,
                      "features": features}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
