"""Training a pruned model on its live weights only: below a crossover density,
each masked ``nn.Linear`` trains as a :class:`~.sparse_linear.BlockSparseLinear`.

:func:`sparse_layers` swaps the chosen layers of a model for block-sparse ones for
the duration of a ``with`` block (an optimizer built inside it steps only the live
weights), then writes the trained weights back into the original masked layers and
puts them back, so masks, checkpoints and the pruner see the ordinary model.  A
layer goes sparse when its density is at most :func:`crossover_density` of its
block size: below it the sparse forward + backward of a LeNet-sized layer is faster
than the masked dense one.  The crossover values are measured by
:func:`blockprune_utils.bench.training.training_crossover` (one thread, batch 128,
fc1 300 x 784 with the input gradient) and kept here as constants, so that a run's
choice of path does not depend on the machine it runs on; a layer whose mask is not
made of whole k x k blocks trains as CSR (k = 1).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import nn

from ..blocks import as_matrix, block_grid, expand_block_mask, to_blocks
from ..masks import get_mask, is_masked
from .sparse_linear import BlockSparseLinear

# density at or below which the sparse layer is faster, per block size: training_crossover() on an AVX-512 host
# (Intel, one thread, the machine shared with other jobs); see the module docstring
CROSSOVER = {1: 0.3, 2: 0.4, 4: 0.6, 8: 0.7, 16: 0.9}


def crossover_density(k: int) -> float:
    """The density below which a layer of block size ``k`` trains sparse (the measured
    value of the largest tabulated block size <= k)."""
    return CROSSOVER[max(kk for kk in CROSSOVER if kk <= max(int(k), 1))]


def _block_aligned(mask, k: int) -> bool:
    m = as_matrix(mask) != 0
    grid = to_blocks(m.float(), k).flatten(-2).amax(-1) > 0
    return grid.shape == block_grid(m.shape, k) and bool((expand_block_mask(grid, m.shape, k) == m).all())


def sparse_plan(model: nn.Module, layers: Sequence[str], k: int, max_density: float | None = None) -> dict[str, tuple]:
    """{layer: (fmt, k)} of the masked CPU layers that :func:`sparse_layers` makes sparse:
    those of density <= ``max_density`` (default: :func:`crossover_density` of the
    format's block size); bsr with ``k`` when the mask is made of whole blocks, else csr."""
    plan = {}
    for name in layers:
        lin = model.get_submodule(name)
        if not isinstance(lin, nn.Linear) or not is_masked(lin) or lin.weight.device.type != "cpu":
            continue
        mask = get_mask(lin)
        fmt, kk = ("bsr", int(k)) if k > 1 and _block_aligned(mask, int(k)) else ("csr", 1)
        limit = crossover_density(kk) if max_density is None else max_density
        if float((mask != 0).float().mean()) <= limit:
            plan[name] = (fmt, kk)
    return plan


@contextlib.contextmanager
def sparse_layers(model: nn.Module, layers: Sequence[str], k: int, max_density: float | None = None,
                  parallel: bool = False) -> Iterator[dict]:
    """Within the block, the layers of :func:`sparse_plan` are :class:`BlockSparseLinear`
    modules (yields {name: module}); on exit their weights are written back into the
    original masked layers, which return to the model (also after an error)."""
    plan = sparse_plan(model, layers, k, max_density)
    originals, swapped = {}, {}
    try:
        for name, (fmt, kk) in plan.items():
            parent, _, attr = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            lin = getattr(owner, attr)
            sparse = BlockSparseLinear.from_linear(lin, kk, fmt, parallel).train(lin.training)
            originals[name], swapped[name] = (owner, attr, lin), sparse
            setattr(owner, attr, sparse)
        yield swapped
    finally:
        for name, (owner, attr, lin) in originals.items():
            sparse = getattr(owner, attr)
            sparse.write_back(lin)
            lin.train(sparse.training)
            setattr(owner, attr, lin)
