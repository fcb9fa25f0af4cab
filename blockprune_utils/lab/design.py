"""The lab's design task: prune the pretrained LeNet-300-100 to a storage target
within a fixed retraining budget, with the package's own pruning code.

A design is a dict ``{"k": int, "rates": {"fc1": p, "fc2": p, "fc3": p}, "rounds":
int, "epochs_per_round": int}``.  :func:`run_design` starts from
:func:`~blockprune_utils.pretrained.pretrained_lenet`, runs ``rounds`` rounds of
:class:`~blockprune_utils.schedule.BlockPruner` (each followed by
``epochs_per_round`` epochs of Adam with a cosine decay from ``lr``) and measures the
stored BSR bytes of fc1+fc2+fc3 against dense and the MNIST test accuracy.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from ..bsr import storage_bytes
from ..data import load_mnist_like, train_val_split
from ..masks import density
from ..models import LENET_LAYERS as LAYERS
from ..pretrained import pretrained_lenet
from ..schedule import BlockPruner, alive_blocks
from ..train import TrainConfig, evaluate, train

DESIGN_KEYS = ("k", "rates", "rounds", "epochs_per_round")


@dataclass(frozen=True)
class DesignResult:
    design: dict
    budget_epochs: int
    bsr_bytes: int
    dense_bytes: int
    density: float
    test_acc: float
    n_test: int
    wall_s: float

    @property
    def bytes_ratio(self) -> float:
        return self.bsr_bytes / self.dense_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes_ratio": self.bytes_ratio}

    def __str__(self) -> str:
        d = self.design
        return (f"k={d['k']}, rates={d['rates']}, {d['rounds']} round(s) x {d['epochs_per_round']} epoch(s): "
                f"BSR {self.bsr_bytes:,} B = {self.bytes_ratio:.2%} of dense ({self.dense_bytes:,} B), "
                f"{self.density:.2%} of the weights kept, test accuracy {self.test_acc:.2%} ({self.n_test:,} images), "
                f"{self.wall_s:.0f} s")


def check_design(design, budget_epochs: int) -> dict:
    """``design`` as a clean dict, or a ValueError naming what is wrong with it."""
    if not isinstance(design, dict):
        raise ValueError(f"design must be a dict with keys {DESIGN_KEYS}, got {design!r}")
    missing = [key for key in DESIGN_KEYS if key not in design]
    extra = sorted(set(design) - set(DESIGN_KEYS))
    if missing or extra:
        raise ValueError(f"design must have exactly the keys {DESIGN_KEYS}; missing {missing}, unknown {extra}")
    rates = design["rates"]
    if not isinstance(rates, dict) or set(rates) != set(LAYERS):
        raise ValueError(f"design['rates'] must give a rate for each of {LAYERS}, got {rates!r}")
    for key in ("rounds", "epochs_per_round"):
        v = design[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"design[{key!r}] must be an integer >= 0, got {v!r}")
    spent = design["rounds"] * design["epochs_per_round"]
    if spent > budget_epochs:
        raise ValueError(f"the design retrains for rounds x epochs_per_round = {spent} epochs, "
                         f"over the budget of {budget_epochs} epochs")
    return {"k": design["k"], "rates": {n: float(rates[n]) for n in LAYERS}, "rounds": design["rounds"],
            "epochs_per_round": design["epochs_per_round"]}


def run_design(design: dict, budget_epochs: int = 6, n_train: int | None = None, n_test: int | None = None,
               lr: float = 2e-3, seed: int = 0, data_root=None) -> DesignResult:
    """Prune and retrain the pretrained LeNet as ``design`` says; return the measurements.

    Retraining uses the 55,000 training images that the pretrained network was
    trained on (the study's validation split of 5,000 is held out; ``n_train`` takes
    fewer), and accuracy is measured on the MNIST test set (``n_test``: its first
    images)."""
    design = check_design(design, budget_epochs)
    t0 = time.perf_counter()
    model = pretrained_lenet().train()
    pruner = BlockPruner(design["k"], design["rates"])  # checks k and the rates
    full = load_mnist_like("mnist", train=True, root=data_root)
    train_set, _ = train_val_split(full, 5000, 0)
    if n_train is not None:
        train_set = train_set.subset(slice(0, n_train))
    test_set = load_mnist_like("mnist", train=False, root=data_root)
    if n_test is not None:
        test_set = test_set.subset(slice(0, n_test))
    gen = torch.Generator().manual_seed(seed)
    phase = TrainConfig(epochs=design["epochs_per_round"], lr=lr, batch_size=128, select="last", schedule="cosine")
    for _ in range(design["rounds"]):
        pruner.step(model)
        if phase.epochs:
            train(model, train_set, phase, gen)
    k = pruner.k
    sizes = [storage_bytes(getattr(model, n).weight.detach(), k, alive_blocks(getattr(model, n), k)) for n in LAYERS]
    return DesignResult(design=design, budget_epochs=budget_epochs, bsr_bytes=sum(s.bsr for s in sizes),
                        dense_bytes=sum(s.dense for s in sizes), density=density(model, LAYERS),
                        test_acc=evaluate(model, test_set), n_test=len(test_set), wall_s=time.perf_counter() - t0)
