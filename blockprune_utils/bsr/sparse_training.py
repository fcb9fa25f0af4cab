"""Training a pruned model on its live weights only: below a crossover density,
each masked ``nn.Linear`` trains as a :class:`~.sparse_linear.BlockSparseLinear`.

:func:`sparse_layers` swaps the chosen layers of a model for block-sparse ones for
the duration of a ``with`` block (an optimizer built inside it steps only the live
weights), then writes the trained weights back into the original masked layers and
puts them back, so masks, checkpoints and the pruner see the ordinary model.  A
layer goes sparse when its density is at most :func:`crossover_density` of its
block size and shape: below it the sparse forward + backward of the layer is faster
than the masked dense one (small layers, such as LeNet's fc3, hardly ever: the
sparse path's fixed cost per call outweighs their few multiply-adds).  The crossover
values are measured by :func:`blockprune_utils.bench.training.crossover_table` (one
thread, batch 128, the three LeNet layer shapes, with the input gradient) and kept
here as constants, so that a run's
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

# {layer shape: {block size: density at or below which the sparse layer is faster}}: the smaller value of two runs of
# crossover_table() on an AMD EPYC host with AVX-512, one thread (see the module docstring)
CROSSOVER = {
    (300, 784): {1: 0.4, 2: 0.2, 4: 0.5, 8: 0.7, 16: 0.9},
    (100, 300): {1: 0.3, 2: 0.2, 4: 0.4, 8: 0.4, 16: 0.5},
    (10, 100): {1: 0.0, 2: 0.0, 4: 0.0, 8: 0.02, 16: 0.0},
}


def crossover_density(k: int, shape=(300, 784)) -> float:
    """The density below which a layer of block size ``k`` and weight ``shape`` (n_out,
    n_in) trains sparse: the measured value of the largest tabulated shape with at most
    as many weights (smaller than all: the smallest's) and the largest tabulated block
    size <= k."""
    size = int(shape[0]) * int(shape[1])
    fits = [sh for sh in CROSSOVER if sh[0] * sh[1] <= size] or [min(CROSSOVER, key=lambda sh: sh[0] * sh[1])]
    table = CROSSOVER[max(fits, key=lambda sh: sh[0] * sh[1])]
    return table[max(kk for kk in table if kk <= max(int(k), 1))]


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
        limit = crossover_density(kk, tuple(mask.shape)) if max_density is None else max_density
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
