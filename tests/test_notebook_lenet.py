"""Execute notebooks/01_lenet_mnist.ipynb in the quick profile and check its figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

FIGURES = ("acc_vs_density", "acc_vs_k", "random_controls", "weights", "sensitivity")


@pytest.mark.notebook
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_lenet_notebook_quick(run_notebook, data_dir, dataset):
    run_notebook("01_lenet_mnist.ipynb", profile="quick", dataset=dataset)
    for name in FIGURES:
        stem = run_notebook.quick_figures_dir / f"lenet_{dataset}_{name}"
        for ext in ("png", "svg", "csv", "json"):
            path = stem.with_suffix(f".{ext}")
            assert path.exists() and path.stat().st_size > 0, path
        meta = json.loads(stem.with_suffix(".json").read_text())
        assert meta["dataset"] == dataset and meta["profile"] == "quick" and meta["seeds"] == [0]
        assert meta["device"].startswith("cpu")
    assert (run_notebook.quick_figures_dir / "README.md").exists()
    assert not run_notebook.figures_dir.exists()  # the full-run folder is left alone
    rows = list(run_notebook.results_dir.glob("lenet/*/rows/*.json"))
    assert rows and not list(run_notebook.results_dir.rglob("*.tmp"))


def test_lenet_notebook_is_committed_clean():
    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parent.parent / "notebooks" / "01_lenet_mnist.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'profile = "quick"' in code[0].source and 'dataset = "mnist"' in code[0].source
    assert all(not c.outputs and c.execution_count is None for c in code)
