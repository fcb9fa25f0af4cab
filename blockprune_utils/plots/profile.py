"""What a notebook shows about the profile it ran: a banner, a mark on every figure of
a quick run, and the committed paper-profile figures to look at instead.

A quick run exists to test the code in minutes (tiny data, one seed, a few rounds);
its numbers are not results.  :func:`profile_banner` says so at the top of a
notebook, :func:`stamp_profile` writes it across each figure (``save_figure`` calls
it), and :func:`show_committed` displays the figures of the full run that are
committed in ``figures/``, with their captions and provenance.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..infra.figures import SMOKE_PROFILES, is_quick, stamp_profile
from ..infra.paths import figures_dir

__all__ = ["SMOKE_PROFILES", "is_quick", "stamp_profile", "committed_figures", "banner_text", "profile_banner",
           "show_committed", "show_committed_tables"]


def committed_figures(names: Sequence[str], folder=None) -> list[dict]:
    """The sidecars of the committed figures ``names`` of a full run (missing ones, and
    figures of a smoke-test profile, left out)."""
    folder = Path(folder) if folder is not None else figures_dir()
    out = []
    for name in names:
        side = folder / f"{name}.json"
        if side.exists() and (folder / f"{name}.png").exists():
            meta = json.loads(side.read_text())
            if not is_quick(meta.get("profile", "")):
                out.append({**meta, "png": folder / f"{name}.png"})
    return out


def banner_text(profile: str, what: str = "the study") -> str:
    """The Markdown of the banner for a run of ``profile``."""
    if is_quick(profile):
        return (f"> **Quick profile: these numbers test the code; they are not results.** This run of {what} uses a "
                "small slice of the data, one seed and a few rounds so that it finishes in minutes; accuracies near "
                "chance and missing rounds are expected. The full run's figures are committed in `figures/` (shown "
                "at the end of this notebook); `make figures` reproduces them.")
    return (f"> **{profile} profile.** The numbers below are the full run of {what}; every figure names the data "
            "set, seeds, device and commit it came from (`figures/README.md`).")


def profile_banner(profile: str, what: str = "the study") -> None:
    """Display the banner (Markdown) for a run of ``profile``."""
    from IPython.display import Markdown, display

    display(Markdown(banner_text(profile, what)))


def show_committed(names: Sequence[str], profile: str | None = None, folder=None) -> None:
    """Display the committed figures ``names`` with caption and provenance (it returns
    nothing, so a notebook cell ending with it shows no stray value).  With a
    ``profile`` that is not a smoke test nothing is shown (the notebook just drew them)."""
    from IPython.display import Image, Markdown, display

    if profile is not None and not is_quick(profile):
        return
    metas = committed_figures(names, folder)
    if not metas:
        display(Markdown("_No committed figures of the full run in `figures/` yet: `make figures` makes them._"))
    for m in metas:
        display(Markdown(f"**`{m['name']}`** ({m.get('profile')} profile, {m.get('dataset')}, seeds {m.get('seeds')}, "
                         f"{m.get('device')}, commit `{m.get('commit')}`): {m.get('caption', '')}"))
        display(Image(filename=str(m["png"])))


def show_committed_tables(names: Sequence[str], profile: str | None = None, folder=None) -> None:
    """Display the committed result tables ``names`` of the full run (their sidecar's
    summary, caption and provenance) under a heading that sets them apart from the
    quick run's own output; nothing for a full-run ``profile`` (its own tables are shown)."""
    from IPython.display import Markdown, display

    if profile is not None and not is_quick(profile):
        return
    folder = Path(folder) if folder is not None else figures_dir()
    shown = []
    for name in names:
        side = folder / f"{name}.json"
        if side.is_file():
            meta = json.loads(side.read_text())
            if meta.get("kind") == "table" and not is_quick(meta.get("profile", "")):
                shown.append(meta)
    if not shown:
        display(Markdown("_No committed result table of the full run in `figures/` yet: `make figures` makes it._"))
    for m in shown:
        display(Markdown(f"**The full run, committed in `figures/{m['name']}.csv`** ({m.get('profile')} profile, "
                         f"seeds {m.get('seeds')}, {m.get('device')}, result rows made at commit(s) "
                         f"{', '.join(m.get('run_commits') or [m.get('commit', '?')])}): {m.get('caption', '')}\n\n"
                         + m.get("markdown", "")))
