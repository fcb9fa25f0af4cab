"""The fused whole-model forward (blockprune_utils.bsr.fused.NumbaMLP) on its
batched path (transposed input tiles) and its batch-1 path: equal to a float64
dense forward to float32 rounding for every k up to 64, shapes k does not divide,
inputs no stored block reads, and batches of 1, 7 and 256."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockprune_utils.bsr.fused import NumbaMLP
from blockprune_utils.bsr.transpose import transpose


def _sparse_mlp(sizes, k, density, seed):
    """(weight, bias) pairs of a ReLU MLP whose weights keep a random set of k x k blocks."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        rb, cb = -(-n_out // k), -(-n_in // k)
        keep = torch.rand(rb, cb, generator=g) < density
        keep[0, 0] = True
        mask = keep.repeat_interleave(k, 0).repeat_interleave(k, 1)[:n_out, :n_in]
        pairs.append((torch.randn(n_out, n_in, generator=g) * mask, torch.randn(n_out, generator=g)))
    return pairs


def _reference(pairs, x):
    h = torch.from_numpy(x).double()
    for n, (w, b) in enumerate(pairs):
        h = h @ w.double().T + b.double()
        if n < len(pairs) - 1:
            h = torch.relu(h)
    return h.numpy()


def _check(pairs, k, fmt, x):
    out = NumbaMLP(pairs, k, fmt)(x)
    ref = _reference(pairs, x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_fused_forward_equals_float64_dense(k, batch):
    sizes = (101, 37, 10)  # no k > 1 here divides 101 or 37
    pairs = _sparse_mlp(sizes, k, 0.3, seed=k)
    x = np.random.default_rng(batch).standard_normal((batch, sizes[0])).astype(np.float32)
    _check(pairs, k, "bsr", x)
    if k == 1:
        _check(pairs, k, "csr", x)


@settings(max_examples=25, deadline=None)
@given(k=st.sampled_from([1, 2, 3, 5, 8, 9, 16, 64]), n_in=st.integers(1, 150), n_hidden=st.integers(1, 40),
       batch=st.integers(2, 40), density=st.sampled_from([0.05, 0.3, 1.0]), seed=st.integers(0, 2**16))
def test_any_k_shape_and_batch(k, n_in, n_hidden, batch, density, seed):
    pairs = _sparse_mlp((n_in, n_hidden, 3), k, density, seed)
    x = np.random.default_rng(seed).standard_normal((batch, n_in)).astype(np.float32)
    _check(pairs, k, "bsr", x)


def test_inputs_no_stored_block_reads_change_nothing():
    """Whole ranges of inputs without a stored block and the columns beside a partial
    block column: NaN there changes no output."""
    k, n_in = 4, 3 * 64 + 5
    w = torch.zeros(6, n_in)
    w[:, 64: 64 + 7] = torch.randn(6, 7)  # only inputs 64 .. 71 meet stored blocks
    x = np.random.default_rng(0).standard_normal((9, n_in)).astype(np.float32)
    ref = x @ w.numpy().T
    x[:, :64] = np.nan
    x[:, 2 * 64:] = np.nan
    np.testing.assert_allclose(NumbaMLP([(w, None)], k, "bsr")(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows,cols", [(256, 784), (7, 30), (13, 8), (1, 5), (9, 17)])
def test_transpose(rows, cols):
    a = np.random.default_rng(rows).standard_normal((rows, cols)).astype(np.float32)
    out = np.full((cols, rows), np.nan, np.float32)
    transpose(a, out)
    np.testing.assert_array_equal(out, a.T)
