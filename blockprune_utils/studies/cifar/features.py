"""Experiment A on cached trunk features (profiles with ``head_on_features``, e.g. ``cpu``).

The trunk of the trained ResNet18Cifar (everything before the head) is frozen as a
whole: in eval mode, BN running statistics included, it maps every training and test
image (full size, no augmentation) to its 512-d feature once.  The features are saved
as the checkpoint ``{"experiment": "features", "seed": s}`` of the baseline store,
whose folder is named by the hash of the trunk's configuration, together with a
fingerprint of the trunk's weights; a later run with the same trunk reads them back.

The head alone (``head.0`` 300x512, ReLU, ``head.2`` 10x300, as
:class:`FeatureHead`) is then block-pruned round by round and retrained on the cached
features: a head epoch takes about a second on a CPU, so A runs every k of the
profile with several seeds.  The seeds are those of the head's retraining (minibatch
order); every seed starts from the same trained network, so round 0 is the same.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass

import torch
from torch import nn

from ...data import Split
from ...infra.seeds import derive_seed
from ...models import ResNet18Cifar
from ...schedule import BlockPruner, total_density
from ...train import evaluate, train
from ..base import RoundsRun, resumable_rounds
from .config import HEAD_LAYERS, ModelConfig
from .device import autocast
from .network import layout
from .runs import Baseline, Plan, Run, plan, round0_row, row_key


class FeatureHead(nn.Module):
    """A copy of a ResNet18Cifar's head that reads 512-d features; its Linear layers
    keep the whole network's names (``head.0``, ``head.2``)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = copy.deepcopy(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


@dataclass
class Features:
    """The trunk's features of the training and test images, on the run's device."""

    train: Split
    test: Split
    fingerprint: str

    def accuracy(self, head: nn.Module) -> float:
        """Test accuracy of ``head`` on the test features (that of the whole network)."""
        return evaluate(head.to(self.test.x.device), self.test)


def fingerprint(module: nn.Module) -> str:
    """A short hash of a module's parameters and buffers."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def extract(model: ResNet18Cifar, split: Split, run: Run) -> torch.Tensor:
    """The 512-d features of every image of ``split`` (eval mode, test transform),
    as float32 on the CPU."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(split), run.p.eval_batch):
        x = run.transform(split.x[i : i + run.p.eval_batch], train=False)
        with autocast(run.device, run.p.model.amp):
            out.append(model.backbone(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 512)


def trunk_features(run: Run, model: ResNet18Cifar, seed: int) -> Features:
    """The cached features of the trunk of ``model`` (baseline seed ``seed``), extracted
    now when the cache has none for these weights."""
    store, key = run.store("baseline"), {"experiment": "features", "seed": int(seed)}
    fp = fingerprint(model.backbone)
    ck = store.load_checkpoint(key)
    if ck is not None and ck.get("fingerprint") == fp:
        run.log(f"features seed {seed}: cached ({len(ck['y_train'])} train / {len(ck['y_test'])} test)")
    else:
        t0 = time.perf_counter()
        ck = {"fingerprint": fp, "train": extract(model, run.train_split, run), "test": extract(model, run.test_split, run),
              "y_train": run.train_split.y.cpu(), "y_test": run.test_split.y.cpu()}
        store.save_checkpoint(key, ck)
        n = len(run.train_split) + len(run.test_split)
        wall = time.perf_counter() - t0
        run.log(f"features seed {seed}: extracted {n} in {wall:.0f} s ({n / max(wall, 1e-9):.0f} images/s)")
    dev = run.device
    return Features(Split(ck["train"], ck["y_train"]).to(dev), Split(ck["test"], ck["y_test"]).to(dev), fp)


def network_density(mcfg: ModelConfig, head: nn.Module) -> float:
    """Kept fraction of all conv and linear weights of the whole network whose head
    is ``head`` (the convolutions are dense)."""
    net = layout(mcfg.hidden)
    n_conv = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Conv2d))
    n_head = sum(m.weight.numel() for m in net.head.modules() if isinstance(m, nn.Linear))
    kept = total_density(head, HEAD_LAYERS) * n_head
    return (n_conv + kept) / (n_conv + n_head)


def head_prune_run(run: Run, pl: Plan, k: int, base: Baseline, feats: Features, seed: int, upto: int) -> None:
    """Bring the head-pruning run (k, seed) on ``feats`` to round ``upto``: resume from
    its checkpoint (or start from the trained head), then prune and retrain each
    missing round, storing its row and checkpoint."""
    store, e = run.store(pl.experiment), pl.experiment
    if all(store.has(row_key(e, k, r, seed)) for r in range(1, upto + 1)):
        return
    layers = list(pl.rates)
    rr = RoundsRun(store, {"experiment": e, "k": int(k), "seed": int(seed)}, lambda r: row_key(e, k, r, seed),
                   run.prov, pl.rounds)
    started = [0.0]

    def retrain(m, r):
        acc_pruned = evaluate(m, feats.test)
        gen = torch.Generator().manual_seed(derive_seed("retrain", e, seed, k, r))
        return acc_pruned, train(m, feats.train, pl.retrain.train_config(), gen, val=feats.test,
                                 lr_schedule=pl.retrain.lr_schedule())

    def row_of(r, m, result) -> dict:
        acc_pruned, hist = result
        wall = time.perf_counter() - started[0]
        run.budget.spent(e, wall)
        v = run.values(m, layers, hist=hist, acc_pruned=acc_pruned, wall_s=wall)
        v["density_model"] = network_density(run.p.model, m)
        run.log(f"{e} k={k} seed {seed} round {r}: density {v['density']:.3%} | acc pruned {acc_pruned:.4f} "
                f"-> retrained {v['test_acc']:.4f} | {wall:.1f} s")
        return v

    def proceed(r: int) -> bool:
        started[0] = time.perf_counter()
        return r <= upto and run.budget.allows(e)

    model = FeatureHead(base.network.head).to(run.device)
    resumable_rounds(rr, model, BlockPruner(k, pl.rates), retrain, row_of, proceed=proceed)


def run_on_features(run: Run, base: Baseline, feats: Features, on_round=None) -> None:
    """All rounds of A on cached features for every k and seed of the profile,
    round-major (round 1 of every k and seed, then round 2, ...), so a run stopped by
    the time budget has every k down to similar densities; ``on_round()`` runs after
    each (round, k)."""
    pl = plan(run.p, "A")
    for k in pl.ks:
        for seed in run.p.seeds:
            round0_row(run, pl, k, base, seed=seed)
    for r in range(1, pl.rounds + 1):
        for k in pl.ks:
            for seed in run.p.seeds:
                head_prune_run(run, pl, k, base, feats, seed, upto=r)
                if run.budget.stopped:
                    break
            if on_round is not None:
                on_round()
            if run.budget.stopped:
                return
