"""Where figures go: a full run's into figures/, a quick run's into the quick folder,
and a quick figure never replaces a full run's."""
from __future__ import annotations

import json

import matplotlib
import pandas as pd
import pytest

from blockprune_utils.infra.figures import FullRunFigureError, output_dir, save_figure, save_table

matplotlib.use("Agg")


@pytest.fixture
def folders(tmp_path, monkeypatch):
    full, quick = tmp_path / "figures", tmp_path / "figures-quick"
    monkeypatch.setenv("FIGURES_DIR", str(full))
    monkeypatch.setenv("QUICK_FIGURES_DIR", str(quick))
    return full, quick


def _save(profile, **kw):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    try:
        return save_figure(fig, "demo", caption="a line", data=pd.DataFrame({"x": [0, 1]}), dataset="none", seeds=[0],
                           device="cpu", source="tests", profile=profile, **kw)
    finally:
        plt.close(fig)


def test_profiles_choose_the_folder(folders):
    full, quick = folders
    assert output_dir("quick") == quick and output_dir("paper") == full and output_dir("cpu") == full
    assert _save("quick").parent == quick
    assert not full.exists()
    assert json.loads((quick / "demo.json").read_text())["profile"] == "quick"
    assert "not results" in (quick / "README.md").read_text().splitlines()[0]
    assert _save("paper").parent == full
    assert "not results" not in (full / "README.md").read_text().splitlines()[0]


def test_a_quick_figure_never_replaces_a_full_runs(folders, tmp_path):
    full, quick = folders
    _save("paper")
    before = (full / "demo.png").read_bytes()
    with pytest.raises(FullRunFigureError, match="full-run results only"):
        _save("quick", out_dir=full)
    other = tmp_path / "elsewhere"
    _save("paper", out_dir=other)
    with pytest.raises(FullRunFigureError, match="never overwrites a full run"):
        _save("quick", out_dir=other)
    with pytest.raises(FullRunFigureError):
        save_table(pd.DataFrame({"a": [1]}), "demo", caption="t", dataset="none", seeds=[0], device="cpu",
                   source="tests", profile="quick", out_dir=other)
    assert (full / "demo.png").read_bytes() == before
    assert json.loads((other / "demo.json").read_text())["profile"] == "paper"
    _save("paper", out_dir=other)  # a full run may replace a full run
