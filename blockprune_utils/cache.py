"""Results cache: tidy rows stored under a hash of the run configuration.

Layout: ``<results>/<study>/<config-hash>/``, holding ``config.json`` (the
configuration the hash was taken of), ``rows/<key>.json`` (one file per finished
result row) and ``ckpt/<run>.pt`` (the latest checkpoint of a run, to resume it).
Every file is written to a temporary name in the same folder, then renamed, so a
killed sweep never leaves a half-written row; a rerun skips the rows it finds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .paths import REPO_ROOT, results_dir


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def config_hash(config) -> str:
    """A short, stable hash of a (dataclass or dict) configuration."""
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode())


def atomic_torch_save(obj, path: Path) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def key_name(key: Mapping[str, Any]) -> str:
    """File-name form of a row key, e.g. ``k=2__round=3__seed=0__variant=block``."""
    for k, v in key.items():
        if not str(v).replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"row key {k}={v!r} must be letters, digits, '-', '_' or '.'")
    return "__".join(f"{k}={key[k]}" for k in sorted(key))


class ResultStore:
    """Rows and checkpoints of one study configuration."""

    def __init__(self, study: str, config, root: Path | None = None):
        self.config = _plain(config)
        self.hash = config_hash(config)
        self.dir = Path(root or results_dir()) / study / self.hash
        cfg_path = self.dir / "config.json"
        if not cfg_path.exists():
            atomic_write_text(cfg_path, json.dumps(self.config, indent=2, sort_keys=True))

    def row_path(self, key) -> Path:
        return self.dir / "rows" / f"{key_name(key)}.json"

    def has(self, key) -> bool:
        return self.row_path(key).exists()

    def write_row(self, key, row: Mapping[str, Any]) -> None:
        full = {**_plain(dict(row)), **dict(key), "config_hash": self.hash}
        atomic_write_text(self.row_path(key), json.dumps(full, sort_keys=True))

    def read_rows(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.dir / "rows").glob("*.json"))]

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.read_rows())

    def ckpt_path(self, run_key) -> Path:
        return self.dir / "ckpt" / f"{key_name(run_key)}.pt"

    def save_checkpoint(self, run_key, obj) -> None:
        atomic_torch_save(obj, self.ckpt_path(run_key))

    def load_checkpoint(self, run_key):
        path = self.ckpt_path(run_key)
        return torch.load(path, weights_only=False) if path.exists() else None


def git_commit() -> str:
    """The repo's commit, with ``-dirty`` when tracked source files differ from it
    (the rendered outputs under ``figures/`` do not count)."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()

        sha = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)figures")
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BLOCKPRUNE_COMMIT", "unknown")


def provenance(device: str | torch.device = "cpu") -> dict:
    """What a result row says about where it was made."""
    import numpy
    import scipy

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": f"{dev.type}:{name}",
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "commit": git_commit(),
    }
