"""The weight matrices the benchmark times.

LeNet-300-100 layers: round r >= 1 is the model after r pruning steps (the
authors' checkpoint ``pruning_{r-1}.pt``), so rounds 1..16 run from 80% to 2.8%
density.  The weights are the trained, block-pruned models of the LeNet study
(:func:`blockprune_utils.studies.lenet.pruned_lenet`) when its store has them
(``weights="trained-cache"``), and otherwise a seeded untrained LeNet pruned by the
same :class:`~blockprune_utils.schedule.BlockPruner` schedule (``weights="untrained"``):
the block pattern differs, but the per-layer block counts - what the timings depend
on - are the same.  Synthetic matrices: square, random k x k blocks.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..blocks import block_grid, expand_block_mask
from ..bsr import storage_bytes
from ..masks import dense_state_dict, load_masked_state_dict
from ..models import LENET_RATES, LeNet300100
from ..schedule import BlockPruner
from ..studies.lenet import pruned_lenet
from .config import BenchConfig

TRAINED, UNTRAINED = "trained-cache", "untrained"


@dataclass
class Matrix:
    """One weight matrix to benchmark (float32, pruned pattern as zeros)."""

    name: str
    family: str  # "lenet" or "synthetic"
    layer: str
    k: int
    weight: torch.Tensor = field(repr=False)
    round: int | None = None
    weights: str = "random"
    _meta: dict | None = field(default=None, repr=False, compare=False)

    def meta(self) -> dict:
        """The matrix's descriptive row columns (shape, k, round, densities, block count)."""
        if self._meta is None:
            w = self.weight
            rows, cols = w.shape
            nz = int(torch.count_nonzero(w))
            st = storage_bytes(w, self.k)
            R, C = block_grid(w.shape, self.k)
            self._meta = {"matrix": self.name, "family": self.family, "layer": self.layer, "rows": rows, "cols": cols,
                          "k": self.k, "round": self.round, "weights": self.weights, "nnz": nz,
                          "density": nz / w.numel(), "nnz_blocks": st.nnz_blocks, "block_density": st.nnz_blocks / (R * C)}
        return dict(self._meta)


MATRIX_META = ("family", "layer", "rows", "cols", "k", "round", "weights", "nnz", "density", "nnz_blocks", "block_density")


def untrained_pruned_lenets(k: int, rounds, seed: int = 0) -> dict[int, dict]:
    """State dicts (with masks) of a seeded, untrained LeNet-300-100 after each of
    ``rounds`` pruning steps of ``BlockPruner(k, LENET_RATES)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet300100()
    pruner = BlockPruner(k, LENET_RATES)
    out = {}
    for r in range(1, max(rounds) + 1):
        pruner.step(model)
        if r in rounds:
            out[r] = {n: v.clone() for n, v in model.state_dict().items()}
    return out


@functools.lru_cache(maxsize=None)
def _lenet_states(dataset: str, k: int, rounds: tuple, seed: int, lenet_profile: str | None) -> dict[int, tuple[dict, str]]:
    out, missing = {}, []
    for r in rounds:
        model = None if lenet_profile is None else pruned_lenet(dataset, k, r, seed=seed, profile=lenet_profile)
        if model is not None:
            out[r] = ({n: v.detach().clone() for n, v in model.state_dict().items()}, TRAINED)
        else:
            missing.append(r)
    if missing:
        for r, sd in untrained_pruned_lenets(k, tuple(missing), seed).items():
            out[r] = (sd, UNTRAINED)
    return out


def pruned_lenet_model(k: int, round: int, *, dataset: str = "mnist", seed: int = 0, lenet_profile: str | None = "paper",
                       rounds: tuple | None = None) -> tuple[LeNet300100, str]:
    """The masked LeNet of (k, round) and where its weights came from
    (``"trained-cache"``: the LeNet study's store under ``lenet_profile``, or
    ``"untrained"``; ``lenet_profile=None`` always gives the untrained one).
    ``rounds``: all rounds the caller will ask for (the untrained fallback prunes
    once for all of them)."""
    states = _lenet_states(dataset, int(k), tuple(rounds or (round,)), int(seed), lenet_profile)
    sd, source = states[round]
    model = LeNet300100()
    load_masked_state_dict(model, sd)
    return model.eval(), source


def config_model(cfg: BenchConfig, k: int, round: int) -> tuple[LeNet300100, str]:
    """:func:`pruned_lenet_model` of (k, round) under the run's data set, seed and LeNet profile."""
    return pruned_lenet_model(k, round, dataset=cfg.dataset, seed=cfg.seed, lenet_profile=cfg.lenet_profile,
                              rounds=cfg.all_rounds)


def weights_tag(source: str) -> str:
    """Short form of a weight source for names and keys: ``trained`` or ``untrained``."""
    return "trained" if source == TRAINED else "untrained"


def describe_weights(sources, dataset: str = "mnist") -> str:
    """Honest words for where the LeNet weights of a set of rows came from (``sources``:
    weight sources or their :func:`weights_tag` forms)."""
    sources = {TRAINED if s in (TRAINED, "trained") else s for s in sources} & {TRAINED, UNTRAINED}
    trained = f"LeNet-300-100 trained on {dataset} and block-pruned by the LeNet study (its cache)"
    untrained = ("untrained LeNet-300-100 (seeded init, no data) block-pruned by the same schedule "
                 "(same per-layer block counts)")
    if sources == {TRAINED}:
        return trained
    if sources == {UNTRAINED}:
        return untrained
    if sources:
        return f"mixed: {trained} where cached, else {untrained}"
    return "synthetic random block-sparse matrices"


def lenet_matrices(cfg: BenchConfig) -> list[Matrix]:
    """The configured LeNet layers of every configured (k, round)."""
    out = []
    for k in cfg.ks:
        for r in cfg.rounds:
            model, source = config_model(cfg, k, r)
            dense = dense_state_dict(model)
            tag = weights_tag(source)
            for layer in cfg.layers:
                w = dense[f"{layer}.weight"].detach().float().contiguous()
                out.append(Matrix(f"lenet-{layer}-k{k}-r{r}-{tag}", "lenet", layer, int(k), w, int(r), source))
    return out


def synthetic_matrix(n: int, k: int, block_density: float, seed: int = 0) -> torch.Tensor:
    """An n x n float32 matrix with round(block_density * #blocks) random k x k blocks
    of standard normal values (at least one), all others zero."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + n * 101 + k)
    R, C = block_grid((n, n), k)
    keep = max(1, round(block_density * R * C))
    mask = torch.zeros(R * C, dtype=torch.bool)
    mask[torch.randperm(R * C, generator=g)[:keep]] = True
    return torch.randn(n, n, generator=g) * expand_block_mask(mask.reshape(R, C), (n, n), k)


def synthetic_matrices(cfg: BenchConfig) -> list[Matrix]:
    """Every configured (size, k, block density) synthetic matrix."""
    return [Matrix(f"syn{n}-k{k}-bd{d}-s{cfg.seed}", "synthetic", f"{n}x{n}", int(k), synthetic_matrix(n, k, d, cfg.seed))
            for n in cfg.synthetic_sizes for k in cfg.synthetic_ks for d in cfg.synthetic_densities]
