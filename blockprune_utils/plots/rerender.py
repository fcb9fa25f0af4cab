"""Re-drawing committed figures (and re-writing result tables) from the tables
committed beside them, without the results store:
``python -m blockprune_utils.plots.rerender NAME ...``.

Only figures whose CSV holds everything they show can be re-drawn (results ->
DataFrame -> plot in two calls).  The new sidecar keeps the old one's data set, seeds,
device, profile and the commits the result rows were made at; it names the commit the
figure is re-drawn at, and says that it was re-drawn from the committed table.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

import pandas as pd

from ..infra.figures import REDRAWN, save_figure, save_table
from ..infra.paths import figures_dir


def _sensitivity(name: str, table: pd.DataFrame, folder: Path):
    from .lenet import draw_sensitivity

    _, baseline, _ = _lenet_bands(name, folder)
    return draw_sensitivity(table, baseline), table, None


def _lenet_bands(name: str, folder: Path):
    """The dense baseline (mean, sd) and dense control (mean, sd, extra epochs) of a LeNet
    figure's data set, in percent, from the committed ``lenet_summary.csv`` (the extra
    epochs: the control's rounds times the figure's profile's retraining epochs)."""
    from ..studies.lenet import lenet_profile

    dataset = name.split("_acc_vs_k")[0].split("_sensitivity")[0][len("lenet_"):]
    summary = pd.read_csv(folder / "lenet_summary.csv")
    s = summary[summary["dataset"] == dataset]
    base, ctrl = s[s["variant"] == "baseline"], s[s["variant"] == "dense_control"]
    baseline = (100 * float(base["acc_mean"].iloc[0]), 100 * float(base["acc_sd"].fillna(0).iloc[0])) if len(base) else None
    last = ctrl[ctrl["round"] == ctrl["round"].max()]
    profile = json.loads((folder / f"{name}.json").read_text())["profile"]
    epochs = lenet_profile(profile).training.retrain.epochs * int(last["round"].iloc[0]) if len(last) else 0
    control = ((100 * float(last["acc_mean"].iloc[0]), 100 * float(last["acc_sd"].fillna(0).iloc[0]), epochs)
               if len(last) else None)
    return dataset, baseline, control


def _acc_vs_k(name: str, table: pd.DataFrame, folder: Path):
    from ..studies.lenet.report import accuracy_vs_k_caption
    from .lenet import draw_accuracy_vs_k

    dataset, baseline, control = _lenet_bands(name, folder)
    seeds = json.loads((folder / f"{name}.json").read_text())["seeds"]
    fig = draw_accuracy_vs_k(table, baseline, control)
    fig.axes[0].set_title(f"LeNet-300-100 on {dataset}: accuracy vs block size (paper profile)")
    return fig, table, accuracy_vs_k_caption(dataset, table, seeds)


def _break_even(name: str, table: pd.DataFrame, folder: Path):
    from .bench import break_even_map_caption, complete_break_even, draw_break_even

    table = complete_break_even(table.assign(threads_label=table["threads_label"].astype(str)))
    return draw_break_even(table), table, break_even_map_caption(table)


def _cache_misses(name: str, table: pd.DataFrame, folder: Path):
    from .cache import cache_misses, cache_misses_caption

    fig, table = cache_misses(table)
    return fig, table, cache_misses_caption(table)


def _lenet_summary(name: str, table: pd.DataFrame, folder: Path):
    from ..studies.lenet import compact_summary, lenet_profile
    from ..studies.lenet.report import summary_caption

    profile = json.loads((folder / f"{name}.json").read_text())["profile"]
    return None, table, summary_caption(lenet_profile(profile)), compact_summary(table)


# name pattern -> function(name, table, folder) -> (figure or None for a table, table, caption or None to keep the
# old one[, the summary a table shows in the index])
REDRAWERS = {"lenet_*_sensitivity": _sensitivity, "lenet_*_acc_vs_k": _acc_vs_k, "bsr_break_even": _break_even,
             "bsr_cache_misses": _cache_misses, "lenet_summary": _lenet_summary}


def redrawer(name: str):
    for pattern, fn in REDRAWERS.items():
        if fnmatch.fnmatch(name, pattern):
            return fn
    raise ValueError(f"{name!r} cannot be re-drawn from its committed table; these can: {sorted(REDRAWERS)}")


def rerender(name: str, folder=None) -> Path:
    """Re-draw the committed figure ``name`` in ``folder`` (default: figures/) from its CSV."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid")  # as the notebooks draw them
    folder = Path(folder) if folder is not None else figures_dir()
    fn = redrawer(name)
    side, csv = folder / f"{name}.json", folder / f"{name}.csv"
    if not side.is_file() or not csv.is_file():
        raise FileNotFoundError(f"{name}: {side.name} and {csv.name} must both be in {folder}")
    meta = json.loads(side.read_text())
    fig, table, caption, *summary = fn(name, pd.read_csv(csv), folder)
    commits, devices = meta.get("run_commits") or [], meta.get("run_devices") or []
    runs = pd.DataFrame({"commit": pd.Series(commits, dtype=object), "device": pd.Series(devices, dtype=object)})
    source = f"{meta['source'].split(REDRAWN)[0]}{REDRAWN}{name}.csv by blockprune_utils.plots.rerender)"
    common = dict(caption=caption or meta["caption"], dataset=meta["dataset"], seeds=meta["seeds"], device=meta["device"],
                  profile=meta["profile"], runs=runs, source=source, out_dir=folder)
    if fig is None:
        return save_table(table, name, summary=summary[0] if summary else None, **common)
    try:
        return save_figure(fig, name, data=table, **common)
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m blockprune_utils.plots.rerender", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help=f"figure names (patterns: {', '.join(sorted(REDRAWERS))})")
    ap.add_argument("--folder", default=None, help="the figures folder (default: FIGURES_DIR)")
    args = ap.parse_args(argv)
    for name in args.names:
        redrawer(name)  # every name is checked before anything is written
    for name in args.names:
        print(rerender(name, args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
