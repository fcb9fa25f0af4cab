"""Accuracy against measured latency: which pruned LeNet is most accurate for a time budget.

For every stored model of seed 0 - the dense baseline, block pruning at every k and
round, neuron pruning at every round (run as the physically smaller dense net) and
the narrow dense nets - :func:`latency_rows` times one forward at each batch size
with each backend its structure can use (:data:`BACKENDS`) and marks the fastest:

* ``numba_bsr`` / ``numba_csr``: the fused whole-model forward (one compiled call,
  :class:`~blockprune_utils.bsr.fused.NumbaMLP`) over the stored k x k blocks / the
  non-zeros (sparse structures only);
* ``numba_dense``: the same fused forward with every block stored (a dense forward
  without Python overhead per layer);
* ``torch_dense``: the plain dense torch forward (one thread).

This is a benchmark, run on an otherwise idle machine for the committed numbers;
:func:`latency_frame` keeps its rows next to the study's rows (``latency.csv`` in the
store folder) so that a notebook re-render does not time again.  :func:`frontier`
and :func:`pareto_reading` read the accuracy-latency trade-off.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ...bsr.fused import NumbaMLP
from ...bsr.timing import num_threads, time_calls
from ...infra.provenance import device_name, git_commit
from ...infra.store import open_store
from ..base import restore
from .config import LAYERS, SCHEMA, STUDY, RunConfig, lenet_profile, run_config
from .neurons import MLP, narrow_key, narrow_model, shrink
from .runs import new_model

BACKENDS = {"sparse": ("numba_bsr", "numba_csr", "numba_dense", "torch_dense"), "dense": ("numba_dense", "torch_dense")}
BATCHES = (1, 256)
DENSE_K = 8  # block size of the all-blocks-stored fused dense forward
# where and how the timings were taken: stored timings are reused only on the same machine kind and budget
CONTEXT_COLUMNS = ["device", "cpu", "budget_s", "commit"]
LATENCY_COLUMNS = ["dataset", "variant", "k", "round", "density", "batch", "backend", "median_us", "q25_us", "q75_us",
                   "fastest", "hidden", *CONTEXT_COLUMNS]


def timing_context(budget_s: float) -> dict:
    """The device, numba's CPU name (e.g. ``znver4``), the timing budget and the
    commit of latency rows timed here and now."""
    from numba.core.registry import cpu_target

    return {"device": device_name(), "cpu": cpu_target.target_context.codegen().magic_tuple()[1],
            "budget_s": float(budget_s), "commit": git_commit()}


def line_label(variant: str, k: int) -> str:
    """The name of a model's line in the Pareto figure."""
    if variant == "block":
        return "element-wise (k = 1)" if k == 1 else f"blocks k = {k}"
    return {"neuron": "neuron pruning", "narrow_dense": "narrow dense", "baseline": "dense baseline"}.get(variant, variant)


def stored_models(cfg: RunConfig, ks: Sequence[int], rounds: int, narrow_rounds: Sequence[int], results_root=None
                  ) -> Iterator[tuple[dict, torch.nn.Module]]:
    """(description, model) of every stored seed-0 model: baseline, block (k, round),
    neuron (round, physically shrunk) and narrow dense (round); missing ones skipped."""
    store = open_store(STUDY, cfg, SCHEMA, results_root)
    if store is None:
        return
    ds = cfg.data.dataset

    def load(run_key, fresh):
        return store.load_checkpoint(run_key, use=lambda ck: restore(ck, fresh()))

    fresh = lambda: new_model(cfg, 0)  # noqa: E731
    base = load({"dataset": ds, "seed": 0, "variant": "baseline"}, fresh)
    if base is not None:
        yield {"variant": "baseline", "k": 0, "round": 0, "structure": "dense"}, base
    for k in ks:
        for r in range(1, rounds + 1):
            m = load({"dataset": ds, "k": int(k), "seed": 0, "variant": "block", "setting": "default", "round": r,
                      "kind": "snapshot"}, fresh)
            if m is not None:
                yield {"variant": "block", "k": int(k), "round": r, "structure": "sparse"}, m
    for r in range(1, rounds + 1):
        m = load({"dataset": ds, "k": 0, "seed": 0, "variant": "neuron", "setting": "default", "round": r,
                  "kind": "snapshot"}, fresh)
        if m is not None:
            yield {"variant": "neuron", "k": 0, "round": r, "structure": "dense"}, shrink(m)
    for r in narrow_rounds:
        m = load(narrow_key(cfg, 0, r), lambda r=r: narrow_model(cfg, r, 0))
        if m is not None:
            yield {"variant": "narrow_dense", "k": 0, "round": int(r), "structure": "dense"}, m


def _dense_copy(model: torch.nn.Module) -> MLP:
    """A plain dense MLP with the model's (masked) weights."""
    out = MLP((model.fc1.in_features, model.fc1.out_features, model.fc2.out_features, model.fc3.out_features))
    with torch.no_grad():
        for n in LAYERS:
            getattr(out, n).weight.copy_(getattr(model, n).weight.detach())
            getattr(out, n).bias.copy_(getattr(model, n).bias.detach())
    return out.eval()


def backend_calls(model: torch.nn.Module, k: int, structure: str, x: torch.Tensor) -> dict:
    """Argument-free forward calls of ``model`` on ``x``, one per backend of its structure."""
    dense = _dense_copy(model)
    xn = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    calls = {}
    for name in BACKENDS[structure]:
        if name == "torch_dense":
            def call(m=dense):
                with torch.inference_mode():
                    return m(x)
        else:
            if name == "numba_bsr":
                net = NumbaMLP(dense, max(k, 1), "bsr")
            elif name == "numba_csr":
                net = NumbaMLP(dense, 1, "csr")
            else:
                grids = [torch.ones(math.ceil(getattr(dense, n).out_features / DENSE_K),
                                    math.ceil(getattr(dense, n).in_features / DENSE_K), dtype=torch.bool) for n in LAYERS]
                net = NumbaMLP(dense, DENSE_K, "bsr", block_masks=grids)
            call = lambda net=net: net(xn)  # noqa: E731
        calls[name] = call
    return calls


def latency_rows(cfg: RunConfig, ks: Sequence[int], rounds: int, narrow_rounds: Sequence[int] = (),
                 batches: Sequence[int] = BATCHES, budget_s: float = 0.05, results_root=None) -> pd.DataFrame:
    """Time every stored seed-0 model (:func:`stored_models`) at each batch size with
    each backend of its structure, single-threaded; one row per (model, batch,
    backend), ``fastest`` marking the quickest backend of each (model, batch)."""
    rows, context = [], timing_context(budget_s)
    gen = torch.Generator().manual_seed(0)
    xs = {b: torch.randn(b, 784, generator=gen) for b in batches}
    with num_threads(1):
        for desc, model in stored_models(cfg, ks, rounds, narrow_rounds, results_root):
            sizes = (model.fc1.in_features, model.fc1.out_features, model.fc2.out_features, model.fc3.out_features)
            kept = sum(float((getattr(model, n).weight != 0).sum()) for n in LAYERS)
            for b, x in xs.items():
                times = time_calls(backend_calls(model, desc["k"], desc["structure"], x), budget_s=budget_s)
                best = min(times, key=lambda n: times[n].median_ns)
                rows += [{"dataset": cfg.data.dataset, "variant": desc["variant"], "k": desc["k"], "round": desc["round"],
                          "density": kept / (784 * 300 + 300 * 100 + 100 * 10), "batch": b, "backend": n,
                          "median_us": t.median_ns / 1e3, "q25_us": t.q25_ns / 1e3, "q75_us": t.q75_ns / 1e3,
                          "fastest": n == best, "hidden": f"{sizes[1]}-{sizes[2]}", **context}
                         for n, t in times.items()]
    return pd.DataFrame(rows, columns=LATENCY_COLUMNS)


def latency_frame(profile: str = "paper", dataset: str = "mnist", *, refresh: bool = False, budget_s: float = 0.05,
                  results_root=None, config: RunConfig | None = None) -> pd.DataFrame:
    """The latency rows of a profile and data set: read from ``latency.csv`` in the
    store folder, or timed now (and written there) when absent, when it lacks a model
    whose seed-0 row the store now holds, when it was timed on another device or CPU
    or with another ``budget_s``, or with ``refresh``."""
    prof = lenet_profile(profile)
    cfg = config if config is not None else run_config(prof, dataset)
    store = open_store(STUDY, cfg, SCHEMA, results_root)
    if store is None:
        return pd.DataFrame(columns=LATENCY_COLUMNS)
    path = Path(store.dir) / "latency.csv"
    if path.exists() and not refresh:
        old = pd.read_csv(path)
        rows = store.frame()
        rows = rows[(rows["seed"] == 0) & (rows["variant"].isin(["baseline", "neuron", "narrow_dense"])
                                           | ((rows["variant"] == "block") & rows["k"].isin(prof.ks)))]
        want = set(zip(rows["variant"], rows["k"], rows["round"]))
        here = timing_context(budget_s)
        same_place = all(c in old for c in CONTEXT_COLUMNS) and all(
            set(old[c]) == {here[c]} for c in ("device", "cpu", "budget_s"))
        if same_place and want <= set(zip(old["variant"], old["k"], old["round"])):
            return old
    rows = latency_rows(cfg, prof.ks, cfg.pruning.rounds, prof.narrow_rounds, budget_s=budget_s, results_root=results_root)
    tmp = path.with_suffix(".csv.tmp")
    rows.to_csv(tmp, index=False)
    tmp.replace(path)
    return rows


def accuracy_latency(latency: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The fastest backend's latency of each model and batch with the model's test
    accuracy (mean over the seeds in ``rows``), and its ``line`` label."""
    fast = latency[latency["fastest"].astype(bool)]
    if fast.empty:
        return pd.DataFrame(columns=[*LATENCY_COLUMNS, "acc_mean", "n_seeds", "line"])
    acc = (rows[rows["variant"].isin(["baseline", "block", "neuron", "narrow_dense"])]
           .groupby(["variant", "k", "round"]).agg(acc_mean=("test_acc", "mean"), n_seeds=("seed", "nunique"))
           .reset_index())
    out = fast.merge(acc, on=["variant", "k", "round"], how="inner")
    return out.assign(line=[line_label(v, k) for v, k in zip(out["variant"], out["k"])]).reset_index(drop=True)


def frontier(points: pd.DataFrame, x: str = "median_us", y: str = "acc_mean") -> pd.DataFrame:
    """The Pareto frontier of ``points``: those no other point beats on both ``x``
    (lower is better) and ``y`` (higher is better), in increasing ``x``."""
    if points.empty:
        return points
    ordered = points.sort_values([x, y], ascending=[True, False])
    keep, best = [], -math.inf
    for idx, val in zip(ordered.index, ordered[y]):
        if val > best:
            keep.append(idx)
            best = val
    return ordered.loc[keep].reset_index(drop=True)


def _describe(p) -> str:
    where = "" if p["variant"] == "baseline" else f" at round {int(p['round'])} ({100 * p['density']:.1f}% of weights)"
    return f"{p['line']}{where}, {100 * p['acc_mean']:.2f}% in {p['median_us']:.0f} µs ({p['backend']})"


def pareto_reading(points: pd.DataFrame, batch: int, budgets: Sequence[float] | None = None) -> str:
    """Sentences for one batch size: under each latency budget (default: the dense
    baseline's latency, the fastest model's, and their geometric mean), the most
    accurate model; which line holds most of the frontier; where neuron pruning and
    the narrow nets stand."""
    pts = points[points["batch"] == batch]
    if pts.empty:
        return f"No latency rows at batch {batch}."
    dense = pts.loc[pts["variant"] == "baseline", "median_us"]
    ref = float(dense.iloc[0]) if len(dense) else float(pts["median_us"].max())
    fastest = float(pts["median_us"].min())
    budgets = budgets if budgets is not None else sorted({ref, math.sqrt(ref * fastest), fastest}, reverse=True)
    parts = []
    for b in budgets:
        under = pts[pts["median_us"] <= b]
        if under.empty:
            parts.append(f"under {b:.0f} µs at batch {batch}, no model runs")
            continue
        parts.append(f"under {b:.0f} µs at batch {batch}, the most accurate model is "
                     + _describe(under.loc[under["acc_mean"].idxmax()]))
    front = frontier(pts)
    counts = front["line"].value_counts()
    top = _leaders(front)
    held = f"the line holding most of it is {top[0]}" if len(top) == 1 else f"{' and '.join(top)} hold most of it, tied"
    text = "; ".join(parts) + f". The frontier's {len(front)} models: " + \
        ", ".join(f"{line} {n}" for line, n in counts.items()) + f"; {held}."
    for line in ("neuron pruning", "narrow dense"):
        own = pts[pts["line"] == line]
        if len(own):
            on = int(front["line"].eq(line).sum())
            text += f" {line[0].upper() + line[1:]}: {on} of its {len(own)} models on the frontier"
            text += "." if on else " (each is matched or beaten by a model at least as fast and as accurate)."
    return text


def best_line(points: pd.DataFrame, batch: int) -> str | None:
    """The line holding most points of the frontier at ``batch`` (a tie is named as
    one, the line whose frontier points reach the highest accuracy first; None
    without rows)."""
    front = frontier(points[points["batch"] == batch])
    if front.empty:
        return None
    tied = _leaders(front)
    return tied[0] if len(tied) == 1 else " and ".join(tied) + f" (tied, {int((front['line'] == tied[0]).sum())} points each)"


def _leaders(front: pd.DataFrame) -> list[str]:
    """The lines holding most points of a frontier, the one reaching the highest accuracy first."""
    stats = front.groupby("line").agg(n=("acc_mean", "size"), best=("acc_mean", "max"))
    stats = stats.sort_values(["n", "best"], ascending=False)
    return [str(line) for line in stats.index[stats["n"] == stats["n"].iloc[0]]]
