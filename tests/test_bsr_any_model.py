"""to_bsr_model on models other than an MLP: a transformer encoder layer (its
attention output projection included), torchvision models, nested and shared
modules, tied and directly read weights, 2-D and 3-D inputs, state_dict round
trips, backend="auto" and its record."""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from blockprune_utils.bsr import BACKENDS, BSRLinear, backend_table, backends_of, storage_table, to_bsr_model, unsupported
from blockprune_utils.bsr.attention import BSRMultiheadAttention
from blockprune_utils.masks import compact_state_dict, load_masked_state_dict
from blockprune_utils.schedule import BlockPruner

pytestmark = pytest.mark.filterwarnings("ignore:Sparse BSR tensor support is in beta state")
ENCODER_LAYERS = ["0.self_attn.out_proj", "0.linear1", "0.linear2"]
TOL = dict(rtol=1e-4, atol=1e-4)  # float32; numba and the fused torch path round differently


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pruned(model, k, names, rounds=4, rate=0.5):
    pruner = BlockPruner(k, rates={n: rate for n in names})
    for _ in range(rounds):
        pruner.step(model)
    return model.eval()


def _convert(model, k, **kwargs):
    """to_bsr_model, with the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bsr = to_bsr_model(model, k, **kwargs)
    return bsr, [str(w.message) for w in caught if "Sparse BSR" not in str(w.message)]


def _encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, batch_first=True)
    return nn.Sequential(layer)


@pytest.mark.parametrize("k", [8, 16, 32])
def test_encoder_layer_round_trip_every_backend(k):
    model = _pruned(_encoder(), k, ENCODER_LAYERS)
    x = torch.randn(3, 10, 256)
    with torch.no_grad():
        ref = model(x)  # eval + no_grad: torch's fused encoder path
    backends = [b for b in BACKENDS if unsupported(b, k) is None] + ["auto"]
    for backend in backends:
        bsr, warned = _convert(model, k, backend=backend, example=x)
        assert not warned
        chosen = backends_of(bsr)
        assert set(chosen) == set(ENCODER_LAYERS)
        assert isinstance(bsr[0].self_attn, BSRMultiheadAttention) and isinstance(bsr[0].self_attn.out_proj, BSRLinear)
        assert backend == "auto" or set(chosen.values()) == {backend}
        assert all(unsupported(b, k) is None for b in chosen.values())
        assert isinstance(bsr[0].linear1, BSRLinear) and bsr[0].linear1.k == k
        with torch.no_grad():
            torch.testing.assert_close(bsr(x), ref, **TOL)
            torch.testing.assert_close(bsr(x[0]), ref[0], **TOL)  # unbatched (2-D) input
        if backend in ("torch", "dense"):  # the autograd backends also run with grad enabled
            torch.testing.assert_close(bsr(x).detach(), ref, **TOL)
    assert all(m.training is False for m in model.modules())


def test_unsupported_backend_is_a_clear_error_and_auto_skips_it():
    bad = next((k for k in (9, 16, 65, 128, 257) if unsupported("numba", k)), None)
    if bad is None:
        pytest.skip("the numba kernels take every k tried")
    model = _pruned(nn.Sequential(nn.Linear(300, 270), nn.ReLU(), nn.Linear(270, 5)), bad, ["0"], rounds=1)
    with pytest.raises(ValueError, match=rf"backend 'numba' cannot hold layer '0' with k={bad}"):
        to_bsr_model(model, bad, backend="numba")
    bsr = to_bsr_model(model, bad, backend="auto", example=(4, 300), auto_options={"budget_s": 0.001, "threads": 1})
    assert "numba" not in backends_of(bsr).values()


def test_bad_backend_dtype_and_missing_example_are_clear_errors():
    model = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="'auto'"):
        to_bsr_model(model, 2, backend="fastest")
    with pytest.raises(ValueError, match="example="):
        to_bsr_model(model, 2, backend="auto")
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match=rf"layer '0' has {dtype} weights.*model.float\(\)"):
            to_bsr_model(nn.Sequential(nn.Linear(8, 8)).to(dtype), 2)
        with pytest.raises(ValueError, match=str(dtype)):
            BSRLinear(torch.zeros(4, 4, dtype=dtype), None, 2)


def test_torchvision_mobilenet_classifier():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
    _pruned(model, 8, ["classifier.0", "classifier.3"], rounds=2)
    bsr, warned = _convert(model, 8, backend="scipy")
    assert not warned and set(backends_of(bsr)) == {"classifier.0", "classifier.3"}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bsr(x), model(x), **TOL)


def test_torchvision_vision_transformer():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    _pruned(model, 4, names, rounds=2)
    bsr, warned = _convert(model, 4, backend="torch")
    assert not warned and set(backends_of(bsr)) == set(names)
    assert sum(isinstance(m, BSRMultiheadAttention) for m in bsr.modules()) == 2
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bsr(x), model(x), **TOL)


class Block(nn.Module):
    def __init__(self, shared: nn.Linear):
        super().__init__()
        self.shared = shared
        self.inner = nn.Sequential(nn.Linear(16, 16), nn.GELU())

    def forward(self, x):
        return self.inner(torch.relu(self.shared(x)))


class Reader(nn.Module):
    """Reads its layer's weight itself: the layer must stay a Linear."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        return x @ self.proj.weight.T + self.proj.bias


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.Linear(16, 16)
        self.embed = nn.Embedding(20, 16)
        self.blocks = nn.ModuleDict({"a": Block(shared), "b": Block(shared)})
        self.reader = Reader()
        self.head = nn.Linear(16, 20, bias=False)
        self.head.weight = self.embed.weight  # tied to the embedding

    def forward(self, tokens):
        h = self.embed(tokens)
        h = self.blocks["b"](self.blocks["a"](h))
        return self.head(self.reader(h))


def test_nested_shared_tied_and_read_weights():
    torch.manual_seed(0)
    model = Net()
    _pruned(model, 4, ["blocks.a.shared", "blocks.a.inner.0", "blocks.b.inner.0", "reader.proj"], rounds=2)
    tokens = torch.randint(0, 20, (3, 7))
    for backend in ("torch", "scipy", "numba", "auto"):
        bsr, warned = _convert(model, 4, backend=backend, example=tokens)
        assert len(warned) == 1
        assert "'reader.proj'" in warned[0] and "reads proj.weight" in warned[0]
        assert "'head'" in warned[0] and "shared with ['embed']" in warned[0]
        assert set(backends_of(bsr)) == {"blocks.a.shared", "blocks.a.inner.0", "blocks.b.inner.0"}
        assert bsr.blocks["a"].shared is bsr.blocks["b"].shared and isinstance(bsr.blocks["b"].shared, BSRLinear)
        with torch.no_grad():
            torch.testing.assert_close(bsr(tokens), model(tokens), **TOL)
            torch.testing.assert_close(bsr(tokens[0]), model(tokens[0]), **TOL)


@pytest.mark.parametrize("shape", [(5, 12), (2, 5, 12), (2, 3, 5, 12)])
def test_inputs_of_any_rank(shape):
    torch.manual_seed(0)
    model = _pruned(nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 6)), 4, ["0", "2"], rounds=2)
    x = torch.randn(shape)
    for backend in BACKENDS:
        bsr = to_bsr_model(model, 4, backend=backend)
        with torch.no_grad():
            y = bsr(x)
            assert y.shape == (*shape[:-1], 6)
            torch.testing.assert_close(y, model(x), **TOL)


def test_state_dict_round_trip_then_convert():
    model = _pruned(_encoder(), 16, ENCODER_LAYERS, rounds=2)
    saved = compact_state_dict(model)
    fresh = _encoder()
    load_masked_state_dict(fresh, saved)
    fresh.eval()
    x = torch.randn(2, 6, 256)
    a, _ = _convert(model, 16, backend="torch")
    b, _ = _convert(fresh, 16, backend="torch")
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    # a converted model's own state_dict loads back into it (dense backend: plain tensors)
    c, _ = _convert(model, 16, backend="dense")
    state = {key: v.clone() for key, v in c.state_dict().items()}
    c2, _ = _convert(_pruned(_encoder(), 16, ENCODER_LAYERS, rounds=1), 16, backend="dense")
    c2.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(c2(x), a(x), **TOL)


def test_storage_and_backend_tables():
    model = _pruned(nn.Sequential(_encoder()[0], Reader(256)), 16, ENCODER_LAYERS + ["1.proj"], rounds=2)
    x = torch.randn(2, 5, 256)
    with pytest.warns(UserWarning, match="leaves these Linear layers dense") as caught:
        rows = backend_table(model, 16, x, backends=("torch", "numba", "dense"), budget_s=0.001)
    assert sum("leaves these" in str(w.message) for w in caught) == 1  # once, not once per backend
    by = {r["backend"]: r for r in rows}
    assert by["torch"]["max_abs_diff"] < 1e-4 and by["torch"]["left_dense"] == ["1.proj"]
    assert by["torch"]["dense_ms"] > 0 and by["torch"]["backends"] == {n: "torch" for n in ENCODER_LAYERS}
    assert ("error" in by["numba"]) == (unsupported("numba", 16) is not None)
    fast, _ = _convert(model, 16, backend="torch")
    table = {r["layer"]: r for r in storage_table(model, 16, fast)}
    assert table["1.proj"]["stored_as"] == "nn.Linear" and table["1.proj"]["stored_bytes"] == 256 * 256 * 4
    assert table["0.self_attn.out_proj"]["stored_bytes"] == table["0.self_attn.out_proj"]["bsr_bytes"] < 256 * 256 * 4 / 3
    lin = table["0.linear1"]
    assert lin["density"] == 0.25 and lin["stored_bytes"] == lin["bsr_bytes"]
    assert lin["bsr_bytes"] == 0.25 * 1024 * 256 * 4 + (1024 * 256 // 256 // 4) * 4 + (1024 // 16 + 1) * 4


@settings(max_examples=15, deadline=None)
@given(d_in=st.integers(1, 24), d_hidden=st.integers(1, 24), k=st.integers(1, 10), lead=st.lists(st.integers(0, 3), max_size=2),
       backend=st.sampled_from(BACKENDS), seed=st.integers(0, 2**16))
def test_any_shape_any_rank_equals_masked(d_in, d_hidden, k, lead, backend, seed):
    if unsupported(backend, k):
        return
    torch.manual_seed(seed)
    model = _pruned(nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, 3)), k, ["0", "2"], rounds=1)
    x = torch.randn(*lead, d_in)
    bsr = to_bsr_model(model, k, backend=backend)
    with torch.no_grad():
        torch.testing.assert_close(bsr(x), model(x), **TOL)


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_replacement_equals_multihead_attention(batch_first):
    """BSRMultiheadAttention (here with a dense out_proj) against nn.MultiheadAttention's own (non-fused) path, over
    batched and unbatched inputs, self and cross attention, masks of each kind, is_causal and need_weights."""
    torch.manual_seed(0)
    e, heads, b, lq, lk = 16, 4, 3, 5, 7
    mha = nn.MultiheadAttention(e, heads, batch_first=batch_first).eval()
    ours = BSRMultiheadAttention(mha, mha.out_proj)
    assert not ours.training

    def seq(n, batched):
        x = torch.randn((b, n, e) if batch_first else (n, b, e))
        return x if batched else (x[0] if batch_first else x[:, 0])

    cases = 0
    for batched in (True, False):
        nb = b if batched else 1
        for cross in (False, True):
            q = seq(lq, batched)
            kv = seq(lk, batched) if cross else q
            s = lk if cross else lq
            masks = [None, torch.rand(lq, s) > 0.6, torch.randn(lq, s), torch.rand(nb * heads, lq, s) > 0.6]
            pads = [None, torch.rand(nb, s) > 0.6]
            for mask in masks:
                for pad in pads:
                    pad = pad if pad is None or batched else pad[0]
                    if pad is not None and mask is not None and mask.dtype != pad.dtype:
                        continue
                    for need, avg in ((False, True), (True, True), (True, False)):
                        kw = dict(key_padding_mask=pad, attn_mask=mask, need_weights=need, average_attn_weights=avg)
                        ref, got = mha(q, kv, kv, **kw), ours(q, kv, kv, **kw)  # grad enabled: torch's own path
                        torch.testing.assert_close(got[0], ref[0], equal_nan=True, rtol=1e-5, atol=1e-5)
                        assert (got[1] is None) == (ref[1] is None)
                        if need:
                            torch.testing.assert_close(got[1], ref[1], equal_nan=True, rtol=1e-5, atol=1e-5)
                        cases += 1
            causal = nn.Transformer.generate_square_subsequent_mask(lq)
            if not cross:
                for need in (False, True):
                    ref = mha(q, q, q, attn_mask=causal, is_causal=True, need_weights=need)[0]
                    torch.testing.assert_close(ours(q, q, q, attn_mask=causal, is_causal=True, need_weights=need)[0], ref)
    assert cases > 50
    with pytest.raises(RuntimeError, match="is_causal"):
        ours(q, q, q, is_causal=True)
    dropping = BSRMultiheadAttention(nn.MultiheadAttention(e, heads, dropout=0.1), mha.out_proj)  # training mode
    with pytest.raises(RuntimeError, match="inference"):
        dropping(q, q, q)


def test_attention_it_cannot_replace_stays_dense_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.MultiheadAttention(16, 2, kdim=8, vdim=8, batch_first=True))
    _pruned(model, 4, ["0.out_proj"], rounds=1)
    bsr, warned = _convert(model, 4, backend="torch")
    assert len(warned) == 1 and "'0.out_proj'" in warned[0] and "MultiheadAttention" in warned[0]
    assert backends_of(bsr) == {} and type(bsr[0]) is nn.MultiheadAttention
