"""Where data and results live.  One setting each, read from the environment:

* ``DATA_DIR`` (default ``<repo>/data``): the data root used by every loader;
* ``RESULTS_DIR`` (default ``<repo>/results``): the cache of finished runs.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR") or REPO_ROOT / "data").expanduser().resolve()


def results_dir() -> Path:
    return Path(os.environ.get("RESULTS_DIR") or REPO_ROOT / "results").expanduser().resolve()


def figures_dir() -> Path:
    return Path(os.environ.get("FIGURES_DIR") or REPO_ROOT / "figures").expanduser().resolve()
