"""BlockPruner's choice of layers by name, fnmatch pattern or module type, its errors,
and convolutions blocked over the (out, in*kh*kw) matrix."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from blockprune_utils.blocks import as_matrix, block_grid, block_mask_of, expand_block_mask
from blockprune_utils.masks import get_mask, is_masked
from blockprune_utils.schedule import BlockPruner, select_layers


def _encoder_stack():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False), nn.Linear(16, 4))


def test_patterns_types_and_exclusions():
    model = _encoder_stack()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert select_layers(model, {"*.linear1": 0.2}) == {"0.layers.0.linear1": 0.2, "0.layers.1.linear1": 0.2}
    every = select_layers(model, {nn.Linear: 0.2}, exclude=["1"])
    assert list(every) == [n for n in linears if n != "1"]  # every Linear but the classifier, in module order
    assert "0.layers.0.self_attn.out_proj" in every
    # a name beats a pattern, a pattern beats a type
    rates = select_layers(model, {nn.Linear: 0.1, "*.linear?": 0.2, "0.layers.1.linear2": 0.3})
    assert rates["1"] == 0.1 and rates["0.layers.0.linear1"] == 0.2 and rates["0.layers.1.linear2"] == 0.3
    assert select_layers(model, {nn.Linear: 0.2}, exclude=["*.out_proj", "*.linear2"]) == \
        {"0.layers.0.linear1": 0.2, "0.layers.1.linear1": 0.2, "1": 0.2}
    # name keys keep their own order, as before
    assert list(select_layers(model, {"1": 0.1, "0.layers.0.linear1": 0.2})) == ["1", "0.layers.0.linear1"]


def test_selection_errors_name_the_problem():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.LSTM(8, 8), nn.LayerNorm(8))
    with pytest.raises(ValueError, match=r"'\*\.linear1' matches no layer with a weight to prune; those layers are \['0'\]"):
        select_layers(model, {"*.linear1": 0.2})
    with pytest.raises(ValueError, match=r"'<torch.nn.modules.conv.Conv2d>' matches no layer"):
        select_layers(model, {nn.Conv2d: 0.2})
    with pytest.raises(ValueError, match=r"layer '1' \(ReLU\) has no `weight`"):
        BlockPruner(2, {"1": 0.2}).step(model)
    with pytest.raises(ValueError, match=r"layer '2' \(LSTM\) has no `weight`.*weight_ih_l0"):
        BlockPruner(2, {"2": 0.2}).step(model)
    with pytest.raises(ValueError, match=r"layer '3' \(LayerNorm\) has a 1-D weight"):
        BlockPruner(2, {"3": 0.2}).step(model)
    with pytest.raises(KeyError, match="no layer 'fc9'"):
        select_layers(model, {"fc9": 0.2})
    with pytest.raises(ValueError, match=r"exclude entry 'head\*' matches no layer"):
        select_layers(model, {nn.Linear: 0.2}, exclude=["head*"])
    with pytest.raises(ValueError, match="no layer left to prune"):
        select_layers(model, {nn.Linear: 0.2}, exclude=["0"])
    with pytest.raises(TypeError, match="name, fnmatch pattern or nn.Module type"):
        BlockPruner(2, {3: 0.2})
    two = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="matched by '<torch.nn.modules.linear.Linear>'.*name it"):
        select_layers(two, {nn.Linear: 0.2, nn.Module: 0.1})
    pruner = BlockPruner(2, {nn.Linear: 0.2}, score={"other": torch.zeros(2, 2)})
    with pytest.raises(KeyError, match=r"no entry for layer '0'; they cover \['other'\]"):
        pruner.step(two)


def test_pruner_by_type_prunes_the_same_as_by_name():
    a, b = _encoder_stack(), _encoder_stack()
    names = [n for n, m in a.named_modules() if isinstance(m, nn.Linear) and n != "1"]
    by_name = BlockPruner(4, {n: 0.3 for n in names})
    by_type = BlockPruner(4, {nn.Linear: 0.3}, exclude=["1"])
    for _ in range(2):
        by_name.step(a)
        by_type.step(b)
    assert by_type.layers(b) == by_name.layers(a)
    for n in names:
        assert torch.equal(get_mask(a.get_submodule(n)), get_mask(b.get_submodule(n)))
    assert not is_masked(b.get_submodule("1")) and by_type.history == by_name.history


def test_state_dict_of_name_rates_is_unchanged_and_selectors_round_trip():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    plain = BlockPruner(2, {"0": 0.2, "2": 0.1})
    plain.step(model)
    assert set(plain.state_dict()) == {"k", "rates", "scope", "score", "history"}
    assert plain.state_dict()["rates"] == {"0": 0.2, "2": 0.1}
    chosen = BlockPruner(2, {nn.Linear: 0.2, "*2": 0.1}, exclude=("0",))
    chosen.step(model)
    state = chosen.state_dict()
    assert state["rates"] == {"<torch.nn.modules.linear.Linear>": 0.2, "*2": 0.1} and state["exclude"] == ["0"]
    again = BlockPruner(2, {nn.Linear: 0.2, "*2": 0.1}, exclude="0")
    again.load_state_dict(state)
    assert again.round == 1
    with pytest.raises(ValueError, match="exclude"):
        BlockPruner(2, {nn.Linear: 0.2, "*2": 0.1}).load_state_dict(state)


def test_conv2d_blocks_over_the_im2col_matrix():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3), nn.Flatten(), nn.LazyLinear(10))
    model(torch.randn(1, 3, 8, 8))
    pruner = BlockPruner(4, {nn.Conv2d: 0.5})
    dens = pruner.step(model)
    assert set(dens) == {"0", "2"}
    for name in ("0", "2"):
        conv = model.get_submodule(name)
        matrix = as_matrix(conv.weight)  # (out, in*kh*kw)
        assert matrix.shape == (conv.out_channels, conv.in_channels * 9)
        alive = block_mask_of(matrix, 4)
        grid = block_grid(matrix.shape, 4)
        assert int(alive.sum()) == grid[0] * grid[1] - round(0.5 * grid[0] * grid[1])
        # the element mask is the block mask expanded over the matrix view: whole k x k blocks are zero
        assert torch.equal(get_mask(conv).reshape(matrix.shape).bool(), expand_block_mask(alive, matrix.shape, 4))
