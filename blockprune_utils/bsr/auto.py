"""Automatic per-layer choice of the fastest backend, by measurement.

:func:`auto_backends` times, for each Linear layer of a pruned MLP at one batch
size, every candidate backend - the :class:`~.layers.BSRLinear` backends
(``path="module"``: torch, scipy, numba, dense) or the :class:`~.lean.LeanMLP`
formats (``path="lean"``) - and returns the fastest that is *measurably* faster than
dense, after checking every candidate against a float64 reference.  The choice is
then timed as a whole forward against the uniform models; on the module path these
include the whole model as one compiled call (``"fused"``, :class:`~.layers.FusedMLP`).
:func:`auto_choice` returns the evidence too.
"""
from __future__ import annotations

import functools
import json
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..masks import dense_state_dict
from .layers import BACKENDS, FUSED, BSRLinear, convert_model, unsupported
from .lean import LEAN_FORMATS, LeanLayer, LeanMLP, linear_layers, reference_forward
from .timing import KERNEL_ERRORS, RTOL, as_numpy, close_enough, measurably_faster, num_threads, time_calls

PATHS = ("module", "lean")


def _module_candidates(w, b, k) -> dict:
    """One layer as a :class:`BSRLinear` of each backend that can hold it (:func:`~.layers.unsupported`)."""
    out = {}
    for be in BACKENDS:
        if unsupported(be, k):
            continue
        try:
            out[be] = BSRLinear(w, b, k, backend=be)
        except KERNEL_ERRORS:
            continue
    return out


def _lean_candidates(w, b, k) -> dict:
    """One layer as a :class:`LeanLayer` of each lean format."""
    return {fmt: LeanLayer(fmt, w, b, k) for fmt in LEAN_FORMATS}


def _run_ops(ops) -> None:
    for op in ops:
        op()


def _run_and_read(fn, y: np.ndarray, rows: int) -> np.ndarray:
    """Run a lean layer and read its (batch, rows) output from the (features, batch) buffer."""
    fn()
    return y[:rows].reshape(rows, -1).T


def _layer_calls(path: str, w, b, k, x: np.ndarray):
    """(timed calls, output readers) of every candidate of one layer on input ``x`` (batch, in)."""
    batch = x.shape[0]
    if path == "module":
        xt = torch.from_numpy(x)
        fns = {n: functools.partial(m, xt) for n, m in _module_candidates(w, b, k).items()}
        return fns, {n: (lambda f=f: f().numpy()) for n, f in fns.items()}
    fns, outputs = {}, {}
    for n, layer in _lean_candidates(w, b, k).items():
        xin = np.zeros((layer.n_in,) if batch == 1 else (layer.n_in, batch), np.float32)
        xin[: w.shape[1]] = x[0] if batch == 1 else x.T
        yout = np.zeros((layer.n_out,) if batch == 1 else (layer.n_out, batch), np.float32)
        fns[n] = functools.partial(_run_ops, tuple(layer.ops(xin, yout)))
        outputs[n] = functools.partial(_run_and_read, fns[n], yout, w.shape[0])
    return fns, outputs


def _check(output, ref, bound) -> tuple[bool, float]:
    try:
        return close_enough(np.asarray(output()).reshape(ref.shape), ref, bound, RTOL["float32"])
    except KERNEL_ERRORS:
        return False, float("inf")


def auto_choice(model: nn.Module, k, batch: int, *, path: str = "module", threads: int = 1, budget_s: float = 0.01,
                margin: float = 0.05, seed: int = 0, layers=None, min_repeats: int = 5, max_repeats: int = 100,
                verify_model: bool = True) -> tuple[dict[str, str], list[dict]]:
    """:func:`auto_backends` with its evidence: (choice, rows of per-layer timings,
    and of the whole-model check with ``layer="model"``)."""
    if path not in PATHS:
        raise ValueError(f"path must be 'module' (BSRLinear backends) or 'lean' (LeanMLP formats), got {path!r}")
    names = tuple(layers) if layers is not None else linear_layers(model)
    sd = dense_state_dict(model)
    rng = np.random.default_rng(seed)
    choice, rows, failed = {}, [], set()
    with num_threads(threads), torch.inference_mode():
        for name in names:
            w, b = sd[f"{name}.weight"].float(), sd.get(f"{name}.bias")
            kk = k[name] if isinstance(k, Mapping) else k
            x = rng.standard_normal((batch, w.shape[1])).astype(np.float32)
            w64, b64 = w.double().numpy(), (np.zeros(w.shape[0]) if b is None else b.double().numpy())
            ref = x.astype(np.float64) @ w64.T + b64
            bound = np.abs(x.astype(np.float64)) @ np.abs(w64.T) + np.abs(b64)
            fns, outputs = _layer_calls(path, w, b, kk, x)
            ok = {n: _check(outputs[n], ref, bound) for n in fns}
            timings = time_calls({n: f for n, f in fns.items() if ok[n][0]}, budget_s=budget_s,
                                 min_repeats=min_repeats, max_repeats=max_repeats)
            dense = timings.get("dense")
            sparse = {n: t for n, t in timings.items() if n != "dense"}
            pick = "dense"
            if sparse:
                best = min(sparse, key=lambda n: sparse[n].median_ns)
                if dense is None or measurably_faster(sparse[best], dense, margin):
                    pick = best
            choice[name] = pick
            failed |= {n for n in fns if not ok[n][0]}
            for n in fns:
                t = timings.get(n)
                rows.append({"layer": name, "candidate": n, "path": path, "batch": batch, "k": kk, "ok": ok[n][0],
                             "max_rel_err": ok[n][1], "median_ns": t.median_ns if t else None,
                             "q25_ns": t.q25_ns if t else None, "q75_ns": t.q75_ns if t else None, "chosen": n == pick})
        if verify_model and set(names) == set(linear_layers(model)):
            choice = _verify_on_model(model, k, batch, path, choice, failed, rows, budget_s=budget_s, margin=margin,
                                      min_repeats=min_repeats, max_repeats=max_repeats, seed=seed)
    return choice, rows


def _verify_on_model(model, k, batch, path, choice, failed, rows, *, budget_s, margin, min_repeats, max_repeats, seed):
    """The per-layer choice timed as a whole model against all-dense and each uniform
    format - on the module path also the whole model as one compiled call, "fused"
    (a layer's cost also depends on the memory layout its input arrives in,
    which a per-layer timing does not see).  The fastest wins if it is measurably
    faster than all-dense; otherwise all-dense.  Formats that failed a check on any
    layer are not candidates."""
    names = list(choice)
    fmts = BACKENDS if path == "module" else LEAN_FORMATS
    cands = {"per-layer": dict(choice)}
    for f in fmts:
        if f not in failed:
            cands[f"all-{f}"] = {n: f for n in names}
    if path == "module" and "numba" not in failed:
        cands[FUSED] = {n: FUSED for n in names}
    unique = {}
    for label, c in cands.items():
        if c not in unique.values():
            unique[label] = c
    in_features = dense_state_dict(model)[f"{names[0]}.weight"].shape[1]
    x = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((batch, in_features)).astype(np.float32))
    ref, bound = reference_forward(model, x, names), reference_forward(model, x, names, bound=True)
    fns = {}
    for label, c in unique.items():
        try:  # a model that is not a plain MLP has no fused form; a format may not hold a layer
            net = convert_model(model, k, backend=c) if path == "module" else LeanMLP(model, k, c, layers=names)
        except KERNEL_ERRORS:
            continue
        fn = functools.partial(net, x if path == "module" else x.numpy())
        if _check(lambda f=fn: as_numpy(f(), batch), ref, bound)[0]:
            fns[label] = fn
    timings = time_calls(fns, budget_s=budget_s, min_repeats=min_repeats, max_repeats=max_repeats)
    dense = timings.get("all-dense")
    best = min(timings, key=lambda n: timings[n].median_ns) if timings else "all-dense"
    pick = best if dense is None or best == "all-dense" or measurably_faster(timings[best], dense, margin) else "all-dense"
    for label, c in unique.items():
        t = timings.get(label)
        rows.append({"layer": "model", "candidate": label, "choice": json.dumps(c, sort_keys=True), "path": path,
                     "batch": batch, "ok": t is not None, "median_ns": t.median_ns if t else None,
                     "q25_ns": t.q25_ns if t else None, "q75_ns": t.q75_ns if t else None, "chosen": label == pick})
    return dict(unique.get(pick, {n: "dense" for n in names}))


def auto_backends(model: nn.Module, k, batch: int, **kwargs) -> dict[str, str]:
    """The fastest measured backend of each Linear layer of an MLP at ``batch``.

    ``path="module"`` (default) chooses among the :class:`~.layers.BSRLinear`
    backends (``torch``, ``scipy``, ``numba``, ``dense``) and the whole-model
    ``fused`` forward (every layer then reads ``"fused"``); the result goes straight
    into ``to_bsr_model(model, k, backend=...)``.  ``path="lean"`` chooses among the
    :class:`~.lean.LeanMLP` formats (``dense``, ``csr``, ``bsr``).  Every candidate's
    output is first checked against a float64 dense reference and a candidate that
    fails is never chosen.  A sparse candidate is chosen only when it is measurably
    faster than dense: its median below ``(1 - margin)`` times dense's *and* its
    upper quartile below dense's lower quartile; otherwise the layer stays dense.
    With ``verify_model`` (default) the per-layer choice is then timed as a whole
    forward against all-dense and each all-one-format model, by the same rule, so
    that the result is never measurably slower than the dense model.  Other keyword
    arguments: ``threads`` (default 1; 0 = all cores), ``budget_s``, ``margin``,
    ``seed``, ``layers`` (default every Linear), ``min_repeats``, ``max_repeats``."""
    return auto_choice(model, k, batch, **kwargs)[0]


def layer_rows(model: nn.Module, example, names) -> dict[str, int]:
    """How many rows (samples x positions) reach each named Linear layer when ``model``
    runs on ``example`` (an input tensor, or a shape: a float32 standard normal input
    of that shape is used); a layer the forward does not call is left out.  The
    output projection of an ``nn.MultiheadAttention`` counts the queries that reach
    the attention module."""
    if example is None:
        raise ValueError("backend='auto' measures each layer at the size it runs at: pass example= (an input tensor "
                         "of the model, or its shape)")
    if not isinstance(example, torch.Tensor):
        example = torch.randn(tuple(example), generator=torch.Generator().manual_seed(0))
    rows, hooks = {}, []
    for name in names:
        module = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        if child == "out_proj" and isinstance(parent, nn.MultiheadAttention):  # it reads out_proj.weight: count queries
            module = parent

        def hook(mod, args, kwargs, name=name, width=module.embed_dim if module is parent else module.in_features):
            x = args[0] if args else kwargs["query"]
            rows[name] = max(rows.get(name, 0), x.numel() // width)

        hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return rows


def auto_layer_backends(model: nn.Module, k, example, names, **kwargs) -> dict[str, str]:
    """The fastest measured :class:`BSRLinear` backend of each named Linear layer of
    any model, each timed (:func:`auto_choice`, one layer at a time) at the number of
    rows that reach it on ``example`` (:func:`layer_rows`).  A layer the forward does
    not call stays ``"dense"``.  ``kwargs`` go to :func:`auto_choice`.  The
    candidates run on the CPU, so the model must be there."""
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"backend='auto' times the CPU backends, but the model is on {sorted(devices)}: convert a CPU "
                         "copy, or name a backend ('torch' also runs on a GPU)")
    rows = layer_rows(model, example, names)
    choice = {}
    for name in names:
        kk = k[name] if isinstance(k, Mapping) else k
        if name not in rows:
            choice[name] = "dense"
            continue
        choice.update(auto_choice(model, {name: kk}, rows[name], layers=[name], verify_model=False, **kwargs)[0])
    return choice
