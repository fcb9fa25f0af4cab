"""Results store: tidy rows kept under a hash of the run configuration.

Layout: ``<results>/<study>/<config-hash>/`` holds ``config.json`` (the
configuration the hash was taken of), ``rows/<key>.json`` (one file per finished
result row, named by its key) and ``ckpt/<run>.pt`` (the latest checkpoint of a run,
to resume it).  Every file is written to a temporary name in the same folder, then
renamed, so a killed process never leaves a torn file, and two processes that
finish the same row at once leave one whole copy of it.  Files get the permissions
the process's umask gives new files (readable by a group on a shared file system
when the umask allows it).

A row has the columns its study declares in a :class:`Schema` (key columns, value
columns, optionally their types) plus the provenance columns and ``config_hash``.  A
row file that cannot be read as such a row is moved aside to ``rejected/`` with one
warning naming the file, and the row counts as missing, so it is computed again:
truncated, edited by hand, ``{}``, written under another schema, key columns that
are not the file's key, another store's ``config_hash``, a value of the wrong type,
or not a readable file at all (a directory in its place, no read permission).  A
checkpoint that cannot be loaded, or whose content its reader cannot use, is moved
aside the same way.  A ``config.json`` that is not this store's configuration is
moved aside and written again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import secrets
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


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside ``path`` (mode 0666 less the umask)."""
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
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
    also has the provenance columns and ``config_hash``.  ``types``: (column, type)
    pairs checked when a row is read (``float`` admits an int; ``None`` is always
    allowed; a bool is only a ``bool``)."""

    key: tuple
    values: tuple
    types: tuple = ()

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

    def wrong_types(self, row: Mapping) -> list[str]:
        """The columns of ``row`` whose value is not of the declared type."""
        return [f"{c}={row[c]!r} (not {t.__name__})" for c, t in self.types if c in row and not _has_type(row[c], t)]


def _has_type(value, typ) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return typ is bool
    return isinstance(value, (int, float)) if typ is float else isinstance(value, typ)


class ResultStore:
    """Rows and checkpoints of one study configuration."""

    def __init__(self, study: str, config, schema: Schema, root: Path | None = None):
        self.config = plain(config)
        self.schema = schema
        self.hash = config_hash(config)
        self.dir = Path(root or results_dir()) / study / self.hash
        self._check_config(self.dir / "config.json")

    def _check_config(self, path: Path) -> None:
        """Write ``config.json``, or check the one there: another configuration (or an
        unreadable file) is moved aside and replaced."""
        text = json.dumps(self.config, indent=2, sort_keys=True)
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            stored = None
        except (OSError, ValueError) as err:
            self._reject(path, f"not readable as JSON: {err}", "configuration file", "written again")
            stored = None
        else:
            if json.dumps(stored, indent=2, sort_keys=True) == text:
                return
            self._reject(path, "it is not the configuration this folder's hash was taken of", "configuration file",
                         "written again")
        if not path.exists():
            atomic_write_text(path, text)

    # -- rows
    def row_path(self, key) -> Path:
        return self.dir / "rows" / f"{key_name(key)}.json"

    def _reject(self, path: Path, why: str, what: str = "result row", then: str = "it will be computed again") -> None:
        """Move ``path`` to ``rejected/`` (never overwriting) with one warning naming it."""
        dest = self.dir / "rejected" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        while dest.exists():
            n += 1
            dest = dest.with_name(f"{path.name}.{n}")
        try:
            os.rename(path, dest)
        except FileNotFoundError:  # another process moved it first
            return
        except OSError as err:  # cannot move it: say so, and treat it as missing all the same
            warnings.warn(f"unreadable {what} {path} ({why}); it could not be moved to {dest.parent} ({err}): "
                          f"remove it by hand", stacklevel=3)
            return
        warnings.warn(f"unreadable {what} {path} ({why}): moved to {dest}; {then}", stacklevel=3)

    def _problem(self, path: Path, row) -> str | None:
        """Why ``row`` read from ``path`` is not a row of this store (None: it is)."""
        if not self.schema.conforms(row):
            have = sorted(row) if isinstance(row, dict) else type(row).__name__
            return f"columns {have} are not this study's row schema"
        if row["config_hash"] != self.hash:
            return f"config_hash {row['config_hash']!r} is not this store's {self.hash!r}"
        bad = self.schema.wrong_types(row)
        if bad:
            return f"values of the wrong type: {', '.join(bad)}"
        try:
            name = key_name({c: row[c] for c in self.schema.key})
        except ValueError as err:
            return str(err)
        if f"{name}.json" != path.name:
            return f"its key columns say {name}, not the file's key"
        return None

    def _read(self, path: Path) -> dict | None:
        try:
            row = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            self._reject(path, f"not JSON: {err}")
            return None
        except OSError as err:  # a directory in its place, no permission, an I/O error
            self._reject(path, f"cannot be read: {type(err).__name__}: {err.strerror or err}")
            return None
        why = self._problem(path, row)
        if why is not None:
            self._reject(path, why)
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

    def load_checkpoint(self, run_key, use: Callable[[Any], Any] | None = None):
        """The run's checkpoint, or None (missing, or unreadable: then moved aside).

        ``use(checkpoint)``, when given, runs inside the same guard and its result is
        returned: a checkpoint it cannot use (it raises) is moved aside too."""
        path = self.ckpt_path(run_key)
        if not os.path.lexists(path):
            return None
        try:
            ckpt = torch.load(path, weights_only=False)
        except FileNotFoundError:  # another process moved it aside first
            return None
        except Exception as err:  # truncated, not a zip, unpickling errors, a directory, no permission
            self._reject(path, f"cannot be loaded: {type(err).__name__}: {err}", "checkpoint",
                         "the run restarts without it")
            return None
        if use is None:
            return ckpt
        try:
            return use(ckpt)
        except Exception as err:
            self._reject(path, f"cannot be used: {type(err).__name__}: {err}", "checkpoint",
                         "the run restarts without it")
            return None


def open_store(study: str, config, schema: Schema, root=None) -> ResultStore | None:
    """The store of ``config`` if it exists already (reading creates nothing), else None."""
    folder = Path(root or results_dir()) / study / config_hash(config)
    return ResultStore(study, config, schema, root) if folder.exists() else None
