"""The iterative pruning schedule: one :class:`BlockPruner` round at a time.

A round scores the blocks of each chosen layer on its current (masked) weight,
drops the lowest-scoring surviving blocks and installs the new mask.
:func:`prune_retrain` is the iterative loop: prune a round, retrain (the caller's
function), repeat.  A pruner's :meth:`BlockPruner.state_dict` holds what a resumed
run needs besides the model (its round count, history and any fixed scores).

A pruner chooses its layers by name, by ``fnmatch`` pattern (``"*.linear1"``) or by
module type (``nn.Linear``, ``nn.Conv2d``), minus any ``exclude``d ones
(:func:`select_layers`).  Convolution weights (out, in, kh, kw) are divided into
blocks as the (out, in*kh*kw) matrix (:func:`~.blocks.as_matrix`).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

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


WILDCARDS = frozenset("*?[")


def _prunable(module: nn.Module) -> bool:
    """Whether a module has a weight that can be cut into blocks (2-D Linear-like, or a conv weight)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() in (2, 3, 4, 5)


def _not_prunable(name: str, module: nn.Module) -> str:
    weight = getattr(module, "weight", None)
    kind = type(module).__name__
    if isinstance(weight, torch.Tensor):
        return f"layer {name!r} ({kind}) has a {weight.dim()}-D weight of shape {tuple(weight.shape)}: block pruning " \
               "needs a 2-D (out, in) weight or a conv weight (out, in, *kernel)"
    others = sorted(n for n, p in module.named_parameters(recurse=False) if "weight" in n)
    held = f" (its weights are {others}; they are not pruned)" if others else ""
    return f"layer {name!r} ({kind}) has no `weight` to prune{held}"


def _kind(selector) -> str:
    if isinstance(selector, type) and issubclass(selector, nn.Module):
        return "type"
    if isinstance(selector, str):
        return "pattern" if WILDCARDS & set(selector) else "name"
    raise TypeError(f"a layer is chosen by name, fnmatch pattern or nn.Module type, got {selector!r}")


def _label(selector) -> str:
    """How a selector is written in a pruner's state: itself for a name or pattern, the qualified name of a type."""
    return selector if isinstance(selector, str) else f"<{selector.__module__}.{selector.__qualname__}>"


def _matches(model: nn.Module, selector, prunable: dict[str, nn.Module], what: str) -> list[str]:
    kind = _kind(selector)
    if kind == "name":
        module = _module(model, selector)
        if not _prunable(module):
            raise ValueError(_not_prunable(selector, module))
        return [selector]
    if kind == "type":
        found = [n for n, m in prunable.items() if isinstance(m, selector)]
    else:
        found = [n for n in prunable if fnmatch.fnmatchcase(n, selector)]
    if not found:
        raise ValueError(f"{what} {_label(selector)!r} matches no layer with a weight to prune; those layers are "
                         f"{list(prunable)}")
    return found


def select_layers(model: nn.Module, rates: Mapping, exclude: Sequence = ()) -> dict[str, float]:
    """Layer name -> rate for ``rates`` keyed by layer names, ``fnmatch`` patterns
    (``"*.linear1"``, ``"blocks.*"``) or module types (``nn.Linear``), minus the
    layers ``exclude`` names, matches or types.  A name beats a pattern, a pattern
    beats a type; two keys of one kind that give a layer different rates are an
    error, and so is a key or exclusion that matches nothing, a named layer that
    is missing or has no weight to cut into blocks.  Only name keys: the layers in
    the order of ``rates``; otherwise in the model's module order."""
    prunable = {n: m for n, m in model.named_modules() if _prunable(m)}
    chosen: dict[str, tuple[int, float, Any]] = {}
    for key, rate in rates.items():
        rank = ("name", "pattern", "type").index(_kind(key))
        for n in _matches(model, key, prunable, "rates key"):
            old = chosen.get(n)
            if old is not None and old[0] == rank and old[1] != rate:
                raise ValueError(f"layer {n!r} is matched by {_label(old[2])!r} (rate {old[1]}) and by "
                                 f"{_label(key)!r} (rate {rate}): name it to give it one rate")
            if old is None or rank < old[0]:
                chosen[n] = (rank, rate, key)
    for key in exclude:
        for n in _matches(model, key, prunable, "exclude entry"):
            chosen.pop(n, None)
    if not chosen:
        raise ValueError(f"no layer left to prune: rates {[_label(k) for k in rates]} minus exclude "
                         f"{[_label(k) for k in exclude]}")
    order = list(rates) if all(_kind(key) == "name" for key in rates) else list(prunable)
    return {n: chosen[n][1] for n in order if n in chosen}


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
    hidden layers, 0.1 for the output layer); a key may also be an ``fnmatch``
    pattern (``"*.linear1"``) or a module type (``nn.Linear``, ``nn.Conv2d``), and
    ``exclude`` takes layers out again (``rates={nn.Linear: 0.2},
    exclude=["classifier"]``): see :func:`select_layers`, and :meth:`layers` for the
    result on a model.  ``scope="global"`` ranks all layers'
    blocks together (all ``rates`` must then be equal) and never empties a layer.
    ``score`` is a score name, a callable, or a mapping layer -> fixed score tensor (used for random-mask controls).
    """

    k: int
    rates: Mapping[str, float]
    score: Score | Mapping[str, torch.Tensor] = "mean_abs"
    scope: str = "layer"
    history: list = field(default_factory=list)
    exclude: Sequence = ()

    def __post_init__(self):
        self.k = check_block_size(self.k)
        if not self.rates:
            raise ValueError("rates is empty: name at least one layer to prune")
        if isinstance(self.exclude, (str, type)):
            self.exclude = (self.exclude,)
        self.exclude = tuple(self.exclude)
        for key in [*self.rates, *self.exclude]:
            _kind(key)
        for name, p in self.rates.items():
            check_fraction(p, f"pruning rate for layer {_label(name)!r}")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        if self.scope == "global" and len(set(self.rates.values())) != 1:
            raise ValueError(f"global scope needs one rate for all layers, got {dict(self.rates)}")

    def layers(self, model: nn.Module) -> dict[str, float]:
        """Layer name -> per-round rate of the layers this pruner prunes in ``model``."""
        return select_layers(model, self.rates, self.exclude)

    def scores(self, model: nn.Module, name: str) -> torch.Tensor:
        module = _module(model, name)
        if isinstance(self.score, Mapping):
            if name not in self.score:
                raise KeyError(f"the fixed scores have no entry for layer {name!r}; they cover {sorted(self.score)}")
            s = self.score[name]
            expected = block_grid(as_matrix(module.weight).shape, self.k)
            if tuple(s.shape) != expected:
                raise ValueError(f"fixed scores for {name!r} have shape {tuple(s.shape)}, expected {expected}")
            return s
        return block_scores(module.weight, self.k, self.score)

    def step(self, model: nn.Module) -> dict[str, float]:
        """One pruning round; returns the per-layer weight densities after it."""
        rates = self.layers(model)
        names = list(rates)
        modules = {n: _module(model, n) for n in names}
        alive = {n: alive_blocks(modules[n], self.k) for n in names}
        scores = {n: self.scores(model, n) for n in names}
        if self.scope == "layer":
            new = {n: prune_fraction(scores[n], alive[n], rates[n]) for n in names}
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
        state = {"k": self.k, "rates": self._rates_state(), "scope": self.scope, "score": score,
                 "history": [dict(h) for h in self.history]}
        if self.exclude:
            state["exclude"] = [_label(key) for key in self.exclude]
        return state

    def _rates_state(self) -> dict:
        return {_label(key): p for key, p in self.rates.items()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore progress (and fixed scores) saved by :meth:`state_dict`; the
        settings must match this pruner's."""
        for name in ("k", "rates", "scope", "exclude"):
            mine = {"k": self.k, "rates": self._rates_state(), "scope": self.scope,
                    "exclude": [_label(key) for key in self.exclude]}[name]
            theirs = state.get(name, []) if name == "exclude" else state[name]
            if theirs != mine:
                raise ValueError(f"pruner state has {name}={theirs!r}, this pruner has {mine!r}")
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


def random_scores(model: nn.Module, names, k: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniform random block scores: pruning by them gives random block masks with
    exactly the block counts of score-based pruning at the same rates."""
    out = {}
    for n in names:
        grid = block_grid(as_matrix(_module(model, n).weight).shape, k)
        out[n] = torch.rand(grid, generator=generator, dtype=torch.float64)
    return out
