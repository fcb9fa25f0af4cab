"""The iterative pruning schedule: one :class:`BlockPruner` round at a time.

A round scores the blocks of each chosen layer on its current (masked) weight,
drops the lowest-scoring surviving blocks and installs the new mask.
:func:`prune_retrain` is the iterative loop: prune a round, retrain (the caller's
function), repeat.  A pruner's :meth:`BlockPruner.state_dict` holds what a resumed
run needs besides the model (its round count, history and any fixed scores).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .blocks import Score, as_matrix, block_grid, block_mask_of, block_scores, check_block_size, expand_block_mask
from .masks import get_mask, set_mask
from .pruning import check_fraction, prune_fraction, prune_global


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, m in model.named_modules() if hasattr(m, "weight")]
        raise KeyError(f"model has no layer {name!r}; layers with weights: {names}") from None


def alive_blocks(module: nn.Module, k: int) -> torch.Tensor:
    """Blocks of ``module.weight`` not yet pruned (from its mask), shape (R, C)."""
    return block_mask_of(as_matrix(get_mask(module)), k)


def install_block_mask(module: nn.Module, block_mask: torch.Tensor, k: int) -> None:
    shape = as_matrix(module.weight).shape
    set_mask(module, expand_block_mask(block_mask, shape, k).to(module.weight.dtype))


@dataclass
class BlockPruner:
    """Prune a fraction of the surviving k x k blocks of each layer, per round.

    ``rates`` maps a layer name to its per-round fraction p (the authors: 0.2 for
    hidden layers, 0.1 for the output layer).  ``scope="global"`` ranks all layers'
    blocks together (all ``rates`` must then be equal) and never empties a layer.
    ``score`` is a score name, a callable, or a mapping layer -> fixed score tensor (used for random-mask controls).
    """

    k: int
    rates: Mapping[str, float]
    score: Score | Mapping[str, torch.Tensor] = "mean_abs"
    scope: str = "layer"
    history: list = field(default_factory=list)

    def __post_init__(self):
        self.k = check_block_size(self.k)
        if not self.rates:
            raise ValueError("rates is empty: name at least one layer to prune")
        for name, p in self.rates.items():
            check_fraction(p, f"pruning rate for layer {name!r}")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        if self.scope == "global" and len(set(self.rates.values())) != 1:
            raise ValueError(f"global scope needs one rate for all layers, got {dict(self.rates)}")

    def scores(self, model: nn.Module, name: str) -> torch.Tensor:
        module = _module(model, name)
        if isinstance(self.score, Mapping):
            s = self.score[name]
            expected = block_grid(as_matrix(module.weight).shape, self.k)
            if tuple(s.shape) != expected:
                raise ValueError(f"fixed scores for {name!r} have shape {tuple(s.shape)}, expected {expected}")
            return s
        return block_scores(module.weight, self.k, self.score)

    def step(self, model: nn.Module) -> dict[str, float]:
        """One pruning round; returns the per-layer weight densities after it."""
        names = list(self.rates)
        modules = {n: _module(model, n) for n in names}
        alive = {n: alive_blocks(modules[n], self.k) for n in names}
        scores = {n: self.scores(model, n) for n in names}
        if self.scope == "layer":
            new = {n: prune_fraction(scores[n], alive[n], self.rates[n]) for n in names}
        else:
            new = prune_global(scores, alive, next(iter(self.rates.values())))
        for n in names:
            install_block_mask(modules[n], new[n], self.k)
        dens = layer_densities(model, names)
        self.history.append(dens)
        return dens

    @property
    def round(self) -> int:
        """Rounds done so far."""
        return len(self.history)

    def state_dict(self) -> dict:
        """The pruner's settings and progress (fixed scores as tensors, a score
        callable by name only: it must be given again when loading)."""
        score = dict(self.score) if isinstance(self.score, Mapping) else (self.score if isinstance(self.score, str) else None)
        return {"k": self.k, "rates": dict(self.rates), "scope": self.scope, "score": score,
                "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore progress (and fixed scores) saved by :meth:`state_dict`; the
        settings must match this pruner's."""
        for name in ("k", "rates", "scope"):
            mine = self.k if name == "k" else dict(self.rates) if name == "rates" else self.scope
            if state[name] != mine:
                raise ValueError(f"pruner state has {name}={state[name]!r}, this pruner has {mine!r}")
        if isinstance(state["score"], Mapping):
            self.score = dict(state["score"])
        self.history = [dict(h) for h in state["history"]]


def prune_retrain(model: nn.Module, pruner: BlockPruner, rounds: int,
                  retrain: Callable[[nn.Module, int], Any] | None = None,
                  on_round: Callable[[int, nn.Module, Any], None] | None = None,
                  proceed: Callable[[int], bool] | None = None) -> nn.Module:
    """Iterative block pruning: from the pruner's current round up to ``rounds``,
    prune one round (``pruner.step``), then ``retrain(model, round)``, then
    ``on_round(round, model, retrain_result)`` (record a row, save a checkpoint).
    Rounds are numbered from 1; round 0 is the unpruned model.  ``proceed(round)``,
    asked before each round, can stop the loop early (a time budget, a partial run)."""
    for r in range(pruner.round + 1, rounds + 1):
        if proceed is not None and not proceed(r):
            break
        pruner.step(model)
        result = retrain(model, r) if retrain is not None else None
        if on_round is not None:
            on_round(r, model, result)
    return model


def layer_densities(model: nn.Module, names) -> dict[str, float]:
    """Fraction of weights kept in each named layer."""
    return {n: float(get_mask(_module(model, n)).float().mean()) for n in names}


def total_density(model: nn.Module, names) -> float:
    mods = [_module(model, n) for n in names]
    kept = sum(float(get_mask(m).sum()) for m in mods)
    return kept / sum(m.weight.numel() for m in mods)


def random_scores(model: nn.Module, names, k: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniform random block scores: pruning by them gives random block masks with
    exactly the block counts of score-based pruning at the same rates."""
    out = {}
    for n in names:
        grid = block_grid(as_matrix(_module(model, n).weight).shape, k)
        out[n] = torch.rand(grid, generator=generator, dtype=torch.float64)
    return out
