"""The trunk of a profile with a :class:`~.config.TrunkSchedule` (``cpu``): ResNet18Cifar
trained from scratch on a small budget, one epoch at a time, and its cached features.

After every epoch the model, the optimizer's state and the per-epoch history are saved
as the checkpoint ``{"experiment": "trunk", "seed": s}`` of the baseline store, so a
killed run resumes at the start of its first unfinished epoch.  Each epoch's minibatch
order and augmentation are drawn from seeds derived from (seed, epoch), so a resumed
run ends with the same network as one that was never stopped (same device, same
number of threads).

When the schedule is done, the trunk (everything before the head) is frozen as a
whole: in eval mode, BN running statistics included, it maps every training and test
image (full size, no augmentation) to its 512-d feature once (:func:`trunk_features`).
The features are saved as the checkpoint ``{"experiment": "features", "seed": s}`` of
the baseline store, whose folder is named by the hash of the trunk's configuration,
together with a fingerprint of the trunk's weights; a later run with the same trunk
reads them back.  The head on the test features gives the unpruned network's test
accuracy, so no epoch spends time on a test evaluation.

Experiment A then prunes and retrains the head alone on these features
(:func:`~.runs.run_experiment` with ``feats``): a head epoch takes about a second on a
CPU, so A runs every k of the profile with several seeds.  The seeds are those of the
head's retraining (minibatch order); every seed starts from the same trained network,
so round 0 is the same.
"""
from __future__ import annotations

import copy
import hashlib
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
from .network import FeatureHead, autocast
from .runs import Baseline, Features, ProfileRun, stored_baseline


def trunk_key(seed: int) -> dict:
    """The run key of a trunk's epoch checkpoint."""
    return {"experiment": "trunk", "seed": int(seed)}


def trunk_optimizer(model: nn.Module, sched: TrunkSchedule) -> torch.optim.SGD:
    """The trunk's optimizer: SGD with Nesterov momentum (the learning rate is set per step)."""
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


def train_trunk(run: ProfileRun, model: ResNet18Cifar, seed: int) -> Optional[list[dict]]:
    """Bring ``model`` (freshly built for ``seed``) to the end of the profile's trunk
    schedule, resuming from the last finished epoch; returns the per-epoch history, or
    None when the time budget stopped it before the end."""
    sched: TrunkSchedule = run.p.baseline
    store, key = run.store("baseline"), trunk_key(seed)
    opt = trunk_optimizer(model, sched)
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


def trunk_baseline(run: ProfileRun, seed: int) -> Optional[Baseline]:
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


def fingerprint(module: nn.Module) -> str:
    """A short hash of a module's parameters and buffers."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def extract(model: ResNet18Cifar, split: Split, run: ProfileRun) -> torch.Tensor:
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


def trunk_features(run: ProfileRun, model: ResNet18Cifar, seed: int) -> Features:
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
