"""Data sets as in-memory tensors (decoded once; no per-sample Python work).

All loaders read from ``DATA_DIR`` (see :mod:`blockprune_utils.paths`).  When the
files are missing torchvision's download is tried (it works on a machine that is
online); when that fails too, the error names the files needed and how to get them.
A file that is there but damaged (empty, truncated, not an IDX file, unreadable)
raises :class:`DataFileError` naming the file and what is wrong with it.
"""
from __future__ import annotations

import math
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


class DataFileError(ValueError):
    """A data file that exists but cannot be used; the message names it and says why."""


def _idx_size(path: Path, rank: int, shape: tuple = ()) -> int | None:
    """The number of items in the IDX file ``path`` of ``rank``-d unsigned bytes
    (items of ``shape``), checked against its header; None when it does not exist."""
    fix = "replace it with a good copy (or delete it and run once on a machine with internet)"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4 + 4 * rank)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DataFileError(f"data file {path} cannot be read ({type(err).__name__}: {err.strerror or err})") from None
    if size == 0:
        raise DataFileError(f"data file {path} is empty (0 bytes): {fix}")
    if len(head) < 4 + 4 * rank:
        raise DataFileError(f"data file {path} is truncated: {size} bytes, less than its {4 + 4 * rank}-byte header; {fix}")
    magic = int.from_bytes(head[:4], "big")
    if magic != 0x800 + rank:
        raise DataFileError(f"data file {path} is not an IDX file of {rank}-d unsigned bytes (it starts with "
                            f"{head[:4].hex()}, expected {0x800 + rank:08x}); {fix}")
    dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(rank))
    if dims[1:] != shape:
        raise DataFileError(f"data file {path} holds items of shape {dims[1:]}, expected {shape}; {fix}")
    want = 4 + 4 * rank + math.prod(dims)
    if size != want:
        raise DataFileError(f"data file {path} has {size:,} bytes, but its header ({dims[0]:,} items) needs {want:,}: "
                            f"{'truncated' if size < want else 'extra bytes at the end'}; {fix}")
    return dims[0]


def check_mnist_files(raw: Path, train: bool) -> None:
    """Check the images and labels of one split in ``raw`` (MNIST's IDX files) when
    they are there: :class:`DataFileError` names a damaged file."""
    prefix = "train" if train else "t10k"
    images = _idx_size(raw / f"{prefix}-images-idx3-ubyte", 3, (28, 28))
    labels = _idx_size(raw / f"{prefix}-labels-idx1-ubyte", 1)
    if images is not None and labels is not None and images != labels:
        raise DataFileError(f"data files in {raw} do not match: {prefix}-images-idx3-ubyte holds {images:,} images, "
                            f"{prefix}-labels-idx1-ubyte {labels:,} labels")


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
    check_mnist_files(root / DATASETS[name] / "raw", train)
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
