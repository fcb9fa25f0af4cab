"""Two structured alternatives to block pruning that any dense kernel runs fast.

* **Neuron pruning** (variant ``neuron``): whole hidden units removed.  Removing unit
  j of the first hidden layer zeroes row j of fc1 and column j of fc2; removing unit
  j of the second zeroes row j of fc2 and column j of fc3 (fc3 keeps all its
  outputs).  The zeros are the study's ordinary weight masks (:mod:`~blockprune_utils.masks`),
  so retraining keeps them zero.  Each round follows block pruning's per-layer
  schedule: the first hidden layer keeps the fraction of units that fc1's schedule
  keeps of its weights (0.8^r), and the second as many units as make fc2 + fc3 keep
  the weights the schedule gives them together (:func:`unit_counts`), so the weights
  kept in fc1 + fc2 + fc3 match block pruning's.  Units go by the L2 norm of their incoming weights, lowest first.
  :func:`shrink` gives the physically smaller dense network of a pruned one.
* **Narrow dense LeNet** (variant ``narrow_dense``): hidden sizes in the 300:100
  ratio scaled so that the weight count matches the schedule's at a round
  (:func:`narrow_sizes`), trained from scratch with the baseline's budget.
"""
from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from ...infra.seeds import derive_seed
from ...masks import get_mask, set_mask
from ...train import evaluate, train
from ..base import RoundsRun, checkpoint, resumable_rounds
from .config import LAYERS
from .runs import baseline, key

SIZES = (784, 300, 100, 10)  # LeNet-300-100: input, hidden 1, hidden 2, output


def layer_weights(sizes=SIZES) -> list[int]:
    """The weight count of each Linear layer of an MLP of these sizes."""
    return [a * b for a, b in zip(sizes, sizes[1:])]


def schedule_kept(rates: dict, round: int, sizes=SIZES) -> list[float]:
    """The weights each layer keeps after ``round`` rounds of the per-layer schedule
    (layer n keeps a fraction ``(1 - rate_n) ** round``), before block rounding."""
    return [n * (1 - rates[name]) ** round for name, n in zip(LAYERS, layer_weights(sizes))]


def unit_counts(rates: dict, round: int, sizes=SIZES) -> tuple[int, int]:
    """Hidden units (h1, h2) kept after ``round`` rounds: h1 keeps the fraction of its
    units that fc1's schedule keeps of its weights, and h2 as many that fc2 + fc3
    (``h1*h2 + h2*out`` weights) keep what the schedule gives them together; both
    solved as real numbers, then rounded (so the counts only shrink from round to
    round, and the total is within a unit of each layer of the schedule's); at least
    one unit each."""
    n_in, n1, n2, n_out = sizes
    kept = schedule_kept(rates, round, sizes)
    u1 = n1 * (1 - rates[LAYERS[0]]) ** round
    u2 = (kept[1] + kept[2]) / (u1 + n_out)
    return max(1, min(n1, round_half_up(u1))), max(1, min(n2, round_half_up(u2)))


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def unit_masks(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Which hidden units of a (neuron-masked) LeNet are alive: (h1 bool, h2 bool)."""
    return get_mask(model.fc1).bool().any(dim=1), get_mask(model.fc2).bool().any(dim=1)


def install_unit_masks(model: nn.Module, alive1: torch.Tensor, alive2: torch.Tensor) -> None:
    """Mask fc1's rows and fc2's columns of the dead first-layer units, fc2's rows and
    fc3's columns of the dead second-layer units."""
    a1, a2 = alive1.float(), alive2.float()
    set_mask(model.fc1, a1[:, None].expand_as(model.fc1.weight))
    set_mask(model.fc2, a2[:, None] * a1[None, :])
    set_mask(model.fc3, torch.ones(model.fc3.out_features, 1) * a2[None, :])


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` alive units of highest score (ties: lower index first)."""
    s = torch.where(alive, scores.double(), torch.tensor(-math.inf, dtype=torch.float64))
    keep = torch.zeros_like(alive)
    keep[torch.argsort(-s, stable=True)[:count]] = True
    return keep & alive


class NeuronPruner:
    """Per round, keep the hidden units of highest incoming-weight L2 norm, as many as
    :func:`unit_counts` gives for the round; the same interface as
    :class:`~blockprune_utils.schedule.BlockPruner` (``step``, ``round``, state)."""

    def __init__(self, rates: dict, sizes=SIZES):
        self.rates, self.sizes = dict(rates), tuple(sizes)
        self.history: list[dict] = []

    @property
    def round(self) -> int:
        return len(self.history)

    def step(self, model: nn.Module) -> dict[str, int]:
        h1, h2 = unit_counts(self.rates, self.round + 1, self.sizes)
        alive1, alive2 = unit_masks(model)
        keep1 = _keep_top(torch.linalg.vector_norm(model.fc1.weight.detach(), dim=1), alive1, h1)
        keep2 = _keep_top(torch.linalg.vector_norm(model.fc2.weight.detach() * keep1.float()[None, :], dim=1), alive2, h2)
        install_unit_masks(model, keep1, keep2)
        units = {"h1": int(keep1.sum()), "h2": int(keep2.sum())}
        self.history.append(units)
        return units

    def state_dict(self) -> dict:
        return {"kind": "neuron", "rates": dict(self.rates), "sizes": list(self.sizes),
                "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state) -> None:
        if state.get("kind") != "neuron" or dict(state["rates"]) != self.rates:
            raise ValueError(f"not this neuron pruner's state: {dict(state)!r}")
        self.history = [dict(h) for h in state["history"]]


class MLP(nn.Module):
    """A dense ReLU MLP with LeNet's layer names (fc1, fc2, fc3) and any hidden sizes."""

    def __init__(self, sizes=SIZES):
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        self.fc1, self.fc2, self.fc3 = (nn.Linear(a, b) for a, b in zip(self.sizes, self.sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc3(torch.relu(self.fc2(x)))


def shrink(model: nn.Module) -> MLP:
    """The physically smaller dense network of a neuron-pruned LeNet: its alive units
    only (the same outputs: a dead unit's outgoing weights are masked to zero)."""
    a1, a2 = unit_masks(model)
    out = MLP((model.fc1.in_features, int(a1.sum()), int(a2.sum()), model.fc3.out_features))
    with torch.no_grad():
        out.fc1.weight.copy_(model.fc1.weight[a1])
        out.fc1.bias.copy_(model.fc1.bias[a1])
        out.fc2.weight.copy_(model.fc2.weight[a2][:, a1])
        out.fc2.bias.copy_(model.fc2.bias[a2])
        out.fc3.weight.copy_(model.fc3.weight[:, a2])
        out.fc3.bias.copy_(model.fc3.bias)
    return out.eval()


def narrow_sizes(target: float, sizes=SIZES) -> tuple[int, int, int, int]:
    """Hidden sizes in the ratio of ``sizes`` (300:100) whose weight count is nearest
    ``target``: the scale s solves ``n_in*a*s + a*b*s^2 + b*out*s = target`` (a, b
    the full hidden sizes), h2 = round(b*s), and h1 then the whole number that brings
    the count nearest the target (within one first-layer unit of it)."""
    n_in, a, b, n_out = sizes
    if not 0 < target <= sum(layer_weights(sizes)):
        raise ValueError(f"target weight count {target} is outside (0, {sum(layer_weights(sizes))}]")
    qa, qb, qc = a * b, n_in * a + b * n_out, -float(target)
    s = (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
    h2 = max(1, round_half_up(b * s))
    h1 = max(1, round_half_up((target - h2 * n_out) / (n_in + h2)))
    return n_in, h1, h2, n_out


def weight_count(sizes) -> int:
    return sum(layer_weights(sizes))


def neuron_run(run, seed: int) -> None:
    """R rounds of neuron pruning + retraining (the ``block`` retraining) for one seed,
    resumable; seed 0 keeps every round's weights (for the latency rows)."""
    cfg = run.cfg
    rr = RoundsRun(run.store, {"dataset": cfg.data.dataset, "k": 0, "seed": int(seed), "variant": "neuron",
                               "setting": "default"},
                   lambda r: key(cfg, "neuron", 0, r, seed), run.prov, cfg.pruning.rounds, snapshots=seed == 0)
    if rr.done():
        return
    model = copy.deepcopy(baseline(run, seed))
    pruner = NeuronPruner(cfg.pruning.rate_map)
    gen = torch.Generator().manual_seed(derive_seed("retrain-data", seed, 0, "neuron"))
    phase = cfg.training.retrain

    def retrain(m, r):
        t0 = time.perf_counter()
        pruned_acc = run.test_acc(m)
        m.zero_grad(set_to_none=True)
        hist = train(m, run.splits[0], phase, gen, val=run.selection(phase) if phase.epochs > 1 else None)
        return t0, pruned_acc, hist

    def row_of(r, m, result):
        t0, pruned_acc, hist = result
        return run.values(m, 1, epochs=phase.epochs, t0=t0, hist=hist, test_acc_pruned=pruned_acc)

    resumable_rounds(rr, model, pruner, retrain, row_of, gen)


def narrow_key(cfg, seed: int, round: int) -> dict:
    return {"dataset": cfg.data.dataset, "seed": int(seed), "variant": "narrow_dense", "round": int(round)}


def narrow_model(cfg, round: int, init_seed: int) -> MLP:
    """A fresh narrow dense LeNet with the weight count of the schedule at ``round``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return MLP(narrow_sizes(sum(schedule_kept(cfg.pruning.rate_map, round))))


def narrow_run(run, seed: int, round: int) -> None:
    """The narrow dense LeNet of ``round`` trained from scratch with the baseline
    budget; one row (k = 0), and its weights kept for seed 0."""
    cfg = run.cfg
    rkey = key(cfg, "narrow_dense", 0, round, seed)
    if run.store.has(rkey):
        return
    t0 = time.perf_counter()
    model = narrow_model(cfg, round, derive_seed("narrow-init", seed, round))
    phase = cfg.training.baseline
    gen = torch.Generator().manual_seed(derive_seed("narrow-data", seed, round))
    hist = train(model, run.splits[0], phase, gen, val=run.selection(phase))
    va = run.splits[1]
    full = layer_weights()
    counts = layer_weights(model.sizes)
    row = {"test_acc": run.test_acc(model),
           "val_acc": evaluate(model, va, cfg.training.eval_batch) if len(va) else None,
           "test_acc_pruned": None, "target_density": sum(schedule_kept(cfg.pruning.rate_map, round)) / sum(full),
           **{f"density_{n}": c / f for n, c, f in zip(LAYERS, counts, full)},
           "density_total": sum(counts) / sum(full), **{f"blocks_{n}": c for n, c in zip(LAYERS, counts)},
           "epochs": phase.epochs, "train_loss": hist["history"][-1]["train_loss"] if hist["history"] else None,
           "wall_s": time.perf_counter() - t0, "profile": run.profile, "authors": cfg.authors}
    if seed == 0:
        run.store.save_checkpoint(narrow_key(cfg, seed, round), checkpoint(model, round, row))
    run.store.put(rkey, row, run.prov)
