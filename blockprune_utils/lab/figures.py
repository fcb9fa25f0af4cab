"""The committed figures that the lab's written questions are about."""
from __future__ import annotations

from ..infra.paths import REPO_ROOT
from ..plots.profile import committed_figures

COMMITTED = REPO_ROOT / "figures"


def show_figure(name: str, width: int = 900):
    """Display ``figures/<name>.png`` of the repository (the committed full-run figure,
    read by :func:`~blockprune_utils.plots.profile.committed_figures`) with its caption;
    where it is absent (a pip install, as on Colab) say where to find it instead."""
    from IPython.display import Image, Markdown, display

    found = committed_figures([name], COMMITTED)
    if not found:
        display(Markdown(f"`figures/{name}.png` is not in this installation: open it in the repository's `figures/` "
                         "folder (its README shows every figure with its caption)."))
        return
    display(Image(filename=str(found[0]["png"]), width=width))
    if found[0].get("caption"):
        display(Markdown(f"*figures/{name}.png:* {found[0]['caption']}"))


def figure_data(name: str):
    """The data behind the committed full-run figure ``name`` (``figures/<name>.csv``) as a
    DataFrame, or None where the figure or its CSV is absent (a pip install)."""
    import pandas as pd

    found = committed_figures([name], COMMITTED)
    csv = COMMITTED / f"{name}.csv"
    return pd.read_csv(csv) if found and csv.exists() else None


def random_controls_at(k: int = 6, dataset: str = "mnist"):
    """The last round of ``figures/lenet_<dataset>_random_controls.csv`` at block size
    ``k``: density, mean test accuracy (%) and its spread per variant, or None without the figure."""
    df = figure_data(f"lenet_{dataset}_random_controls")
    if df is None:
        return None
    df = df[df["k"] == k]
    last = df[df["round"] == df["round"].max()]
    return last[["variant", "round", "density", "acc_mean", "acc_sd", "n_seeds"]].reset_index(drop=True)


def best_speedups(formats=("scipy_bsr", "scipy_csr"), layer: str = "fc1", threads: str = "1"):
    """The best speed-up over dense (over all densities) of each format and k at each
    batch size in ``figures/bsr_speedup_fc1.csv`` (rows: format, k; columns: batch), or
    None without the figure."""
    df = figure_data("bsr_speedup_fc1")
    if df is None:
        return None
    df = df[df["format"].isin(formats) & (df["layer"] == layer) & (df["threads_label"].astype(str) == threads)]
    return df.groupby(["format", "k", "batch"])["speedup"].max().unstack("batch").round(2)
