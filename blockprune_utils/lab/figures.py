"""The committed figures that the lab's written questions are about."""
from __future__ import annotations

from ..infra.paths import REPO_ROOT

COMMITTED = REPO_ROOT / "figures"


def show_figure(name: str, width: int = 900):
    """Display ``figures/<name>.png`` of the repository (the committed full-run figure)
    with its caption; where the repository's files are absent (a pip install, as on
    Colab) say where to find it instead."""
    import json

    from IPython.display import Image, Markdown, display

    png, meta = COMMITTED / f"{name}.png", COMMITTED / f"{name}.json"
    if not png.exists():
        display(Markdown(f"`figures/{name}.png` is not in this installation: open it in the repository's `figures/` "
                         "folder (its README shows every figure with its caption)."))
        return
    caption = json.loads(meta.read_text()).get("caption", "") if meta.exists() else ""
    display(Image(filename=str(png), width=width))
    if caption:
        display(Markdown(f"*figures/{name}.png:* {caption}"))
