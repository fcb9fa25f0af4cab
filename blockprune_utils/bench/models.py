"""The whole pruned LeNet forward, input to logits, in every variant of :mod:`.formats`.

Variants: the masked (parametrized) model, plain ``nn.Linear`` layers, the
:func:`~blockprune_utils.bsr.to_bsr_model` backends (dense / torch / scipy, and the
measured choice of :func:`~blockprune_utils.bsr.auto_backends`, which also weighs
numba layers and the fused whole-model forward), the lean numpy path
:class:`~blockprune_utils.bsr.LeanMLP` (dense, CSR, BSR, auto), and the fused numba
forward :class:`~blockprune_utils.bsr.NumbaMLP` (CSR, BSR).
Each variant is checked against a float64 forward of the dense weights, then all
are timed interleaved.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from ..bsr import lean_kernel, linear_layers, reference_forward
from ..bsr.timing import TIMING_COLUMNS, blas_control, num_threads, timing_values
from ..infra.store import Schema
from ..masks import density
from ..schedule import layer_densities
from .config import (
    LAYERS,
    MACHINE_COLUMNS,
    MODEL_TIMING_FIELDS,
    BenchConfig,
    bench_store,
    checked_timings,
    get_config,
    row_provenance,
    stored_groups,
    threads_label,
)
from .formats import DENSE_VARIANTS, MODEL_VARIANTS, REFERENCE, VARIANT, ModelCase
from .weights import config_model, weights_tag

MODEL_SCHEMA = Schema(
    key=("k", "round", "weights", "variant", "batch", "threads_label"),
    values=("family", "source", "density", *(f"density_{n}" for n in LAYERS), "blas_control", "dtype", "path", "kernel",
            "ok", "error", "max_rel_err", "auto_choice", *TIMING_COLUMNS, "dense_ns", "best_dense_variant",
            "best_dense_ns", "lean_dense_ns", "speedup", "speedup_vs_best_dense", "speedup_vs_lean_dense",
            *MACHINE_COLUMNS),
)


def input_features(model: nn.Module) -> int:
    """The input size of an MLP: the in_features of its first Linear layer."""
    return model.get_submodule(linear_layers(model)[0]).in_features


def model_variants(model: nn.Module, k: int, batch: int, threads: int, cfg: BenchConfig, variants=MODEL_VARIANTS):
    """(input, callables of each whole-model variant on it, the auto choices by variant)."""
    unknown = [v for v in variants if v not in VARIANT]
    if unknown:
        raise ValueError(f"unknown model variant(s) {unknown}; choose from {MODEL_VARIANTS}")
    rng = np.random.default_rng(cfg.seed + batch)
    x = torch.from_numpy(rng.standard_normal((batch, input_features(model))).astype(np.float32))
    case = ModelCase(model, k, x, dict(threads=threads, budget_s=cfg.budget_s, min_repeats=cfg.min_repeats,
                                       max_repeats=cfg.max_repeats, seed=cfg.seed))
    fns, notes = {}, {}
    for v in variants:
        fns[v], choice = VARIANT[v].build(case)
        if choice is not None:
            notes[v] = choice
    return x, fns, notes


def measure_model(k: int, round: int, batch: int, threads: int, cfg: BenchConfig, variants=MODEL_VARIANTS,
                  prov=None) -> list[dict]:
    """Rows (of :data:`MODEL_SCHEMA`) for one (k, round, batch, threads): each
    whole-model variant checked against a float64 forward of the dense weights, then timed."""
    model, source = config_model(cfg, k, round)
    dens = layer_densities(model, LAYERS)
    meta = {"family": "lenet-model", "source": source, "density": density(model, LAYERS),
            **{f"density_{n}": d for n, d in dens.items()}, "blas_control": blas_control(), "dtype": "float32"}
    with num_threads(threads) as n, torch.inference_mode():
        prov = {**(prov or row_provenance("cpu")), "threads": n}
        x, fns, notes = model_variants(model, k, batch, threads, cfg, variants)
        ref64 = reference_forward(model, x)
        bound = reference_forward(model, x, bound=True)
        timings, checks, errors = checked_timings(
            fns, batch, ref64, bound, cfg, budget_s=cfg.model_budget_s,
            differs="output differs from the float64 forward (max error {:.3g})")
    dense_ns = timings[REFERENCE].median_ns if REFERENCE in timings else None
    best_dense = {v: timings[v].median_ns for v in DENSE_VARIANTS if v in timings}
    best_name = min(best_dense, key=best_dense.get) if best_dense else None
    lean_dense = timings["lean_dense"].median_ns if "lean_dense" in timings else None
    key = {"k": int(k), "round": int(round), "weights": weights_tag(source), "batch": int(batch),
           "threads_label": threads_label(threads)}
    rows = []
    for v in variants:
        t = timings.get(v)
        lean = VARIANT[v].path == "lean-numpy"
        best = best_dense.get(best_name)
        values = {**meta, "path": VARIANT[v].path, "kernel": lean_kernel() if lean else None,
                  "ok": t is not None, "error": errors.get(v), "max_rel_err": checks.get(v, (None, None))[1],
                  "auto_choice": json.dumps(notes[v], sort_keys=True) if v in notes else None, **timing_values(t),
                  "dense_ns": dense_ns, "best_dense_variant": best_name, "best_dense_ns": best, "lean_dense_ns": lean_dense,
                  "speedup": dense_ns / t.median_ns if t and dense_ns else None,
                  "speedup_vs_best_dense": best / t.median_ns if t and best else None,
                  "speedup_vs_lean_dense": lean_dense / t.median_ns if t and lean_dense else None,
                  **{c: prov[c] for c in MACHINE_COLUMNS}}
        rows.append(MODEL_SCHEMA.make({**key, "variant": v}, values, prov, None))
    return rows


def model_rows(cfg: BenchConfig | str = "quick", *, rerun: bool = False, progress: bool = False, store_root=None,
               cache: bool = True) -> list[dict]:
    """Every (k, round, batch, threads, variant) whole-model row of the profile, read
    from the ``bench_model`` store or measured (``cache=False``: nothing stored)."""
    cfg = get_config(cfg)
    store = bench_store("bench_model", cfg, MODEL_SCHEMA, store_root, fields=MODEL_TIMING_FIELDS) if cache else None
    prov = row_provenance("cpu")
    groups = [(k, r, b, t) for k in cfg.model_ks for r in cfg.model_rounds for b in cfg.model_batches for t in cfg.model_threads]

    def keys_of(g):
        k, r, b, t = g
        tag = weights_tag(config_model(cfg, k, r)[1])
        return [{"k": int(k), "round": int(r), "weights": tag, "variant": v, "batch": int(b), "threads_label": threads_label(t)}
                for v in MODEL_VARIANTS]

    return stored_groups(store, MODEL_SCHEMA, groups, keys_of, lambda g: measure_model(*g, cfg, prov=prov),
                         rerun=rerun, progress=progress, desc="models")
