"""Masks keep pruned weights exactly zero and survive state_dict round trips."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from blockprune_utils.masks import (
    dense_state_dict,
    density,
    get_mask,
    is_masked,
    load_masked_state_dict,
    remove_masks,
    set_mask,
)
from blockprune_utils.schedule import BlockPruner


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3)
        self.fc1 = nn.Linear(6 * 4 * 4, 13)
        self.fc2 = nn.Linear(13, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


LAYERS = ("conv", "fc1", "fc2")


def _net(seed=0):
    torch.manual_seed(seed)
    return Net()


def _batch(seed=1, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


def _random_masks(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    for name in LAYERS:
        mod = model.get_submodule(name)
        set_mask(mod, (torch.rand(mod.weight.shape, generator=g) < 0.5).float())


def _train(model, opt, steps=50, seed=1):
    x, y = _batch(seed)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _assert_masked_zero(model):
    for name in LAYERS:
        mod = model.get_submodule(name)
        mask = get_mask(mod)
        assert (mod.weight[mask == 0] == 0).all(), f"{name}: a pruned weight moved"
        assert (mask != 0).any()


OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    "sgd_momentum_wd": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=5e-4),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_mask_stays_zero_through_training(opt_name):
    model = _net()
    _random_masks(model)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in LAYERS}
    _train(model, OPTIMIZERS[opt_name](model.parameters()))
    _assert_masked_zero(model)
    # the surviving weights did train
    assert any(not torch.equal(before[n], model.get_submodule(n).weight.detach()) for n in LAYERS)


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_mask_stays_zero_with_optimizer_state_built_before_masking(opt_name):
    model = _net()
    opt = OPTIMIZERS[opt_name](model.parameters())
    _train(model, opt, steps=10)  # momentum / Adam moments are now non-zero everywhere
    # masking re-registers the weight as parametrizations.weight.original: the same
    # Parameter object, so the optimizer (and its state) keeps acting on it
    params_before = {id(p) for p in model.parameters()}
    _random_masks(model)
    assert {id(p) for p in model.parameters()} == params_before
    _train(model, opt, steps=50)
    _assert_masked_zero(model)


def test_block_pruner_masks_hold_under_training():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-3)
    _train(model, opt, steps=5)
    pruner = BlockPruner(k=2, rates={n: 0.4 for n in LAYERS})
    for _ in range(3):
        pruner.step(model)
        _train(model, opt, steps=15)
        _assert_masked_zero(model)


def test_state_dict_into_fresh_masked_model():
    src = _net(0)
    _random_masks(src)
    _train(src, torch.optim.Adam(src.parameters(), lr=1e-2), steps=5)
    sd = src.state_dict()
    assert any(key.endswith(".parametrizations.weight.0.mask") for key in sd)
    dst = _net(1)
    _random_masks(dst, seed=99)  # different masks; loading must replace them
    dst.load_state_dict(sd)
    x, _ = _batch(5)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    for n in LAYERS:
        assert torch.equal(get_mask(dst.get_submodule(n)), get_mask(src.get_submodule(n)))


def test_state_dict_into_fresh_unmasked_model():
    src = _net(0)
    _random_masks(src)
    dst = _net(1)
    assert not is_masked(dst.fc1)
    load_masked_state_dict(dst, src.state_dict())
    x, _ = _batch(5)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    assert all(is_masked(dst.get_submodule(n)) for n in LAYERS)
    assert density(dst) == pytest.approx(density(src))
    _train(dst, torch.optim.Adam(dst.parameters(), lr=1e-2), steps=5)
    _assert_masked_zero(dst)


def test_dense_state_dict_loads_into_unmasked_model():
    src = _net(0)
    _random_masks(src)
    sd = dense_state_dict(src)
    assert set(sd) == set(_net().state_dict())
    dst = _net(1)
    dst.load_state_dict(sd)
    x, _ = _batch(5)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    assert (dst.fc1.weight[get_mask(src.fc1) == 0] == 0).all()


def test_remove_masks_on_deepcopy_leaves_original_working():
    model = _net()
    _random_masks(model)
    x, _ = _batch(5)
    ref = model(x).detach()
    plain = remove_masks(copy.deepcopy(model))
    assert not any(is_masked(plain.get_submodule(n)) for n in LAYERS)
    assert isinstance(plain.fc1.weight, nn.Parameter)
    torch.testing.assert_close(plain(x), ref, rtol=0, atol=0)
    # the original still has its masks and works, including further training
    assert all(is_masked(model.get_submodule(n)) for n in LAYERS)
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    _train(model, torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9), steps=5)
    _assert_masked_zero(model)
    # and a second copy can be unmasked too
    remove_masks(copy.deepcopy(model))
    assert is_masked(model.fc1)


def test_set_mask_accepts_matrix_view_for_conv_and_rejects_bad_shape():
    model = _net()
    set_mask(model.conv, torch.ones(6, 18))
    assert get_mask(model.conv).shape == (6, 2, 3, 3)
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        set_mask(model.fc2, torch.ones(5, 5))


def test_set_mask_zeroes_the_underlying_parameter():
    model = _net()
    m = torch.ones_like(model.fc2.weight)
    m[:, :4] = 0
    set_mask(model.fc2, m)
    assert (model.fc2.parametrizations.weight.original[:, :4] == 0).all()


def test_density_counts_kept_weights_over_the_named_layers_together():
    model = _net()
    set_mask(model.fc2, (torch.arange(65).reshape(5, 13) % 5 == 0).float())  # 13 of 65 kept
    total = sum(model.get_submodule(n).weight.numel() for n in LAYERS)
    assert density(model) == pytest.approx(13 / 65)  # the masked layers only
    assert density(model, ["fc2"]) == pytest.approx(13 / 65)
    assert density(model, LAYERS) == pytest.approx((total - 52) / total)
    assert density(model, iter(LAYERS)) == density(model, LAYERS)  # any iterable of names
    assert density(model, []) == 1.0
    with pytest.raises(KeyError, match=r"no layer\(s\) \['fc3'\].*'fc1'"):
        density(model, ["fc1", "fc3"])
