"""The cachegrind cases of a profile and their rows: :func:`cache_cases` picks them
(the formats of :data:`~blockprune_utils.bench.formats.SIMULATED`), :func:`cachesim_rows`
writes the operands of each to an ``.npz`` file, runs its driver under cachegrind
(:func:`run_cachegrind`) and makes the row; :func:`cache_rows` keeps them in the
``bench_cache`` store.  The method is described in :mod:`blockprune_utils.bench.cachesim`."""
from __future__ import annotations

import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...bsr import to_scipy_bsr, to_scipy_csr
from ...bsr.jit import SMALL_K
from ...bsr.lean import sparsetools_path
from ...bsr.timing import all_threads
from ...infra.store import Schema
from ...masks import dense_state_dict
from ..config import MACHINE_COLUMNS, WEIGHT_FIELDS, BenchConfig, bench_store, get_config, row_provenance
from ..formats import FORMAT, SIMULATED
from ..isa import Target
from ..weights import config_model, weights_tag
from . import driver
from .cachegrind import CACHE, cache_description, per_product
from .valgrind import numba_product_counts, run_cachegrind_tool, valgrind_path, valgrind_version

# the simulated formats by how they are counted: numba's JIT code (two runs differenced, at every cache batch) or named
# library kernel functions (matrix-vector products: batch 1), and the dense one
NUMBA_FORMATS = tuple(fmt for fmt, c in SIMULATED.items() if c.jit)
SPARSE_LIBRARY = tuple(f.cache.fmt for f in FORMAT.values() if f.cache and not f.cache.jit and not f.dense)
DENSE = next(f.cache.fmt for f in FORMAT.values() if f.cache and f.dense)
KERNELS = {fmt: c.kernel for fmt, c in SIMULATED.items()}  # part of the store's hash
CACHE_SCHEMA = Schema(
    key=("matrix", "format", "batch", "n"),
    values=("family", "layer", "round", "weights", "density", "rows", "cols", "nnz", "nnz_blocks", "k", "fmt",
            "n_products", "instructions", "data_refs", "d1_misses", "ll_misses", "d1_miss_ratio", "ll_miss_ratio",
            "ll_local_miss_ratio", "kernel_functions", "counted_target", "counted_isa", "timed_target", "cache", "valgrind",
            "method", "ok", "error", *MACHINE_COLUMNS),
)
METHOD = {"scipy": "cachegrind per-function counts of the product kernel, warm caches",
          "numba": "cachegrind counts of the JIT code, run of 2n products minus run of n, warm caches"}


def write_operands(path, weight, k: int, x=None) -> dict:
    """Write the dense, CSR and BSR (block size k, zero-padded) operands of ``weight``
    and an input vector to ``path`` (.npz); returns sizes for the result row."""
    w = torch.as_tensor(weight).detach().float().cpu()
    bsr = to_scipy_bsr(w, k)
    csr = to_scipy_csr(w)
    if x is None:
        x = np.random.default_rng(0).standard_normal(bsr.shape[1]).astype(np.float32)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] < bsr.shape[1]:
        x = np.concatenate([x, np.zeros(bsr.shape[1] - x.shape[0], np.float32)])
    np.savez(
        path, x=x, k=np.int64(k), dense=w.numpy(), shape=np.array(w.shape),
        csr_data=csr.data, csr_indices=csr.indices, csr_indptr=csr.indptr, csr_shape=np.array(csr.shape),
        bsr_data=bsr.data, bsr_indices=bsr.indices, bsr_indptr=bsr.indptr, bsr_shape=np.array(bsr.shape),
    )
    return {"rows": int(w.shape[0]), "cols": int(w.shape[1]), "nnz": int(csr.nnz), "nnz_blocks": int(bsr.indices.size)}


def driver_args(npz, fmt: str, n: int) -> list[str]:
    """The arguments of :mod:`.driver` for one operand file and format."""
    args = ["--npz", str(npz), "--fmt", fmt, "--n", str(n)]
    if fmt != DENSE:
        path = sparsetools_path()
        if path is None:
            raise RuntimeError("this scipy has no compiled sparse kernels (_sparsetools): no csr/bsr cache simulation")
        args += ["--sparsetools", path]
    return args


# Wall-clock limit of one valgrind run: about a minute on an idle 2-core machine, but ten
# times that and more when the cores are shared; the limit only stops a run that hangs.
TIMEOUT_S = 3600


def run_cachegrind(npz, fmt: str, n: int = 20, timeout: float = TIMEOUT_S, batch: int = 1,
                   target: Target | None = None) -> dict:
    """Run the driver of ``fmt`` under cachegrind; per-product counts of its kernel
    (scipy / OpenBLAS: by function; numba: two runs differenced, the kernel compiled
    for :func:`~blockprune_utils.bench.isa.valgrind_target` of ``target``, default this process's numba
    target), and which code was counted (``counted_target``)."""
    if valgrind_path() is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind): no cache simulation")
    if n < 1:
        raise ValueError(f"n must be >= 1 products, got {n}")
    if fmt in NUMBA_FORMATS:
        return numba_product_counts(npz, fmt, n, batch, timeout=timeout, target=target)
    if batch != 1:
        raise ValueError(f"the {fmt} driver runs matrix-vector products only (batch 1), got batch {batch}")
    cg = run_cachegrind_tool(driver.__file__, driver_args(npz, fmt, n), timeout)
    kernel = cg.select(KERNELS[fmt])
    if kernel["Ir"] == 0:
        raise RuntimeError(f"no {fmt} kernel function ({KERNELS[fmt]!r}) in the cachegrind output: is the library stripped?")
    return {"fmt": fmt, "n_products": n, **per_product(kernel, n), "kernel_functions": "; ".join(cg.matching(KERNELS[fmt])),
            "counted_target": SIMULATED[fmt].counted, "counted_isa": None, "timed_target": None}


@dataclass(frozen=True)
class CacheCase:
    """One cachegrind measurement: a weight matrix (named) in one format at one batch
    size; ``meta``: the row's family, layer, round, weights and density."""

    name: str
    fmt: str
    weight: object = field(compare=False, repr=False)
    k: int = 1
    meta: dict = field(default_factory=dict, compare=False)
    batch: int = 1


# What a case may raise when its simulation fails (valgrind missing or rejecting the code, a
# timeout, a driver error): the case becomes a row with ok=False and the reason, never stored.
CASE_ERRORS = (RuntimeError, ValueError, OSError, subprocess.SubprocessError)
COUNT_COLUMNS = ("n_products", "instructions", "data_refs", "d1_misses", "ll_misses", "d1_miss_ratio", "ll_miss_ratio",
                 "ll_local_miss_ratio", "kernel_functions", "counted_target", "counted_isa", "timed_target")


def failure_reason(err: BaseException) -> str:
    """One line on why a case failed: the error's first line, and valgrind's own words
    when it could not decode an instruction."""
    text = str(err).strip()
    first = text.splitlines()[0].rstrip(":") if text else type(err).__name__
    if "did not recognise" in text or "SIGILL" in text:
        first += " - valgrind met an instruction it cannot decode (SIGILL)"
    return f"{type(err).__name__}: {first}"


def cachesim_rows(cases, n: int = 20, workers: int = 1, store=None, progress: bool = False) -> list[dict]:
    """Run every :class:`CacheCase` (skipping those ``store``, a ResultStore of
    :data:`CACHE_SCHEMA`, has) and return one row per case: kernel counts per
    product, miss ratios, which code was counted, provenance.  A case whose
    simulation fails becomes a row with ``ok=False``, the reason in ``error`` and no
    counts; it is not stored, so a later run tries it again."""
    version = valgrind_version()
    prov = row_provenance("cpu")
    rows: dict[int, dict] = {}
    todo = []
    for i, c in enumerate(cases):
        key = {"matrix": c.name, "format": c.fmt, "batch": int(c.batch), "n": int(n)}
        found = store.get(key) if store is not None else None
        if found is not None:
            rows[i] = found
        else:
            todo.append((i, c, key))

    def one(item):
        i, c, key = item
        with tempfile.TemporaryDirectory(prefix="cachesim-ops-") as tmp:
            npz = Path(tmp) / "ops.npz"
            sizes = write_operands(npz, c.weight, c.k)
            try:
                res, ok, error = {**dict.fromkeys(COUNT_COLUMNS), **run_cachegrind(npz, c.fmt, n, batch=c.batch)}, True, None
            except CASE_ERRORS as err:
                res, ok, error = {"fmt": c.fmt, **dict.fromkeys(COUNT_COLUMNS)}, False, failure_reason(err)
        method = METHOD["numba" if c.fmt in NUMBA_FORMATS else "scipy"]
        values = {**c.meta, **sizes, "k": c.k, **res, "cache": cache_description(), "valgrind": version, "method": method,
                  "ok": ok, "error": error, **{m: prov[m] for m in MACHINE_COLUMNS}}
        if ok and store is not None:
            return i, store.put(key, values, prov)
        return i, CACHE_SCHEMA.make(key, values, prov, store.hash if store is not None else None)

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, row in tqdm(pool.map(one, todo), total=len(todo), desc="cachegrind", disable=not progress):
                rows[i] = row
    return [rows[i] for i in range(len(cases))]


def cache_cases(cfg: BenchConfig) -> list[CacheCase]:
    """The cachegrind set: LeNet fc1 at ``cache_ks`` x ``cache_rounds`` in scipy's CSR
    and BSR (batch 1) and numba's CSR and BSR (each of ``cache_batches``), plus
    (``cache_dense``) one dense run (dense work does not depend on the pattern)."""
    big = [k for k in cfg.cache_ks if k > SMALL_K]
    if big and cfg.cache_batches:
        raise ValueError(f"cache_ks {big} are above {SMALL_K}: the numba driver counts the kernels compiled per k, "
                         f"which exist for k <= {SMALL_K} only")
    cases = []
    for k in cfg.cache_ks:
        for r in cfg.cache_rounds:
            model, source = config_model(cfg, k, r)
            w = dense_state_dict(model)["fc1.weight"].float()
            meta = {"family": "lenet", "layer": "fc1", "round": int(r), "weights": source,
                    "density": float(torch.count_nonzero(w)) / w.numel()}
            name = f"lenet-fc1-k{k}-r{r}-{weights_tag(source)}"
            for fmt in SPARSE_LIBRARY:
                cases.append(CacheCase(name, fmt, w, int(k), meta))
            for b in cfg.cache_batches:
                cases += [CacheCase(name, fmt, w, int(k), meta, int(b)) for fmt in NUMBA_FORMATS]
            if cfg.cache_dense and not any(c.fmt == DENSE for c in cases):
                cases.append(CacheCase(name, DENSE, w, int(k), meta))
    return cases


def cache_rows(cfg: BenchConfig | str = "quick", *, progress: bool = False, store_root=None,
               workers: int | None = None) -> list[dict]:
    """cachegrind rows of the profile's cases, read from the ``bench_cache`` store
    or simulated (empty when valgrind is not installed)."""
    cfg = get_config(cfg)
    if valgrind_path() is None:
        return []
    store = bench_store("bench_cache", cfg, CACHE_SCHEMA, store_root, fields=WEIGHT_FIELDS, cache=CACHE, kernels=KERNELS)
    return cachesim_rows(cache_cases(cfg), n=cfg.cache_products, workers=workers or min(2, all_threads()), store=store,
                         progress=progress)
