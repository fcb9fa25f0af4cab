"""Execute the BSR speed notebook (02) in the quick profile and check its figures."""
from __future__ import annotations

import json

import nbformat
import pytest

from blockprune_utils.bench.cachesim import valgrind_path

FIGURES = ("bsr_speedup_fc1", "bsr_speedup_synthetic", "bsr_break_even", "bsr_model_latency", "bsr_storage")


@pytest.mark.notebook
def test_bsr_notebook_runs_and_writes_its_figures(run_notebook):
    out = run_notebook("02_bsr_speed.ipynb", profile="quick")
    nb = nbformat.read(str(out), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert "0 format(s) failed" in text and "0 variant(s) failed" in text
    assert "at least 5x over the dense model" in text
    expected = FIGURES + (("bsr_cache_misses",) if valgrind_path() else ())
    figs = run_notebook.quick_figures_dir
    assert not run_notebook.figures_dir.exists()  # the full-run folder is left alone
    for name in expected:
        for ext in ("png", "svg", "csv", "json"):
            assert (figs / f"{name}.{ext}").exists(), f"{name}.{ext} missing"
        meta = json.loads((figs / f"{name}.json").read_text())
        assert meta["profile"] == "quick" and meta["source"] == "notebooks/02_bsr_speed.ipynb"
        assert meta["device"] and meta["caption"] and meta.get("run_commits")
    if valgrind_path() is None:
        assert "valgrind is not installed" in text
    else:  # the cache section names the numba code it counts, and the figure table says which cases ran
        assert "counted as compiled for" in text
        assert {"ok", "counted_target", "isa"} <= set((figs / "bsr_cache_misses.csv").read_text().splitlines()[0].split(","))
    assert "bsr_speedup_fc1" in (figs / "README.md").read_text()
    # the results went to the temporary results folder, not the repo's
    assert (run_notebook.results_dir / "bench").exists()
