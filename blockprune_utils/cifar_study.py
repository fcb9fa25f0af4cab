"""ResNet18 on CIFAR-10: block pruning on a convolutional network (issue #5).

Two experiments share one trained baseline (all parameters trained from scratch):

* **A (the authors')**: block-prune only the FC head (``head.0`` 300x512 and
  ``head.2`` 10x300) with k = 2, 16 rounds of p = 0.2 per layer
  (:data:`~.models.RESNET_HEAD_RATES`); convolutions and BN are frozen
  (``requires_grad=False``, only the head's parameters go to the optimizer) while BN
  running statistics still update, because retraining runs in ``train()`` mode.
* **B (beyond the paper)**: block-prune the convolution weights, each conv as its
  (out, in*kh*kw) matrix, with k in {2, 4, 8} and the element-wise k = 1 baseline:
  every 3x3 conv of the four stages and the three 1x1 shortcut convs, each layer
  losing the same fraction of its surviving blocks per round.  The 3x3 stem conv
  (64x27, 0.015% of the weights, the most sensitive layer) stays dense, and so does
  the head: A studies it already, and with k = 8 the 10x300 output layer would have
  only two block rows for ten classes, an artefact that would confound the
  comparison across k (``ConvPruning.include_head`` switches it on).  All parameters
  are retrained after each round.

Every finished (experiment, k, round, seed) is one tidy row in a
:class:`~.cache.ResultStore`; the latest checkpoint of every run is kept, so a
killed run resumes where it stopped.  ``main`` is the plain-Python entry point
(``python -m blockprune_utils.sweep --study cifar --profile paper --experiment A``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .cache import ResultStore, provenance
from .cifar import CifarTransform, load_cifar10_splits, synthetic_cifar
from .masks import MASK_SUFFIX, load_masked_state_dict
from .models import RESNET_HEAD_RATES, ResNet18Cifar
from .paths import figures_dir, results_dir
from .schedule import BlockPruner, layer_densities, total_density
from .train import TrainConfig, evaluate, train

STUDY = "cifar"
EXPERIMENTS = ("A", "B")
HEAD_LAYERS = tuple(RESNET_HEAD_RATES)
# The authors' README (github.com/ZJia77/Block-pruning): a reference, not our result.
AUTHORS_README = {"unpruned_acc": 0.9037, "pruned_acc": 0.9073, "pruned_head_sparsity": 0.97}


# ------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class DataConfig:
    """Which images.  ``None`` per class = all (5,000 train / 1,000 test).
    ``image_size`` < 32 mean-pools the augmented images (the quick CPU profile)."""

    train_per_class: Optional[int] = None
    test_per_class: Optional[int] = None
    image_size: int = 32
    synthetic: bool = False  # tests only: class-dependent colour blobs instead of CIFAR-10


@dataclass(frozen=True)
class ModelConfig:
    """ResNet18Cifar; ``authors_softmax`` copies the authors' softmax head feeding
    CrossEntropyLoss (a double softmax).  ``amp``: bf16 autocast on CUDA."""

    hidden: int = 300
    authors_softmax: bool = False
    channels_last: bool = False
    amp: bool = True


@dataclass(frozen=True)
class Phase:
    """One training phase: Adam (L2 weight decay as the authors'), one optimizer per
    phase, learning rate ``lr`` times the schedule (``constant``, or ``cosine``: linear
    warm-up over ``warmup_frac`` of the steps, then cosine decay to 0)."""

    epochs: int
    lr: float
    batch_size: int = 1024
    weight_decay: float = 5e-4
    schedule: str = "constant"
    warmup_frac: float = 0.0

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")

    def train_config(self) -> TrainConfig:
        # "last": the weights of the last epoch go on; the per-epoch test accuracies are
        # still recorded, so the authors' best-on-test selection can be reported beside.
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer="adam",
                           weight_decay=self.weight_decay, select="last")

    def lr_schedule(self) -> Optional[Callable[[float], float]]:
        if self.schedule == "constant":
            return None
        w = self.warmup_frac

        def cosine(progress: float) -> float:
            if progress < w:
                return (progress + 1e-3) / w
            return 0.5 * (1 + math.cos(math.pi * (progress - w) / (1 - w)))

        return cosine


@dataclass(frozen=True)
class HeadPruning:
    """Experiment A: the authors' head-only block pruning, convs and BN frozen."""

    k: int = 2
    rounds: int = 16
    rates: tuple = tuple(RESNET_HEAD_RATES.items())
    retrain: Phase = Phase(epochs=3, lr=1e-4)


@dataclass(frozen=True)
class ConvPruning:
    """Experiment B: block pruning of the convolutions too (all parameters retrained)."""

    ks: tuple = (1, 2, 4, 8)
    rounds: int = 8
    rate: float = 0.3
    include_stem: bool = False
    include_shortcuts: bool = True
    include_head: bool = False
    retrain: Phase = Phase(epochs=2, lr=3e-4, schedule="cosine", warmup_frac=0.1)


@dataclass(frozen=True)
class CifarProfile:
    name: str
    data: DataConfig
    model: ModelConfig
    baseline: Phase
    a: HeadPruning
    b: ConvPruning
    seeds: tuple = (0,)
    eval_batch: int = 5000


PROFILES = {
    # Under a minute on a CPU: 200 training and 100 test images, mean-pooled to 8x8 after
    # augmentation (ResNet18 costs ~16x less than at 32x32); a smoke test of the whole
    # pipeline, its accuracies mean nothing.
    "quick": CifarProfile(
        name="quick",
        data=DataConfig(train_per_class=20, test_per_class=10, image_size=8),
        model=ModelConfig(),
        baseline=Phase(epochs=1, lr=1e-3, batch_size=100),
        a=HeadPruning(rounds=2, retrain=Phase(epochs=1, lr=1e-4, batch_size=100)),
        b=ConvPruning(rounds=2, retrain=Phase(epochs=1, lr=3e-4, batch_size=100, schedule="cosine", warmup_frac=0.1)),
        eval_batch=1000,
    ),
    # One H100: the whole data set on the GPU as uint8, augmented there, bf16 autocast,
    # channels_last, batch 1024 (the authors').  The authors' 300 epochs of Adam lr 1e-4
    # (and up to 300 per pruning round) are shortened to a 30-epoch baseline with Adam
    # lr 1e-3 and a warm-up + cosine schedule, 3 head-retraining epochs per round at the
    # authors' lr 1e-4 (A), and a reduced B: 8 rounds of p = 0.3 (density 70% -> 5.8%)
    # with 2 retraining epochs each.
    "paper": CifarProfile(
        name="paper",
        data=DataConfig(),
        model=ModelConfig(channels_last=True),
        baseline=Phase(epochs=30, lr=1e-3, schedule="cosine", warmup_frac=0.15),
        a=HeadPruning(),
        b=ConvPruning(),
        eval_batch=5000,
    ),
}


def get_profile(profile) -> CifarProfile:
    if isinstance(profile, CifarProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[profile]


def profile_table(profile):
    """The training phases of a profile as a small table (for the notebook)."""
    import pandas as pd

    p = get_profile(profile)
    rows = []
    for what, ph, extra in [
        ("baseline (all parameters)", p.baseline, "from scratch"),
        ("A: head retraining per round", p.a.retrain, f"k={p.a.k}, {p.a.rounds} rounds, p={dict(p.a.rates)}, convs+BN frozen"),
        ("B: retraining per round", p.b.retrain, f"k in {list(p.b.ks)}, {p.b.rounds} rounds, p={p.b.rate} per layer"),
    ]:
        rows.append({"phase": what, "epochs": ph.epochs, "optimizer": "Adam", "lr": ph.lr, "schedule": ph.schedule,
                     "batch": ph.batch_size, "weight decay (L2)": ph.weight_decay, "pruning": extra})
    d = p.data
    images = "all" if d.train_per_class is None else f"{d.train_per_class}/class train, {d.test_per_class}/class test"
    rows.append({**{key: "" for key in rows[0]}, "phase": "data", "pruning": f"{images}, {d.image_size}x{d.image_size}"})
    return pd.DataFrame(rows, dtype=object)


# ------------------------------------------------------------------------ helpers
def resolve_device(device="auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(mcfg: ModelConfig, seed: int, device) -> ResNet18Cifar:
    torch.manual_seed(seed)
    model = ResNet18Cifar(hidden=mcfg.hidden, authors_softmax=mcfg.authors_softmax).to(device)
    if mcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def conv_prune_layers(model: ResNet18Cifar, cfg: ConvPruning) -> list[str]:
    """The layers experiment B prunes (see the module docstring)."""
    names = [n for n in model.conv_layer_names()
             if (cfg.include_stem or n != "backbone.conv1") and (cfg.include_shortcuts or "downsample" not in n)]
    return names + (list(HEAD_LAYERS) if cfg.include_head else [])


def weighted_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def model_density(model: nn.Module) -> float:
    """Kept fraction of all conv and linear weights of the model."""
    return total_density(model, weighted_layers(model))


def _cpu_state(model: nn.Module) -> dict:
    """A CPU copy of the state_dict, masks as bool (half the bytes of a pruned model's
    checkpoint; loading copies them back into the float mask buffers)."""
    return {k: (v.detach().to("cpu", copy=True).bool() if k.endswith(MASK_SUFFIX) else v.detach().to("cpu", copy=True))
            for k, v in model.state_dict().items()}


def derived_seed(seed: int, experiment: str, k: int, rnd: int) -> int:
    """A seed per (seed, experiment, k, round): resumed rounds draw the same numbers."""
    exp = {"baseline": 0, "A": 1, "B": 2}[experiment]
    return (seed * 1_000_003 + exp * 100_003 + k * 1009 + (rnd + 1) * 7) % (2**31 - 1)


@dataclass
class StudyResult:
    """What a run (or the committed CSVs) gives the notebook."""

    rows: "object"  # pandas DataFrame, one row per (experiment, k, round, seed)
    head_blocks: "object" = None  # DataFrame of the surviving head blocks after A's last round
    profile: str = "quick"
    complete: bool = True
    files: list = field(default_factory=list)

    @property
    def source(self) -> str:
        return ", ".join(sorted(set(self.rows["data_source"].dropna()))) if len(self.rows) else ""

    @property
    def seeds(self) -> list:
        return sorted(int(s) for s in set(self.rows["seed"]))

    @property
    def device(self) -> str:
        return ", ".join(sorted(set(self.rows["device"].dropna()))) if len(self.rows) else ""


# --------------------------------------------------------------------- the runner
class CifarRunner:
    """Runs the experiments of one profile on one device, row by row, resumably."""

    def __init__(self, profile, device="auto", data=None, out_dir=None, budget_s=None, tag="all",
                 download=True, log: Callable[[str], None] = print):
        self.p = get_profile(profile)
        self.device = resolve_device(device)
        self.budget_s, self.tag, self.log_fn = budget_s, tag, log
        self.t_start = time.perf_counter()
        self.last_unit: dict[str, float] = {}
        self.stopped = False
        self.out_dir = Path(out_dir) if out_dir is not None else results_dir() / STUDY / "export"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        d = self.p.data
        t0 = time.perf_counter()
        if data is not None:
            train_split, test_split, self.source = data
        elif d.synthetic:
            train_split, test_split, self.source = synthetic_cifar(10 * (d.train_per_class or 10), 10 * (d.test_per_class or 5))
        else:
            train_split, test_split, self.source = load_cifar10_splits(d.train_per_class, d.test_per_class, download=download)
        self.train_split, self.test_split = train_split.to(self.device), test_split.to(self.device)
        self.log(f"data: {self.source}, {len(self.train_split)} train / {len(self.test_split)} test images "
                 f"(uint8 on {self.device}) in {time.perf_counter() - t0:.1f} s")
        self.transform = CifarTransform(self.device, seed=0, image_size=d.image_size, channels_last=self.p.model.channels_last)
        self.prov = provenance(self.device)
        import torchvision

        self.prov["torchvision"] = torchvision.__version__
        self.stores: dict[str, ResultStore] = {}

    # -- plumbing
    def log(self, msg: str) -> None:
        self.log_fn(f"[cifar {self.p.name} {time.perf_counter() - self.t_start:7.1f}s] {msg}")

    def autocast(self):
        if self.p.model.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def base_config(self) -> dict:
        p = self.p
        return {"part": "baseline", "data": p.data, "model": p.model, "baseline": p.baseline, "source": self.source}

    def store(self, part: str) -> ResultStore:
        if part not in self.stores:
            cfg = self.base_config()
            if part != "baseline":
                cfg = {**cfg, "part": part, part.lower(): self.p.a if part == "A" else self.p.b}
            self.stores[part] = ResultStore(STUDY, cfg)
        return self.stores[part]

    def out_of_time(self, unit: str) -> bool:
        if self.budget_s is None:
            return False
        elapsed = time.perf_counter() - self.t_start
        if elapsed + self.last_unit.get(unit, 0.0) > self.budget_s:
            if not self.stopped:
                self.log(f"time budget {self.budget_s:.0f} s reached after {elapsed:.0f} s: stopping before the next "
                         f"{unit} round (rerun the same command to resume from the cached rows and checkpoints)")
            self.stopped = True
        return self.stopped

    def evaluate(self, model) -> float:
        with self.autocast():
            return evaluate(model, self.test_split, batch_size=self.p.eval_batch, transform=self.transform)

    def fit(self, model, phase: Phase, seed: int, params=None) -> dict:
        gen = torch.Generator().manual_seed(seed)
        self.transform.reseed(seed)
        with self.autocast():
            return train(model, self.train_split, phase.train_config(), gen, val=self.test_split,
                         transform=self.transform, params=params, lr_schedule=phase.lr_schedule())

    def make_row(self, experiment, k, rnd, seed, model, layers, hist=None, acc=None, acc_pruned=None, wall_s=0.0) -> dict:
        accs = [h["val_acc"] for h in (hist or {}).get("history", [])]
        if acc is None:
            acc = accs[-1] if accs else self.evaluate(model)
        heads = list(HEAD_LAYERS)
        convs = [n for n in layers if n not in heads]
        return {
            "experiment": experiment, "k": k, "round": rnd, "seed": seed,
            "test_acc": acc,
            "test_acc_best_epoch": max(accs) if accs else acc,
            "test_acc_pruned": acc_pruned,
            "train_loss": hist["history"][-1]["train_loss"] if accs else None,
            "epochs": len(accs),
            "density": total_density(model, layers) if layers else 1.0,
            "density_head": total_density(model, heads),
            "density_conv": total_density(model, convs) if convs else 1.0,
            "density_model": model_density(model),
            "layer_density": layer_densities(model, layers) if layers else {},
            "n_pruned_layers": len(layers),
            "wall_s": wall_s,
            "data_source": self.source,
            "n_train": len(self.train_split), "n_test": len(self.test_split),
            "image_size": self.p.data.image_size,
            "profile": self.p.name,
            "amp": "bf16" if (self.p.model.amp and self.device.type == "cuda") else "off",
            "channels_last": self.p.model.channels_last,
            **self.prov,
        }

    def write(self, store: ResultStore, key, row) -> None:
        store.write_row(key, row)
        self.export()

    # -- baseline
    def baseline(self, seed: int) -> tuple[dict, dict]:
        """The trained, unpruned model (CPU state_dict) and its row; cached."""
        store = self.store("baseline")
        key = {"experiment": "baseline", "k": 0, "round": -1, "seed": seed}
        run_key = {"experiment": "baseline", "seed": seed}
        ckpt = store.load_checkpoint(run_key)
        if ckpt is not None:
            if not store.has(key):
                store.write_row(key, ckpt["row"])
            self.log(f"baseline seed {seed}: cached, test acc {ckpt['row']['test_acc']:.4f}")
            return ckpt["state_dict"], ckpt["row"]
        model = build_model(self.p.model, seed, self.device)
        ph = self.p.baseline
        self.log(f"baseline seed {seed}: training {ph.epochs} epochs (Adam lr {ph.lr}, {ph.schedule}, batch {ph.batch_size})")
        t0 = time.perf_counter()
        hist = self.fit(model, ph, derived_seed(seed, "baseline", 0, -1))
        wall = time.perf_counter() - t0
        row = self.make_row("baseline", 0, -1, seed, model, [], hist=hist, wall_s=wall)
        state = _cpu_state(model)
        store.save_checkpoint(run_key, {"round": -1, "state_dict": state, "row": row})
        self.write(store, key, row)
        self.log(f"baseline seed {seed}: test acc {row['test_acc']:.4f} (best epoch {row['test_acc_best_epoch']:.4f}) "
                 f"in {wall:.0f} s = {wall / max(ph.epochs, 1):.1f} s/epoch")
        return state, row

    def resume(self, store: ResultStore, experiment: str, k: int, seed: int, base_state: dict):
        """(model, next round) from the run's latest checkpoint, or the baseline."""
        run_key = {"experiment": experiment, "k": k, "seed": seed}
        ckpt = store.load_checkpoint(run_key)
        model = build_model(self.p.model, seed, self.device)
        if ckpt is None:
            model.load_state_dict(base_state)
            return model, 0
        load_masked_state_dict(model, ckpt["state_dict"])
        key = {"experiment": experiment, "k": k, "round": ckpt["round"], "seed": seed}
        if not store.has(key):  # killed between checkpoint and row
            self.write(store, key, ckpt["row"])
        self.log(f"{experiment} k={k} seed {seed}: resuming after round {ckpt['round']}")
        return model, ckpt["round"] + 1

    def baseline_copy_row(self, store, experiment, k, seed, layers, base_state, base_row) -> None:
        """Round -1 of a pruning run: the unpruned baseline, with this run's layers."""
        key = {"experiment": experiment, "k": k, "round": -1, "seed": seed}
        if store.has(key):
            return
        model = build_model(self.p.model, seed, self.device)
        model.load_state_dict(base_state)
        row = self.make_row(experiment, k, -1, seed, model, layers, acc=base_row["test_acc"])
        row.update(test_acc_best_epoch=base_row["test_acc_best_epoch"], train_loss=base_row["train_loss"],
                   epochs=base_row["epochs"], wall_s=base_row["wall_s"])
        self.write(store, key, row)

    def prune_round(self, store, experiment, k, rnd, seed, model, pruner: BlockPruner, phase: Phase, layers, head_only):
        t0 = time.perf_counter()
        pruner.step(model)
        acc_pruned = self.evaluate(model)
        params = list(model.head.parameters()) if head_only else None
        hist = self.fit(model, phase, derived_seed(seed, experiment, k, rnd), params=params)
        wall = time.perf_counter() - t0
        row = self.make_row(experiment, k, rnd, seed, model, layers, hist=hist, acc_pruned=acc_pruned, wall_s=wall)
        store.save_checkpoint({"experiment": experiment, "k": k, "seed": seed},
                              {"round": rnd, "state_dict": _cpu_state(model), "row": row})
        self.write(store, {"experiment": experiment, "k": k, "round": rnd, "seed": seed}, row)
        self.last_unit[experiment] = wall
        self.log(f"{experiment} k={k} seed {seed} round {rnd}: density {row['density']:.3%} | acc pruned "
                 f"{acc_pruned:.4f} -> retrained {row['test_acc']:.4f} | {wall:.1f} s")

    # -- experiment A
    def run_a(self, seed: int, base_state: dict, base_row: dict) -> None:
        a = self.p.a
        store = self.store("A")
        rates = dict(a.rates)
        layers = list(rates)
        keys = [{"experiment": "A", "k": a.k, "round": r, "seed": seed} for r in range(-1, a.rounds)]
        if all(store.has(key) for key in keys):
            self.log(f"A seed {seed}: all {len(keys)} rows cached")
            return
        self.baseline_copy_row(store, "A", a.k, seed, layers, base_state, base_row)
        model, start = self.resume(store, "A", a.k, seed, base_state)
        freeze_backbone(model)
        pruner = BlockPruner(a.k, rates)
        for rnd in range(start, a.rounds):
            if self.out_of_time("A"):
                return
            self.prune_round(store, "A", a.k, rnd, seed, model, pruner, a.retrain, layers, head_only=True)

    # -- experiment B
    def run_b(self, seed: int, base_state: dict, base_row: dict) -> None:
        b = self.p.b
        store = self.store("B")
        layers = conv_prune_layers(build_model(self.p.model, seed, "cpu"), b)
        models: dict[int, tuple] = {}
        for k in b.ks:
            self.baseline_copy_row(store, "B", k, seed, layers, base_state, base_row)
        # Round-major order: a run stopped early still has every k down to similar densities.
        for rnd in range(b.rounds):
            for k in b.ks:
                key = {"experiment": "B", "k": k, "round": rnd, "seed": seed}
                if store.has(key) or self.out_of_time("B"):
                    continue
                if k not in models:
                    model, start = self.resume(store, "B", k, seed, base_state)
                    models[k] = (model, BlockPruner(k, {n: b.rate for n in layers}))
                    if start == rnd + 1 and store.has(key):  # killed after the checkpoint: resume wrote the row
                        continue
                    if start != rnd:
                        raise RuntimeError(f"B k={k}: checkpoint is at round {start - 1} but round {rnd} is next; "
                                           f"remove {store.ckpt_path({'experiment': 'B', 'k': k, 'seed': seed})} to redo")
                model, pruner = models[k]
                self.prune_round(store, "B", k, rnd, seed, model, pruner, b.retrain, layers, head_only=False)
            if self.stopped:
                return

    # -- outputs
    def rows(self) -> list[dict]:
        rows = [r for name, s in self.stores.items() if name != "baseline" for r in s.read_rows()]
        return sorted(rows, key=lambda r: (r["experiment"], r["seed"], r["k"], r["round"]))

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows())

    def head_blocks(self, seed: int):
        ckpt = self.store("A").load_checkpoint({"experiment": "A", "k": self.p.a.k, "seed": seed})
        return None if ckpt is None else head_blocks_frame(ckpt["state_dict"], self.p.a.k, ckpt["round"], seed)

    def export(self) -> list[Path]:
        """Write the rows of this command's experiments into ``out_dir``: one JSONL file
        and one combined CSV (dict columns as JSON), rewritten after every row."""
        from .cache import atomic_write_text

        rows = self.rows()
        files = []
        if rows:
            import pandas as pd

            stem = f"cifar_{self.p.name}"
            path = self.out_dir / f"{stem}_rows_{self.tag}.jsonl"
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
            files.append(path)
            path = self.out_dir / f"{stem}_results_{self.tag}.csv"
            atomic_write_text(path, flat_frame(pd.DataFrame(rows)).to_csv(index=False))
            files.append(path)
        return files

    def export_head_blocks(self) -> Optional[Path]:
        from .cache import atomic_write_text

        frames = [f for f in (self.head_blocks(s) for s in self.p.seeds) if f is not None]
        if not frames:
            return None
        import pandas as pd

        path = self.out_dir / f"cifar_{self.p.name}_head_blocks.csv"
        atomic_write_text(path, pd.concat(frames, ignore_index=True).to_csv(index=False))
        return path


def freeze_backbone(model: ResNet18Cifar) -> None:
    """The authors' set-up for head pruning: conv and BN parameters get no gradient
    (BN running statistics still update in train mode)."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)


def flat_frame(df):
    """Rows as a CSV-able frame: dict columns become JSON strings."""
    out = df.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, dict)).any():
            out[col] = out[col].map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
    return out


def head_blocks_frame(state_dict: dict, k: int, rnd: int, seed: int = 0):
    """The surviving k x k blocks of the two head matrices, one row per block, with its
    score (mean |w|), from a (masked) state_dict."""
    import pandas as pd

    from .blocks import block_mask_of, block_scores

    rows = []
    for layer in HEAD_LAYERS:
        orig = state_dict.get(f"{layer}.parametrizations.weight.original")
        if orig is None:
            w, mask = state_dict[f"{layer}.weight"], None
        else:
            mask = state_dict[f"{layer}.parametrizations.weight.0.mask"]
            w = orig * mask
        w = w.float().cpu()
        alive = block_mask_of(mask.cpu() if mask is not None else torch.ones_like(w), k)
        scores = block_scores(w, k)
        for br, bc in torch.nonzero(alive).tolist():
            rows.append({"layer": layer, "k": k, "round": rnd, "seed": seed, "block_row": br, "block_col": bc,
                         "score": float(scores[br, bc]), "rows": w.shape[0], "cols": w.shape[1],
                         "density": float(mask.float().mean()) if mask is not None else 1.0})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- running
def run_study(profile="quick", experiments=("A", "B"), *, seeds=None, ks=None, device="auto", data=None,
              out_dir=None, budget_s=None, download=True, log: Callable[[str], None] = print) -> StudyResult:
    """Run (or read from the cache) the experiments of a profile; returns their rows.

    ``seeds``/``ks`` override the profile's (a different ``ks`` is a different
    configuration, cached apart).  ``data`` = (train, test, source) skips loading."""
    p = get_profile(profile)
    if ks is not None:
        p = dataclasses.replace(p, b=dataclasses.replace(p.b, ks=tuple(ks)))
    if seeds is not None:
        p = dataclasses.replace(p, seeds=tuple(seeds))
    experiments = tuple(experiments)
    bad = [e for e in experiments if e not in EXPERIMENTS]
    if bad or not experiments:
        raise ValueError(f"experiments must be a non-empty subset of {EXPERIMENTS}, got {experiments}")
    tag = experiments[0] if len(experiments) == 1 else "all"
    runner = CifarRunner(p, device=device, data=data, out_dir=out_dir, budget_s=budget_s, tag=tag,
                         download=download, log=log)
    runner.log(f"device {runner.prov['device']}, torch {runner.prov['torch']}, experiments {experiments}, seeds {list(p.seeds)}")
    for e in experiments:
        runner.store(e)
    for seed in p.seeds:
        base_state, base_row = runner.baseline(seed)
        if "A" in experiments and not runner.stopped:
            runner.run_a(seed, base_state, base_row)
        if "B" in experiments and not runner.stopped:
            runner.run_b(seed, base_state, base_row)
    files = runner.export()
    blocks = None
    if "A" in experiments:
        path = runner.export_head_blocks()
        if path is not None:
            files.append(path)
            import pandas as pd

            blocks = pd.read_csv(path)
    rows = runner.frame()
    expected = sum(1 + p.a.rounds for _ in p.seeds) * ("A" in experiments) + \
        sum(len(p.b.ks) * (1 + p.b.rounds) for _ in p.seeds) * ("B" in experiments)
    complete = len(rows) == expected
    runner.log(f"{len(rows)}/{expected} rows{'' if complete else ' (incomplete)'}; wrote {', '.join(str(f) for f in files)}")
    return StudyResult(rows=rows, head_blocks=blocks, profile=p.name, complete=complete, files=files)


def load_results(profile: str = "paper", directory=None) -> Optional[StudyResult]:
    """The committed result CSVs ``cifar_<profile>_results_*.csv`` (and head blocks)
    from ``directory`` (default: the figures folder), or None when there are none."""
    import pandas as pd

    directory = Path(directory) if directory is not None else figures_dir()
    paths = sorted(directory.glob(f"cifar_{profile}_results_*.csv"))
    if not paths:
        return None
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    df = df.drop_duplicates(["experiment", "k", "round", "seed"], keep="last")
    if "layer_density" in df:
        df["layer_density"] = df["layer_density"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
    df = df.sort_values(["experiment", "seed", "k", "round"], kind="stable").reset_index(drop=True)
    blocks_path = directory / f"cifar_{profile}_head_blocks.csv"
    blocks = pd.read_csv(blocks_path) if blocks_path.exists() else None
    return StudyResult(rows=df, head_blocks=blocks, profile=profile, files=paths + ([blocks_path] if blocks is not None else []))


def gpu_command(experiment: str = "A", commit: str = "<commit>", budget_s: int = 540) -> str:
    """The command the GPU machine runs (repo root; data/CIFAR-10-jpeg carried along)."""
    return (f"BLOCKPRUNE_COMMIT={commit} PYTHONUNBUFFERED=1 python3 -m blockprune_utils.sweep --study cifar "
            f"--profile paper --experiment {experiment} --out $OUT --budget-s {budget_s}")


GPU_HOWTO = """\
How the paper-profile numbers are made (one H100, no Jupyter needed there):
  1. in the repo: mkdir -p data && cp -r <a DATA_DIR holding it>/CIFAR-10-jpeg data/   (53 MiB; data/ is git-ignored)
  2. on the GPU machine, in the repo root, carrying data/CIFAR-10-jpeg (DATA_DIR defaults to ./data):
       {cmd_a}
       {cmd_b}
     (each command retrains the 30-epoch baseline unless results/ on that machine already holds it)
  3. copy $OUT/cifar_paper_results_*.csv and $OUT/cifar_paper_head_blocks.csv into figures/ and commit them;
     `make figures-cifar` then plots them."""


# ------------------------------------------------------------------------ plotting
def _log_percent_axis(axis) -> None:
    """A log-scaled percent axis with plain tick labels (100, 50, 20, 10, 5, 2, 1)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis.set_major_locator(FixedLocator([100, 70, 50, 30, 20, 10, 5, 3, 2, 1, 0.5]))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _k_label(k) -> str:
    return "k=1 (element-wise)" if int(k) == 1 else f"k={int(k)} blocks"


def table_a(df):
    """Experiment A per round: head density and test accuracies (percent)."""
    a = df[df["experiment"] == "A"].copy()
    out = a[["seed", "round"]].copy()
    out["head density %"] = 100 * a["density"]
    for col, name in [("test_acc_pruned", "acc after pruning %"), ("test_acc", "acc after retraining %"),
                      ("test_acc_best_epoch", "best-epoch acc % (authors' selection)")]:
        out[name] = 100 * a[col]
    return out.round(2).reset_index(drop=True)


def table_b(df):
    """Experiment B: test accuracy (percent) per round and k, with the density reached."""
    b = df[df["experiment"] == "B"].copy()
    b["label"] = b["k"].map(_k_label)
    acc = b.pivot_table(index="round", columns="label", values="test_acc", aggfunc="mean") * 100
    dens = b.groupby("round")["density"].mean() * 100
    acc.insert(0, "density % (pruned layers)", dens)
    return acc.round(2)


def plot_head_pruning(df, reference: bool = False):
    """A: accuracy vs head density (left, log axis, pruning goes right) and per-layer
    density per round (right)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    a = df[df["experiment"] == "A"].copy()
    a["head density %"] = 100 * a["density"]
    long = a.melt(id_vars=["head density %", "round", "seed"],
                  value_vars=["test_acc", "test_acc_best_epoch", "test_acc_pruned"], var_name="measure", value_name="acc")
    long = long.dropna(subset=["acc"])
    long["test accuracy %"] = 100 * long["acc"]
    long["measure"] = long["measure"].map({"test_acc": "after retraining (last epoch)",
                                           "test_acc_best_epoch": "best epoch on test (authors' selection)",
                                           "test_acc_pruned": "right after pruning"})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    sns.lineplot(data=long, x="head density %", y="test accuracy %", hue="measure", style="measure", markers=True,
                 dashes=False, ax=axes[0])
    axes[0].set_xscale("log")
    _log_percent_axis(axes[0].xaxis)
    axes[0].invert_xaxis()
    if reference:
        axes[0].scatter([100, 100 * (1 - AUTHORS_README["pruned_head_sparsity"])],
                        [100 * AUTHORS_README["unpruned_acc"], 100 * AUTHORS_README["pruned_acc"]],
                        marker="*", s=160, color="black", zorder=5, label="authors' README (their CIFAR-10 run)")
        axes[0].legend(fontsize=8)
    axes[0].set_title("A: FC head block-pruned (k=2), convolutions frozen")
    dens = pd.DataFrame([{"round": r, "layer": layer, "density %": 100 * d}
                         for r, ld in zip(a["round"], a["layer_density"]) for layer, d in (ld or {}).items()])
    base = a[a["round"] == -1]
    if len(base):
        dens = pd.concat([dens, pd.DataFrame([{"round": -1, "layer": n, "density %": 100.0} for n in HEAD_LAYERS])])
    sns.lineplot(data=dens, x="round", y="density %", hue="layer", marker="o", ax=axes[1])
    axes[1].set_yscale("log")
    _log_percent_axis(axes[1].yaxis)
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_title("A: per-layer density per round (p=0.2 of the surviving blocks)")
    fig.tight_layout()
    return fig


def plot_conv_pruning(df):
    """B: test accuracy vs density of the pruned layers, one line per k; after
    retraining (left) and right after pruning (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    b = df[df["experiment"] == "B"].copy()
    b["density %"] = 100 * b["density"]
    b["granularity"] = b["k"].map(_k_label)
    order = [_k_label(k) for k in sorted(b["k"].unique())]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, col, title in [(axes[0], "test_acc", "after retraining"), (axes[1], "test_acc_pruned", "right after pruning")]:
        d = b.dropna(subset=[col]).copy()
        d["test accuracy %"] = 100 * d[col]
        sns.lineplot(data=d, x="density %", y="test accuracy %", hue="granularity", hue_order=order, marker="o", ax=ax)
        ax.set_xscale("log")
        _log_percent_axis(ax.xaxis)
        ax.invert_xaxis()
        ax.set_title(f"B: convolutions block-pruned, {title}")
    fig.tight_layout()
    return fig


def plot_head_blocks(blocks):
    """The pruned head matrices at block resolution: surviving blocks coloured by
    their score (mean |w|), pruned blocks white."""
    import matplotlib.pyplot as plt
    import numpy as np

    layers = [name for name in HEAD_LAYERS if name in set(blocks["layer"])]
    seed = int(blocks["seed"].min())
    blocks = blocks[blocks["seed"] == seed]
    fig, axes = plt.subplots(len(layers), 1, figsize=(11, 7), gridspec_kw={"height_ratios": [4, 1][: len(layers)]})
    axes = np.atleast_1d(axes)
    for ax, layer in zip(axes, layers):
        d = blocks[blocks["layer"] == layer]
        k, rows, cols = int(d["k"].iloc[0]), int(d["rows"].iloc[0]), int(d["cols"].iloc[0])
        grid = np.full((math.ceil(rows / k), math.ceil(cols / k)), np.nan)
        grid[d["block_row"].to_numpy(), d["block_col"].to_numpy()] = d["score"].to_numpy()
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                       extent=(0, cols, rows, 0))
        ax.set_title(f"{layer}: {rows}x{cols}, k={k}, density {100 * d['density'].iloc[0]:.1f}% "
                     f"after round {int(d['round'].iloc[0])} ({len(d)} blocks kept)")
        ax.grid(False)
        ax.set_xlabel("input feature")
        ax.set_ylabel("output unit")
        fig.colorbar(im, ax=ax, label="block score (mean |w|)")
    fig.tight_layout()
    return fig


def caption(base: str, rows, profile: str) -> str:
    """The caption of a figure, with the settings read off the result rows."""
    source = ", ".join(sorted(set(rows["data_source"].dropna())))
    tail = f" Data: {source}. Profile {profile}; seeds {sorted(int(s) for s in set(rows['seed']))}."
    if base == "head_pruning":
        a = rows[rows["experiment"] == "A"]
        n, k = int(a["round"].max()) + 1, int(a["k"].iloc[0])
        return (f"Experiment A (the authors' set-up): ResNet18's FC head (head.0 300x512, head.2 10x300) block-pruned "
                f"with k={k}, {n} rounds of p=0.2 per layer, convolutions and BN frozen, head retrained after each round; "
                f"test accuracy vs head density (log axis), and per-layer density per round." + tail)
    if base == "conv_pruning":
        b = rows[rows["experiment"] == "B"]
        ks = sorted(int(k) for k in set(b["k"]))
        last = b.sort_values("round")["layer_density"].iloc[-1]
        last = json.loads(last) if isinstance(last, str) else last
        head = "the FC head pruned too" if any(n.startswith("head.") for n in last) else "the FC head dense"
        return (f"Experiment B (beyond the paper): every ResNet18 conv except the stem, 1x1 shortcuts included, "
                f"block-pruned per layer with k in {ks} (k=1: element-wise), {int(b['round'].max()) + 1} rounds, {head}, "
                f"all parameters retrained after each round; test accuracy vs density of the pruned layers, after "
                f"retraining and right after pruning." + tail)
    if base == "head_blocks":
        return ("Experiment A: surviving blocks of the ResNet18 head matrices after the last pruning round, coloured by "
                "block score (mean |w|); white = pruned." + tail)
    raise ValueError(f"no caption for {base!r}")


def figure_name(base: str, profile: str) -> str:
    """``cifar_<base>`` for the paper profile, ``cifar_<base>_<profile>`` otherwise."""
    return f"cifar_{base}" if profile == "paper" else f"cifar_{base}_{profile}"


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m blockprune_utils.sweep --study cifar",
        description="ResNet18 on CIFAR-10: A = the authors' head-only block pruning, B = convolutions too. "
                    "Rows are cached under RESULTS_DIR/cifar; finished rows are skipped, killed runs resume.",
    )
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--experiment", choices=["A", "B", "all"], default="all")
    ap.add_argument("--out", type=Path, default=None, help="folder for the rows (JSONL) and the combined CSV "
                    "(default RESULTS_DIR/cifar/export)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--ks", type=int, nargs="+", default=None, help="override B's block sizes")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no pruning round that would end past this many seconds (rerun to resume)")
    ap.add_argument("--no-download", action="store_true", help="never try torchvision's download")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.profile == "paper" and device.type != "cuda" and args.device == "auto":
        print("the paper profile is made for a CUDA GPU (it would take days on a CPU); pass --device cpu to force it",
              file=sys.stderr)
        return 2
    out = args.out or results_dir() / STUDY / "export"
    out.mkdir(parents=True, exist_ok=True)
    experiments = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    log_path = out / f"cifar_{args.profile}_log_{args.experiment}.txt"
    with open(log_path, "a") as log_file:
        def log(msg: str) -> None:
            print(msg, flush=True)
            log_file.write(msg + "\n")
            log_file.flush()

        log(f"command: python -m blockprune_utils.sweep --study cifar {' '.join(argv if argv is not None else sys.argv[1:])}")
        try:
            res = run_study(args.profile, experiments, seeds=args.seeds, ks=args.ks, device=device, out_dir=out,
                            budget_s=args.budget_s, download=not args.no_download, log=log)
        except FileNotFoundError as err:
            log(f"error: {err}")
            return 1
        log(f"data source: {res.source}; {'complete' if res.complete else 'INCOMPLETE: rerun the same command to resume'}")
        for f in res.files + [log_path]:
            log(f"  wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
