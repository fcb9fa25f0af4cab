"""Pruning rules (blockprune_utils.pruning) and the per-round BlockPruner."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from blockprune_utils.blocks import block_grid, block_scores, expand_block_mask
from blockprune_utils.masks import get_mask
from blockprune_utils.pruning import n_to_prune, prune_fraction, prune_global, prune_to_density
from blockprune_utils.schedule import BlockPruner, alive_blocks, layer_densities, random_scores

FAST = settings(max_examples=40, deadline=None)

grids = st.tuples(st.integers(1, 12), st.integers(1, 12))
fractions = st.floats(0.0, 0.99, allow_nan=False).filter(lambda p: p < 1)


def _scores_alive(grid, seed, alive_frac=0.7, ties=False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(grid, generator=g, dtype=torch.float64)
    if ties:
        scores = (scores * 3).floor()  # only three distinct values: many ties
    alive = torch.rand(grid, generator=g) < alive_frac
    return scores, alive


def reference_prune(scores, alive, n):
    """Slow reference: sort alive blocks by (score, flat index), drop the first n."""
    flat = [(float(s), i) for i, (s, a) in enumerate(zip(scores.reshape(-1), alive.reshape(-1))) if a]
    drop = {i for _, i in sorted(flat)[:n]}
    out = alive.reshape(-1).clone()
    for i in drop:
        out[i] = False
    return out.reshape(alive.shape)


@FAST
@given(grid=grids, seed=st.integers(0, 2**16), p=fractions, ties=st.booleans())
def test_prune_fraction_removes_exactly_round_p_n(grid, seed, p, ties):
    scores, alive = _scores_alive(grid, seed, ties=ties)
    n_alive = int(alive.sum())
    new = prune_fraction(scores, alive, p)
    assert int(new.sum()) == n_alive - round(p * n_alive)
    assert not (new & ~alive).any(), "a pruned block came back"
    assert torch.equal(new, reference_prune(scores, alive, round(p * n_alive)))
    assert torch.equal(alive, _scores_alive(grid, seed, ties=ties)[1]), "input mask was modified"


def test_python_round_half_to_even():
    # round(0.5 * 5) = round(2.5) = 2 and round(0.5 * 7) = round(3.5) = 4 with Python's round
    assert n_to_prune(0.5, 5) == 2
    assert n_to_prune(0.5, 7) == 4
    assert n_to_prune(0.2, 250) == 50
    assert n_to_prune(0.1, 34) == 3


def test_ties_prune_lower_flat_index_first():
    scores = torch.tensor([[0.5, 0.1, 0.5], [0.1, 0.5, 0.9]], dtype=torch.float64)
    alive = torch.ones(2, 3, dtype=torch.bool)
    # 1 block: the two 0.1s tie; (0, 1) has flat index 1 < 3, so it goes first
    assert prune_fraction(scores, alive, 1 / 6).tolist() == [[True, False, True], [True, True, True]]
    # 3 blocks: both 0.1s, then the first 0.5 in row-major order, (0, 0)
    assert prune_fraction(scores, alive, 0.5).tolist() == [[False, False, True], [False, True, True]]
    # all equal: the first round(p*N) in row-major order
    flat = torch.zeros(3, 4, dtype=torch.float64)
    new = prune_fraction(flat, torch.ones(3, 4, dtype=torch.bool), 0.4)  # round(4.8) = 5
    assert new.reshape(-1).tolist() == [False] * 5 + [True] * 7


def test_ties_ignore_dead_blocks():
    scores = torch.tensor([[0.0, 0.2, 0.2, 0.2]], dtype=torch.float64)
    alive = torch.tensor([[False, True, True, True]])
    assert prune_fraction(scores, alive, 0.34).tolist() == [[False, False, True, True]]


def test_p_zero_and_no_alive_blocks():
    scores, alive = _scores_alive((4, 5), 1)
    assert torch.equal(prune_fraction(scores, alive, 0.0), alive)
    none = torch.zeros(4, 5, dtype=torch.bool)
    assert not prune_fraction(scores, none, 0.5).any()


@FAST
@given(grid=grids, seed=st.integers(0, 2**16), rounds=st.integers(1, 6), p=st.floats(0.05, 0.6))
def test_repeated_rounds_never_revive(grid, seed, rounds, p):
    scores, alive = _scores_alive(grid, seed, alive_frac=1.0)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(rounds):
        n_alive = int(alive.sum())
        # new scores every round (as after retraining), but dead blocks must stay dead
        scores = torch.rand(grid, generator=g, dtype=torch.float64)
        new = prune_fraction(scores, alive, p)
        assert not (new & ~alive).any()
        assert int(new.sum()) == n_alive - round(p * n_alive)
        alive = new


@FAST
@given(grid=grids, seed=st.integers(0, 2**16), d=st.floats(0.01, 1.0))
def test_prune_to_density(grid, seed, d):
    scores, alive = _scores_alive(grid, seed, alive_frac=1.0)
    new = prune_to_density(scores, alive, d)
    keep = round(d * alive.numel())
    assert int(new.sum()) == keep
    assert torch.equal(new, reference_prune(scores, alive, alive.numel() - keep))
    # already sparser than the target: nothing changes
    sparse = prune_to_density(scores, new, 1.0)
    assert torch.equal(sparse, new)


@FAST
@given(
    seed=st.integers(0, 2**16),
    p=fractions,
    min_keep=st.integers(0, 3),
    grid_a=grids,
    grid_b=grids,
)
def test_prune_global_count_and_guard(seed, p, min_keep, grid_a, grid_b):
    sa, aa = _scores_alive(grid_a, seed)
    sb, ab = _scores_alive(grid_b, seed + 7)
    scores, alive = {"a": sa, "b": sb * 100}, {"a": aa, "b": ab}
    new = prune_global(scores, alive, p, min_keep=min_keep)
    n_total = int(aa.sum() + ab.sum())
    want = round(p * n_total)
    possible = sum(max(int(alive[n].sum()) - min_keep, 0) for n in alive)
    pruned = n_total - int(new["a"].sum() + new["b"].sum())
    assert pruned == min(want, possible), "exact count when possible, else as many as the guard allows"
    for n in alive:
        assert not (new[n] & ~alive[n]).any()
        assert int(new[n].sum()) >= min(min_keep, int(alive[n].sum())), f"layer {n} emptied below min_keep"


def test_prune_global_normalizes_per_layer_and_keeps_min():
    big = torch.tensor([[100.0, 200.0, 300.0, 400.0]], dtype=torch.float64)
    small = torch.tensor([[0.15, 0.35, 1.0]], dtype=torch.float64)
    alive = {"big": torch.ones(1, 4, dtype=torch.bool), "small": torch.ones(1, 3, dtype=torch.bool)}
    # normalised: big -> .25 .5 .75 1; small -> .15 .35 1.  Lowest 3: small .15, big .25, small .35
    new = prune_global({"big": big, "small": small}, alive, 3 / 7)
    assert new["big"].tolist() == [[False, True, True, True]]
    assert new["small"].tolist() == [[False, False, True]]
    # without normalisation the small layer would go first, but the guard keeps one block
    new = prune_global({"big": big, "small": small}, alive, 3 / 7, normalize=False)
    assert new["small"].tolist() == [[False, False, True]]
    assert new["big"].tolist() == [[False, True, True, True]]
    # p close to 1: every layer keeps min_keep blocks
    new = prune_global({"big": big, "small": small}, alive, 0.99, min_keep=1)
    assert int(new["big"].sum()) == 1 and int(new["small"].sum()) == 1
    assert new["big"].tolist() == [[False, False, False, True]]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(23, 17), nn.ReLU(), nn.Linear(17, 10))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_block_pruner_step_per_layer(k):
    model = _mlp()
    rates = {"0": 0.2, "2": 0.1}
    pruner = BlockPruner(k=k, rates=rates)
    prev = {n: torch.ones(block_grid(model.get_submodule(n).weight.shape, k), dtype=torch.bool) for n in rates}
    for _ in range(5):
        before_scores = {n: block_scores(model.get_submodule(n).weight, k) for n in rates}
        pruner.step(model)
        for n, p in rates.items():
            mod = model.get_submodule(n)
            alive = alive_blocks(mod, k)
            n_alive = int(prev[n].sum())
            assert int(alive.sum()) == n_alive - round(p * n_alive)
            assert not (alive & ~prev[n]).any(), "a pruned block came back"
            assert torch.equal(alive, prune_fraction(before_scores[n], prev[n], p)), "lowest-score blocks pruned"
            mask = get_mask(mod)
            assert torch.equal(mask.bool(), expand_block_mask(alive, mod.weight.shape, k))
            assert (mod.weight[mask == 0] == 0).all()
            prev[n] = alive
        # weights move between rounds (as in retraining), the masks must hold
        with torch.no_grad():
            for n in rates:
                model.get_submodule(n).parametrizations.weight.original.add_(torch.randn_like(model.get_submodule(n).weight))
    assert len(pruner.history) == 5


def test_block_pruner_density_follows_0_8_power():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 100))
    pruner = BlockPruner(k=2, rates={"0": 0.2})
    for r in range(1, 6):
        dens = pruner.step(model)["0"]
        n = 2500
        for _ in range(r):
            n -= round(0.2 * n)
        assert dens == pytest.approx(n / 2500)
        assert dens == pytest.approx(0.8**r, abs=1e-3)
    assert layer_densities(model, ["0"])["0"] == pytest.approx(dens)


def test_block_pruner_conv_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3))
    pruner = BlockPruner(k=3, rates={"0": 0.25})
    pruner.step(model)
    alive = alive_blocks(model[0], 3)
    assert alive.shape == block_grid((8, 27), 3)
    assert int(alive.sum()) == 27 - round(0.25 * 27)
    assert get_mask(model[0]).shape == (8, 3, 3, 3)


def test_block_pruner_global_and_random_scores():
    model = _mlp(1)
    pruner = BlockPruner(k=2, rates={"0": 0.3, "2": 0.3}, scope="global")
    total = sum(alive_blocks(model.get_submodule(n), 2).numel() for n in ("0", "2"))
    pruner.step(model)
    left = sum(int(alive_blocks(model.get_submodule(n), 2).sum()) for n in ("0", "2"))
    assert left == total - round(0.3 * total)
    model = _mlp(2)
    fixed = random_scores(model, ["0", "2"], 2, torch.Generator().manual_seed(0))
    pruner = BlockPruner(k=2, rates={"0": 0.5, "2": 0.5}, score=fixed)
    pruner.step(model)
    for n in ("0", "2"):
        a = alive_blocks(model.get_submodule(n), 2)
        assert torch.equal(a, prune_fraction(fixed[n], torch.ones_like(a), 0.5))
