"""The offline HTML edition: math becomes MathML, and no page loads from the network."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from blockprune_utils.book import build_book, math_to_mathml, remote_urls

REPO = Path(__file__).resolve().parent.parent

# a 1x1 PNG
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cfc0000003010100"
    "c9fe92ef0000000049454e44ae426082")).decode()


def _notebook(path):
    nb = new_notebook(cells=[
        new_markdown_cell("# A page\n\nA $k\\times k$ tile, $\\lceil r/k\\rceil$ of them,\nand\n\n"
                          "$$\\operatorname{round}(p\\cdot N)$$\n\n`$not math$` and a [link](https://example.org)."),
        new_code_cell("x = 1", outputs=[new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]),
    ])
    nbformat.write(nb, str(path))


def test_book_pages_are_offline(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    _notebook(executed / "page.ipynb")
    index = build_book(executed, tmp_path / "book", pages=(("page.ipynb", "unused.ipynb", {}),), execute=False)
    page = (tmp_path / "book" / "page.html").read_text()
    assert page.count("<math") == 3  # two inline formulas and one display formula
    assert "$k" not in page and "$$" not in page
    assert "$not math$" in page  # code stays as written
    assert "data:image/png;base64" in page
    assert remote_urls(page) == [] and remote_urls(index.read_text()) == []
    assert 'href="page.html"' in index.read_text()


def test_pages_of_one_notebook_are_told_apart_in_the_index(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    for name in ("a.ipynb", "b.ipynb"):
        _notebook(executed / name)
    pages = (("a.ipynb", "nb.ipynb", {"profile": "quick", "dataset": "mnist"}),
             ("b.ipynb", "nb.ipynb", {"profile": "quick", "dataset": "fashion_mnist"}))
    index = build_book(executed, tmp_path / "book", pages=pages, execute=False).read_text()
    # both share the heading "A page": the parameter that differs is named, the shared one is not
    assert index.count("A page (dataset=mnist)") == 1 and index.count("A page (dataset=fashion_mnist)") == 1
    assert "profile=" not in index
    single = build_book(executed, tmp_path / "one", pages=pages[:1], execute=False).read_text()
    assert ">A page</a>" in single  # a title nothing shares stays as it is


def test_remote_urls_finds_loads_not_links():
    assert remote_urls('<script src="https://cdn.example/x.js"></script>')
    assert remote_urls('<link rel="stylesheet" href="//cdn.example/x.css">')
    assert remote_urls("<style>@import 'https://fonts.example/f.css';</style>")
    assert remote_urls("<div style=\"background: url('http://x.example/a.png')\"></div>")
    assert remote_urls('<a href="https://doi.org/10.3390/e23081042">paper</a>') == []


def test_math_left_alone_in_code():
    html = '<h2 id="a-$k$-tile">A $k$ tile</h2><p>$a$</p><pre>$b$</pre><code>$c$</code>'
    out = math_to_mathml(html)
    assert out.count("<math") == 2 and "<pre>$b$</pre>" in out and "<code>$c$</code>" in out
    assert out.startswith('<h2 id="a-$k$-tile">A <math')  # attributes stay as they are


@pytest.mark.notebook
def test_book_in_a_clean_clone_leaves_the_committed_figures_alone(tmp_path, data_dir):
    """The book executes notebooks in the quick profile from a fresh clone with the
    default folders: afterwards the clone is unchanged, and the page cites the full run's
    committed figures and table."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("FIGURES_DIR", "QUICK_FIGURES_DIR", "RESULTS_DIR")}
    env.update(PYTHONPATH=str(clone), DATA_DIR=str(data_dir), MPLBACKEND="Agg")
    page_name = "01_lenet_mnist-mnist.ipynb"
    code = ("from blockprune_utils.book import PAGES, build_book; "
            f"build_book('build/notebooks', 'build/book', pages=[p for p in PAGES if p[0] == {page_name!r}])")
    subprocess.run([sys.executable, "-c", code], cwd=clone, env=env, check=True, timeout=900, capture_output=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, capture_output=True,
                            text=True, check=True).stdout
    assert status == "", f"the book changed the clone:\n{status}"
    assert list((clone / "build" / "figures-quick").glob("lenet_mnist_*.png"))  # the quick run's own figures
    page = (clone / "build" / "book" / "01_lenet_mnist-mnist.html").read_text()
    assert "lenet_mnist_acc_vs_density" in page and "paper profile" in page  # the committed full-run figures
    assert "figures/lenet_summary.csv" in page  # and the committed summary table in the body


def _executed(path, profile=None, code="x = 1"):
    _notebook(path)
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[1].source = code
    if profile is not None:
        nb.metadata["papermill"] = {"parameters": {"profile": profile}}
    nbformat.write(nb, str(path))


def test_index_says_what_each_page_is_and_pages_link_to_each_other(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    _executed(executed / "a.ipynb", profile="quick")
    _executed(executed / "b.ipynb", profile="paper")
    _executed(executed / "c.ipynb")
    pages = (("a.ipynb", "a.ipynb", {}), ("b.ipynb", "b.ipynb", {"profile": "quick"}), ("c.ipynb", "c.ipynb", {}))
    index = build_book(executed, tmp_path / "book", pages=pages, execute=False).read_text()
    # what papermill recorded wins over the parameters a page is listed with
    assert [index.index(s) for s in ("quick run (quick profile)", "full run (paper profile)", "runs in full")] \
        == sorted(index.index(s) for s in ("quick run (quick profile)", "full run (paper profile)", "runs in full"))
    a, b, c = ((tmp_path / "book" / f"{n}.html").read_text() for n in "abc")
    assert 'href="b.html"' in a and 'href="a.html"' not in a and a.count('href="index.html"') == 2
    assert 'href="a.html"' in b and 'href="c.html"' in b
    assert 'href="b.html"' in c and 'href="c.html"' not in c
    assert "This page: quick run (quick profile)" in a and "This page: full run (paper profile)" in b
    for page in (a, b, c, index):
        assert remote_urls(page) == []


def test_helpers_and_long_cells_are_folded_and_figures_keep_their_size(tmp_path):
    from blockprune_utils.book import FOLD_LINES

    executed = tmp_path / "executed"
    executed.mkdir()
    helper = "def draw(ax):\n    ax.plot([1, 2])\n\n\ndraw(None)"
    long = "\n".join(f"y{i} = {i}" for i in range(FOLD_LINES))
    for name, code in (("helper.ipynb", helper), ("long.ipynb", long), ("short.ipynb", "x = 1  # short")):
        _executed(executed / name, code=code)
    pages = tuple((n, n, {}) for n in ("helper.ipynb", "long.ipynb", "short.ipynb"))
    build_book(executed, tmp_path / "book", pages=pages, execute=False)
    helper_page, long_page, short_page = ((tmp_path / "book" / f"{n}.html").read_text() for n in ("helper", "long", "short"))
    assert '<details class="book-fold"><summary>helper code (5 lines): click to show</summary>' in helper_page
    assert f"code ({FOLD_LINES} lines): click to show" in long_page
    assert '<details class="book-fold">' not in short_page and "short" in short_page
    assert "max-width: max(100%, 1100px)" in short_page  # wide figures scroll instead of shrinking
