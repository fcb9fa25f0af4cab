"""Which blocks to prune: the per-layer fraction rule, a target-density form and a
global ranking.

All rules work on a layer's block scores (R, C) and its *alive* block mask (R, C,
bool) and return a new alive mask; pruned blocks never come back.

Tie rule (deterministic): blocks are ranked by (score, flat row-major block index),
so among equal scores the block that comes first in row-major order is pruned
first.  The authors' code instead prunes every block with ``score < cutoff``, which
prunes *fewer* than round(p*N) blocks when scores tie at the cutoff; ours always
prunes exactly round(p*N).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch


def check_fraction(p, name: str = "p") -> float:
    """A pruning fraction must be a number in [0, 1)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p < 1:
        raise ValueError(f"{name} must be a fraction in [0, 1), got {p!r}")
    return float(p)


def check_density(d, name: str = "density") -> float:
    """A target density must be a number in (0, 1] (1 keeps everything)."""
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not 0 < d <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {d!r}")
    return float(d)


def _check_pair(scores: torch.Tensor, alive: torch.Tensor) -> None:
    if scores.shape != alive.shape:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not match alive mask of shape {tuple(alive.shape)}")
    if alive.dtype != torch.bool:
        raise TypeError(f"alive mask must be bool, got {alive.dtype}")
    if alive.numel() == 0:
        raise ValueError(f"block grid of shape {tuple(alive.shape)} holds no blocks (the layer's weight has a zero "
                         "dimension): leave that layer out of the pruned ones")
    n_nan = int(torch.isnan(scores).sum()) if scores.is_floating_point() else 0
    if n_nan:
        raise ValueError(f"block scores hold {n_nan} NaN value(s) of {scores.numel()}: NaN cannot be ranked; "
                         "give finite scores")


def n_to_prune(p: float, n_alive: int) -> int:
    """round(p * N) with Python's round (half to even), as in the authors' code."""
    return int(round(check_fraction(p) * n_alive))


def _prune_lowest(scores: torch.Tensor, alive: torch.Tensor, n: int) -> torch.Tensor:
    """Drop the ``n`` alive blocks of lowest score (ties: lower flat index first)."""
    flat_alive = alive.reshape(-1)
    idx = torch.nonzero(flat_alive).reshape(-1)  # ascending flat index
    if n <= 0 or idx.numel() == 0:
        return alive.clone()
    order = torch.sort(scores.reshape(-1)[idx], stable=True).indices
    new = flat_alive.clone()
    new[idx[order[:n]]] = False
    return new.reshape(alive.shape)


def prune_fraction(scores: torch.Tensor, alive: torch.Tensor, p: float) -> torch.Tensor:
    """Prune round(p * N_alive) of the surviving blocks with the lowest scores."""
    _check_pair(scores, alive)
    return _prune_lowest(scores, alive, n_to_prune(p, int(alive.sum())))


def prune_to_density(scores: torch.Tensor, alive: torch.Tensor, density: float) -> torch.Tensor:
    """Prune the lowest-scoring alive blocks until round(density * N_blocks) remain.

    Density is counted in blocks (edge blocks count as one).  If fewer blocks are
    alive already, nothing changes.
    """
    _check_pair(scores, alive)
    keep = int(round(check_density(density) * alive.numel()))
    return _prune_lowest(scores, alive, int(alive.sum()) - keep)


def prune_global(
    scores: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    p: float,
    min_keep: int = 1,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """Rank the alive blocks of all layers together and prune round(p * N_alive_total).

    ``normalize`` divides each layer's scores by its largest alive score first (as the
    authors do per layer), so that layers of different weight scale compete fairly.
    The guard: no layer is left with fewer than ``min_keep`` alive blocks (blocks a
    layer cannot give up are skipped and the next-lowest block elsewhere is taken).
    """
    if set(scores) != set(alive):
        raise ValueError(f"scores and alive masks name different layers: {sorted(scores)} vs {sorted(alive)}")
    if min_keep < 0:
        raise ValueError(f"min_keep must be >= 0, got {min_keep}")
    names = sorted(scores)
    p = check_fraction(p)
    cand_scores, cand_layer, cand_flat, cand_rank_ok = [], [], [], []
    for li, name in enumerate(names):
        s, a = scores[name], alive[name]
        _check_pair(s, a)
        idx = torch.nonzero(a.reshape(-1)).reshape(-1)
        vals = s.reshape(-1)[idx].to(torch.float64)
        if normalize and vals.numel() and vals.max() > 0:
            vals = vals / vals.max()
        order = torch.sort(vals, stable=True).indices
        prunable = max(idx.numel() - min_keep, 0)
        rank_ok = torch.zeros(idx.numel(), dtype=torch.bool)
        rank_ok[order[:prunable]] = True
        cand_scores.append(vals)
        cand_layer.append(torch.full((idx.numel(),), li))
        cand_flat.append(idx)
        cand_rank_ok.append(rank_ok)
    all_scores = torch.cat(cand_scores)
    layer = torch.cat(cand_layer)
    flat = torch.cat(cand_flat)
    ok = torch.cat(cand_rank_ok)
    n = int(round(p * all_scores.numel()))
    # global order: by score, then layer name order, then flat index (deterministic)
    key_order = torch.sort(all_scores[ok], stable=True).indices
    chosen = torch.nonzero(ok).reshape(-1)[key_order[:n]]
    out = {name: alive[name].clone() for name in names}
    for li, name in enumerate(names):
        sel = flat[chosen[layer[chosen] == li]]
        out[name].reshape(-1)[sel] = False
    return out
