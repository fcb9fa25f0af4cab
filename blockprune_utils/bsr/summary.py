"""What block pruning bought on one's own model: stored bytes per Linear layer and a
converted model's output and latency against the masked dense one."""
from __future__ import annotations

import copy
import warnings
from typing import Mapping

import torch
from torch import nn

from ..masks import dense_state_dict, remove_masks
from .convert import storage_bytes
from .layers import AUTO, BACKENDS, backends_of, unsupported
from .model import to_bsr_model
from .timing import num_threads, time_calls


def storage_table(model: nn.Module, k, converted: nn.Module | None = None, layers=None) -> list[dict]:
    """One row per Linear layer of a (masked) model: its shape, weight density and
    the bytes of its weight stored dense, as CSR and as BSR with block size ``k``
    (one k, or a dict layer -> k; :func:`~.convert.storage_bytes`).  With the
    ``converted`` model, also how each layer is held there (``stored_as``: its
    backend, or ``"nn.Linear"`` for a layer left dense) and ``stored_bytes``: the BSR
    bytes for a sparse backend, the dense bytes otherwise."""
    sd = dense_state_dict(model)
    names = layers or [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    held = backends_of(converted) if converted is not None else {}
    rows = []
    for name in names:
        w = sd[f"{name}.weight"]
        kk = k[name] if isinstance(k, Mapping) else k
        s = storage_bytes(w, kk)
        row = {"layer": name, "shape": tuple(w.shape), "k": kk, "density": float((w != 0).float().mean()),
               "dense_bytes": s.dense, "csr_bytes": s.csr, "bsr_bytes": s.bsr}
        if converted is not None:
            row["stored_as"] = held.get(name, "nn.Linear")
            row["stored_bytes"] = s.dense if row["stored_as"] in ("nn.Linear", "dense") else s.bsr
        rows.append(row)
    return rows


def compare_models(dense: nn.Module, converted: nn.Module, example: torch.Tensor, *, threads: int = 1,
                   budget_s: float = 0.2) -> dict:
    """The converted model against the dense (masked) one on ``example``: largest
    absolute output difference, median latency of each (ms, ``threads`` torch
    threads, both timed in the same interleaved rounds by
    :func:`~.timing.time_calls`), their ratio and the backend of each BSR layer.
    The dense model is timed as a copy with its masks baked into plain weights
    (:func:`~blockprune_utils.masks.remove_masks`), so that it does not pay for
    multiplying by the masks on every call."""
    dense = remove_masks(copy.deepcopy(dense)).eval()
    with torch.no_grad(), num_threads(threads):
        diff = float((converted(example) - dense(example)).abs().max())
        t = time_calls({"dense": lambda: dense(example), "bsr": lambda: converted(example)}, budget_s=budget_s)
    return {"max_abs_diff": diff, "dense_ms": t["dense"].median_ns / 1e6, "bsr_ms": t["bsr"].median_ns / 1e6,
            "speedup": t["dense"].median_ns / t["bsr"].median_ns, "backends": backends_of(converted)}


def backend_table(model: nn.Module, k, example: torch.Tensor, backends=(*BACKENDS, AUTO), layers=None,
                  **kwargs) -> list[dict]:
    """:func:`compare_models` of ``model`` converted with each backend (one k for
    every layer, the Linear ``layers``: default all), one row per backend; a backend that cannot hold k gets a row
    with the reason instead.  ``left_dense`` lists the Linear layers the conversion
    left dense (it warns about them once, at the first conversion)."""
    rows = []
    for i, backend in enumerate(backends):
        why = unsupported(backend, k) if backend != AUTO else None
        if why:
            rows.append({"backend": backend, "k": k, "error": why})
            continue
        with warnings.catch_warnings():
            if i:
                warnings.filterwarnings("ignore", message="to_bsr_model leaves these Linear layers dense")
            converted = to_bsr_model(model, k, backend=backend, layers=layers, example=example)
        left = [n for n, m in converted.named_modules() if isinstance(m, nn.Linear)]
        rows.append({"backend": backend, "k": k, **compare_models(model, converted, example, **kwargs), "left_dense": left})
    return rows
