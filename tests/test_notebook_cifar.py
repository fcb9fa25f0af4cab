"""Executes notebooks/03_cifar10_resnet18.ipynb: the quick profile on the CPU, and the
full profiles both without any results (it must say so and not fail) and with result
CSVs in the figures folder (here: the quick run's, renamed to the paper and cpu
profiles).  No run may write to stderr."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from blockprune_utils.studies.cifar import data as cdata

NOTEBOOK = "03_cifar10_resnet18.ipynb"


def _outputs(path: Path) -> list[dict]:
    return [out for cell in json.loads(path.read_text())["cells"] for out in cell.get("outputs", [])]


def _text(path: Path) -> str:
    parts = []
    for out in _outputs(path):
        parts.append("".join(out.get("text", "")))
        parts += ["".join(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(parts)


def _stderr(path: Path) -> list[str]:
    return ["".join(o.get("text", "")) for o in _outputs(path) if o.get("output_type") == "stream" and o.get("name") == "stderr"]


@pytest.mark.notebook
def test_notebook_paper_profile_without_results(run_notebook):
    out = run_notebook(NOTEBOOK, profile="paper")
    text = _text(out)
    assert "No GPU run has been made yet" in text and "No CPU run has been made yet" in text
    assert "--profile paper --experiment A" in text and "make figures-cifar PROFILE=cpu" in text
    assert "BLOCKPRUNE_COMMIT" not in text and "--budget-s" not in text  # the plain commands
    assert "Black stars" not in text  # no words about a plot that is not drawn
    assert not list(run_notebook.figures_dir.glob("cifar_*.png"))
    assert _stderr(out) == []


@pytest.mark.notebook
def test_notebook_quick_then_full_profiles(run_notebook):
    root = Path(os.environ.get("DATA_DIR", "data"))
    if not (cdata.has_original(root) or cdata.has_jpeg_copy(root)):
        pytest.skip(f"no CIFAR-10 under DATA_DIR={root}")
    out = run_notebook(NOTEBOOK, profile="quick", threads=1)
    assert _stderr(out) == []
    text = _text(out)
    assert "Quick profile: these numbers test the code" in text and "result rows" in text
    quick_figs = run_notebook.quick_figures_dir
    for name in ("cifar_head_pruning_quick", "cifar_conv_pruning_quick", "cifar_head_blocks_quick"):
        assert (quick_figs / f"{name}.png").exists(), name
        meta = json.loads((quick_figs / f"{name}.json").read_text())
        assert meta["profile"] == "quick" and meta["seeds"] == [0]
        assert meta["dataset"] in (cdata.SOURCE_ORIGINAL, cdata.SOURCE_JPEG)
        assert meta["run_commits"] and meta["run_devices"]  # the rows the figure is drawn from

    assert not run_notebook.figures_dir.exists()  # the full-run folder is left alone

    # The full profiles plot whatever result tables the figures folder holds.
    figs = run_notebook.figures_dir
    figs.mkdir()
    export = run_notebook.results_dir / "cifar" / "export"
    shutil.copy(export / "cifar_quick_results_all.csv", figs / "cifar_paper_results_all.csv")
    shutil.copy(export / "cifar_quick_head_blocks.csv", figs / "cifar_paper_head_blocks.csv")
    quick = pd.read_csv(export / "cifar_quick_results_all.csv")
    quick[quick.experiment == "A"].to_csv(figs / "cifar_cpu_experiment_a.csv", index=False)
    out = run_notebook(NOTEBOOK, profile="cpu")
    assert _stderr(out) == []
    text = _text(out)
    assert "No GPU run" not in text and "No CPU run" not in text and "90.37" in text
    for name in ("cifar_head_pruning", "cifar_conv_pruning", "cifar_head_blocks", "cifar_head_pruning_cpu"):
        assert (figs / f"{name}.png").exists(), name
    assert json.loads((figs / "cifar_head_pruning.json").read_text())["profile"] == "paper"
    assert json.loads((figs / "cifar_head_pruning_cpu.json").read_text())["profile"] == "cpu"
    rounds = pd.read_csv(figs / "cifar_head_pruning.csv")["round"]
    assert rounds.min() == 0 and rounds.max() == 2  # round 0 = unpruned, then the quick profile's 2 rounds
