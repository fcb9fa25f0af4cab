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
