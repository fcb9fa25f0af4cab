"""Block-sparse training and transformer-sized inference, timed: the last two bars of
the benchmark and the crossover density of :mod:`blockprune_utils.bsr.sparse_training`.

- :func:`training_crossover`: per block size, the largest density at which one
  forward + backward of a block-sparse layer (:class:`~blockprune_utils.bsr.sparse_linear.BlockSparseLinear`,
  every layout conversion included) is faster than the masked dense ``nn.Linear``;
- :func:`mlp_bar`: a 768 -> 3072 -> 768 GELU MLP at 512 tokens, blocks kept at about
  7% density, its block-sparse forward (activations kept in the (features, batch)
  layout between the layers: only the input and output are transposed) against the
  fastest dense forward (torch, or numpy's BLAS) - as a fraction of the ideal 1/density;
- :func:`training_bar`: dense-masked time / sparse time of LeNet-300-100 retraining
  epochs (the study's ``train`` loop, its retraining settings, the layer switch of
  :func:`~blockprune_utils.bsr.sparse_training.sparse_layers`) at rounds 16 and 11 and
  over all 16 rounds of a k = 4 block run; :func:`epoch_table` gives the epoch time of
  every round for several block sizes (notebook 02).

Everything runs on one thread.  Timing does not depend on the weights' or the data's
values, so the models are seeded untrained LeNets pruned by the study's schedule and
the data are random MNIST-shaped tensors; the quick profile times ``steps`` minibatches
per epoch instead of a full epoch (the per-step cost is the same: the ratio holds).
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from ..blocks import block_grid, expand_block_mask
from ..bsr.sparse_linear import BlockSparseLinear, features_first, forward, gather, structure_of
from ..bsr.sparse_training import sparse_layers
from ..bsr.timing import num_threads
from ..data import Split
from ..masks import get_mask, set_mask
from ..models import LENET_RATES, LeNet300100
from ..schedule import BlockPruner
from ..train import TrainConfig, train

LAYERS = ("fc1", "fc2", "fc3")


def _best_time(fn, repeats: int = 5, min_s: float = 0.02, clock=time.perf_counter) -> float:
    """Median seconds per call over ``repeats`` samples of at least ``min_s`` each (warm-up call first)."""
    fn()
    samples = []
    for _ in range(repeats):
        n, t0 = 0, clock()
        while True:
            fn()
            n += 1
            t = clock() - t0
            if t >= min_s:
                break
        samples.append(t / n)
    return float(np.median(samples))


def _masked_linear(n_out, n_in, k, density, gen) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    grid = torch.zeros(block_grid((n_out, n_in), k), dtype=torch.bool).flatten()
    grid[torch.randperm(grid.numel(), generator=gen)[: max(1, round(density * grid.numel()))]] = True
    set_mask(lin, expand_block_mask(grid.view(block_grid((n_out, n_in), k)), (n_out, n_in), k).float())
    return lin


def training_crossover(ks=(1, 2, 4, 8, 16), shape=(300, 784), batch: int = 128,
                       densities=(0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), seed: int = 0) -> dict:
    """{k: largest density of ``densities`` at which sparse forward + backward (input
    and weight gradient) beats the masked dense layer, or 0.0}; one thread."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, shape[1], generator=gen, requires_grad=True)
    dy = torch.randn(batch, shape[0], generator=gen)
    out = {}
    with num_threads(1):
        for k in ks:
            best = 0.0
            for d in sorted(densities):
                lin = _masked_linear(*shape, k, d, gen)
                sparse = BlockSparseLinear.from_linear(lin, k, "bsr" if k > 1 else "csr")
                times = [_best_time(lambda m=m: m(x).backward(dy), clock=time.thread_time) for m in (lin, sparse)]
                if times[1] >= times[0]:
                    break
                best = d
            out[k] = best
    return out


LENET_SHAPES = ((300, 784), (100, 300), (10, 100))


def crossover_table(shapes=LENET_SHAPES, ks=(1, 2, 4, 8, 16), seed: int = 0) -> dict:
    """{shape: :func:`training_crossover` of that layer shape}: the table kept as
    :data:`blockprune_utils.bsr.sparse_training.CROSSOVER`."""
    return {tuple(shape): training_crossover(ks, shape, seed=seed) for shape in shapes}


class SparseMLP:
    """``fc2(gelu(fc1(x)))`` on block-sparse weights, the hidden activations kept in the
    (features, batch) layout: one transpose in, one out."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, k: int):
        self.parts = []
        for lin in (fc1, fc2):
            s = structure_of(get_mask(lin), k, "bsr")
            self.parts.append((s, gather(s, lin.weight.detach()).numpy(), lin.bias.detach().numpy().copy()))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        (s1, d1, b1), (s2, d2, b2) = self.parts
        h = torch.nn.functional.gelu(torch.from_numpy(forward(s1, d1, features_first(x), b1))).numpy()
        return features_first(forward(s2, d2, h, b2))


def mlp_bar(ks=(16, 32), tokens: int = 512, density: float = 0.07, seed: int = 0) -> dict:
    """{f"mlp_k{k}_frac_of_ideal": fastest dense forward time / block-sparse forward time
    * block density} of the 768 -> 3072 -> 768 GELU MLP at ``tokens`` tokens (one thread);
    the sparse output is checked against the dense one first."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, 768, generator=gen)
    xn = x.numpy()
    out = {}
    with num_threads(1), torch.inference_mode():
        for k in ks:
            m1, m2 = _masked_linear(3072, 768, k, density, gen), _masked_linear(768, 3072, k, density, gen)
            dense = nn.Sequential(nn.Linear(768, 3072), nn.GELU(), nn.Linear(3072, 768))
            for plain, masked in ((dense[0], m1), (dense[2], m2)):
                plain.weight.copy_(masked.weight)
                plain.bias.copy_(masked.bias)
            w1, b1, w2, b2 = (t.detach().numpy().copy() for t in (dense[0].weight, dense[0].bias, dense[2].weight,
                                                                  dense[2].bias))

            def numpy_dense():
                h = torch.nn.functional.gelu(torch.from_numpy(xn @ w1.T + b1)).numpy()
                return h @ w2.T + b2

            sparse = SparseMLP(m1, m2, k)
            ref = dense(x).numpy()
            if not np.allclose(sparse(xn), ref, rtol=1e-3, atol=1e-3):
                raise AssertionError(f"the block-sparse MLP (k={k}) differs from the dense one")
            t_dense = min(_best_time(lambda: dense(x)), _best_time(numpy_dense))
            nnz = sum(int((lin.weight != 0).sum()) for lin in (dense[0], dense[2]))
            out[f"mlp_k{k}_frac_of_ideal"] = t_dense / _best_time(lambda: sparse(xn)) * nnz / (2 * 768 * 3072)
    return out


def _pruned_lenets(k: int, rounds, seed: int) -> dict[int, LeNet300100]:
    torch.manual_seed(seed)
    model = LeNet300100()
    pruner, out = BlockPruner(k, LENET_RATES), {}
    for r in range(1, max(rounds) + 1):
        pruner.step(model)
        if r in rounds:
            out[r] = copy.deepcopy(model)
    return out


def epoch_seconds(model: nn.Module, data: Split, phase: TrainConfig, k: int, sparse: bool, seed: int = 0) -> float:
    """Seconds of one retraining epoch (the study's ``train``) of ``model`` on ``data``:
    dense-masked, or with :func:`sparse_layers` switching layers below the crossover."""
    m = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    if sparse:
        with sparse_layers(m, LAYERS, k):
            train(m, data, phase, gen)
    else:
        train(m, data, phase, gen)
    return time.perf_counter() - t0


def _random_data(steps: int, batch: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    n = steps * batch
    return Split(torch.rand(n, 784, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def epoch_table(ks=(1, 2, 4, 6), steps: int = 40, repeats: int = 1, seed: int = 0, phase: TrainConfig | None = None):
    """One row per (k, round 1..16) of a block run: density, seconds of a retraining epoch
    (``steps`` minibatches of random MNIST-shaped data, the best of ``repeats``) dense-masked
    and with :func:`sparse_layers`, their ratio, and which layers trained sparse; one thread."""
    import pandas as pd

    from ..bsr.sparse_training import sparse_plan
    from ..masks import density

    phase = phase or TrainConfig(epochs=1, lr=1e-3, batch_size=128, zero_grad=False, select="last")
    data = _random_data(steps, phase.batch_size, seed)
    rows = []
    with num_threads(1):
        for k in ks:
            models = _pruned_lenets(k, range(1, 17), seed)
            epoch_seconds(models[16], data, phase, k, True)  # compile / load the kernels
            for r, m in models.items():
                dense = sparse = np.inf
                for _ in range(repeats):
                    dense = min(dense, epoch_seconds(m, data, phase, k, False))
                    sparse = min(sparse, epoch_seconds(m, data, phase, k, True))
                rows.append({"k": k, "round": r, "density": density(m, LAYERS), "dense_s": dense, "sparse_s": sparse,
                             "speedup": dense / sparse, "sparse_layers": ",".join(sparse_plan(m, LAYERS, k)) or "-"})
    return pd.DataFrame(rows)


def training_bar(k: int = 4, steps: int = 40, repeats: int = 3, seed: int = 0, phase: TrainConfig | None = None) -> dict:
    """``epoch_r16_k4``, ``epoch_r11_k4`` (dense-masked / sparse seconds of a retraining
    epoch at rounds 16 and 11) and ``run_k4`` (the same over all 16 rounds, each round
    one epoch) for block size ``k``; an epoch is ``steps`` minibatches of random
    MNIST-shaped data (the best of ``repeats``, the two paths and all rounds
    interleaved); one thread."""
    phase = phase or TrainConfig(epochs=1, lr=1e-3, batch_size=128, zero_grad=False, select="last")
    data = _random_data(steps, phase.batch_size, seed)
    models = _pruned_lenets(k, range(1, 17), seed)
    dense, sparse = {r: np.inf for r in models}, {r: np.inf for r in models}
    with num_threads(1):
        epoch_seconds(models[16], data, phase, k, True)  # compile / load the kernels
        for _ in range(repeats):  # interleaved, so that a drift of a shared machine hits both paths
            for r, m in models.items():
                dense[r] = min(dense[r], epoch_seconds(m, data, phase, k, False))
                sparse[r] = min(sparse[r], epoch_seconds(m, data, phase, k, True))
    return {f"epoch_r16_k{k}": dense[16] / sparse[16], f"epoch_r11_k{k}": dense[11] / sparse[11],
            f"run_k{k}": sum(dense.values()) / sum(sparse.values())}


def bar_line(title: str, values: dict) -> str:
    """``title: name=value ...`` with 3 significant digits."""
    return f"{title}: " + " ".join(f"{name}={value:.3g}" for name, value in values.items())
