"""The program cachegrind runs: ``n`` products ``y += W x`` of one operand file.

It imports only numpy, and loads scipy's ``_sparsetools`` extension from the path
it is given without importing ``scipy.sparse`` (whose import would dominate the run
under valgrind).  It is run as a file, ``python -P .../cachesim/driver.py --npz
... --fmt ...`` (:func:`blockprune_utils.bench.cachesim.valgrind.cachegrind_command`), so
that neither the package nor torch is imported.  Before the counted products it
reads every operand once with numpy reductions (other functions, not counted), so
the counts are those of the warm steady state of repeated inference.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json

import numpy as np

FORMATS = ("csr", "bsr", "dense")


def load_extension(path: str):
    """The ``_sparsetools`` extension module loaded from its file."""
    loader = importlib.machinery.ExtensionFileLoader("_sparsetools", path)
    spec = importlib.util.spec_from_file_location("_sparsetools", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def product_of(z, fmt: str, sparsetools: str | None):
    """(the product as an argument-free call, its operands) of the operand file ``z``."""
    x = np.ascontiguousarray(z["x"], dtype=np.float32)
    if fmt == "dense":
        W = np.ascontiguousarray(z["dense"], dtype=np.float32)
        y = np.zeros(W.shape[0], dtype=np.float32)
        xs = x[: W.shape[1]]
        return (lambda: np.matmul(W, xs, out=y)), (W, x, y)
    st = load_extension(sparsetools)
    data = np.ascontiguousarray(z[f"{fmt}_data"], dtype=np.float32).ravel()
    indices = np.ascontiguousarray(z[f"{fmt}_indices"])
    indptr = np.ascontiguousarray(z[f"{fmt}_indptr"])
    rows, cols = (int(v) for v in z[f"{fmt}_shape"])
    xs = np.ascontiguousarray(x[:cols])
    y = np.zeros(rows, dtype=np.float32)
    operands = (data, indices, indptr, xs, y)
    if fmt == "csr":
        return (lambda: st.csr_matvec(rows, cols, indptr, indices, data, xs, y)), operands
    k = int(z["k"])
    return (lambda: st.bsr_matvec(rows // k, cols // k, k, k, indptr, indices, data, xs, y)), operands


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="cachesim/driver.py")
    p.add_argument("--npz", required=True)
    p.add_argument("--fmt", required=True, choices=FORMATS)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--sparsetools", help="path of scipy.sparse's _sparsetools extension (csr/bsr)")
    a = p.parse_args(argv)
    if a.fmt != "dense" and not a.sparsetools:
        p.error("--sparsetools is needed for csr/bsr")
    product, operands = product_of(np.load(a.npz), a.fmt, a.sparsetools)
    for arr in operands:  # warm the caches with a read of every operand (numpy reductions: not counted)
        arr.sum()
    for _ in range(a.n):
        product()
    print(json.dumps({"fmt": a.fmt, "n": a.n, "checksum": float(operands[-1].sum())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
