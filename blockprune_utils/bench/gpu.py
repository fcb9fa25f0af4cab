"""torch dense against torch sparse BSR on a GPU, in float32 and bfloat16."""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..blocks import block_grid
from ..bsr import quiet_sparse_beta, to_torch_bsr
from ..bsr.timing import RTOL, TIMING_COLUMNS, timing_values
from ..infra.store import Schema
from .config import (
    MACHINE_COLUMNS,
    BenchConfig,
    bench_store,
    built,
    checked_timings,
    get_config,
    row_provenance,
    stored_groups,
)
from .formats import GPU_FORMATS
from .weights import MATRIX_META, Matrix, lenet_matrices, synthetic_matrices

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GPU_SCHEMA = Schema(
    key=("matrix", "format", "batch"),
    values=(*MATRIX_META, "lib", "layout", "dtype", "threads_label", "ok", "error", "max_rel_err", *TIMING_COLUMNS,
            "dense_ns", "speedup", *MACHINE_COLUMNS),
)


def _gpu_fns(w: torch.Tensor, k: int, x: torch.Tensor, xp: torch.Tensor, device: str) -> tuple[dict, dict]:
    """The products of every GPU format on ``device``, and the errors of those that could not be built."""

    def dense(dt):
        W, X = w.to(device, dt), x.to(device, dt)
        return lambda: W @ X

    def bsr(dt):
        with quiet_sparse_beta():
            A = to_torch_bsr(w, k).to(device=device, dtype=dt)
        XP = xp.to(device, dt)
        return lambda: A @ XP

    return built({f"cuda_{kind}_{name}": functools.partial(make, dt) for name, dt in DTYPES.items()
                  for kind, make in (("dense", dense), ("bsr", bsr))})


def measure_gpu(m: Matrix, batch: int, cfg: BenchConfig, device: str = "cuda", prov=None) -> list[dict]:
    """Rows (of :data:`GPU_SCHEMA`) for one (matrix, batch) on ``device``: every
    format checked against a float64 product, then timed; the speed-up is that of
    BSR over dense of the same dtype.  A format that fails is recorded, not raised."""
    w = m.weight
    rows, cols = w.shape
    Cp = block_grid(w.shape, m.k)[1] * m.k
    x = torch.from_numpy(np.random.default_rng(cfg.seed + batch).standard_normal((cols, batch)).astype(np.float32))
    xp = torch.zeros(Cp, batch)
    xp[:cols] = x
    w64 = w.double().numpy()
    ref = w64 @ x.double().numpy()
    bound = np.abs(w64) @ np.abs(x.double().numpy())
    prov = prov or row_provenance(device)
    with torch.inference_mode():
        fns, errors = _gpu_fns(w, m.k, x, xp, device)
        timings, checks, errors = checked_timings(
            fns, rows, ref, bound, cfg, budget_s=cfg.budget_s, errors=errors, device=device,
            rtol=lambda f: RTOL["bfloat16" if f.endswith("bf16") else "float32"],
            differs="result differs from the dense product (max error {:.3g})")
    meta = m.meta()
    key = {"matrix": meta.pop("matrix"), "batch": int(batch)}
    out = []
    for f in GPU_FORMATS:
        t = timings.get(f)
        dense = timings.get(f.replace("_bsr_", "_dense_"))
        values = {**meta, "lib": "torch", "layout": f.split("_")[1], "dtype": f.split("_")[2], "threads_label": "gpu",
                  "ok": t is not None, "error": errors.get(f), "max_rel_err": checks.get(f, (None, None))[1],
                  **timing_values(t), "dense_ns": dense.median_ns if dense else None,
                  "speedup": dense.median_ns / t.median_ns if t and dense else None,
                  **{c: prov[c] for c in MACHINE_COLUMNS}}
        out.append(GPU_SCHEMA.make({**key, "format": f}, values, prov, None))
    return out


def gpu_available() -> bool:
    """Whether torch sees a CUDA device (the GPU rows need one)."""
    return torch.cuda.is_available()


def gpu_rows(cfg: BenchConfig | str = "quick", *, rerun: bool = False, progress: bool = False, store_root=None,
             device: str = "cuda") -> list[dict]:
    """The GPU rows of the profile's LeNet and synthetic matrices (``bench_gpu``
    store).  Returns [] when CUDA is not available (the caller says so)."""
    if not gpu_available():
        return []
    cfg = get_config(cfg)
    store = bench_store("bench_gpu", cfg, GPU_SCHEMA, store_root, device=torch.cuda.get_device_name(device))
    prov = row_provenance(device)
    mats = lenet_matrices(cfg) + synthetic_matrices(cfg)
    groups = [(m, b) for m in mats for b in sorted(set(cfg.batches) | set(cfg.synthetic_batches))]
    return stored_groups(store, GPU_SCHEMA, groups,
                         lambda g: [{"matrix": g[0].name, "format": f, "batch": int(g[1])} for f in GPU_FORMATS],
                         lambda g: measure_gpu(g[0], g[1], cfg, device=device, prov=prov),
                         rerun=rerun, progress=progress, desc="gpu")
