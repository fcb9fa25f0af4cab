"""The numba kernels (blockprune_utils.bsr.kernels) and the fused whole-model
forward (blockprune_utils.bsr.fused): products equal a float64 dense product to
float32 rounding for every k, shape, batch and density; the fused forward equals
the masked torch model; bad input gets an error naming the bad value.

Each compiled variant is built once per process (and cached on disk by numba), so
the examples draw from a few shapes of calls: k 1..8 serial, parallel for a few k.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockprune_utils.blocks import block_grid, expand_block_mask
from blockprune_utils.bsr.fused import NumbaMLP, fused_kernel
from blockprune_utils.bsr.kernels import MAX_K, bsr_kernel, bsr_matmul, csr_matmul, kernel_arrays
from blockprune_utils.masks import dense_state_dict
from blockprune_utils.models import LeNet300100
from blockprune_utils.schedule import BlockPruner

FAST = settings(max_examples=40, deadline=None)
PARALLEL_KS = (1, 4)  # parallel variants compile slowly: two k suffice to check the prange split


@st.composite
def products(draw, ks=range(1, MAX_K + 1)):
    """A random pruned weight (shapes mostly not multiples of k), x of batch 1 (1-D)
    or more (2-D), an optional bias and ReLU."""
    k = draw(st.sampled_from(list(ks)))
    rows, cols = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    batch = draw(st.sampled_from([1, 2, 5, 9, 17]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    block_mask = torch.rand(block_grid((rows, cols), k), generator=g) < density
    if density == 1.0:
        block_mask[:] = True
    w = torch.randn(rows, cols, generator=g) * expand_block_mask(block_mask, (rows, cols), k).float()
    x = torch.randn((cols, batch) if batch > 1 else (cols,), generator=g).numpy()
    bias = torch.randn(rows, generator=g).numpy() if draw(st.booleans()) else None
    return w, k, block_mask, x, bias, draw(st.booleans())


def _check(y, w, x, bias, relu):
    """y equals the float64 product to float32 rounding (relative to |W| |x| + |b|)."""
    w64, x64 = w.double().numpy(), x.astype(np.float64)
    ref = w64 @ x64 + (0 if bias is None else (bias[:, None] if x.ndim == 2 else bias))
    bound = np.abs(w64) @ np.abs(x64) + (0 if bias is None else np.abs(bias[:, None] if x.ndim == 2 else bias))
    if relu:
        ref = np.maximum(ref, 0)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert (np.abs(y - ref) <= 1e-5 * bound + 1e-30).all(), np.abs(y - ref).max()


def _out(w, x):
    return np.full((w.shape[0],) + x.shape[1:], np.nan, np.float32)  # NaN: every entry must be written


@FAST
@given(case=products())
def test_bsr_product_equals_dense(case):
    w, k, bm, x, bias, relu = case
    a = kernel_arrays(w, k, "bsr", bm)
    assert a.data.shape == (int(bm.sum()), k, k) and a.shape == tuple(w.shape)
    y = bsr_matmul(a.data, a.indices, a.indptr, k, x, _out(w, x), bias=bias, relu=relu)
    _check(y, w, x, bias, relu)


@FAST
@given(case=products(ks=[1]))
def test_csr_product_equals_dense(case):
    w, _, _, x, bias, relu = case
    a = kernel_arrays(w, fmt="csr")
    assert a.data.shape == (int((w != 0).sum()),)
    y = csr_matmul(a.data, a.indices, a.indptr, x, _out(w, x), bias=bias, relu=relu)
    _check(y, w, x, bias, relu)


@settings(max_examples=25, deadline=None)
@given(case=products(ks=PARALLEL_KS), fmt=st.sampled_from(["bsr", "csr"]))
def test_parallel_equals_serial(case, fmt):
    w, k, bm, x, bias, relu = case
    a = kernel_arrays(w, k, fmt, bm if fmt == "bsr" else None)
    run = csr_matmul if fmt == "csr" else lambda *args, **kw: bsr_matmul(*args[:3], k, *args[3:], **kw)
    serial = run(a.data, a.indices, a.indptr, x, _out(w, x), False, bias=bias, relu=relu)
    parallel = run(a.data, a.indices, a.indptr, x, _out(w, x), True, bias=bias, relu=relu)
    _check(parallel, w, x, bias, relu)
    np.testing.assert_allclose(parallel, serial, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [4, 5])
@pytest.mark.parametrize("batch", [1, 6])
def test_stored_zero_blocks_empty_rows_and_unsorted_blocks(k, batch):
    g = torch.Generator().manual_seed(k)
    w = torch.randn(13, 17, generator=g)
    bm = torch.rand(block_grid(w.shape, k), generator=g) < 0.6
    bm[1] = False  # an empty block row: y = bias there
    bm[0, :2] = True
    w = w * expand_block_mask(bm, w.shape, k)
    w[:k, :k] = 0  # a stored block that holds only zeros
    x = torch.randn((17, batch) if batch > 1 else (17,), generator=g).numpy()
    bias = np.arange(13, dtype=np.float32)
    a = kernel_arrays(w, k, "bsr", bm)
    for parallel in (False, True) if k in PARALLEL_KS else (False,):
        _check(bsr_matmul(a.data, a.indices, a.indptr, k, x, _out(w, x), parallel, bias=bias), w, x, bias, False)
    rng = np.random.default_rng(0)  # blocks of a row in any order give the same product
    order = np.concatenate([a.indptr[i] + rng.permutation(a.indptr[i + 1] - a.indptr[i]) for i in range(len(a.indptr) - 1)])
    y = bsr_matmul(np.ascontiguousarray(a.data[order]), np.ascontiguousarray(a.indices[order]), a.indptr, k, x, _out(w, x),
                   bias=bias)
    _check(y, w, x, bias, False)


def test_padded_operands_work_too():
    w = torch.randn(7, 10)
    a = kernel_arrays(w, 4)
    xp = np.zeros((12, 3), np.float32)  # x padded to 3 block columns, y to 2 block rows
    xp[:10] = np.random.default_rng(1).standard_normal((10, 3))
    y = bsr_matmul(a.data, a.indices, a.indptr, 4, xp, np.zeros((8, 3), np.float32))
    _check(y[:7], w, xp[:10], None, False)
    assert (y[7:] == 0).all()


# --------------------------------------------------------------------------- the fused forward

_MODELS: dict[int, LeNet300100] = {}


def pruned_lenet(k: int) -> LeNet300100:
    """An untrained LeNet-300-100 pruned 3 rounds at block size k (built once per k)."""
    if k not in _MODELS:
        torch.manual_seed(k)
        model = LeNet300100()
        pruner = BlockPruner(k, {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1})
        for _ in range(3):
            pruner.step(model)
        _MODELS[k] = model
    return _MODELS[k]


@pytest.mark.parametrize("fmt,k,parallel", [("bsr", k, False) for k in (1, 2, 3, 4, 6)] + [("csr", 3, False), ("bsr", 4, True)])
@pytest.mark.parametrize("batch", [1, 7])
def test_fused_forward_equals_torch_model(fmt, k, parallel, batch):
    model = pruned_lenet(k)
    net = NumbaMLP(model, k, fmt, parallel=parallel)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(x).numpy()
    for inp in (x, x.numpy(), x.numpy().reshape(batch, 784)):
        out = net(inp)
        assert isinstance(out, np.ndarray) and out.shape == (batch, 10) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # a second call with the same batch size reuses (and overwrites) the same output buffer
    x2 = x.numpy().reshape(batch, 784)[::-1].copy()
    assert net(x2) is out
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x2)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt,k,tiles", [("bsr", 3, (1, 7, 64)), ("csr", 1, (7, 64))])
def test_batch_tiles_change_no_bit_of_the_result(fmt, k, tiles):
    """The batched forward transposes and runs tiles of samples; the tile width
    (incl. a last, partial tile) changes no bit of any sample's output."""
    model = pruned_lenet(k)
    x = np.random.default_rng(3).standard_normal((130, 784)).astype(np.float32)
    whole = NumbaMLP(model, k, fmt, tile=256)(x).copy()  # one tile
    with torch.no_grad():
        np.testing.assert_allclose(whole, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    for tile in tiles:
        net = NumbaMLP(model, k, fmt, tile=tile)
        np.testing.assert_array_equal(net(x), whole)
        np.testing.assert_array_equal(net(x[:2]), whole[:2])  # a batch smaller than the tile


def test_block_masks_store_zero_blocks_and_tile_is_checked():
    w = torch.zeros(6, 9)
    w[4, 7] = 2.0
    masks = torch.zeros(2, 3, dtype=torch.bool)
    masks[0, 0] = masks[1, 2] = True  # a stored all-zero block and the block holding w[4, 7]
    net = NumbaMLP([(w, None)], 3, "bsr", block_masks=[masks])
    x = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    np.testing.assert_array_equal(net(x), x @ w.numpy().T)
    assert net._packed.size > NumbaMLP([(w, None)], 3, "bsr")._packed.size  # one stored block more
    with pytest.raises(ValueError, match="2 block masks for 1 layers"):
        NumbaMLP([(w, None)], 3, "bsr", block_masks=[masks, masks])
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="tile must be a positive number"):
            NumbaMLP([(w, None)], 3, tile=bad)


def test_fused_forward_from_weights_and_odd_inputs():
    model = pruned_lenet(3)
    sd = dense_state_dict(model)
    pairs = [(sd[f"{n}.weight"], sd[f"{n}.bias"]) for n in ("fc1", "fc2", "fc3")]
    x = np.random.default_rng(2).standard_normal((5, 784))
    with torch.no_grad():
        ref = model(torch.from_numpy(x).float()).numpy()
    for src in (sd, pairs):
        net = NumbaMLP(src, 3, "bsr")
        np.testing.assert_allclose(net(x), ref, rtol=1e-4, atol=1e-5)  # float64 input is converted
        np.testing.assert_allclose(net(np.asfortranarray(x)), ref, rtol=1e-4, atol=1e-5)  # any memory layout
    one = NumbaMLP([(pairs[0][0], None)], 3, "csr")  # a single layer without bias: no ReLU
    np.testing.assert_allclose(one(x[:1]), x[:1].astype(np.float32) @ pairs[0][0].numpy().T, rtol=1e-4, atol=1e-5)


def test_every_compiled_variant_has_its_own_name():
    """numba names machine code after the function's qualified name plus a counter of
    the process; a kernel loaded from the disk cache must not share a symbol with a
    different variant compiled in this process (a cached fused forward once called
    the wrong block size that way), so every variant gets a name of its own."""
    kernels = [bsr_kernel(k, b, p) for k in range(1, MAX_K + 1) for b in (False, True) for p in (False, True)]
    names = {d.py_func.__qualname__ for d in kernels}
    assert len(names) == len({id(d) for d in kernels}) and not any("<locals>" in n for n in names)
    forwards = [fused_kernel(f, k, b, p, t) for f in ("bsr", "csr") for k in (1, 2, 4) for b in (False, True)
                for p in (False, True) for t in (32, 64)]
    names = {d.py_func.__qualname__ for d in forwards}
    assert len(names) == len({id(d) for d in forwards}) and not any("<locals>" in n for n in names)


# --------------------------------------------------------------------------- errors


def _operands(k=2, batch=3):
    w = torch.randn(6, 7)
    a = kernel_arrays(w, k)
    return a, np.zeros((7, batch), np.float32), np.zeros((6, batch), np.float32)


@pytest.mark.parametrize("k", [0, -1, 65, 2.5, True])
def test_bad_block_size_is_named(k):
    with pytest.raises(ValueError, match=re.escape(repr(k))):
        kernel_arrays(torch.randn(4, 4), k)
    a, x, y = _operands()
    with pytest.raises(ValueError, match=re.escape(str(k))):
        bsr_matmul(a.data, a.indices, a.indptr, k, x, y)


def test_bad_operands_are_named():
    a, x, y = _operands()
    call = lambda x=x, y=y, **kw: bsr_matmul(a.data, a.indices, a.indptr, 2, x, y, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="x must be float32, got float64"):
        call(x=x.astype(np.float64))
    with pytest.raises(ValueError, match=re.escape("(7, 3, 1)")):
        call(x=x[..., None])
    with pytest.raises(ValueError, match=re.escape("C-contiguous")):
        call(x=np.asfortranarray(x))
    with pytest.raises(ValueError, match=r"indptr has 4 entries, but y of shape \(9, 3\) needs 6"):
        call(y=np.zeros((9, 3), np.float32))
    with pytest.raises(ValueError, match="differ in batch size"):
        call(y=np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match="bias has 5 entries, y has 6 rows"):
        call(bias=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"column index \d+ is out of range for x with 3 rows"):
        call(x=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        bsr_matmul(a.data, a.indices, a.indptr, 2, y[:, :3], y)
    with pytest.raises(TypeError, match="list"):
        csr_matmul(a.data.ravel(), a.indices, a.indptr, x.tolist(), y)
    with pytest.raises(ValueError, match="unknown kernel format 'coo'"):
        kernel_arrays(torch.randn(3, 3), 2, "coo")


def test_numba_mlp_bad_input_is_named():
    net = NumbaMLP(pruned_lenet(2), 2, "bsr")
    with pytest.raises(ValueError, match=r"783 features per sample"):
        net(np.zeros((2, 783), np.float32))
    with pytest.raises(ValueError, match=re.escape("(784,)")):
        net(np.zeros(784, np.float32))
    with pytest.raises(ValueError, match="complex64"):
        net(np.zeros((1, 784), np.complex64))
    with pytest.raises(ValueError, match="unknown format 'coo'"):
        NumbaMLP(pruned_lenet(2), 2, "coo")
    with pytest.raises(ValueError, match="k=65"):
        NumbaMLP(pruned_lenet(2), 65, "bsr")
    with pytest.raises(KeyError, match="fc4"):
        NumbaMLP(pruned_lenet(2), 2, layers=("fc1", "fc4"))
