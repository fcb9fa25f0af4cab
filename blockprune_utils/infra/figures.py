"""Saving figures with their data and provenance, and the index ``figures/README.md``.

Every figure is saved by :func:`save_figure` as ``<name>.png`` and ``<name>.svg``,
the table behind it as ``<name>.csv``, and a small ``<name>.json`` sidecar (caption,
data set, seeds, device, commit, source notebook).  :func:`write_index` rebuilds
``figures/README.md`` from all sidecars, so no notebook edits another's entry.
A :class:`Publisher` holds what all figures of one run share (source, profile, data
set, seeds, device, result rows), so each figure is saved with its name and caption only.

Where a figure goes depends on its profile (:func:`output_dir`): a full run's into
``FIGURES_DIR`` (``figures/``, committed), a quick run's into ``QUICK_FIGURES_DIR``
(``build/figures-quick/``).  A quick figure never replaces a full run's: saving one
over a full-run sidecar raises :class:`FullRunFigureError`, whatever folder is named.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .paths import REPO_ROOT, figures_dir, quick_figures_dir
from .provenance import git_commit
from .store import atomic_write_bytes, atomic_write_text

# Profiles whose numbers only test the code (tiny data, one seed, a few rounds).
SMOKE_PROFILES = ("quick",)


def is_quick(profile: str) -> bool:
    """True for a profile whose numbers only test the code."""
    return str(profile) in SMOKE_PROFILES


class FullRunFigureError(ValueError):
    """A quick run tried to write where a full run's figure or table is, or into the
    folder of full-run figures."""


def output_dir(profile: str, out_dir=None) -> Path:
    """The folder a figure or table of ``profile`` is written to: ``out_dir`` when
    given, else the quick-run folder for a smoke-test profile and ``figures/`` for a
    full run."""
    if out_dir is not None:
        return Path(out_dir)
    return quick_figures_dir() if is_quick(profile) else figures_dir()


def _check_target(out: Path, name: str, profile: str) -> None:
    """Refuse to write a quick-run ``name`` into the full-run folder or over a full run's sidecar."""
    if not is_quick(profile):
        return
    if out.resolve() in (figures_dir().resolve(), (REPO_ROOT / "figures").resolve()):
        raise FullRunFigureError(
            f"refusing to write the {profile}-profile figure {name!r} into {out}: that folder holds full-run results "
            f"only; quick runs write to QUICK_FIGURES_DIR ({quick_figures_dir()})")
    side = out / f"{name}.json"
    if side.is_file():
        try:
            old = json.loads(side.read_text()).get("profile", "")
        except (OSError, ValueError):
            old = ""
        if old and not is_quick(old):
            raise FullRunFigureError(
                f"refusing to replace the {old}-profile figure {side} with a {profile}-profile one: a quick run "
                f"never overwrites a full run's result")


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

    out = output_dir(profile, out_dir)
    _check_target(out, name, profile)
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
    top, as the markdown of ``summary`` (a smaller DataFrame; default: the table).
    Like :func:`save_figure`, a quick profile's table goes to the quick-run folder."""
    out = output_dir(profile, out_dir)
    _check_target(out, name, profile)
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


@dataclass(frozen=True)
class Publisher:
    """The provenance shared by the figures and tables of one run, given once:
    ``publish = Publisher(source, profile, dataset, seeds, device, runs=df)``, then
    ``publish.figure(fig, name, caption, data=table)`` per figure.  A keyword of
    :meth:`figure` or :meth:`table` (``seeds=[0]`` for a one-seed figure) overrides the
    shared value for that entry."""

    source: str
    profile: str
    dataset: str
    seeds: Sequence[int] | str
    device: str
    runs: Any = None

    def _fields(self, override: dict) -> dict:
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        unknown = sorted(set(override) - set(shared))
        if unknown:
            raise TypeError(f"unknown provenance field(s) {unknown}; allowed: {sorted(shared)}")
        return {**shared, **override}

    def figure(self, fig, name: str, caption: str, data=None, **override) -> Path:
        """Save ``fig`` as ``name`` with ``caption`` and its table ``data`` (:func:`save_figure`)."""
        return save_figure(fig, name, caption=caption, data=data, **self._fields(override))

    def table(self, table, name: str, caption: str, summary=None, **override) -> Path:
        """Save the result ``table`` as ``name`` with ``caption`` (:func:`save_table`)."""
        return save_table(table, name, caption=caption, summary=summary, **self._fields(override))


def _runs_line(meta: dict) -> str:
    commits = meta.get("run_commits")
    return f"; result rows made at commit(s) {', '.join(f'`{c}`' for c in commits)}" if commits else ""


def write_index(out_dir=None) -> Path:
    """Rebuild ``README.md`` in the figures folder from the sidecars found there."""
    out = Path(out_dir) if out_dir is not None else figures_dir()
    metas = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    tables = [m for m in metas if m.get("kind") == "table"]
    metas = [m for m in metas if m.get("kind") != "table"]
    quick = bool(metas or tables) and all(is_quick(m.get("profile", "")) for m in metas + tables)
    lines = [
        "# Figures" + (" of quick runs: they test the code, they are not results" if quick else ""),
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


REDRAWN = " (re-drawn from "  # a sidecar's source says so when a figure was re-drawn from its table
STATE_BEGIN, STATE_END = "<!-- state of figures: begin -->", "<!-- state of figures: end -->"


def figures_state(folder=None) -> str:
    """The provenance of the committed figures, one Markdown line per group of names
    (``lenet_*``, ``bsr_*``, ``cifar_*``): profiles, sources, devices, the commits the
    figures were rendered at and the commits their result rows were made at, all read
    from the sidecars (the README quotes it; a test keeps the two equal)."""
    out = Path(folder) if folder is not None else figures_dir()
    groups: dict[str, list[dict]] = {}
    for side in sorted(out.glob("*.json")):
        meta = json.loads(side.read_text())
        groups.setdefault(meta["name"].split("_")[0], []).append(meta)

    def values(metas, key):
        found = set()
        for m in metas:
            v = m.get(key)
            found.update(v if isinstance(v, list) else [v] if v else [])
        return sorted(str(v) for v in found)

    lines = []
    for group, metas in groups.items():
        tick = lambda vs: ", ".join(f"`{v}`" for v in vs)
        sources = sorted({m["source"].split(REDRAWN)[0] for m in metas})
        redrawn = [m["name"] for m in metas if REDRAWN in m["source"]]
        lines.append(f"- `{group}_*` ({len(metas)} figures and tables): {', '.join(values(metas, 'profile'))} profile; "
                     f"made by {tick(sources)}" + (f" ({tick(redrawn)} re-drawn from their committed tables)"
                                                   if redrawn else "")
                     + f"; device {'; '.join(values(metas, 'device'))}; rendered at commit {tick(values(metas, 'commit'))};"
                     f" result rows made at commit {tick(values(metas, 'run_commits')) or 'the same'}.")
    return "\n".join(lines)


def readme_with_state(readme: str, folder=None) -> str:
    """``readme`` with the text between the state-of-figures markers replaced by :func:`figures_state`."""
    start, end = readme.index(STATE_BEGIN) + len(STATE_BEGIN), readme.index(STATE_END)
    return readme[:start] + "\n" + figures_state(folder) + "\n" + readme[end:]
