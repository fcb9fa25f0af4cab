"""The command line of the benchmark: ``python -m blockprune_utils.bench [--quick]``."""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from ..bsr import lean_kernel
from ..bsr.timing import blas_control
from .cachesim import cache_rows, valgrind_path
from .config import PROFILES, get_config, machine
from .findings import cache_gaps, counted_targets
from .gpu import gpu_rows
from .models import model_rows
from .products import matrix_rows
from .storage import storage_rows
from .tables import frame, gpu_table, kernel_bar, model_table, speedup_summary, speedup_table, storage_table
from .training import bar_line, mlp_bar, training_bar

PARTS = ("matrices", "models", "storage", "cache", "training")
CACHE_COLUMNS = ["matrix", "fmt", "batch", "k", "density", "instructions", "data_refs", "d1_misses", "ll_misses",
                 "d1_miss_ratio", "ll_miss_ratio", "counted_isa", "ok"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m blockprune_utils.bench",
                                description="BSR speed benchmark: when does block sparsity pay, and by how much.")
    p.add_argument("--quick", action="store_true", help="the quick profile (small, a minute or two)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="profile name (default: paper, or quick with --quick)")
    p.add_argument("--out", help="write every result row to this CSV (one file; a 'part' column tells which study)")
    p.add_argument("--gpu", action="store_true", help="also time torch dense vs BSR on CUDA (skipped without a GPU)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of parts: {', '.join(PARTS)} (default: all)")
    p.add_argument("--rerun", action="store_true", help="measure again, overwriting cached rows")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    """Run the chosen parts of the benchmark and print their tables; returns the exit status."""
    p = parser()
    a = p.parse_args(argv)
    profile = a.profile or ("quick" if a.quick else "paper")
    cfg = get_config(profile)
    parts = {part.strip() for part in a.only.split(",") if part.strip()}
    if not parts or parts - set(PARTS):
        p.error(f"--only {a.only!r} names {sorted(parts - set(PARTS)) or 'no part'}; choose from {', '.join(PARTS)}")
    progress = not a.no_progress
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.max_rows", 400)
    t0 = time.perf_counter()
    kernels = "sparsetools (direct)" if lean_kernel() == "sparsetools" else "scipy.sparse @"
    print(f"profile {profile}; {machine()}; numpy BLAS threads via {blas_control()}; scipy kernels: {kernels}")
    frames, bar = [], None
    if "matrices" in parts:
        rows = matrix_rows(cfg, progress=progress, rerun=a.rerun)
        frames.append(frame(rows).assign(part="matrices"))
        bad = [r for r in rows if not r["ok"]]
        for thr in sorted({r["threads_label"] for r in rows}):
            print(f"\nspeed-up over the best dense format (threads={thr}; >1 = faster than dense):")
            print(speedup_table(rows, threads=thr).to_string())
        if bad:
            print(f"\n{len(bad)} format(s) failed: " + "; ".join(f"{r['matrix']} {r['format']}: {r['error']}" for r in bad[:10]))
    if "models" in parts:
        rows = model_rows(cfg, progress=progress, rerun=a.rerun)
        frames.append(frame(rows).assign(part="models"))
        last = max(cfg.model_rounds)
        bar = kernel_bar(rows, k=4, round=last)
        for thr in sorted({r["threads_label"] for r in rows}):
            print(f"\nwhole-model forward latency, µs (threads={thr}):")
            print(model_table(rows, threads=thr).to_string())
            for b in cfg.model_batches:
                summary = speedup_summary(rows, round=last, batch=b, threads=thr)
                print(f"\nwhole-model speed-up (round {last}, batch {b}, threads={thr}): dense / fastest block-sparse forward")
                print(summary.to_string(index=False))
    if "storage" in parts:
        rows = storage_rows(cfg)
        frames.append(frame(rows).assign(part="storage"))
        print("\nstorage of the three LeNet layers, bytes:")
        print(storage_table(rows).to_string())
    if "cache" in parts:
        if valgrind_path() is None:
            print("\nvalgrind is not installed: no cache simulation (apt-get install valgrind)")
        else:
            rows = cache_rows(cfg, progress=progress)
            frames.append(frame(rows).assign(part="cache"))
            targets = counted_targets(rows)
            print("\ncachegrind, per product (warm caches" + (f"; {targets}" if targets else "") + "):")
            print(frame(rows)[CACHE_COLUMNS].round(4).to_string(index=False))
            gaps = cache_gaps(rows)
            if gaps:
                print("\n" + gaps)
    if a.gpu:
        rows = gpu_rows(cfg, progress=progress, rerun=a.rerun)
        if not rows:
            print("no CUDA device: the GPU benchmark is skipped", file=sys.stderr)
        if rows:
            frames.append(frame(rows).assign(part="gpu"))
            print("\nGPU speed-up of BSR over dense (same dtype):")
            print(gpu_table(rows).to_string())
    if a.out and frames:
        pd.concat(frames, ignore_index=True).to_csv(a.out, index=False)
        print(f"\nrows written to {a.out}")
    if bar is not None:  # the numba kernels on the pruned LeNet (k = 4, last round) and a transformer-sized MLP, one thread
        bar.update(mlp_bar())
    train_bar = None  # quick: 100 minibatches per epoch (a full LeNet epoch is 430), the best of 2
    if "training" in parts:
        train_bar = training_bar(steps=100, repeats=2) if profile == "quick" else training_bar(steps=430)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    if bar is not None:
        print(bar_line("kernel bar", bar))
    if train_bar is not None:  # last line: LeNet retraining, dense-masked / block-sparse time (k = 4, one thread)
        print(bar_line("training bar", train_bar))
    return 0
