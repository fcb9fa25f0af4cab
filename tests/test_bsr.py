"""BSR storage and inference: products equal the dense ones (every BSRLinear
backend, to_bsr_model per layer and fused), byte counts are exact."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from blockprune_utils.blocks import block_grid, expand_block_mask
from blockprune_utils.bsr import (
    BSRLinear,
    FusedMLP,
    bsr_arrays,
    storage_bytes,
    to_bsr_model,
    to_scipy_bsr,
    to_scipy_csr,
    to_torch_bsr,
)
from blockprune_utils.models import LeNet300100
from blockprune_utils.schedule import BlockPruner

FAST = settings(max_examples=30, deadline=None)
# torch warns that sparse BSR is "beta" on every construction; the study uses it knowingly
pytestmark = pytest.mark.filterwarnings("ignore:Sparse BSR tensor support is in beta state")


@st.composite
def pruned_weights(draw, dtype=torch.float64):
    """A random (rows, cols) weight with a random block mask (0 .. all blocks alive)."""
    rows, cols = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    k = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    g = torch.Generator().manual_seed(seed)
    grid = block_grid((rows, cols), k)
    block_mask = torch.rand(grid, generator=g) < density
    if density == 1.0:
        block_mask[:] = True
    w = torch.randn(rows, cols, generator=g, dtype=dtype) * expand_block_mask(block_mask, (rows, cols), k).to(dtype)
    x = torch.randn(cols, draw(st.integers(1, 4)), generator=g, dtype=dtype)
    return w, k, block_mask, x


def _pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[0]))


@FAST
@given(case=pruned_weights())
def test_scipy_bsr_product_equals_dense(case):
    w, k, bm, x = case
    m = to_scipy_bsr(w, k, bm)
    assert m.blocksize == (k, k)
    assert m.shape == (block_grid(w.shape, k)[0] * k, block_grid(w.shape, k)[1] * k)
    assert m.indices.size == int(bm.sum())
    y = (m @ _pad_rows(x, m.shape[1]).numpy())[: w.shape[0]]
    np.testing.assert_allclose(y, (w @ x).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(m.toarray()[: w.shape[0], : w.shape[1]], w.numpy())


@FAST
@given(case=pruned_weights())
def test_torch_bsr_product_equals_dense(case):
    w, k, bm, x = case
    t = to_torch_bsr(w, k, bm)
    assert t.layout == torch.sparse_bsr and t.dtype == torch.float64
    assert t.values().shape == (int(bm.sum()), k, k)
    y = (t @ _pad_rows(x, t.shape[1]))[: w.shape[0]]
    torch.testing.assert_close(y, w @ x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t.to_dense()[: w.shape[0], : w.shape[1]], w, rtol=0, atol=0)


@FAST
@given(case=pruned_weights(), backend=st.sampled_from(["torch", "scipy", "dense"]), bias=st.booleans())
def test_bsr_linear_equals_dense_float64(case, backend, bias):
    w, k, bm, x = case
    b = torch.randn(w.shape[0], dtype=torch.float64) if bias else None
    layer = BSRLinear(w, b, k, bm, backend=backend)
    xb = x.T.reshape(-1, 1, w.shape[1])  # extra leading dimensions are kept
    ref = xb @ w.T + (0 if b is None else b)
    torch.testing.assert_close(layer(xb), ref, rtol=1e-12, atol=1e-12)


@FAST
@given(case=pruned_weights(), bias=st.booleans())
def test_numba_bsr_linear_equals_dense_to_float32_rounding(case, bias):
    """The numba backend computes in float32 and returns the input's dtype; shapes k
    does not divide, empty block rows and all-pruned layers included."""
    w, k, bm, x = case
    b = torch.randn(w.shape[0], dtype=torch.float64) if bias else None
    layer = BSRLinear(w, b, k, bm, backend="numba")
    xb = x.T.reshape(-1, 1, w.shape[1])
    y = layer(xb)
    ref = xb @ w.T + (0 if b is None else b)
    bound = xb.abs() @ w.abs().T + (0 if b is None else b.abs())
    assert y.dtype == torch.float64 and y.shape == ref.shape
    assert ((y - ref).abs() <= 1e-5 * bound + 1e-6).all()


@FAST
@given(case=pruned_weights(dtype=torch.float32), backend=st.sampled_from(["torch", "scipy", "numba", "dense"]))
def test_bsr_linear_equals_dense_float32(case, backend):
    w, k, bm, x = case
    b = torch.randn(w.shape[0])
    layer = BSRLinear(w, b, k, bm, backend=backend)
    torch.testing.assert_close(layer(x.T), x.T @ w.T + b, rtol=1e-5, atol=1e-5)


def test_bsr_stores_surviving_blocks_even_if_zero():
    w = torch.zeros(4, 4)
    bm = torch.tensor([[True, False], [False, False]])
    data, indices, indptr, shape = bsr_arrays(w, 2, bm)
    assert data.shape == (1, 2, 2) and indices.tolist() == [0] and indptr.tolist() == [0, 1, 1]
    # without a mask the structure comes from the non-zero pattern
    w[3, 2] = 1.0
    data, indices, indptr, shape = bsr_arrays(w, 2)
    assert indices.tolist() == [1] and indptr.tolist() == [0, 0, 1] and data[0].tolist() == [[0, 0], [1, 0]]


def test_bsr_arrays_padded_edge_blocks():
    w = torch.arange(1.0, 16.0).reshape(3, 5)  # k = 2: grid 2 x 3, padded to 4 x 6
    data, indices, indptr, shape = bsr_arrays(w, 2, torch.ones(2, 3, dtype=torch.bool))
    assert shape == (4, 6)
    assert indptr.dtype == np.int32 and indices.dtype == np.int32
    assert indptr.tolist() == [0, 3, 6] and indices.tolist() == [0, 1, 2, 0, 1, 2]
    assert data[5].tolist() == [[15.0, 0.0], [0.0, 0.0]]


def test_storage_bytes_hand_computed():
    # 5 x 6 float32 matrix, k = 2: grid 3 x 3 (last block row has height 1).
    # Alive blocks: (0, 0) full, (0, 2) with one zero inside, (2, 1) a partial edge block.
    w = torch.zeros(5, 6)
    w[0:2, 0:2] = 1.0  # 4 non-zeros
    w[0:2, 4:6] = torch.tensor([[2.0, 0.0], [3.0, 4.0]])  # 3 non-zeros
    w[4, 2:4] = 5.0  # 2 non-zeros, in a 1 x 2 edge block padded to 2 x 2
    s = storage_bytes(w, 2)
    assert s.nnz == 9 and s.nnz_blocks == 3
    assert s.dense == 5 * 6 * 4
    assert s.csr == 9 * 4 + 9 * 4 + (5 + 1) * 4  # values + column indices + row pointers (int32)
    assert s.bsr == 3 * 2 * 2 * 4 + 3 * 4 + (3 + 1) * 4  # padded blocks + block columns + block-row pointers
    s64 = storage_bytes(w.double(), 2)
    assert s64.dense == 5 * 6 * 8 and s64.csr == 9 * 8 + 9 * 4 + 6 * 4 and s64.bsr == 12 * 8 + 3 * 4 + 4 * 4


def test_csr_is_unpadded_int32():
    w = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    m = to_scipy_csr(w)
    assert m.shape == (2, 3) and m.nnz == 3
    assert m.indices.dtype == np.int32 and m.indptr.dtype == np.int32
    assert m.indptr.tolist() == [0, 1, 3] and m.indices.tolist() == [1, 0, 2]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(29, 23)
        self.fc2 = nn.Linear(23, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _pruned_mlp(k, dtype=torch.float64):
    torch.manual_seed(k)
    model = MLP().to(dtype)
    pruner = BlockPruner(k=k, rates={"fc1": 0.5, "fc2": 0.3})
    for _ in range(2):
        pruner.step(model)
    return model


@pytest.mark.parametrize("backend", ["torch", "scipy", "numba", "dense", "fused"])
@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_to_bsr_model_equals_masked_model(backend, k):
    model = _pruned_mlp(k)  # 29 -> 23 -> 10: k = 3, 4, 7 divide neither
    bsr = to_bsr_model(model, k, backend=backend)
    if backend == "fused":
        assert isinstance(bsr, FusedMLP) and bsr.layers == ("fc1", "fc2")
    else:
        assert isinstance(bsr.fc1, BSRLinear) and bsr.fc1.backend == backend
    tol = 1e-5 if backend in ("numba", "fused") else 1e-12  # numba computes in float32
    for batch in (1, 8, 70):  # 70: not a multiple of the 8-sample vectors
        x = torch.randn(batch, 29, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(bsr(x), model(x), rtol=tol, atol=tol)
    assert model.training and not bsr.training  # the original is left alone


def test_numba_models_copy_and_take_empty_batches():
    model = _pruned_mlp(3, torch.float32)
    x = torch.randn(5, 29)
    for backend in ("numba", "fused"):
        bsr = to_bsr_model(model, 3, backend=backend)
        with torch.no_grad():
            y = bsr(x)
            twin = copy.deepcopy(bsr)  # the compiled plans are rebuilt, not copied
            torch.testing.assert_close(twin(x), y, rtol=0, atol=0)
            assert bsr(x[:0]).shape == (0, 10)
            y2 = bsr(x)
        assert y2 is not y and torch.equal(y2, y)  # each call returns its own tensor


def test_fused_backend_refuses_a_model_that_is_not_a_relu_mlp():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="computes something else"):
        to_bsr_model(LeNet300100(authors_softmax=True), 2, backend="fused")  # ends in a softmax
    tanh = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match="computes something else"):
        to_bsr_model(tanh, 2, backend="fused")
    relu = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(to_bsr_model(relu, 2, backend={"0": "fused", "2": "fused"})(x), relu(x),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="every layer"):
        to_bsr_model(relu, 2, backend={"0": "fused", "2": "numba"})
    with pytest.raises(ValueError, match="one block size"):
        to_bsr_model(relu, {"0": 2, "2": 3}, backend="fused")
    with pytest.raises(ValueError, match="k=65"):
        BSRLinear(torch.randn(4, 4), None, 65, backend="numba")


def test_to_bsr_model_per_layer_k_and_backend():
    torch.manual_seed(0)
    model = MLP()
    BlockPruner(k=2, rates={"fc1": 0.5, "fc2": 0.5}).step(model)
    bsr = to_bsr_model(model, {"fc1": 2, "fc2": 4}, backend={"fc1": "scipy", "fc2": "torch"})
    assert (bsr.fc1.k, bsr.fc1.backend, bsr.fc2.k, bsr.fc2.backend) == (2, "scipy", 4, "torch")
    x = torch.randn(5, 29)
    with torch.no_grad():
        torch.testing.assert_close(bsr(x), model(x), rtol=1e-5, atol=1e-5)
    only = to_bsr_model(model, 2, layers=["fc2"])
    assert isinstance(only.fc1, nn.Linear) and isinstance(only.fc2, BSRLinear)


@pytest.mark.parametrize("k", [1, 4, 16])
def test_numba_chain_transposes_only_the_network_input(k, monkeypatch):
    """A chain of numba layers keeps the (features, batch) layout between layers: a
    layer returns the transpose of the array it wrote, ReLU keeps that layout, and the
    next layer reads it in place - one transpose per forward, at the input.  Inputs laid
    out neither way (a strided slice) are transposed too; values equal the masked model."""
    from blockprune_utils.bsr import layers as layers_module
    from blockprune_utils.models import LENET_RATES, LeNet300100
    from blockprune_utils.schedule import BlockPruner

    torch.manual_seed(0)
    model = LeNet300100()
    pruner = BlockPruner(k, LENET_RATES)
    for _ in range(3):
        pruner.step(model)
    fast = to_bsr_model(model, k, backend="numba")
    calls = []
    real = layers_module.transpose_into
    monkeypatch.setattr(layers_module, "transpose_into", lambda a, b: (calls.append(a.shape), real(a, b)))
    x = torch.randn(37, 2 * 784)
    with torch.no_grad():
        for inp in (x[:, :784], x[:, ::2], x[:1, :784]):
            calls.clear()
            y = fast(inp)
            torch.testing.assert_close(y, model(inp), rtol=1e-4, atol=1e-5)
            assert calls == ([] if len(inp) == 1 else [(len(inp), 784)])
            if len(inp) > 1:
                assert y.stride() == (1, len(inp))
