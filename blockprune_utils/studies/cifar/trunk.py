"""The baseline of the ``cpu`` profile: ResNet18Cifar trained from scratch on a small
budget (:class:`~.config.TrunkSchedule`), one epoch at a time.

After every epoch the model, the optimizer's state and the per-epoch history are saved
as the checkpoint ``{"experiment": "trunk", "seed": s}`` of the baseline store, so a
killed run resumes at the start of its first unfinished epoch.  Each epoch's minibatch
order and augmentation are drawn from seeds derived from (seed, epoch), so a resumed
run ends with the same network as one that was never stopped (same device, same
number of threads).

When the schedule is done, the trunk's features are extracted and cached
(:func:`~.features.trunk_features`); the head on the test features gives the unpruned
network's test accuracy, so no epoch spends time on a test evaluation.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Optional

import torch
from torch import nn

from ...data import Split
from ...infra.seeds import derive_seed
from ...models import ResNet18Cifar
from ..base import checkpoint, load_restored
from .config import TrunkSchedule
from .data import CifarTransform
from .device import autocast
from .features import FeatureHead, trunk_features
from .runs import Baseline, Run, stored_baseline


def trunk_key(seed: int) -> dict:
    """The run key of a trunk's epoch checkpoint."""
    return {"experiment": "trunk", "seed": int(seed)}


def make_optimizer(model: nn.Module, sched: TrunkSchedule) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=sched.lr, momentum=sched.momentum, nesterov=True,
                           weight_decay=sched.weight_decay)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, data: Split, sched: TrunkSchedule, epoch: int,
                seed: int, *, channels_last: bool = False, amp: bool = False) -> dict:
    """Epoch ``epoch`` of the schedule: augmented images resized to ``sched.sizes[epoch]``,
    the one-cycle learning rate at each step; returns the epoch's loss and accuracy on
    its (augmented) training batches."""
    device = next(model.parameters()).device
    tf = CifarTransform(device, seed=derive_seed("augment", seed, epoch), image_size=sched.sizes[epoch],
                        channels_last=channels_last)
    order = torch.Generator().manual_seed(derive_seed("order", seed, epoch))
    n, bs = len(data), sched.batch_size
    steps = math.ceil(n / bs)
    total = steps * sched.epochs
    loss_fn = nn.CrossEntropyLoss(label_smoothing=sched.label_smoothing)
    model.train()
    perm = torch.randperm(n, generator=order)
    loss_sum, correct = 0.0, 0
    for i in range(steps):
        idx = perm[i * bs : (i + 1) * bs]
        x, y = tf(data.x[idx], train=True), data.y[idx]
        for group in opt.param_groups:
            group["lr"] = sched.lr_at((epoch * steps + i) / total)
        with autocast(device, amp):
            out = model(x)
            loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((out.argmax(1) == y).sum())
    return {"epoch": epoch, "image_size": sched.sizes[epoch], "train_loss": loss_sum / n, "train_acc": correct / n}


def train_trunk(run: Run, model: ResNet18Cifar, seed: int) -> Optional[list[dict]]:
    """Bring ``model`` (freshly built for ``seed``) to the end of the profile's trunk
    schedule, resuming from the last finished epoch; returns the per-epoch history, or
    None when the time budget stopped it before the end."""
    sched: TrunkSchedule = run.p.baseline
    store, key = run.store("baseline"), trunk_key(seed)
    opt = make_optimizer(model, sched)
    # the optimizer state and history are tried on a copy inside the guarded read, too
    ck = load_restored(store, key, model, check=lambda c, _: (copy.deepcopy(opt).load_state_dict(c["optimizer"]),
                                                              list(c["history"])))
    history: list[dict] = []
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        history = list(ck["history"])
        run.log(f"trunk seed {seed}: resuming after epoch {len(history)} of {sched.epochs}")
    for epoch in range(len(history), sched.epochs):
        if not run.budget.allows("trunk"):
            return None
        t0 = time.perf_counter()
        rec = train_epoch(model, opt, run.train_split, sched, epoch, seed, channels_last=run.p.model.channels_last,
                          amp=run.p.model.amp)
        rec["wall_s"] = time.perf_counter() - t0
        run.budget.spent("trunk", rec["wall_s"])
        history.append(rec)
        store.save_checkpoint(key, {**checkpoint(model, epoch + 1), "optimizer": opt.state_dict(), "history": history})
        run.log(f"trunk seed {seed}: epoch {epoch + 1}/{sched.epochs} at {rec['image_size']}x{rec['image_size']}: "
                f"train loss {rec['train_loss']:.3f}, train acc (augmented) {rec['train_acc']:.3f}, "
                f"{rec['wall_s']:.0f} s ({len(run.train_split) / rec['wall_s']:.0f} images/s)")
    return history


def trunk_baseline(run: Run, seed: int) -> Optional[Baseline]:
    """The baseline of ``seed`` in a profile with a :class:`TrunkSchedule`: from its
    checkpoint, or trained now (resumably), its features cached and its row stored.
    None when the time budget stopped the training (run again to resume)."""

    def train(model) -> Optional[dict]:
        history = train_trunk(run, model, seed)
        if history is None:
            return None
        feats = trunk_features(run, model, seed)
        acc = feats.accuracy(FeatureHead(model.head))
        values = run.values(model, [], acc=acc, wall_s=sum(h["wall_s"] for h in history))
        values.update(test_acc_best_epoch=acc, train_loss=history[-1]["train_loss"], epochs=len(history))
        run.log(f"baseline seed {seed}: test acc {acc:.4f} after {len(history)} epochs "
                f"({values['wall_s'] / 60:.1f} min of training)")
        return checkpoint(model, 0, values)

    return stored_baseline(run, seed, train)
