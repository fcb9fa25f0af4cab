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


def test_the_readme_quotes_the_sidecars_of_the_committed_figures():
    """The README's state of figures/ names exactly the profiles, sources and commits
    that the committed sidecars name."""
    from blockprune_utils.infra.figures import STATE_BEGIN, readme_with_state
    from blockprune_utils.infra.paths import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    assert STATE_BEGIN in readme
    assert readme == readme_with_state(readme, REPO_ROOT / "figures"), (
        "README.md's state of figures/ differs from the sidecars: refresh it with "
        "blockprune_utils.infra.figures.readme_with_state")


def test_committed_figures_are_redrawn_from_their_tables(tmp_path):
    """Sensitivity and break-even figures re-drawn from the committed CSVs keep their
    provenance; "never" and "not measured" read apart in the break-even table."""
    import shutil

    from blockprune_utils.infra.paths import REPO_ROOT
    from blockprune_utils.plots.rerender import main, rerender

    names = ("lenet_summary", "lenet_mnist_sensitivity", "lenet_mnist_acc_vs_k", "bsr_break_even", "bsr_cache_misses")
    for name in names:
        for ext in ("csv", "json"):
            shutil.copy(REPO_ROOT / "figures" / f"{name}.{ext}", tmp_path)
    old = json.loads((tmp_path / "bsr_break_even.json").read_text())
    old_summary = json.loads((tmp_path / "lenet_summary.json").read_text())
    for name in names:
        assert rerender(name, tmp_path).exists()
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        assert "re-drawn from" in meta["source"] and meta["profile"] == "paper" and meta["run_commits"]
    meta = json.loads((tmp_path / "bsr_break_even.json").read_text())
    assert meta["run_commits"] == old["run_commits"] and "never" in meta["caption"]
    summary = json.loads((tmp_path / "lenet_summary.json").read_text())
    assert summary["markdown"] == old_summary["markdown"] and "2.9%" in summary["caption"]
    assert "2.9%" in json.loads((tmp_path / "lenet_mnist_acc_vs_k.json").read_text())["caption"]
    be = pd.read_csv(tmp_path / "bsr_break_even.csv")
    never = be[be["status"] == "never"]
    assert len(never) and (never["label"] == "never").all() and never["break_even"].isna().all()
    assert set(be["status"]) <= {"pays", "always", "never", "not measured"}
    assert len(be) == be["format"].nunique() * be["k"].nunique() * be["batch"].nunique()
    with pytest.raises(ValueError, match="cannot be re-drawn"):
        main(["lenet_mnist_weights", "--folder", str(tmp_path)])


def test_count_labels_are_short_and_never_negative():
    from blockprune_utils.plots.bench import count_label

    assert [count_label(v) for v in (881, 14775, 131577, 1.2e6, -0.2, float("nan"))] == \
        ["881", "14.8k", "132k", "1.2M", "0", ""]


def test_a_quick_figure_never_enters_the_committed_folder_even_when_figures_dir_points_elsewhere(folders):
    from blockprune_utils.infra.paths import REPO_ROOT

    with pytest.raises(FullRunFigureError, match="full-run results only"):
        _save("quick", out_dir=REPO_ROOT / "figures")


def test_a_publisher_gives_every_figure_the_shared_provenance(folders):
    import matplotlib.pyplot as plt

    from blockprune_utils.infra.figures import Publisher

    full, quick = folders
    runs = pd.DataFrame({"commit": ["abc"], "device": ["cpu:test"]})
    publish = Publisher("tests", "quick", "none", [0, 1], "cpu", runs=runs)
    fig, ax = plt.subplots()
    try:
        publish.figure(fig, "demo", "a line", data=pd.DataFrame({"x": [0, 1]}))
        publish.figure(fig, "demo_seed0", "one seed", seeds=[0])
        with pytest.raises(TypeError, match="unknown provenance field.*'seed'"):
            publish.figure(fig, "bad", "typo", seed=[0])
    finally:
        plt.close(fig)
    publish.table(pd.DataFrame({"a": [1]}), "demo_table", "a table")
    meta = json.loads((quick / "demo.json").read_text())
    assert (meta["caption"], meta["seeds"], meta["source"], meta["profile"], meta["run_commits"]) == (
        "a line", [0, 1], "tests", "quick", ["abc"])
    assert json.loads((quick / "demo_seed0.json").read_text())["seeds"] == [0]
    assert json.loads((quick / "demo_table.json").read_text())["kind"] == "table"
    assert not (quick / "bad.json").exists() and not full.exists()
