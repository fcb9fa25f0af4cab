"""Simulated cache behaviour of the CSR, BSR and dense products, with valgrind's cachegrind.

What is measured
----------------
One sparse (or dense) matrix-vector product ``y += W x`` of a pruned weight, run
by the very kernels scipy (``csr_matvec`` / ``bsr_matvec`` of
``scipy.sparse._sparsetools``) and numpy (OpenBLAS ``sgemv``) use.  cachegrind
(``valgrind --tool=cachegrind --cache-sim=yes``) simulates a two-level data cache
and counts, per function, the data references (Dr + Dw), the first-level misses
(D1mr + D1mw) and the last-level misses (DLmr + DLmw).  The simulation is
deterministic: the same binary on the same input gives the same counts on any
host, because the cache geometry is fixed here (:data:`CACHE`) instead of being
read from the host CPU.

Isolating the product from the interpreter
------------------------------------------
A Python process under cachegrind executes ~10^9 instructions just to start and
import numpy; a LeNet-sized product is ~10^4.  Two runs (N products and 0
products) could be differenced, but the products would be a part in 10^4 of the
totals and the two runs must start identically.  We use cachegrind's own
attribution instead: every data access is charged to the function whose
instruction made it, and the product kernels (``csr_matvec<int, float>``,
``bsr_matvec<int, float>``, OpenBLAS's ``sgemv*``) run nowhere else in the driver.
So the counts charged to those functions, divided by the number of products, are
exactly the kernel's own references and misses per product; the interpreter's
call overhead (the same for every format) is left out.  Before the measured
products the driver reads every operand once with numpy reductions (other
functions, not counted), so the counts are those of the *warm* steady state of
repeated inference, where the weights are re-used from product to product.

The driver process imports only numpy (and loads the ``_sparsetools`` extension
from the path it is given, without importing ``scipy.sparse``), which keeps a
run at ~5-10 s: run it as ``python path/to/cachesim.py driver ...`` (as
:func:`run_cachegrind` does) so that the package, and torch with it, is not
imported either.  ``python -m blockprune_utils.cachesim driver ...`` works too,
but then pays for importing torch under valgrind.

The parent side (:func:`cachesim_rows`) writes the operands of a pruned layer,
built with :func:`blockprune_utils.bsr.to_scipy_bsr` / ``to_scipy_csr``, to an
``.npz`` file, runs the driver under cachegrind and parses the output file with
:func:`parse_cachegrind`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# The simulated cache: (size bytes, associativity, line bytes).  D1 as the study
# machine's L1d (32 KiB, 8-way, 64 B lines); LL as one core's L2 there (512 KiB,
# 8-way).  cachegrind models two levels only, so the shared L3 is not simulated.
CACHE = {"I1": (32768, 8, 64), "D1": (32768, 8, 64), "LL": (524288, 8, 64)}

# Which functions' counts make up one product of each format (regular expressions
# over cachegrind's function names).  The compiler inlines the templated kernels
# (``csr_matvec<int, float>``) into their type-dispatch thunks, so the thunk (with
# its few dispatch instructions) is counted too; scipy's bsr_matvec hands k=1 to
# csr_matvec.
KERNELS = {
    "csr": r"\bcsr_matvec(?:<|_thunk)",
    "bsr": r"\b(?:bsr|csr)_matvec(?:<|_thunk)",
    "dense": r"sgemv",
}
FORMATS = tuple(KERNELS)
EVENTS = ("Ir", "Dr", "Dw", "D1mr", "D1mw", "DLmr", "DLmw")


def valgrind_path() -> str | None:
    """The valgrind executable, or None when it is not installed."""
    return shutil.which("valgrind")


def valgrind_version() -> str | None:
    exe = valgrind_path()
    if exe is None:
        return None
    try:
        return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cache_description() -> str:
    return ", ".join(f"{name} {size // 1024} KiB {assoc}-way {line} B" for name, (size, assoc, line) in CACHE.items()
                     if name != "I1")


# --------------------------------------------------------------------------- parser


@dataclass
class Cachegrind:
    """Counts from one cachegrind output file: ``totals`` over the whole run and
    ``functions`` (name -> counts, exclusive of callees) for every function."""

    events: list[str]
    totals: dict[str, int]
    functions: dict[str, dict[str, int]] = field(default_factory=dict)
    command: str = ""

    def select(self, pattern: str) -> dict[str, int]:
        """Summed counts of the functions whose name matches ``pattern`` (re.search)."""
        rx = re.compile(pattern)
        out = dict.fromkeys(self.events, 0)
        for name, counts in self.functions.items():
            if rx.search(name):
                for ev, v in counts.items():
                    out[ev] += v
        return out

    def matching(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return sorted(n for n in self.functions if rx.search(n))


def parse_cachegrind(text: str) -> Cachegrind:
    """Parse a ``cachegrind.out`` file (the format of valgrind 3.x).

    Lines: ``events: Ir ...`` names the columns; ``fl=``/``fn=`` set the current
    file and function; a cost line is a line number followed by up to len(events)
    counts (missing trailing counts are zero); ``summary:`` holds the totals.
    When the summary is absent the totals are the sum over functions."""
    events: list[str] = []
    functions: dict[str, dict[str, int]] = {}
    summary = None
    command = ""
    fn = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("events:"):
            events = line.split(":", 1)[1].split()
        elif line.startswith("cmd:"):
            command = line.split(":", 1)[1].strip()
        elif line.startswith("fn="):
            fn = line[3:]
            functions.setdefault(fn, dict.fromkeys(events, 0))
        elif line.startswith(("fl=", "fi=", "fe=")):
            continue
        elif line.startswith("summary:"):
            summary = [int(v) for v in line.split(":", 1)[1].split()]
        elif line[0].isdigit():
            if fn is None or not events:
                raise ValueError(f"cachegrind cost line before 'events:'/'fn=': {raw!r}")
            values = [int(v) for v in line.split()[1:]]
            if len(values) > len(events):
                raise ValueError(f"cachegrind cost line has {len(values)} counts for {len(events)} events: {raw!r}")
            counts = functions[fn]
            for ev, v in zip(events, values):
                counts[ev] += v
        # desc:, positions:, totals: and anything unknown are ignored
    if not events:
        raise ValueError("not a cachegrind output: no 'events:' line")
    if summary is not None:
        totals = dict(zip(events, summary + [0] * (len(events) - len(summary))))
    else:
        totals = dict.fromkeys(events, 0)
        for counts in functions.values():
            for ev, v in counts.items():
                totals[ev] += v
    return Cachegrind(events=events, totals=totals, functions=functions, command=command)


def per_product(counts: dict[str, int], n: int) -> dict[str, float]:
    """Counts of one product, and its miss ratios (relative to its data references)."""
    c = {ev: counts.get(ev, 0) / n for ev in EVENTS}
    refs = c["Dr"] + c["Dw"]
    d1 = c["D1mr"] + c["D1mw"]
    ll = c["DLmr"] + c["DLmw"]
    return {
        "instructions": c["Ir"], "data_refs": refs, "d1_misses": d1, "ll_misses": ll,
        "d1_miss_ratio": d1 / refs if refs else float("nan"),
        "ll_miss_ratio": ll / refs if refs else float("nan"),
        "ll_local_miss_ratio": ll / d1 if d1 else float("nan"),
    }


# --------------------------------------------------------------------------- driver (runs under valgrind)


def _load_sparsetools(path: str):
    """The ``_sparsetools`` extension loaded from its file, without importing the
    ``scipy.sparse`` package (whose import would dominate the run under valgrind)."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("_sparsetools", path)
    spec = importlib.util.spec_from_file_location("_sparsetools", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def driver(argv=None) -> int:
    """Run ``n`` products ``y += W x`` of one operand file (see :func:`write_operands`)."""
    p = argparse.ArgumentParser(prog="cachesim driver")
    p.add_argument("--npz", required=True)
    p.add_argument("--fmt", required=True, choices=FORMATS)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--sparsetools", help="path of scipy.sparse's _sparsetools extension (csr/bsr)")
    a = p.parse_args(argv)
    import numpy as np

    z = np.load(a.npz)
    x = np.ascontiguousarray(z["x"], dtype=np.float32)
    if a.fmt == "dense":
        W = np.ascontiguousarray(z["dense"], dtype=np.float32)
        y = np.zeros(W.shape[0], dtype=np.float32)
        operands = (W, x, y)

        def product():
            np.matmul(W, x[: W.shape[1]], out=y)
    else:
        if not a.sparsetools:
            p.error("--sparsetools is needed for csr/bsr")
        st = _load_sparsetools(a.sparsetools)
        pre = a.fmt
        data = np.ascontiguousarray(z[f"{pre}_data"], dtype=np.float32).ravel()
        indices = np.ascontiguousarray(z[f"{pre}_indices"])
        indptr = np.ascontiguousarray(z[f"{pre}_indptr"])
        rows, cols = (int(v) for v in z[f"{pre}_shape"])
        xs = np.ascontiguousarray(x[:cols])
        y = np.zeros(rows, dtype=np.float32)
        operands = (data, indices, indptr, xs, y)
        if pre == "csr":
            def product():
                st.csr_matvec(rows, cols, indptr, indices, data, xs, y)
        else:
            k = int(z["k"])

            def product():
                st.bsr_matvec(rows // k, cols // k, k, k, indptr, indices, data, xs, y)
    # warm the caches with a read of every operand (numpy reductions: not counted)
    for arr in operands:
        arr.sum()
    for _ in range(a.n):
        product()
    print(json.dumps({"fmt": a.fmt, "n": a.n, "checksum": float(y.sum())}))
    return 0


# --------------------------------------------------------------------------- parent side


def write_operands(path, weight, k: int, x=None) -> dict:
    """Write the dense, CSR and BSR (block size k, zero-padded) operands of ``weight``
    and an input vector to ``path`` (.npz); returns sizes for the result row."""
    import numpy as np
    import torch

    from .bsr import to_scipy_bsr, to_scipy_csr

    w = torch.as_tensor(weight).detach().float().cpu()
    bsr = to_scipy_bsr(w, k)
    csr = to_scipy_csr(w)
    if x is None:
        x = np.random.default_rng(0).standard_normal(bsr.shape[1]).astype(np.float32)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] < bsr.shape[1]:
        x = np.concatenate([x, np.zeros(bsr.shape[1] - x.shape[0], np.float32)])
    np.savez(
        path, x=x, k=np.int64(k), dense=w.numpy(),
        csr_data=csr.data, csr_indices=csr.indices, csr_indptr=csr.indptr, csr_shape=np.array(csr.shape),
        bsr_data=bsr.data, bsr_indices=bsr.indices, bsr_indptr=bsr.indptr, bsr_shape=np.array(bsr.shape),
    )
    return {"rows": int(w.shape[0]), "cols": int(w.shape[1]), "nnz": int(csr.nnz), "nnz_blocks": int(bsr.indices.size)}


def _sparsetools_path() -> str:
    from scipy.sparse import _sparsetools

    return _sparsetools.__file__


def cachegrind_command(npz, fmt: str, n: int, out_file, python: str | None = None) -> list[str]:
    cache = [f"--{name}={size},{assoc},{line}" for name, (size, assoc, line) in CACHE.items()]
    cmd = [valgrind_path() or "valgrind", "--tool=cachegrind", "--cache-sim=yes", *cache,
           f"--cachegrind-out-file={out_file}", python or sys.executable, str(Path(__file__).resolve()), "driver",
           "--npz", str(npz), "--fmt", fmt, "--n", str(n)]
    if fmt != "dense":
        cmd += ["--sparsetools", _sparsetools_path()]
    return cmd


def run_cachegrind(npz, fmt: str, n: int = 20, timeout: float = 600) -> dict:
    """Run the driver under cachegrind; per-product counts of the ``fmt`` kernel."""
    if valgrind_path() is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind): no cache simulation")
    if n < 1:
        raise ValueError(f"n must be >= 1 products, got {n}")
    with tempfile.TemporaryDirectory(prefix="cachesim-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cachegrind_command(npz, fmt, n, out), capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"cachegrind run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        cg = parse_cachegrind(out.read_text())
    kernel = cg.select(KERNELS[fmt])
    if kernel["Ir"] == 0:
        raise RuntimeError(f"no {fmt} kernel function ({KERNELS[fmt]!r}) in the cachegrind output: is the library stripped?")
    return {"fmt": fmt, "n_products": n, **per_product(kernel, n), "kernel_functions": "; ".join(cg.matching(KERNELS[fmt]))}


@dataclass(frozen=True)
class CacheCase:
    """One cachegrind run: a weight matrix (named) in one format."""

    name: str
    fmt: str
    weight: object = field(compare=False, repr=False)
    k: int = 1
    meta: dict = field(default_factory=dict, compare=False)


def cachesim_rows(cases, n: int = 20, workers: int = 1, store=None, progress: bool = False) -> list[dict]:
    """Run every :class:`CacheCase` (skipping those ``store``, a ResultStore, has) and
    return one row per case: kernel counts per product, miss ratios, provenance."""
    from concurrent.futures import ThreadPoolExecutor

    from .bench import row_provenance

    version = valgrind_version()
    prov = row_provenance("cpu")
    rows: dict[int, dict] = {}
    todo = []
    for i, c in enumerate(cases):
        key = {"matrix": c.name, "format": c.fmt, "n": int(n)}
        if store is not None and store.has(key):
            rows[i] = json.loads(store.row_path(key).read_text())
        else:
            todo.append((i, c, key))

    def one(item):
        i, c, key = item
        with tempfile.TemporaryDirectory(prefix="cachesim-ops-") as tmp:
            npz = Path(tmp) / "ops.npz"
            sizes = write_operands(npz, c.weight, c.k)
            res = run_cachegrind(npz, c.fmt, n)
        row = {**prov, **c.meta, **sizes, **key, "k": c.k, **res, "cache": cache_description(), "valgrind": version,
               "method": "cachegrind per-function counts of the product kernel, warm caches"}
        if store is not None:
            store.write_row(key, row)
        return i, row

    if todo:
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, row in tqdm(pool.map(one, todo), total=len(todo), desc="cachegrind", disable=not progress):
                rows[i] = row
    return [rows[i] for i in range(len(cases))]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "driver":
        return driver(argv[1:])
    p = argparse.ArgumentParser(prog="python -m blockprune_utils.cachesim",
                                description="cachegrind driver; the study itself runs from blockprune_utils.bench")
    p.add_argument("command", choices=["driver", "check"], help="driver: run products (under valgrind); "
                   "check: one tiny CSR/BSR cachegrind run")
    a = p.parse_args(argv[:1])
    if a.command == "check":
        import torch

        from .blocks import expand_block_mask

        g = torch.Generator().manual_seed(0)
        mask = expand_block_mask(torch.rand(25, 75, generator=g) < 0.05, (100, 300), 4)
        w = torch.randn(100, 300, generator=g) * mask
        for fmt in ("csr", "bsr"):
            with tempfile.TemporaryDirectory() as tmp:
                write_operands(Path(tmp) / "o.npz", w, 4)
                print(json.dumps(run_cachegrind(Path(tmp) / "o.npz", fmt, n=5)))
    return 0


if __name__ == "__main__":
    if not __package__:  # run as a file: keep the package folder's modules from shadowing others
        sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    raise SystemExit(main())
