"""Bytes of dense, CSR and BSR storage of the pruned LeNet layers
(:func:`~blockprune_utils.bsr.storage_bytes`: values plus int32 index arrays, BSR
with its zero-padded edge blocks)."""
from __future__ import annotations

from ..bsr import storage_bytes
from ..infra.provenance import provenance
from ..infra.store import Schema
from ..masks import dense_state_dict
from .config import LAYERS, WEIGHT_FIELDS, BenchConfig, bench_store, get_config
from .weights import config_model, weights_tag

STORAGE_FORMATS = ("dense", "csr", "bsr")
STORAGE_SCHEMA = Schema(
    key=("layer", "k", "round", "weights", "format"),
    values=("family", "source", "density", "nnz", "nnz_blocks", "bytes"),
)


def _values(source: str, density: float, nnz: int, nnz_blocks, nbytes: int) -> dict:
    return {"family": "lenet", "source": source, "density": density, "nnz": nnz, "nnz_blocks": nnz_blocks, "bytes": nbytes}


def measure_storage(cfg: BenchConfig, k: int, round: int) -> list[tuple[dict, dict]]:
    """(key, values) of every LeNet layer of (k, round) in each format, and of their
    sum over the layers (``layer="all"``, where ``nnz_blocks`` is None)."""
    model, source = config_model(cfg, k, round)
    dense = dense_state_dict(model)
    key = {"k": int(k), "round": int(round), "weights": weights_tag(source)}
    total = dict.fromkeys((*STORAGE_FORMATS, "nnz", "numel"), 0)
    out = []
    for layer in LAYERS:
        w = dense[f"{layer}.weight"].float()
        s = storage_bytes(w, k)
        for name, v in (("dense", s.dense), ("csr", s.csr), ("bsr", s.bsr), ("nnz", s.nnz), ("numel", w.numel())):
            total[name] += v
        for fmt in STORAGE_FORMATS:
            out.append(({**key, "layer": layer, "format": fmt},
                        _values(source, s.nnz / w.numel(), s.nnz, s.nnz_blocks, getattr(s, fmt))))
    for fmt in STORAGE_FORMATS:
        out.append(({**key, "layer": "all", "format": fmt},
                    _values(source, total["nnz"] / total["numel"], total["nnz"], None, total[fmt])))
    return out


def storage_rows(cfg: BenchConfig | str = "quick", *, store_root=None, cache: bool = True) -> list[dict]:
    """Rows (of :data:`STORAGE_SCHEMA`) of every configured (k, round): bytes per
    LeNet layer and format, and their sum over the layers (``layer="all"``).  The
    counts are cheap, so they are always computed; they are written to the
    ``bench_storage`` store (not per machine: bytes do not depend on it) as the record
    of the run (``cache=False``: nothing written)."""
    cfg = get_config(cfg)
    store = bench_store("bench_storage", cfg, STORAGE_SCHEMA, store_root, fields=WEIGHT_FIELDS,
                        per_machine=False) if cache else None
    prov = provenance("cpu")
    rows = []
    for k in cfg.ks:
        for r in cfg.rounds:
            for key, values in measure_storage(cfg, k, r):
                rows.append(store.put(key, values, prov) if store is not None else STORAGE_SCHEMA.make(key, values, prov, None))
    return rows
