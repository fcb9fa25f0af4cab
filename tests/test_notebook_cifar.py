"""Executes notebooks/03_cifar10_resnet18.ipynb: the quick profile on the CPU, and the
paper profile both without GPU results (it must say so and not fail) and with result
CSVs in the figures folder (here: the quick run's, renamed)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from blockprune_utils.studies.cifar import data as cdata

NOTEBOOK = "03_cifar10_resnet18.ipynb"


def _text(path: Path) -> str:
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts += ["".join(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(parts)


@pytest.mark.notebook
def test_notebook_paper_profile_without_gpu_results(run_notebook):
    out = run_notebook(NOTEBOOK, profile="paper")
    text = _text(out)
    assert "No GPU run has been made yet" in text
    assert "--profile paper --experiment A" in text
    assert "BLOCKPRUNE_COMMIT" not in text and "--budget-s" not in text  # the plain command
    assert not list(run_notebook.figures_dir.glob("cifar_*.png"))


@pytest.mark.notebook
def test_notebook_quick_then_paper_plots(run_notebook):
    root = Path(os.environ.get("DATA_DIR", "data"))
    if not (cdata.has_original(root) or cdata.has_jpeg_copy(root)):
        pytest.skip(f"no CIFAR-10 under DATA_DIR={root}")
    out = run_notebook(NOTEBOOK, profile="quick", threads=1)
    figs = run_notebook.figures_dir
    for name in ("cifar_head_pruning_quick", "cifar_conv_pruning_quick", "cifar_head_blocks_quick"):
        assert (figs / f"{name}.png").exists(), name
        meta = json.loads((figs / f"{name}.json").read_text())
        assert meta["profile"] == "quick" and meta["seeds"] == [0]
        assert meta["dataset"] in (cdata.SOURCE_ORIGINAL, cdata.SOURCE_JPEG)
        assert meta["run_commits"] and meta["run_devices"]  # the rows the figure is drawn from
    assert "result rows" in _text(out)

    # The paper profile plots whatever cifar_paper_results_*.csv the figures folder holds.
    export = run_notebook.results_dir / "cifar" / "export"
    shutil.copy(export / "cifar_quick_results_all.csv", figs / "cifar_paper_results_all.csv")
    shutil.copy(export / "cifar_quick_head_blocks.csv", figs / "cifar_paper_head_blocks.csv")
    run_notebook(NOTEBOOK, profile="paper")
    for name in ("cifar_head_pruning", "cifar_conv_pruning", "cifar_head_blocks"):
        assert (figs / f"{name}.png").exists(), name
        assert json.loads((figs / f"{name}.json").read_text())["profile"] == "paper"
    rounds = pd.read_csv(figs / "cifar_head_pruning.csv")["round"]
    assert rounds.min() == 0 and rounds.max() == 2  # round 0 = unpruned, then the quick profile's 2 rounds
