"""Data sets as in-memory tensors (decoded once; no per-sample Python work).

All loaders read from ``DATA_DIR`` (see :mod:`blockprune_utils.paths`).  When the
files are missing torchvision's download is tried (it works on a machine that is
online); when that fails too, the error names the files needed and how to get them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .infra.paths import data_dir

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


@dataclass
class Split:
    """Inputs and labels of one split, as tensors."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, idx) -> "Split":
        return Split(self.x[idx], self.y[idx])


def _missing_data_error(name: str, root: Path, files, cause: Exception | None) -> FileNotFoundError:
    lines = "\n".join(f"  {root / f}" for f in files)
    return FileNotFoundError(
        f"{name} is not in DATA_DIR={root.parent.parent if name != 'CIFAR-10' else root} and could not be downloaded"
        f"{f' ({type(cause).__name__}: {cause})' if cause else ''}.\nNeeded files:\n{lines}\n"
        "Get them by running once on a machine with internet (torchvision downloads them there), "
        "or set DATA_DIR to a folder that already holds them (for example DATA_DIR=../shared/data)."
    )


def load_mnist_like(name: str = "mnist", train: bool = True, root=None, download: bool = True) -> Split:
    """MNIST or Fashion-MNIST as float tensors in [-1, 1], shape (N, 1, 28, 28).

    Equals torchvision's ``ToTensor()`` then ``Normalize([0.5], [0.5])`` (the authors')."""
    import torchvision

    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    root = Path(root) if root is not None else data_dir()
    cls = getattr(torchvision.datasets, DATASETS[name])
    try:
        ds = cls(root=str(root), train=train, download=False)
    except RuntimeError as first:
        if not download:
            raise _missing_data_error(name, root / DATASETS[name] / "raw", MNIST_FILES, first) from None
        try:
            ds = cls(root=str(root), train=train, download=True)
        except (OSError, RuntimeError, ValueError) as err:  # no network (URLError is an OSError), or a broken mirror
            raise _missing_data_error(name, root / DATASETS[name] / "raw", MNIST_FILES, err) from err
    x = ds.data.unsqueeze(1).to(torch.float32).div_(255.0).mul_(2.0).sub_(1.0)
    return Split(x, ds.targets.clone().long())


def train_val_split(split: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """A seeded random hold-out of ``val_size`` samples from a training split."""
    if not 0 <= val_size < len(split):
        raise ValueError(f"val_size must be in [0, {len(split)}), got {val_size}")
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(perm[val_size:]), split.subset(perm[:val_size])
