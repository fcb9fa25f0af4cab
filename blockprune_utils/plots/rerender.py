"""Re-drawing committed figures from the tables committed beside them, without the
results store: ``python -m blockprune_utils.plots.rerender NAME ...``.

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

from ..infra.figures import REDRAWN, save_figure
from ..infra.paths import figures_dir


def _sensitivity(name: str, table: pd.DataFrame, folder: Path):
    from .lenet import draw_sensitivity

    dataset = name[len("lenet_"):-len("_sensitivity")]
    summary = pd.read_csv(folder / "lenet_summary.csv")
    base = summary[(summary["dataset"] == dataset) & (summary["variant"] == "baseline")]
    baseline = (100 * float(base["acc_mean"].iloc[0]), 100 * float(base["acc_sd"].iloc[0])) if len(base) else None
    return draw_sensitivity(table, baseline), table, None


def _break_even(name: str, table: pd.DataFrame, folder: Path):
    from .bench import break_even_map_caption, complete_break_even, draw_break_even

    table = complete_break_even(table.assign(threads_label=table["threads_label"].astype(str)))
    return draw_break_even(table), table, break_even_map_caption(table)


# figure name pattern -> function(name, table, folder) -> (figure, table, caption or None to keep the old one)
REDRAWERS = {"lenet_*_sensitivity": _sensitivity, "bsr_break_even": _break_even}


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
    fig, table, caption = fn(name, pd.read_csv(csv), folder)
    commits, devices = meta.get("run_commits") or [], meta.get("run_devices") or []
    runs = pd.DataFrame({"commit": pd.Series(commits, dtype=object), "device": pd.Series(devices, dtype=object)})
    source = meta["source"].split(REDRAWN)[0]
    try:
        return save_figure(fig, name, caption=caption or meta["caption"], data=table, dataset=meta["dataset"],
                           seeds=meta["seeds"], device=meta["device"], profile=meta["profile"], runs=runs,
                           source=f"{source}{REDRAWN}{name}.csv by blockprune_utils.plots.rerender)",
                           out_dir=folder)
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
