"""Running a driver program under valgrind's cachegrind with the fixed simulated
cache, and the two-run measurement of the numba kernels.

:func:`cachegrind_command` / :func:`run_cachegrind_tool` run one driver file
(``python -P driver ...``, so that neither the package nor torch is imported) and
parse its ``cachegrind.out``.  :func:`numba_product_counts` runs
:mod:`.numba_driver` twice - ``n`` and ``2 n`` counted products, after
one warm-up product - and returns the difference of the counts of the JIT code
per product: the start-up, the imports, loading the kernel and the warm-up are the
same in both runs and cancel.  The two runs go side by side on two cores (each is
a single-threaded simulation).

Which machine code is counted: the child compiles the kernels for
:func:`~blockprune_utils.bench.isa.valgrind_target` of the timed target - the same CPU name, limited to
the instruction sets valgrind decodes (AVX2 and FMA at most: no release decodes
AVX-512).  On an AVX2 host that is the very code the timings ran; on an AVX-512
host it is the same kernel built for AVX2, and the result says so
(``counted_target``, ``counted_isa``).  Before the valgrind runs, the driver runs
once natively with the same target, which compiles the kernels into numba's disk
cache (its entries are keyed by the target), so the runs under valgrind load them
instead of compiling under the simulator.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...bsr import jit
from ..formats import SIMULATED
from ..isa import Target, numba_target, valgrind_target
from . import numba_driver
from .cachegrind import CACHE, Cachegrind, difference, parse_cachegrind, per_product


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


def cachegrind_command(driver, args, out_file, python: str | None = None) -> list[str]:
    """The valgrind command line that runs the driver file with ``args`` (on Python
    >= 3.11 with ``-P``: the driver's folder is not put on ``sys.path``)."""
    cache = [f"--{name}={size},{assoc},{line}" for name, (size, assoc, line) in CACHE.items()]
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [valgrind_path() or "valgrind", "--tool=cachegrind", "--cache-sim=yes", *cache,
            f"--cachegrind-out-file={out_file}", python or sys.executable, *safe_path,
            str(Path(driver).resolve()), *map(str, args)]


def run_cachegrind_tool(driver, args, timeout: float = 600, env: dict | None = None) -> Cachegrind:
    """Run a driver file under cachegrind (one BLAS thread) and parse its output."""
    if valgrind_path() is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind): no cache simulation")
    with tempfile.TemporaryDirectory(prefix="cachesim-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        full_env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        proc = subprocess.run(cachegrind_command(driver, args, out), capture_output=True, text=True, timeout=timeout,
                              env=full_env)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"cachegrind run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return parse_cachegrind(out.read_text())


def numba_driver_args(npz, fmt: str, n: int, batch: int) -> list:
    return ["--npz", npz, "--fmt", fmt, "--n", n, "--batch", batch, "--jit", Path(jit.__file__).resolve()]


def warm_numba_driver(npz, fmt: str, batch: int, env: dict, timeout: float = 600) -> dict:
    """Run the numba driver once natively (one product) with ``env``: numba compiles the
    kernel for that target into its disk cache, where the runs under valgrind find it.
    Returns the driver's report, after checking that its numba used that target."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    cmd = [sys.executable, *safe_path, str(Path(numba_driver.__file__).resolve()),
           *map(str, numba_driver_args(npz, fmt, 1, batch))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"the numba driver failed natively (exit {proc.returncode}) for target "
                           f"{env.get('NUMBA_CPU_NAME')}:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if (report.get("cpu"), report.get("features")) != (env["NUMBA_CPU_NAME"], env["NUMBA_CPU_FEATURES"]):
        raise RuntimeError(f"the numba driver compiled for {report.get('cpu')!r}, not the requested "
                           f"{env['NUMBA_CPU_NAME']!r} with the requested features")
    return report


def numba_product_counts(npz, fmt: str, n: int, batch: int = 1, timeout: float = 900,
                         target: Target | None = None) -> dict:
    """Per-product counts of a numba kernel: runs of ``n`` and ``2 n`` products, the
    counts of the JIT code (the format's ``kernel`` in
    :data:`~blockprune_utils.bench.formats.SIMULATED`) differenced, divided by n.
    ``target``: the timed target (default: this process's); the kernel is counted as
    compiled for :func:`~blockprune_utils.bench.isa.valgrind_target` of it (``counted_target``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 products, got {n}")
    timed = target or numba_target()
    counted = valgrind_target(timed)
    env = {**counted.env(), "NUMBA_NUM_THREADS": "1"}
    warm_numba_driver(npz, fmt, batch, env, timeout)

    def run(reps: int) -> Cachegrind:
        args = numba_driver_args(npz, fmt, reps, batch)
        return run_cachegrind_tool(numba_driver.__file__, args, timeout, env).select(SIMULATED[fmt].kernel)

    # the two runs side by side where there are two cores: the simulated counts do not depend on it
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        few, many = pool.map(run, (n, 2 * n))
    diff = difference(many, few)
    if diff.get("Ir", 0) <= 0:
        raise RuntimeError(f"no JIT instructions per product of {fmt} ({diff}): did the driver run the kernel?")
    return {"fmt": fmt, "n_products": n, **per_product(diff, n), "counted_target": counted.describe(),
            "counted_isa": counted.isa, "timed_target": timed.describe(),
            "kernel_functions": f"numba JIT code compiled for {counted.describe()} (timed: {timed.describe()}): "
                                f"runs of {2 * n} minus {n} products"}
