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

from ..masks import get_mask, is_masked
from .sparse_linear import BlockSparseLinear, Structure, hook_dense_linears, structure_of

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


def sparse_plan(model: nn.Module, layers: Sequence[str], k: int, max_density: float | None = None) -> dict[str, Structure]:
    """{layer: its :class:`~.sparse_linear.Structure`} of the masked CPU layers that
    :func:`sparse_layers` makes sparse: those of density <= ``max_density`` (default:
    :func:`crossover_density` of the format's block size and the layer's shape): bsr with
    ``k`` when the mask is made of whole blocks and the density is below that crossover,
    else csr when it is below CSR's."""
    plan = {}
    for name in layers:
        lin = model.get_submodule(name)
        if not isinstance(lin, nn.Linear) or not is_masked(lin) or lin.weight.device.type != "cpu":
            continue
        mask = get_mask(lin)
        density, shape = float((mask != 0).float().mean()), tuple(mask.shape)

        def below(kk):
            return density <= (crossover_density(kk, shape) if max_density is None else max_density)

        s = None
        if k > 1 and below(int(k)):
            try:
                s = structure_of(mask, int(k), "bsr")
            except ValueError:  # not made of whole k x k blocks: entry by entry
                s = None
        if s is None and below(1):
            s = structure_of(mask, 1, "csr")
        if s is not None:
            plan[name] = s
    return plan


@contextlib.contextmanager
def sparse_layers(model: nn.Module, layers: Sequence[str], k: int, max_density: float | None = None,
                  parallel: bool = False) -> Iterator[dict]:
    """Within the block, the layers of :func:`sparse_plan` are :class:`BlockSparseLinear`
    modules (yields {name: module}); on exit their weights are written back into the
    original masked layers, which return to the model (also after an error)."""
    plan = sparse_plan(model, layers, k, max_density)
    originals, swapped, hooks = {}, {}, []
    try:
        for name, s in plan.items():
            parent, _, attr = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            lin = getattr(owner, attr)
            sparse = BlockSparseLinear.from_linear(lin, s.k, s.fmt, parallel, structure=s).train(lin.training)
            originals[name], swapped[name] = (owner, attr, lin), sparse
            setattr(owner, attr, sparse)
        if swapped:  # their outputs are transposed views: the dense layers copy them to rows
            hooks = hook_dense_linears(model)
        yield swapped
    finally:
        for h in hooks:
            h.remove()
        for name, (owner, attr, lin) in originals.items():
            sparse = getattr(owner, attr)
            sparse.write_back(lin)
            lin.train(sparse.training)
            setattr(owner, attr, lin)
