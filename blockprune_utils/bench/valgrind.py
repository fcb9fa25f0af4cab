"""Running a driver program under valgrind's cachegrind with the fixed simulated
cache, and the two-run measurement of the numba kernels.

:func:`cachegrind_command` / :func:`run_cachegrind_tool` run one driver file
(``python -P driver ...``, so that neither the package nor torch is imported) and
parse its ``cachegrind.out``.  :func:`numba_product_counts` runs
:mod:`.cachegrind_numba_driver` twice - ``n`` and ``2 n`` counted products, after
one warm-up product - and returns the difference of the counts of the JIT code
per product: the start-up, the imports, compiling or loading the kernel and the
warm-up are the same in both runs and cancel.  The two runs go side by side on two
cores (each is a single-threaded simulation).  The child is told this process's
numba target (CPU name and features), so that it runs the machine code that was
timed here, loaded from numba's disk cache, whatever CPU valgrind reports.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from numba.core.registry import cpu_target

from ..bsr import jit
from . import cachegrind_numba_driver
from .cachegrind import CACHE, KERNELS, Cachegrind, difference, parse_cachegrind, per_product


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


def numba_target_env() -> dict:
    """Environment that makes a child's numba compile for (and load the disk cache
    of) this process's target: its CPU name and features, one thread."""
    _, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    return {"NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features, "NUMBA_NUM_THREADS": "1"}


def numba_product_counts(npz, fmt: str, n: int, batch: int = 1, timeout: float = 900) -> dict:
    """Per-product counts of a numba kernel: runs of ``n`` and ``2 n`` products, the
    counts of the JIT code (:data:`~.cachegrind.KERNELS`) differenced, divided by n."""
    if n < 1:
        raise ValueError(f"n must be >= 1 products, got {n}")
    env = numba_target_env()

    def run(reps: int) -> Cachegrind:
        args = ["--npz", npz, "--fmt", fmt, "--n", reps, "--batch", batch, "--jit", Path(jit.__file__).resolve()]
        return run_cachegrind_tool(cachegrind_numba_driver.__file__, args, timeout, env).select(KERNELS[fmt])

    # the two runs side by side where there are two cores: the simulated counts do not depend on it
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        few, many = pool.map(run, (n, 2 * n))
    diff = difference(many, few)
    if diff.get("Ir", 0) <= 0:
        raise RuntimeError(f"no JIT instructions per product of {fmt} ({diff}): did the driver run the kernel?")
    return {"fmt": fmt, "n_products": n, **per_product(diff, n),
            "kernel_functions": f"numba JIT code ({env['NUMBA_CPU_NAME']}): runs of {2 * n} minus {n} products"}
