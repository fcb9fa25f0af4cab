"""An HTML edition of the executed notebooks that reads offline.

``python -m blockprune_utils.book --executed build/notebooks --out build/book``
converts each executed notebook to one self-contained HTML page (figures embedded,
styles inline) plus an index page.  Math is turned into MathML when the page is
built, so a browser shows it without MathJax or any network access; no page loads a
script, style sheet, font or image from elsewhere (:func:`remote_urls` checks it).
Notebooks that ``make figures`` has not executed are executed here first (the
walkthrough with its defaults, the others in the ``quick`` profile, which also
shows the committed figures of the full run).

The index says what each page is (a full run, or a quick run that only exercises
the code), from the parameters papermill recorded in the executed notebook; every
page links to the previous and next page and to the index.  Long code cells and
cells that define helpers (mostly plotting) are folded under a "code" summary, and
figures keep a readable size (the page scrolls sideways rather than shrinking a
six-panel figure to a thumbnail).  The graded lab (notebook 10) is not a page: it
holds the solutions.
"""
from __future__ import annotations

import argparse
import html
import re
from pathlib import Path

import jinja2
import nbformat
from latex2mathml import exceptions as latex_errors
from latex2mathml.converter import convert as latex_to_mathml
from nbconvert import HTMLExporter

from .infra.paths import REPO_ROOT

# (executed file name, source notebook, papermill parameters when it must be executed here)
PAGES = (
    ("00_block_pruning_walkthrough.ipynb", "00_block_pruning_walkthrough.ipynb", {"widgets": False}),
    ("01_lenet_mnist-mnist.ipynb", "01_lenet_mnist.ipynb", {"profile": "quick", "dataset": "mnist"}),
    ("01_lenet_mnist-fashion_mnist.ipynb", "01_lenet_mnist.ipynb", {"profile": "quick", "dataset": "fashion_mnist"}),
    ("02_bsr_speed.ipynb", "02_bsr_speed.ipynb", {"profile": "quick"}),
    ("03_cifar10_resnet18.ipynb", "03_cifar10_resnet18.ipynb", {"profile": "quick"}),
    ("04_your_own_model.ipynb", "04_your_own_model.ipynb", {"profile": "paper"}),
    ("05_accuracy_for_the_time.ipynb", "05_accuracy_for_the_time.ipynb", {"profile": "quick"}),
)

# The lab template without the scripts it would load from the network (require.js,
# MathJax, mermaid, the widget manager): the pages need none of them.
# Folded cells (metadata "book_fold", set by fold_code_cells) wrap their input in <details>.
_CSS = """
.jp-Notebook { max-width: 1500px; margin: 0 auto; }
.jp-MarkdownOutput { max-width: 62em; }
.jp-OutputArea-output { overflow-x: auto; }
.jp-RenderedImage img { max-width: max(100%, 1100px); height: auto; }
details.book-fold > summary { cursor: pointer; color: #555; font-family: monospace; padding: 0.2em 0; }
nav.book-nav { max-width: 1500px; margin: 0.5em auto; padding: 0.4em 1em; font-family: sans-serif;
  display: flex; justify-content: space-between; border-bottom: 1px solid #ddd; }
nav.book-nav.bottom { border-top: 1px solid #ddd; border-bottom: none; }
p.book-kind { max-width: 1500px; margin: 0.3em auto; padding: 0 1em; font-family: sans-serif; color: #444; }
"""
_TEMPLATE = "\n".join(["{%- extends 'lab/index.html.j2' -%}"] + [
    f"{{%- block {b} -%}}{{%- endblock {b} -%}}"
    for b in ("html_head_js_requirejs", "html_head_js_mathjax", "html_head_js_mermaidjs", "jupyter_widgets")] + [
    "{%- block extra_css -%}<style>" + _CSS + "</style>{%- endblock extra_css -%}",
    "{% block input_group -%}{%- if cell.metadata.get('book_fold') -%}"
    "<details class=\"book-fold\"><summary>{{ cell.metadata.book_fold }}</summary>{{ super() }}</details>"
    "{%- else -%}{{ super() }}{%- endif -%}{% endblock input_group %}"]) + "\n"
FOLD_LINES = 15  # a code cell this long is folded; so is one that defines a function
_LATEX_ERRORS = tuple(v for v in vars(latex_errors).values() if isinstance(v, type) and issubclass(v, Exception))
_SKIP = re.compile(r"(<(pre|code|script|style|textarea)\b.*?</\2>)", re.S | re.I)
_TAG = re.compile(r"(<[^>]*>)")
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$\w])\$(?!\s)((?:[^$\n]|\n(?!\n))+?)(?<!\s)\$(?![\w$])")
_REMOTE = re.compile(r"""(?:\b(?:src|href|poster|data)\s*=\s*["']?\s*|url\(\s*["']?|@import\s+["']?)(?:https?:)?//""", re.I)


def _mathml(latex: str, display: str) -> str:
    tex = html.unescape(latex).strip()
    try:
        return latex_to_mathml(tex, display=display)
    except _LATEX_ERRORS:  # a formula latex2mathml cannot read stays visible as its source
        return f"<code>{html.escape(tex)}</code>"


def math_to_mathml(page: str) -> str:
    """Replace ``$$...$$`` and ``$...$`` in the text of ``page`` (HTML) by MathML,
    outside tags and ``pre``/``code``/``script``/``style`` elements."""
    parts = _SKIP.split(page)
    out = []
    i = 0
    while i < len(parts):
        # only text between tags: a heading's math also sits in its anchor's id attribute
        pieces = _TAG.split(parts[i])
        for j in range(0, len(pieces), 2):
            text = _DISPLAY.sub(lambda m: _mathml(m.group(1), "block"), pieces[j])
            pieces[j] = _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), text)
        out.append("".join(pieces))
        if i + 1 < len(parts):
            out.append(parts[i + 1])  # the skipped element, unchanged
        i += 3
    return "".join(out)


def remote_urls(page: str) -> list[str]:
    """The places where ``page`` would load something from the network: a ``src``,
    ``href`` (style sheets and links alike), ``url(...)`` or ``@import`` pointing to
    an http(s) or protocol-relative address.  Plain hyperlinks in the text are
    allowed only as ``<a href>``; they load nothing until clicked."""
    hits = []
    for m in _REMOTE.finditer(page):
        start = page.rfind("<", 0, m.start())
        tag = page[start:start + 3].lower() if start >= 0 else ""
        if tag.startswith("<a ") or tag == "<a\n":
            continue
        hits.append(page[max(m.start() - 40, 0):m.end() + 60])
    return hits


def exporter() -> HTMLExporter:
    return HTMLExporter(extra_loaders=[jinja2.DictLoader({"book.html.j2": _TEMPLATE})], template_file="book.html.j2",
                        embed_images=True)


def fold_code_cells(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Mark for folding the code cells of ``FOLD_LINES`` lines or more and those that
    define a function (the parameters cell stays open); a cell tagged ``book-show``
    is never folded, one tagged ``book-fold`` always is."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        lines = cell.source.count("\n") + 1
        defines = re.search(r"^(def|class) ", cell.source, re.M) is not None
        if "book-fold" in tags or ("book-show" not in tags and "parameters" not in tags
                                   and (lines >= FOLD_LINES or defines)):
            what = "helper code" if defines else "code"
            cell.metadata["book_fold"] = f"{what} ({lines} lines): click to show"
    return nb


def page_kind(notebook: Path, params: dict | None = None) -> str:
    """What a page is: a full run, or a quick run, from the parameters papermill recorded
    (or, for a notebook executed elsewhere, the parameters it is listed with)."""
    nb = nbformat.read(str(notebook), as_version=4)
    recorded = nb.metadata.get("papermill", {}).get("parameters")
    p = dict(params or {}) if recorded is None else dict(recorded)
    profile = p.get("profile")
    if profile is None:
        return "runs in full with its defaults (it has no profile)"
    if profile == "quick":
        return ("quick run (quick profile): a few minutes' worth that exercises the code; its numbers are not results, "
                "the committed figures of the full run are shown on the page")
    return f"full run ({profile} profile)"


def _nav(links: dict, where: str) -> str:
    def a(key, label):
        if not links.get(key):
            return "<span></span>"
        href, title = links[key]
        return f'<a href="{html.escape(href)}">{label} {html.escape(title)}</a>'
    return (f'<nav class="book-nav {where}">{a("prev", "&larr;")}<a href="index.html">index</a>'
            f'{a("next", "&rarr;")}</nav>')


def export_page(notebook: Path, out: Path, exp: HTMLExporter | None = None, links: dict | None = None,
                kind: str | None = None) -> Path:
    """One executed notebook -> one offline HTML page; ``links`` ({"prev": (href, title),
    "next": ...}) adds the navigation bars, ``kind`` a line saying what the page is."""
    nb = fold_code_cells(nbformat.read(str(notebook), as_version=4))
    body, _ = (exp or exporter()).from_notebook_node(nb)
    if links is not None:
        top = _nav(links, "top") + (f'<p class="book-kind">This page: {html.escape(kind)}.</p>' if kind else "")
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + top, body, count=1)
        body = body.replace("</body>", _nav(links, "bottom") + "</body>", 1)
    page = math_to_mathml(body)
    bad = remote_urls(page)
    if bad:
        raise RuntimeError(f"{notebook.name}: the page would load from the network: {bad[:3]}")
    out.write_text(page, encoding="utf-8")
    return out


def _title(notebook: Path) -> str:
    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return notebook.stem


def page_titles(files: list[Path], pages=PAGES) -> dict[Path, str]:
    """Each page's title, its notebook's first heading; pages that share one (one notebook
    run with different parameters) get the parameters that tell them apart."""
    params = {name: p for name, _, p in pages}
    by_title: dict[str, list[Path]] = {}
    for f in files:
        by_title.setdefault(_title(f), []).append(f)
    titles = {}
    for title, same in by_title.items():
        values = [params.get(f.name, {}) for f in same]
        keys = sorted(k for k in set().union(*values) if len({repr(v.get(k)) for v in values}) > 1)
        for f, v in zip(same, values):
            tag = ", ".join(f"{k}={v.get(k)}" for k in keys) or f.stem
            titles[f] = f"{title} ({tag})" if len(same) > 1 else title
    return titles


def execute_missing(executed: Path, notebooks: Path, pages=PAGES) -> list[Path]:
    """Execute with papermill each page's notebook that ``executed`` lacks."""
    import papermill as pm

    executed.mkdir(parents=True, exist_ok=True)
    done = []
    for name, source, params in pages:
        target = executed / name
        if not target.exists():
            print(f"executing {source} {params} -> {target}", flush=True)
            pm.execute_notebook(str(notebooks / source), str(target), parameters=params, cwd=str(notebooks),
                                kernel_name="python3", progress_bar=False)
        done.append(target)
    return done


def build_book(executed: Path, out: Path, notebooks: Path | None = None, pages=PAGES, execute: bool = True) -> Path:
    """Write ``out``/index.html and one page per executed notebook; returns the index."""
    notebooks = notebooks or REPO_ROOT / "notebooks"
    executed, out = Path(executed), Path(out)
    files = execute_missing(executed, notebooks, pages) if execute else [executed / p[0] for p in pages
                                                                          if (executed / p[0]).exists()]
    out.mkdir(parents=True, exist_ok=True)
    exp = exporter()
    items = []
    titles = page_titles(files, pages)
    params = {name: p for name, _, p in pages}
    hrefs = [f"{f.stem}.html" for f in files]
    for i, nb_path in enumerate(files):
        links = {"prev": (hrefs[i - 1], titles[files[i - 1]]) if i else None,
                 "next": (hrefs[i + 1], titles[files[i + 1]]) if i + 1 < len(files) else None}
        kind = page_kind(nb_path, params.get(nb_path.name))
        page = export_page(nb_path, out / hrefs[i], exp, links, kind)
        items.append(f'<li><a href="{page.name}">{html.escape(titles[nb_path])}</a> '
                     f'<small>({html.escape(nb_path.stem)})</small><br>{html.escape(kind)}</li>')
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>blockprune: the notebooks</title>"
        "<style>body{font-family:sans-serif;max-width:46em;margin:3em auto;line-height:1.5}li{margin-bottom:0.8em}"
        "</style></head><body>"
        "<h1>blockprune: block pruning, read along</h1><p>The executed notebooks of the study; they read offline. "
        "Each entry says whether its page is a full run or a quick run (which only exercises the code; the page then "
        "shows the committed figures of the full run). Every page links to the previous and next one. Long code and "
        "plotting helpers are folded: click <i>code</i> to show them. The figures of the full run, with their data, "
        "are in <code>figures/</code>. The graded lab, notebook 10, is not here: it holds the solutions "
        "(<code>make lab-student</code> writes the version for students).</p><ol>"
        + "".join(items) + "</ol></body></html>\n", encoding="utf-8")
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blockprune_utils.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executed", default="build/notebooks", help="folder of executed notebooks")
    parser.add_argument("--out", default="build/book", help="folder for the HTML pages")
    parser.add_argument("--no-execute", action="store_true", help="use only the notebooks already executed")
    args = parser.parse_args(argv)
    index = build_book(Path(args.executed).resolve(), Path(args.out).resolve(), execute=not args.no_execute)
    print(f"book: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
