"""Helpers shared by the plots of every study: the log density axis, rows as a DataFrame."""
from __future__ import annotations

import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

DENSITY_TICKS = (0.8, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)
FINE_DENSITY_TICKS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05, 0.04, 0.03, 0.02, 0.01)


def density_axis(ax, lo: float, hi: float, label: str = "density (fraction of weights kept)",
                 ticks=DENSITY_TICKS, margin: float = 1.15) -> None:
    """A log density axis, dense on the left, with percent ticks from ``ticks`` (the
    finer ``FINE_DENSITY_TICKS`` when fewer than three of them fall in the range)."""
    ax.set_xscale("log")
    inside = [t for t in ticks if lo * 0.8 <= t <= hi * 1.25]
    if len(inside) < 3:
        inside = [t for t in FINE_DENSITY_TICKS if lo * 0.8 <= t <= hi * 1.25]
    ticks = inside or [lo, hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.set_xlim(hi * margin, lo / margin)  # dense on the left, sparse on the right
    ax.set_xlabel(label)


def as_frame(rows) -> pd.DataFrame:
    """Result rows (a DataFrame or an iterable of dicts) as a new DataFrame: a copy of a
    DataFrame, so a plot may add columns without changing its caller's."""
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
