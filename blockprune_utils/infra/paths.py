"""Where data, results and figures live.  One setting each, read from the environment:

* ``DATA_DIR`` (default ``<repo>/data``): the data root used by every loader;
* ``RESULTS_DIR`` (default ``<repo>/results``): the store of finished runs;
* ``FIGURES_DIR`` (default ``<repo>/figures``): the figures of full runs, the ones
  committed with the repository;
* ``QUICK_FIGURES_DIR`` (default ``<repo>/build/figures-quick``): the figures of quick
  runs (tests, the book, a quick notebook in ``make lab``), which only test the code
  and never go into ``figures/``.

A relative setting is taken relative to the current directory, as usual on the
command line; ``make`` turns its settings into absolute paths before it runs a
notebook (which runs in ``notebooks/``), so ``make figures DATA_DIR=../shared/data``
means the folder beside the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _setting(name: str, default: Path) -> Path:
    return Path(os.environ.get(name) or default).expanduser().resolve()


def data_dir() -> Path:
    return _setting("DATA_DIR", REPO_ROOT / "data")


def results_dir() -> Path:
    return _setting("RESULTS_DIR", REPO_ROOT / "results")


def figures_dir() -> Path:
    return _setting("FIGURES_DIR", REPO_ROOT / "figures")


def quick_figures_dir() -> Path:
    return _setting("QUICK_FIGURES_DIR", REPO_ROOT / "build" / "figures-quick")
