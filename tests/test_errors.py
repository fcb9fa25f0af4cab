"""Bad input gives a clear error that names the bad value."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from blockprune_utils.blocks import as_matrix, block_grid, block_scores, expand_block_mask, to_blocks
from blockprune_utils.bsr import BSRLinear, storage_bytes, to_scipy_bsr, to_torch_bsr
from blockprune_utils.data import MNIST_FILES, load_mnist_like
from blockprune_utils.pruning import prune_fraction, prune_global, prune_to_density
from blockprune_utils.schedule import BlockPruner

W = torch.randn(6, 7)


@pytest.mark.parametrize("k", [0, -2, 2.5, 3.0, "3", True, None])
def test_bad_block_size(k):
    with pytest.raises(ValueError, match=re.escape(repr(k))):
        block_scores(W, k)
    with pytest.raises(ValueError, match="block size k"):
        block_grid((6, 7), k)
    with pytest.raises(ValueError, match="block size k"):
        to_blocks(W, k)
    with pytest.raises(ValueError, match="block size k"):
        to_scipy_bsr(W, k)
    with pytest.raises(ValueError, match="block size k"):
        BlockPruner(k=k, rates={"fc": 0.2})


def test_float_block_size_suggests_int():
    with pytest.raises(ValueError, match=r"int\(3\.0\)"):
        block_scores(W, 3.0)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.2", True])
def test_bad_fraction(p):
    scores, alive = torch.rand(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\[0, 1\).*" + re.escape(repr(p))):
        prune_fraction(scores, alive, p)
    with pytest.raises(ValueError, match=re.escape(repr(p))):
        prune_global({"a": scores}, {"a": alive}, p)
    with pytest.raises(ValueError, match=r"layer 'fc'.*" + re.escape(repr(p))):
        BlockPruner(k=2, rates={"fc": p})


@pytest.mark.parametrize("d", [0, 0.0, -0.5, 1.01, float("nan"), "1", False])
def test_bad_density(d):
    scores, alive = torch.rand(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(0, 1\].*" + re.escape(repr(d))):
        prune_to_density(scores, alive, d)


@pytest.mark.parametrize("shape", [(5,), (1, 2, 1, 2, 1, 2)])
def test_bad_weight_rank(shape):
    w = torch.randn(shape)
    with pytest.raises(ValueError, match=re.escape(str(tuple(shape)))):
        block_scores(w, 2)
    with pytest.raises(ValueError, match=re.escape(str(tuple(shape)))):
        as_matrix(w)


def test_weight_must_be_tensor():
    with pytest.raises(TypeError, match="list"):
        as_matrix([[1.0, 2.0]])


@pytest.mark.parametrize(
    "bad, what", [(float("nan"), "1 NaN, 0 inf"), (float("inf"), "0 NaN, 1 inf"), (-float("inf"), "0 NaN, 1 inf")]
)
def test_non_finite_weights(bad, what):
    w = torch.randn(4, 4)
    w[1, 2] = bad
    with pytest.raises(ValueError, match=what):
        block_scores(w, 2)
    model = nn.Sequential(nn.Linear(4, 4))
    with torch.no_grad():
        model[0].weight[0, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        BlockPruner(k=2, rates={"0": 0.2}).step(model)


def test_mismatched_block_mask_and_scores():
    scores = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        prune_fraction(scores, torch.ones(3, 2, dtype=torch.bool), 0.2)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        prune_to_density(scores, torch.ones(3, 2, dtype=torch.bool), 0.5)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        prune_global({"a": scores}, {"a": torch.ones(3, 2, dtype=torch.bool)}, 0.2)
    with pytest.raises(ValueError, match="different layers"):
        prune_global({"a": scores}, {"b": torch.ones(2, 3, dtype=torch.bool)}, 0.2)
    with pytest.raises(TypeError, match="bool"):
        prune_fraction(scores, torch.ones(2, 3), 0.2)
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 4\).*k=2"):
        expand_block_mask(torch.ones(2, 2, dtype=torch.bool), (6, 7), 2)
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 4\)"):
        to_scipy_bsr(W, 2, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 4\)"):
        to_torch_bsr(W, 2, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 4\)"):
        storage_bytes(W, 2, torch.ones(2, 2, dtype=torch.bool))


def test_score_function_returning_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 4\)"):
        block_scores(W, 2, lambda blocks, counts: torch.zeros(3))


def test_fixed_scores_of_wrong_shape():
    model = nn.Sequential(nn.Linear(7, 6))
    pruner = BlockPruner(k=2, rates={"0": 0.2}, score={"0": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"'0'.*\(2, 2\).*\(3, 4\)"):
        pruner.step(model)


def test_unknown_score_and_backend_and_layer():
    with pytest.raises(ValueError, match="'l1_norm'.*mean_abs"):
        block_scores(W, 2, "l1_norm")
    with pytest.raises(TypeError, match="42"):
        block_scores(W, 2, 42)
    with pytest.raises(ValueError, match="'cuda_magic'"):
        BSRLinear(W, None, 2, backend="cuda_magic")
    with pytest.raises(KeyError, match="'fc9'"):
        BlockPruner(k=2, rates={"fc9": 0.2}).step(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="'sideways'"):
        BlockPruner(k=2, rates={"0": 0.2}, scope="sideways")
    with pytest.raises(ValueError, match="one rate"):
        BlockPruner(k=2, rates={"a": 0.2, "b": 0.1}, scope="global")
    with pytest.raises(ValueError, match="rates is empty"):
        BlockPruner(k=2, rates={})
    with pytest.raises(ValueError, match="min_keep.*-1"):
        prune_global({"a": torch.zeros(1, 1)}, {"a": torch.ones(1, 1, dtype=torch.bool)}, 0.2, min_keep=-1)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_missing_data_names_files_and_data_dir(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist_like(name, train=True, root=tmp_path, download=False)
    msg = str(info.value)
    assert f"DATA_DIR={tmp_path.resolve()} " in msg or f"DATA_DIR={tmp_path} " in msg
    for f in MNIST_FILES:
        assert str(tmp_path / folder / "raw" / f) in msg
    assert "DATA_DIR=../shared/data" in msg  # says how to fix it


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="'kmnist'"):
        load_mnist_like("kmnist", root="/nonexistent", download=False)
