"""Saving figures with their data and provenance, and the index ``figures/README.md``.

Every figure is saved by :func:`save_figure` as ``<name>.png`` and ``<name>.svg``,
the table behind it as ``<name>.csv``, and a small ``<name>.json`` sidecar (caption,
data set, seeds, device, commit, source notebook).  :func:`write_index` rebuilds
``figures/README.md`` from all sidecars, so no notebook edits another's entry.
"""
from __future__ import annotations

import json
from pathlib import Path

from .paths import figures_dir
from .provenance import git_commit
from .store import atomic_write_bytes, atomic_write_text

# Profiles whose numbers only test the code (tiny data, one seed, a few rounds).
SMOKE_PROFILES = ("quick",)


def is_quick(profile: str) -> bool:
    """True for a profile whose numbers only test the code."""
    return str(profile) in SMOKE_PROFILES


def stamp_profile(fig, profile: str) -> None:
    """Write "<profile> profile: not a result" across ``fig`` when ``profile`` is a
    smoke test (once per figure); leave other figures untouched."""
    if not is_quick(profile) or getattr(fig, "_profile_stamped", False):
        return
    fig.text(0.5, 0.5, f"{profile} profile\nnot a result", ha="center", va="center", rotation=25,
             fontsize=26, color="tab:red", alpha=0.22, weight="bold", zorder=1000)
    fig._profile_stamped = True


def runs_of(rows) -> dict:
    """The commits and devices of the result rows (a DataFrame with ``commit`` and
    ``device`` columns) a figure is drawn from, as sidecar fields."""
    out = {}
    for col, key in (("commit", "run_commits"), ("device", "run_devices")):
        if rows is not None and col in getattr(rows, "columns", ()):
            out[key] = sorted(str(v) for v in rows[col].dropna().unique())
    return out


def save_figure(fig, name: str, *, caption: str, data=None, dataset: str, seeds, device: str,
                source: str, profile: str = "paper", commit: str | None = None, runs=None, out_dir=None) -> Path:
    """Write ``name``.png/.svg (and .csv of ``data``, a DataFrame) plus its sidecar.
    ``runs``: the result rows the figure is drawn from (a DataFrame); their commits
    and devices are named in the sidecar next to the commit it was rendered at.  A
    figure of a smoke-test profile (``quick``) is stamped "not a result" first."""
    import io

    out = Path(out_dir) if out_dir is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp_profile(fig, profile)
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
    if data is not None:
        atomic_write_text(out / f"{name}.csv", data.to_csv(index=False))
    meta = {
        "name": name, "caption": caption, "dataset": dataset, "seeds": list(seeds) if not isinstance(seeds, str) else seeds,
        "device": device, "source": source, "profile": profile, "commit": commit or git_commit(),
        "csv": f"{name}.csv" if data is not None else None,
        **runs_of(runs),
    }
    atomic_write_text(out / f"{name}.json", json.dumps(meta, indent=2))
    write_index(out)
    return out / f"{name}.png"


def save_table(table, name: str, *, caption: str, dataset: str, seeds, device: str, source: str,
               profile: str = "paper", summary=None, runs=None, out_dir=None) -> Path:
    """Write a result table as ``name``.csv with a sidecar; the index shows it at the
    top, as the markdown of ``summary`` (a smaller DataFrame; default: the table)."""
    out = Path(out_dir) if out_dir is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    shown = table if summary is None else summary
    meta = {
        "name": name, "kind": "table", "caption": caption, "dataset": dataset,
        "seeds": list(seeds) if not isinstance(seeds, str) else seeds, "device": device, "source": source,
        "profile": profile, "commit": git_commit(), "csv": f"{name}.csv",
        "markdown": shown.to_markdown(index=False), **runs_of(runs),
    }
    atomic_write_text(out / f"{name}.json", json.dumps(meta, indent=2))
    write_index(out)
    return out / f"{name}.csv"


def _runs_line(meta: dict) -> str:
    commits = meta.get("run_commits")
    return f"; result rows made at commit(s) {', '.join(f'`{c}`' for c in commits)}" if commits else ""


def write_index(out_dir=None) -> Path:
    """Rebuild ``README.md`` in the figures folder from the sidecars found there."""
    out = Path(out_dir) if out_dir is not None else figures_dir()
    metas = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    tables = [m for m in metas if m.get("kind") == "table"]
    metas = [m for m in metas if m.get("kind") != "table"]
    lines = [
        "# Figures",
        "",
        "Made by `make figures` (each by the notebook named in its entry; do not edit this file:",
        "it is rebuilt from the `*.json` sidecars by `blockprune_utils.infra.figures.write_index`).",
        "Each figure comes as PNG and SVG, with the table behind it as CSV.",
        "",
    ]
    for m in tables:
        lines += [
            f"## `{m['name']}`",
            "",
            m["caption"],
            "",
            m["markdown"],
            "",
            f"- data set: {m['dataset']}; seeds: {m['seeds']}; device: {m['device']}",
            f"- profile: {m['profile']}; rendered at commit `{m['commit']}`" + _runs_line(m),
            f"- source: `{m['source']}`; full table: [`{m['csv']}`]({m['csv']})",
            "",
        ]
    for m in metas:
        lines += [
            f"## `{m['name']}`",
            "",
            f"![{m['name']}]({m['name']}.png)",
            "",
            m["caption"],
            "",
            f"- data set: {m['dataset']}",
            f"- seeds: {m['seeds']}",
            f"- device: {m['device']}",
            f"- profile: {m['profile']}; rendered at commit `{m['commit']}`" + _runs_line(m),
            f"- source: `{m['source']}`" + (f"; table: [`{m['csv']}`]({m['csv']})" if m.get("csv") else ""),
            "",
        ]
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
