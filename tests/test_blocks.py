"""Block division and block scores (blockprune_utils.blocks)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockprune_utils.blocks import (
    as_matrix,
    block_counts,
    block_grid,
    block_mask_of,
    block_scores,
    expand_block_mask,
    to_blocks,
)

FAST = settings(max_examples=40, deadline=None)


def slow_scores(matrix: torch.Tensor, k: int, reduce) -> torch.Tensor:
    """Reference: loop over the blocks, score each over the elements that exist."""
    rows, cols = matrix.shape
    R, C = math.ceil(rows / k), math.ceil(cols / k)
    out = torch.empty(R, C, dtype=torch.float64)
    for m in range(R):
        for n in range(C):
            vals = [float(matrix[i, j]) for i in range(k * m, min(k * m + k, rows)) for j in range(k * n, min(k * n + k, cols))]
            out[m, n] = reduce(vals)
    return out


def mean_abs_ref(vals):
    return sum(abs(v) for v in vals) / len(vals)


def rms_ref(vals):
    return math.sqrt(sum(v * v for v in vals) / len(vals))


shapes = st.tuples(st.integers(1, 13), st.integers(1, 13))
ks = st.integers(1, 8)


@FAST
@given(shape=shapes, k=ks, seed=st.integers(0, 2**16))
def test_grid_is_ceil(shape, k, seed):
    assert block_grid(shape, k) == (math.ceil(shape[0] / k), math.ceil(shape[1] / k))
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    assert tuple(block_scores(w, k).shape) == block_grid(shape, k)
    counts = block_counts(shape, k)
    assert float(counts.sum()) == shape[0] * shape[1]


@FAST
@given(shape=shapes, k=ks, seed=st.integers(0, 2**16))
def test_mean_abs_and_l2_match_slow_loop(shape, k, seed):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(block_scores(w, k, "mean_abs"), slow_scores(w, k, mean_abs_ref), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(block_scores(w, k, "l2"), slow_scores(w, k, rms_ref), rtol=1e-12, atol=1e-12)


def test_partial_edge_block_is_mean_over_existing_elements_only():
    # 3 x 5 with k = 2: the last block row has height 1, the last block column width 1.
    w = torch.arange(1.0, 16.0).reshape(3, 5)
    s = block_scores(w, 2)
    assert s.shape == (2, 3)
    assert s[0, 0] == (1 + 2 + 6 + 7) / 4
    assert s[0, 2] == (5 + 10) / 2  # a column of width 1: two elements, not four
    assert s[1, 0] == (11 + 12) / 2  # a row of height 1
    assert s[1, 2] == 15.0  # the corner: one element, not diluted by padding


def test_user_callable_score():
    w = torch.tensor([[1.0, -5.0, 2.0], [0.5, 0.0, -3.0], [4.0, 1.0, 1.0]])

    def max_abs(blocks, counts):
        return blocks.abs().amax(dim=(2, 3))

    s = block_scores(w, 2, max_abs)
    assert s.dtype == torch.float64
    assert s.tolist() == [[5.0, 3.0], [4.0, 1.0]]
    torch.testing.assert_close(s, slow_scores(w, 2, lambda v: max(abs(x) for x in v)))


def test_callable_receives_padded_tiles_and_counts():
    seen = {}

    def spy(blocks, counts):
        seen["blocks"], seen["counts"] = blocks, counts
        return counts

    block_scores(torch.ones(3, 5), 2, spy)
    assert tuple(seen["blocks"].shape) == (2, 3, 2, 2)
    assert seen["counts"].tolist() == [[4, 4, 2], [2, 2, 1]]


def test_conv_weight_is_out_by_in_kh_kw():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 3, 3, generator=g, dtype=torch.float64)
    assert as_matrix(w).shape == (6, 27)
    assert block_scores(w, 4).shape == block_grid((6, 27), 4) == (2, 7)
    torch.testing.assert_close(block_scores(w, 4), slow_scores(w.reshape(6, 27), 4, mean_abs_ref))
    conv = torch.nn.Conv2d(3, 6, 3)
    torch.testing.assert_close(block_scores(conv.weight, 2), block_scores(conv.weight.detach().reshape(6, -1), 2))
    # 3-D (Conv1d) and 5-D (Conv3d) weights too
    assert as_matrix(torch.zeros(4, 2, 5)).shape == (4, 10)
    assert as_matrix(torch.zeros(4, 2, 3, 3, 3)).shape == (4, 54)


@FAST
@given(shape=shapes, k=ks, seed=st.integers(0, 2**16))
def test_expand_block_mask_crops_and_round_trips(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    grid = block_grid(shape, k)
    bm = torch.rand(grid, generator=g) < 0.5
    em = expand_block_mask(bm, shape, k)
    assert em.shape == shape
    for i in range(shape[0]):
        for j in range(shape[1]):
            assert em[i, j] == bm[i // k, j // k]
    assert torch.equal(block_mask_of(em.to(torch.float32), k), bm)


def test_to_blocks_tile_layout():
    w = torch.arange(20.0).reshape(4, 5)
    t = to_blocks(w, 2)
    assert t.shape == (2, 3, 2, 2)
    assert t[1, 1].tolist() == [[12.0, 13.0], [17.0, 18.0]]  # rows 2-3, cols 2-3
    assert t[0, 2].tolist() == [[4.0, 0.0], [9.0, 0.0]]  # partial column, zero padded


# PAPER.md section 1.1: LeNet block grids (fc1 300x784, fc2 100x300, fc3 10x100).
LENET_GRIDS = {
    2: [(150, 392), (50, 150), (5, 50)],
    3: [(100, 262), (34, 100), (4, 34)],
    4: [(75, 196), (25, 75), (3, 25)],
    5: [(60, 157), (20, 60), (2, 20)],
    6: [(50, 131), (17, 50), (2, 17)],
}
LENET_SHAPES = [(300, 784), (100, 300), (10, 100)]


@pytest.mark.parametrize("k", sorted(LENET_GRIDS))
def test_lenet_grid_table(k):
    grids = [block_grid(s, k) for s in LENET_SHAPES]
    assert grids == LENET_GRIDS[k]


def test_lenet_grid_edge_sizes():
    c = block_counts((300, 784), 3)
    assert c.shape == (100, 262) and c[0, -1] == 3  # last column width 1
    c = block_counts((100, 300), 3)
    assert c.shape == (34, 100) and c[-1, 0] == 3  # last row height 1
    c = block_counts((10, 100), 4)
    assert c.shape == (3, 25) and c[-1, 0] == 8  # last row height 2
    c = block_counts((10, 100), 6)
    assert c.shape == (2, 17) and c[-1, -1] == 16 and c[0, -1] == 24 and c[-1, 0] == 24  # last row/col 4
    c = block_counts((300, 784), 5)
    assert c.shape == (60, 157) and c[0, -1] == 20  # last column width 4


def test_block_mask_of_sees_any_nonzero():
    w = torch.zeros(4, 4)
    w[3, 0] = 1e-30
    assert block_mask_of(w, 2).tolist() == [[False, False], [True, False]]
