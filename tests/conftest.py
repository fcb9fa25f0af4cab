"""Shared test set-up.

* ``DATA_DIR``: when it does not hold MNIST and the offline copy ``../shared/data``
  is beside the repo, the tests use that (CI sets DATA_DIR itself in .ci/run).
* ``run_notebook``: executes a notebook with papermill in a temporary place, with
  ``RESULTS_DIR``, ``FIGURES_DIR`` and ``QUICK_FIGURES_DIR`` pointed at temporary
  folders so that tests never touch ``results/``, ``figures/`` or ``build/``; after
  a quick-profile run it checks that nothing was written to the full-run folder.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def _has_mnist(root: Path) -> bool:
    return (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def pytest_configure(config):
    current = Path(os.environ.get("DATA_DIR") or REPO / "data")
    if not _has_mnist(current) and _has_mnist(SHARED_DATA):
        os.environ["DATA_DIR"] = str(SHARED_DATA.resolve())
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def data_dir() -> Path:
    root = Path(os.environ.get("DATA_DIR") or REPO / "data")
    if not _has_mnist(root):
        pytest.fail(f"MNIST is not under DATA_DIR={root}: set DATA_DIR to a folder holding MNIST/raw (e.g. ../shared/data)")
    return root


@contextlib.contextmanager
def private_study(tmp_path_factory, name: str, profiles: dict, entries: dict, *, figures: bool = False):
    """For a module-scoped fixture: a private RESULTS_DIR (and FIGURES_DIR with
    ``figures``), one torch thread (the test machine is shared) and ``entries``
    registered in the ``profiles`` table, all undone on exit; yields the folder."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            root = tmp_path_factory.mktemp(name)
            mp.setenv("RESULTS_DIR", str(root / "results"))
            if figures:
                mp.setenv("FIGURES_DIR", str(root / "figures"))
                mp.setenv("QUICK_FIGURES_DIR", str(root / "figures-quick"))
            for key, value in entries.items():
                mp.setitem(profiles, key, value)
            yield root
    finally:
        torch.set_num_threads(threads)


def assert_no_stderr(path: Path) -> None:
    """An executed notebook shows a reader no stray stderr (progress bars, warnings)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    noisy = [(i, "".join(o.get("text", ""))[:200]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
             for o in c.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not noisy, f"{path.name}: stderr output in cells {noisy}"


@pytest.fixture
def run_notebook(tmp_path, monkeypatch):
    """``run_notebook(name, **parameters)`` -> path of the executed copy."""
    import papermill as pm

    results = tmp_path / "results"
    figures = tmp_path / "figures"
    quick_figures = tmp_path / "figures-quick"
    monkeypatch.setenv("RESULTS_DIR", str(results))
    monkeypatch.setenv("FIGURES_DIR", str(figures))
    monkeypatch.setenv("QUICK_FIGURES_DIR", str(quick_figures))

    def run(name: str, **parameters) -> Path:
        out = tmp_path / f"executed-{name}"
        before = folder_digest(figures)
        pm.execute_notebook(
            str(REPO / "notebooks" / name), str(out), parameters=parameters,
            cwd=str(REPO / "notebooks"), kernel_name="python3", progress_bar=False,
        )
        assert_no_stderr(out)
        if parameters.get("profile", "quick") == "quick":
            assert folder_digest(figures) == before, f"a quick run of {name} wrote into FIGURES_DIR"
        return out

    run.results_dir = results
    run.figures_dir = figures
    run.quick_figures_dir = quick_figures
    return run


def folder_digest(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder`` (empty when it does not exist)."""
    import hashlib

    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_lenet_config(n_train: int, n_test: int, rounds: int, scratch_rounds: tuple, sensitivity_densities: tuple):
    """A LeNet RunConfig small enough for a test: MNIST subsets, one epoch per phase."""
    from blockprune_utils.studies import lenet as L
    from blockprune_utils.train import TrainConfig

    one_epoch = TrainConfig(epochs=1, lr=1e-3, batch_size=128)
    return L.RunConfig(data=L.DataConfig(dataset="mnist", val_size=300, n_train=n_train, n_test=n_test),
                       training=L.TrainingConfig(baseline=one_epoch, retrain=one_epoch, scratch=one_epoch),
                       pruning=L.PruningConfig(rounds=rounds, scratch_rounds=scratch_rounds,
                                               sensitivity_densities=sensitivity_densities))
