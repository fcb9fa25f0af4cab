"""The training kernels (blockprune_utils.bsr.train_kernels) and the trainable
block-sparse layer (blockprune_utils.bsr.sparse_linear): forward, input gradient and
weight gradient at the stored blocks equal float64 dense products to float32
rounding for any k up to 64 (shapes k does not divide, empty block rows, all-zero
layers); the layer passes gradcheck in float64, round-trips through a masked
nn.Linear, and an optimizer on it steps only the live weights, as masked dense
training does.

The examples draw k from a few values so that few kernel variants compile: the
run-time-k kernels serve every k, the compiled-per-k forward k = 1..8.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockprune_utils.blocks import block_grid, expand_block_mask, to_blocks
from blockprune_utils.bsr.kernels import bsr_matmul, kernel_arrays
from blockprune_utils.bsr.sparse_linear import (
    BlockSparseLinear,
    features_first,
    forward,
    gather,
    input_grad,
    structure_of,
    weight_grad,
)
from blockprune_utils.masks import get_mask, set_mask

FAST = settings(max_examples=30, deadline=None)


@st.composite
def layers(draw, ks=(4, 20, 64)):
    """(element mask, weight, fmt, k, x (n_in, B), dy (n_out, B)), float32; shapes
    mostly not multiples of k, densities from empty to full, some empty block rows."""
    fmt = draw(st.sampled_from(["bsr", "bsr", "csr"]))
    k = 1 if fmt == "csr" else draw(st.sampled_from(ks))
    n_out, n_in = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    batch = draw(st.sampled_from([1, 7, 16, 37]))
    density = draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    grid = torch.rand(block_grid((n_out, n_in), k), generator=g) < density
    if draw(st.booleans()):
        grid[: max(1, grid.shape[0] // 3)] = False  # empty block rows
    mask = expand_block_mask(grid, (n_out, n_in), k)
    w = torch.randn(n_out, n_in, generator=g) * mask.float()
    x = torch.randn(n_in, batch, generator=g).numpy()
    dy = torch.randn(n_out, batch, generator=g).numpy()
    return mask, w, fmt, k, x, dy


def _close(got, ref, bound):
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert (np.abs(got - ref) <= 2e-5 * bound + 1e-30).all(), np.abs(got - ref).max()


@FAST
@given(case=layers(), parallel=st.booleans())
def test_products_equal_float64_dense(case, parallel):
    mask, w, fmt, k, x, dy = case
    s = structure_of(mask, k, fmt)
    data = gather(s, w).numpy()
    w64, x64, dy64 = w.double().numpy(), x.astype(np.float64), dy.astype(np.float64)
    bias = np.linspace(-1, 1, w.shape[0], dtype=np.float32)
    _close(forward(s, data, x, bias, parallel), w64 @ x64 + bias[:, None], np.abs(w64) @ np.abs(x64) + np.abs(bias)[:, None])
    _close(input_grad(s, data, dy, parallel), w64.T @ dy64, np.abs(w64.T) @ np.abs(dy64))
    m = mask.numpy()
    full, bound = dy64 @ x64.T, np.abs(dy64) @ np.abs(x64.T)
    if fmt == "csr":
        ref, bnd = full[m], bound[m]
    else:  # sampled at the stored blocks, the padding of edge blocks 0
        sel = s.mask
        ref, bnd = (to_blocks(torch.from_numpy(a), k)[sel].numpy() for a in (full, bound))
    _close(weight_grad(s, dy, x, parallel), ref, bnd)


@pytest.mark.parametrize("k", [12, 64])
def test_large_k_runs_through_the_public_product(k):
    """bsr_matmul (and so the numba inference backends) take k up to 64, batched and not."""
    g = torch.Generator().manual_seed(k)
    w = torch.randn(70, 45, generator=g)
    a = kernel_arrays(w, k)
    for x in (np.random.default_rng(k).standard_normal((45, 19)).astype(np.float32), np.ones(45, np.float32)):
        y = bsr_matmul(a.data, a.indices, a.indptr, k, x, np.full((70,) + x.shape[1:], np.nan, np.float32), relu=True)
        ref = np.maximum(w.double().numpy() @ x, 0)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def _masked_linear(n_out, n_in, k, density, seed, dtype=torch.float32):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(n_in, n_out).to(dtype)
    grid = torch.rand(block_grid((n_out, n_in), k)) < density
    grid[0] = False
    set_mask(lin, expand_block_mask(grid, (n_out, n_in), k).to(dtype))
    return lin


@pytest.mark.parametrize("fmt,k", [("bsr", 3), ("csr", 1), ("bsr", 16)])
def test_gradcheck_float64(fmt, k):
    lin = _masked_linear(21, 37, k, 0.4, k, torch.float64)
    layer = BlockSparseLinear.from_linear(lin, k, fmt)
    x = torch.randn(2, 3, 37, dtype=torch.float64, requires_grad=True)  # leading dimensions are kept
    assert torch.autograd.gradcheck(layer, (x,))
    torch.testing.assert_close(layer(x), lin(x))


def test_layer_round_trips_and_adam_steps_only_live_weights():
    """One Adam step on the sparse layer, written back, equals one Adam step of the
    masked dense layer; weights outside the mask stay 0; the mask is untouched."""
    lin = _masked_linear(30, 50, 4, 0.3, 0)
    ref = _masked_linear(30, 50, 4, 0.3, 0)
    layer = BlockSparseLinear.from_linear(lin, 4)
    assert layer.values.shape == (int(layer.structure.mask.sum()), 4, 4)
    x, t = torch.randn(64, 50), torch.randn(64, 30)
    for module in (layer, ref):
        opt = torch.optim.Adam(module.parameters(), lr=0.01)
        torch.nn.functional.mse_loss(module(x), t).backward()
        opt.step()
    layer.write_back(lin)
    torch.testing.assert_close(lin.weight, ref.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lin.bias, ref.bias, rtol=1e-5, atol=1e-6)
    assert torch.equal(get_mask(lin), get_mask(ref)) and (lin.weight[get_mask(lin) == 0] == 0).all()


def test_all_zero_layer_and_bad_input():
    lin = torch.nn.Linear(9, 5)
    set_mask(lin, torch.zeros(5, 9))
    layer = BlockSparseLinear.from_linear(lin, 4)
    assert layer.values.shape == (0, 4, 4)
    x = torch.randn(3, 9, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, lin.bias.detach().expand(3, 5))
    y.sum().backward()
    assert (x.grad == 0).all()
    with pytest.raises(ValueError, match="not made of whole 2 x 2 blocks"):
        mask = torch.zeros(5, 9)
        mask[0, 0] = 1
        set_mask(lin, mask)
        BlockSparseLinear.from_linear(lin, 2)
    with pytest.raises(ValueError, match="unknown format 'coo'"):
        BlockSparseLinear.from_linear(lin, 2, "coo")
    with pytest.raises(ValueError, match="float64"):
        layer(x.double())


def test_features_first_transposes():
    a = np.arange(24 * 13, dtype=np.float32).reshape(24, 13)
    np.testing.assert_array_equal(features_first(a), a.T)
    np.testing.assert_array_equal(features_first(a.astype(np.float64)), a.T)


def test_fused_forward_and_numba_backend_take_large_k():
    """The whole-model forward and to_bsr_model(backend="numba") run k > 8 (one
    compiled kernel for every such k) and equal the masked model."""
    from blockprune_utils.bsr import NumbaMLP, to_bsr_model
    from blockprune_utils.models import LENET_RATES, LeNet300100
    from blockprune_utils.schedule import BlockPruner

    torch.manual_seed(0)
    model = LeNet300100()
    pruner = BlockPruner(16, LENET_RATES)
    for _ in range(3):
        pruner.step(model)
    x = torch.randn(7, 784)
    with torch.no_grad():
        ref = model(x)
        np.testing.assert_allclose(NumbaMLP(model, 16, "bsr")(x.numpy()), ref.numpy(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(to_bsr_model(model, 16, backend="numba")(x), ref, rtol=1e-4, atol=1e-5)


def test_dense_layers_after_sparse_ones_read_rows_and_lose_the_hook_on_exit():
    """A sparse layer's output is a transposed view; a dense Linear after it gets a
    row-major copy inside sparse_layers (values, gradients unchanged), and the hook
    goes away on exit.  The same holds for a model converted with backend "numba"."""
    from blockprune_utils.bsr import to_bsr_model
    from blockprune_utils.bsr.sparse_training import sparse_layers

    torch.manual_seed(0)
    model = torch.nn.Sequential(_masked_linear(40, 64, 4, 0.2, 1), torch.nn.ReLU(), torch.nn.Linear(40, 7))
    seen = []
    model[2].register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous()))
    x = torch.randn(33, 64)
    ref = model(x)
    ref.sum().backward()
    ref_grad = model[2].weight.grad.clone()
    model.zero_grad()
    with sparse_layers(model, ["0"], 4, max_density=0.5):
        y = model(x)
        y.sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[2].weight.grad, ref_grad, rtol=1e-5, atol=1e-5)
    assert seen == [True, True] and not model[2]._forward_pre_hooks
    for backend in ("numba", "torch", "scipy"):
        fast = to_bsr_model(model, {"0": 4}, backend=backend, layers=["0"])
        seen.clear()
        with torch.no_grad():
            torch.testing.assert_close(fast(x), ref.detach(), rtol=1e-5, atol=1e-5)
        assert seen == [True], backend
    from blockprune_utils.bsr.sparse_linear import rows_contiguous

    handle = model[2].register_forward_pre_hook(rows_contiguous)  # already hooked: the copy keeps one hook
    assert len(to_bsr_model(model, {"0": 4}, backend="numba", layers=["0"])[2]._forward_pre_hooks) == 1
    handle.remove()


def test_sparse_layers_swaps_and_writes_back():
    """sparse_layers makes the sparse-enough masked layers BlockSparseLinear (bsr when the
    mask is made of whole blocks, csr otherwise), leaves the others, and on exit - also
    after an error - puts the original layers back holding the trained weights."""
    from blockprune_utils.bsr.sparse_training import sparse_layers, sparse_plan

    model = torch.nn.Sequential(_masked_linear(30, 50, 4, 0.2, 1), torch.nn.ReLU(), torch.nn.Linear(30, 7))
    ragged = torch.rand(7, 30) < 0.1
    set_mask(model[2], ragged.float())
    plan = sparse_plan(model, ["0", "2"], 4, max_density=0.5)
    assert (plan["0"].fmt, plan["0"].k, plan["2"].fmt) == ("bsr", 4, "csr")
    assert sparse_plan(model, ["0", "2"], 4, max_density=0.01) == {}
    first = model[0]
    before = first.weight.detach().clone()
    with sparse_layers(model, ["0", "2"], 4, max_density=0.5) as swapped:
        assert isinstance(model[0], BlockSparseLinear) and set(swapped) == {"0", "2"}
        with torch.no_grad():
            model[0].values.add_(1.0)
    assert model[0] is first and isinstance(model[2], torch.nn.Linear)
    torch.testing.assert_close(first.weight.detach(), before + get_mask(first))  # trained inside the mask only
    with pytest.raises(RuntimeError, match="boom"):
        with sparse_layers(model, ["0"], 4, max_density=0.5):
            raise RuntimeError("boom")
    assert model[0] is first
