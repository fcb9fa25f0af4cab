"""Results store: tidy rows kept under a hash of the run configuration.

Layout: ``<results>/<study>/<config-hash>/`` holds ``config.json`` (the
configuration the hash was taken of), ``rows/<key>.json`` (one file per finished
result row, named by its key) and ``ckpt/<run>.pt`` (the latest checkpoint of a run,
to resume it).  Every file is written to a temporary name in the same folder, then
renamed, so a killed process never leaves a torn file, and two processes that
finish the same row at once leave one whole copy of it.

A row has the columns its study declares in a :class:`Schema` (key columns, value
columns) plus the provenance columns and ``config_hash``.  A row file that cannot be
read as such a row (truncated, edited by hand, ``{}``, or written under another
schema) is moved aside to ``rejected/`` with one warning naming the file, and the
row counts as missing, so it is computed again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .paths import results_dir
from .provenance import PROVENANCE_COLUMNS


def plain(obj):
    """Dataclasses, mappings and sequences as plain JSON-able values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def config_hash(config) -> str:
    """A short, stable hash of a (dataclass or dict) configuration."""
    text = json.dumps(plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
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


def key_name(key: Mapping[str, Any]) -> str:
    """File-name form of a row key, e.g. ``k=2__round=3__seed=0__variant=block``."""
    for k, v in key.items():
        if not str(v).replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"row key {k}={v!r} must be letters, digits, '-', '_' or '.'")
    return "__".join(f"{k}={key[k]}" for k in sorted(key))


@dataclasses.dataclass(frozen=True)
class Schema:
    """The columns of a study's rows: ``key`` names a row (its sweep axes), ``values``
    are what was measured (``None`` where a column does not apply).  Every stored row
    also has the provenance columns and ``config_hash``."""

    key: tuple
    values: tuple

    @property
    def columns(self) -> tuple:
        return (*self.key, *self.values, *PROVENANCE_COLUMNS, "config_hash")

    def check_key(self, key: Mapping) -> dict:
        if set(key) != set(self.key):
            raise ValueError(f"row key has columns {sorted(key)}, expected {sorted(self.key)}")
        return dict(key)

    def make(self, key: Mapping, values: Mapping, prov: Mapping, config_hash: str) -> dict:
        """A full row; ``values`` must name exactly the schema's value columns."""
        key = self.check_key(key)
        missing, extra = set(self.values) - set(values), set(values) - set(self.values)
        if missing or extra:
            raise ValueError(f"row values do not match the schema: missing {sorted(missing)}, unexpected {sorted(extra)}")
        return {**plain(dict(values)), **key, **{c: prov.get(c) for c in PROVENANCE_COLUMNS}, "config_hash": config_hash}

    def conforms(self, row) -> bool:
        return isinstance(row, dict) and set(row) == set(self.columns)


class ResultStore:
    """Rows and checkpoints of one study configuration."""

    def __init__(self, study: str, config, schema: Schema, root: Path | None = None):
        self.config = plain(config)
        self.schema = schema
        self.hash = config_hash(config)
        self.dir = Path(root or results_dir()) / study / self.hash
        cfg_path = self.dir / "config.json"
        if not cfg_path.exists():
            atomic_write_text(cfg_path, json.dumps(self.config, indent=2, sort_keys=True))

    # -- rows
    def row_path(self, key) -> Path:
        return self.dir / "rows" / f"{key_name(key)}.json"

    def _reject(self, path: Path, why: str) -> None:
        dest = self.dir / "rejected" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        while dest.exists():
            n += 1
            dest = dest.with_name(f"{path.name}.{n}")
        try:
            os.replace(path, dest)
        except FileNotFoundError:  # another process moved it first
            return
        warnings.warn(f"unreadable result row {path} ({why}): moved to {dest}; it will be computed again", stacklevel=3)

    def _read(self, path: Path) -> dict | None:
        try:
            row = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            self._reject(path, f"not JSON: {err}")
            return None
        if not self.schema.conforms(row):
            have = sorted(row) if isinstance(row, dict) else type(row).__name__
            self._reject(path, f"columns {have} are not this study's row schema")
            return None
        return row

    def get(self, key) -> dict | None:
        """The finished row of ``key``, or None (missing or unreadable)."""
        return self._read(self.row_path(self.schema.check_key(key)))

    def has(self, key) -> bool:
        return self.get(key) is not None

    def put(self, key, values: Mapping, prov: Mapping) -> dict:
        """Store the row of ``key`` (atomically); returns the full row."""
        row = self.schema.make(key, values, prov, self.hash)
        atomic_write_text(self.row_path(key), json.dumps(row, sort_keys=True))
        return row

    def cached(self, key, compute: Callable[[], Mapping], prov: Mapping) -> dict:
        """The row of ``key``: read it, or compute its values, store and return it."""
        row = self.get(key)
        return row if row is not None else self.put(key, compute(), prov)

    def rows(self) -> list[dict]:
        folder = self.dir / "rows"
        found = (self._read(p) for p in sorted(folder.glob("*.json"))) if folder.exists() else ()
        return [r for r in found if r is not None]

    def frame(self):
        """All readable rows as a DataFrame with the schema's columns, in order."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(self.schema.columns))

    # -- checkpoints
    def ckpt_path(self, run_key) -> Path:
        return self.dir / "ckpt" / f"{key_name(run_key)}.pt"

    def save_checkpoint(self, run_key, obj) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(self.ckpt_path(run_key), buf.getvalue())

    def load_checkpoint(self, run_key):
        """The run's checkpoint, or None (missing, or unreadable: then moved aside)."""
        path = self.ckpt_path(run_key)
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=False)
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            self._reject(path, f"cannot be loaded: {err}")
            return None


def open_store(study: str, config, schema: Schema, root=None) -> ResultStore | None:
    """The store of ``config`` if it exists already (reading creates nothing), else None."""
    folder = Path(root or results_dir()) / study / config_hash(config)
    return ResultStore(study, config, schema, root) if folder.exists() else None
