"""CIFAR-10 as in-memory uint8 tensors, and batched on-device augmentation.

Data sources, in this order (all under ``DATA_DIR``, see :mod:`blockprune_utils.infra.paths`):

1. ``DATA_DIR/cifar-10-batches-py``: torchvision's ``CIFAR10`` (the original data);
   source label ``"CIFAR-10"``;
2. ``DATA_DIR/CIFAR-10-jpeg/{train,test}/<class>/*.jpg``: an image-folder copy,
   re-encoded as JPEG (lossy); sorted class names give CIFAR-10's label order;
   source label ``"CIFAR-10 (JPEG copy)"``: every number made from it must say so;
3. with ``download=True``, torchvision downloads (1) into ``DATA_DIR`` (needs internet).

The images are decoded once into a uint8 tensor (N, 3, 32, 32), batched with
``torchvision.io.decode_jpeg`` (PIL as fallback), and the JPEG decode is cached as a
``.pt`` file under ``RESULTS_DIR/cache``.  The whole set stays uint8 (150 MB for the
50,000 training images), so it fits on a GPU and is augmented there:
:class:`CifarTransform` is the ``transform(x, train)`` callable that
:func:`blockprune_utils.train.train` and :func:`blockprune_utils.train.evaluate`
apply to each minibatch: random crop 32 with zero padding 4 and a random horizontal
flip (one gather for the whole batch, no per-sample Python), then the authors'
normalisation.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data import Split
from ...infra.paths import data_dir, results_dir
from ...infra.store import atomic_write_bytes

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)  # the authors' normalisation (kuangliu's pytorch-cifar values)
STD = (0.2023, 0.1994, 0.2010)
SOURCE_ORIGINAL = "CIFAR-10"
SOURCE_JPEG = "CIFAR-10 (JPEG copy)"
SOURCE_SYNTHETIC = "synthetic CIFAR-like blobs (tests only)"
BATCHES_DIR = "cifar-10-batches-py"
JPEG_DIR = "CIFAR-10-jpeg"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def has_original(root) -> bool:
    return (Path(root) / BATCHES_DIR / "batches.meta").exists()


def has_jpeg_copy(root) -> bool:
    base = Path(root) / JPEG_DIR
    return (base / "train").is_dir() and (base / "test").is_dir()


def missing_cifar_error(root: Path, cause: Exception | None = None) -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 is not in DATA_DIR={root}"
        f"{f' and could not be downloaded ({type(cause).__name__}: {cause})' if cause else ''}.\n"
        "Needed, either of:\n"
        f"  {root / BATCHES_DIR}/  (torchvision's CIFAR10 files: data_batch_1..5, test_batch, batches.meta);\n"
        "     on a machine with internet, load_cifar10(download=True) (the default) or\n"
        "     `python -c \"import torchvision; torchvision.datasets.CIFAR10('DATA_DIR', download=True)\"` fetches them;\n"
        f"  {root / JPEG_DIR}/{{train,test}}/<class>/*.jpg  (an image-folder copy, one folder per class);\n"
        "Or set DATA_DIR to a folder that already holds one of them (for example DATA_DIR=../shared/data)."
    )


# ----------------------------------------------------------------------------- loading
def _first_per_class(y: torch.Tensor, per_class: int | None) -> torch.Tensor:
    """Indices of the first ``per_class`` samples of every class, in original order."""
    if per_class is None:
        return torch.arange(len(y))
    keep = torch.zeros(len(y), dtype=torch.bool)
    for c in range(len(CLASSES)):
        keep[torch.nonzero(y == c).reshape(-1)[:per_class]] = True
    return torch.nonzero(keep).reshape(-1)


def _load_original(root: Path, train: bool, per_class: int | None, download: bool) -> Split:
    import torchvision

    ds = torchvision.datasets.CIFAR10(root=str(root), train=train, download=download)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    y = torch.as_tensor(ds.targets, dtype=torch.long)
    idx = _first_per_class(y, per_class)
    return Split(x[idx], y[idx])


def jpeg_files(root: Path, train: bool, per_class: int | None = None) -> tuple[list[Path], torch.Tensor]:
    """The image files of one split of the JPEG copy (sorted), with their labels."""
    split_dir = Path(root) / JPEG_DIR / ("train" if train else "test")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if tuple(classes) != CLASSES:
        raise ValueError(f"{split_dir} should hold one folder per CIFAR-10 class {list(CLASSES)}, found {classes}")
    files, labels = [], []
    for label, name in enumerate(classes):
        names = sorted(f for f in os.listdir(split_dir / name) if f.lower().endswith(IMAGE_EXTS))
        if per_class is not None:
            names = names[:per_class]
        files += [split_dir / name / f for f in names]
        labels += [label] * len(names)
    return files, torch.tensor(labels, dtype=torch.long)


def decode_images(files, chunk: int = 4096) -> torch.Tensor:
    """Decode image files into one uint8 tensor (N, 3, 32, 32).

    ``torchvision.io.decode_jpeg`` decodes a list of JPEGs in one call (about 30 us
    an image); any file it cannot take (another format, an old torchvision) goes
    through PIL.  Both give identical pixels (libjpeg)."""
    out = torch.empty((len(files), 3, 32, 32), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():  # torchvision >= 0.29 deprecates its decoders (for TorchCodec)
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # a torchvision without them: PIL decodes everything
        decode_jpeg = None
    for start in range(0, len(files), chunk):
        part = files[start : start + chunk]
        imgs = None
        if decode_jpeg is not None:
            raw = [torch.frombuffer(bytearray(Path(f).read_bytes()), dtype=torch.uint8) for f in part]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    imgs = decode_jpeg(raw, mode=ImageReadMode.RGB)
            except (RuntimeError, ValueError):
                imgs = None
        if imgs is None:
            imgs = [_decode_pil(f) for f in part]
        for i, (f, img) in enumerate(zip(part, imgs)):
            if tuple(img.shape) != (3, 32, 32):
                raise ValueError(f"{f} decodes to shape {tuple(img.shape)}, expected a 32x32 RGB image")
            out[start + i] = img
    return out


def _decode_pil(path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def _cache_file(root: Path, train: bool, per_class: int | None) -> Path:
    split_dir = root / JPEG_DIR / ("train" if train else "test")
    stamp = f"{split_dir.resolve()}|{per_class}|" + "|".join(
        f"{d.name}:{d.stat().st_mtime_ns}" for d in sorted(split_dir.iterdir()) if d.is_dir()
    )
    digest = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    part = "train" if train else "test"
    return results_dir() / "cache" / f"cifar10-jpeg-{part}-{per_class or 'all'}-{digest}.pt"


def _load_jpeg(root: Path, train: bool, per_class: int | None, cache: bool) -> Split:
    path = _cache_file(root, train, per_class) if cache else None
    if path is not None and path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            return Split(saved["x"], saved["y"])
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError):
            pass  # a damaged cache file is simply rebuilt
    files, y = jpeg_files(root, train, per_class)
    if not files:
        raise FileNotFoundError(f"no images under {root / JPEG_DIR / ('train' if train else 'test')}")
    split = Split(decode_images(files), y)
    if path is not None:
        buf = io.BytesIO()
        torch.save({"x": split.x, "y": split.y, "source": SOURCE_JPEG}, buf)
        atomic_write_bytes(path, buf.getvalue())
    return split


def load_cifar10(train: bool = True, root=None, per_class: int | None = None, download: bool = True,
                 cache: bool = True) -> tuple[Split, str]:
    """One split of CIFAR-10 as a uint8 :class:`~blockprune_utils.data.Split` (N, 3, 32, 32), and its source label.

    ``per_class`` keeps the first that many images of every class (quick runs).
    ``cache`` stores the JPEG decode under ``RESULTS_DIR/cache``."""
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1 or None, got {per_class}")
    root = Path(root) if root is not None else data_dir()
    if has_original(root):
        return _load_original(root, train, per_class, download=False), SOURCE_ORIGINAL
    if has_jpeg_copy(root):
        return _load_jpeg(root, train, per_class, cache), SOURCE_JPEG
    if not download:
        raise missing_cifar_error(root)
    try:
        return _load_original(root, train, per_class, download=True), SOURCE_ORIGINAL
    except (OSError, RuntimeError, ValueError, tarfile.TarError) as err:  # offline (URLError is an OSError), or a broken mirror
        raise missing_cifar_error(root, err) from None


def load_cifar10_splits(train_per_class=None, test_per_class=None, root=None, download: bool = True,
                        cache: bool = True) -> tuple[Split, Split, str]:
    """Train and test splits and the source label (``"CIFAR-10"`` or ``"CIFAR-10 (JPEG copy)"``)."""
    train, source = load_cifar10(True, root, train_per_class, download, cache)
    test, source_test = load_cifar10(False, root, test_per_class, download, cache)
    if source != source_test:
        raise RuntimeError(f"train split read from {source!r} but test split from {source_test!r}")
    return train, test, source


def synthetic_cifar(n_train: int = 100, n_test: int = 50, seed: int = 0) -> tuple[Split, Split, str]:
    """A tiny learnable stand-in (class-dependent colour blobs) for unit tests."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(10, 3, 32, 32, generator=g) * 255

    def make(n):
        y = torch.arange(n) % 10
        x = (centres[y] + 40 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 255).to(torch.uint8)
        return Split(x, y)

    return make(n_train), make(n_test), SOURCE_SYNTHETIC


# ------------------------------------------------------------------------ augmentation
def crop_flip(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Zero-pad every image by ``padding``, cut the HxW window at (oy[i], ox[i]) and
    mirror it left-right where ``flip[i]``: one gather for the whole batch.

    Equals torchvision's ``RandomCrop(H, padding)`` then ``RandomHorizontalFlip`` with
    those draws (the fill is 0, i.e. black before normalisation)."""
    B, C, H, W = x.shape
    xp = F.pad(x, (padding, padding, padding, padding)) if padding else x
    dev = x.device
    ar_h = torch.arange(H, device=dev)
    ar_w = torch.arange(W, device=dev)
    rows = oy.to(dev).reshape(B, 1) + ar_h  # (B, H)
    cols = ox.to(dev).reshape(B, 1) + torch.where(flip.to(dev).reshape(B, 1), W - 1 - ar_w, ar_w)  # (B, W)
    b = torch.arange(B, device=dev).reshape(B, 1, 1, 1)
    c = torch.arange(C, device=dev).reshape(1, C, 1, 1)
    return xp[b, c, rows.reshape(B, 1, H, 1), cols.reshape(B, 1, 1, W)]


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None,
                     flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding) and random horizontal flip of a batch, on x's device."""
    B = x.shape[0]
    kw = {"generator": generator, "device": x.device}
    oy = torch.randint(0, 2 * padding + 1, (B,), **kw)
    ox = torch.randint(0, 2 * padding + 1, (B,), **kw)
    fl = torch.randint(0, 2, (B,), **kw).bool() if flip else torch.zeros(B, dtype=torch.bool, device=x.device)
    return crop_flip(x, oy, ox, fl, padding)


def normalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 [0, 255] -> float32, ToTensor() then Normalize(mean, std)."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).reshape(1, -1, 1, 1)
    return (x.to(torch.float32) / 255.0 - m) / s


class CifarTransform:
    """``transform(x, train)`` for :func:`blockprune_utils.train.train` and :func:`~blockprune_utils.train.evaluate`.

    ``x`` is a uint8 batch (B, 3, 32, 32) already on the device.  Training batches get
    the random crop (zero padding ``padding``) and horizontal flip, drawn from this
    object's own generator (seeded, on the batch's device); every batch is then
    normalised with the authors' mean/std.  ``image_size`` < 32 shrinks the result:
    a mean-pool when it divides 32 (the quick profile's 8, the cpu profile's 16), else
    an antialiased bilinear resize (24); ``channels_last`` returns NHWC-strided tensors
    (faster convolutions)."""

    def __init__(self, device="cpu", seed: int = 0, padding: int = 4, flip: bool = True, image_size: int = 32,
                 channels_last: bool = False):
        if not 1 <= image_size <= 32:
            raise ValueError(f"image_size must be in 1..32, got {image_size}")
        self.device = torch.device(device)
        self.padding, self.flip, self.image_size, self.channels_last = padding, flip, image_size, channels_last
        self.generator = torch.Generator(device=self.device)
        self.reseed(seed)

    def reseed(self, seed: int) -> "CifarTransform":
        self.generator.manual_seed(int(seed))
        return self

    def __call__(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        if train and (self.padding or self.flip):
            x = random_crop_flip(x, self.padding, self.generator, self.flip)
        x = normalise(x)
        size, want = x.shape[-1], self.image_size
        if want != size:
            x = (F.avg_pool2d(x, size // want) if size % want == 0 else
                 F.interpolate(x, size=(want, want), mode="bilinear", antialias=True, align_corners=False))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
