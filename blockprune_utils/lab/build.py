"""The teacher's tools for the graded lab: write the student version of a solution
notebook, and grade a submitted notebook with the automatic checks.

Solution regions follow the nbgrader convention:

* in a code cell, the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
  become ``# your code here`` and ``raise NotImplementedError`` (at the indentation
  of the ``BEGIN`` line);
* a markdown cell tagged ``solution`` (a model answer) becomes "*Your answer here.*";
* a cell tagged ``teacher`` (notes for the teacher) is dropped.

Outputs and execution counts are cleared.  Grading executes a notebook with errors
allowed (an unfinished task does not stop the others), then runs
:func:`~blockprune_utils.lab.checks.print_grades` in the same kernel.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

import nbformat

from .checks import GRADES_MARK, TASKS

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
ANSWER_PLACEHOLDER = "*Your answer here.*"
LAB_NOTEBOOK = "10_lab_block_pruning.ipynb"


def strip_code(source: str, where: str = "cell") -> str:
    """``source`` with every solution region replaced by a stub; a ValueError names an unbalanced marker."""
    out, inside = [], False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN!r} inside another solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# your code here", f"{indent}raise NotImplementedError"]
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END!r} without a {BEGIN!r} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} is never closed by {END!r}")
    return "\n".join(out)


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a solution notebook (a new notebook; ``nb`` is unchanged)."""
    nb = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if "teacher" in tags:
            continue
        if cell.cell_type == "code":
            cell.source = strip_code(cell.source, f"cell {i}")
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown" and "solution" in tags:
            cell.source = ANSWER_PLACEHOLDER
            cell.metadata["tags"] = [t for t in tags if t != "solution"]
        cells.append(cell)
    nb.cells = cells
    return nb


def has_solutions(nb: nbformat.NotebookNode) -> bool:
    return any(BEGIN in c.source for c in nb.cells if c.cell_type == "code") or any(
        "solution" in c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "markdown")


def write_release(solution: Path, out: Path) -> dict[str, Path]:
    """Write ``out/student/<lab>`` (to hand out), ``out/autograder/tasks.json`` and its
    README (how to grade); returns the paths.  Files are written to a fresh folder next
    to ``out`` and moved into place at the end, so a failure leaves no half release."""
    solution, out = Path(solution), Path(out)
    nb = nbformat.read(str(solution), as_version=4)
    if not has_solutions(nb):
        raise ValueError(f"{solution} has no solution regions ({BEGIN!r} ... {END!r}): is it already a student version?")
    _check_release_folder(out, solution)
    student = student_version(nb)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "student").mkdir(parents=True)
    (tmp / "autograder").mkdir()
    nbformat.write(student, str(tmp / "student" / solution.name))
    tasks = [{"task": t.number, "title": t.title, "points": t.points, "minutes": t.minutes, "defines": t.name,
              "graded": "automatic" if t.check else "by hand"} for t in TASKS.values()]
    (tmp / "autograder" / "tasks.json").write_text(json.dumps(tasks, indent=2) + "\n")
    (tmp / "autograder" / "README.md").write_text(_AUTOGRADER_README.format(
        total=sum(t.points for t in TASKS.values()), auto=sum(t.points for t in TASKS.values() if t.check),
        name=solution.name))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"student": out / "student" / solution.name, "tasks": out / "autograder" / "tasks.json"}


def _check_release_folder(out: Path, solution: Path) -> None:
    """Refuse an output folder that replacing would lose anything else: one holding the
    solution or the repository, or a non-empty folder that is not an earlier release."""
    out, sol = Path(out).resolve(), Path(solution).resolve()
    from ..infra.paths import REPO_ROOT

    if out == sol.parent or out in sol.parents or out == REPO_ROOT or out in REPO_ROOT.parents:
        raise ValueError(f"--out {out} holds the solution notebook or the repository: give a folder of its own, "
                         "e.g. build/lab")
    if out.exists() and any(out.iterdir()) and not (out / "autograder" / "tasks.json").is_file():
        raise ValueError(f"--out {out} is not empty and holds no earlier release (autograder/tasks.json): it is "
                         "replaced whole, so give an empty or new folder")


_AUTOGRADER_README = """# Autograder of {name}

The automatic checks live in the package (`blockprune_utils/lab/checks.py`): each one compares a
student's function with the package's own implementation on fixed and seeded random inputs and
names the first mismatch. Tasks worth {auto} of the {total} points are checked automatically
(`tasks.json`); the written questions are graded by hand.

Grade one submission (executes it with errors allowed, then runs every check in its kernel):

    python -m blockprune_utils.lab grade path/to/{name} --out grades.json

or `make lab-grade SUBMISSION=path/to/{name}`.

The checks run in the submission's own kernel, after its cells. That grades honest work
reliably, but it is not a sandbox: a submission that replaces the checks, or the libraries they
call, can fool it. Read the code of a submission whose score surprises you, and run submissions
you do not trust in a container of their own.
"""


def _parameter_cell(nb: nbformat.NotebookNode, parameters: dict) -> None:
    """Insert ``parameters`` as assignments after the cell tagged ``parameters`` (as papermill does)."""
    if not parameters:
        return
    at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), 0)
    source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(at, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def grade_notebook(path: Path, parameters: dict | None = None, timeout: int = 600, out: Path | None = None) -> list[dict]:
    """Execute the notebook at ``path`` (errors allowed, in its own folder) and return
    the grade rows of :func:`~blockprune_utils.lab.checks.grade`."""
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    _parameter_cell(nb, parameters or {})
    # the design targets are the teacher's (parameters given here), never what the submission sets
    targets = {k: v for k, v in (parameters or {}).items() if k in ("target_acc", "max_bytes_ratio")}
    nb.cells.append(nbformat.v4.new_code_cell(
        f"from blockprune_utils.lab.checks import print_grades\nprint_grades(globals(), **{targets!r})"))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    if out is not None:
        nbformat.write(nb, str(out))
    text = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.get("output_type") == "stream")
    lines = [line for line in text.splitlines() if line.startswith(GRADES_MARK)]
    if not lines:
        errors = [o.get("evalue", "") for o in nb.cells[-1].get("outputs", []) if o.get("output_type") == "error"]
        raise RuntimeError(f"grading {path} printed no grades; the grading cell said: {errors or text[-500:]!r}")
    return json.loads(lines[-1][len(GRADES_MARK):])


def grades_table(rows: list[dict]) -> str:
    lines = [f"{'task':>4}  {'points':>6}  verdict"]
    for r in rows:
        earned = "-" if r["earned"] is None else r["earned"]
        score = f"{earned}/{r['points']}"
        lines.append(f"{r['task']:>4}  {score:>6}  {r['title']}: {r['verdict']}")
    auto = [r for r in rows if r["earned"] is not None]
    lines.append(f"automatic: {sum(r['earned'] for r in auto)}/{sum(r['points'] for r in auto)} points; "
                 f"by hand: {sum(r['points'] for r in rows if r['earned'] is None)} points")
    return "\n".join(lines)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m blockprune_utils.lab", description="the graded lab: student version, grading")
    sub = ap.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("student", help="write the student version and the autograder's files")
    rel.add_argument("solution", type=Path, nargs="?", default=Path("notebooks") / LAB_NOTEBOOK)
    rel.add_argument("--out", type=Path, default=Path("build") / "lab")
    gr = sub.add_parser("grade", help="execute a submission and run every automatic check")
    gr.add_argument("submission", type=Path)
    gr.add_argument("--out", type=Path, help="write the grades (JSON) here")
    gr.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a parameter of the notebook (VALUE read as JSON when it parses)")
    gr.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = ap.parse_args(argv)
    if args.command == "student":
        paths = write_release(args.solution, args.out)
        print(f"student version: {paths['student']}\nautograder: {paths['tasks'].parent}")
    else:
        params = {k: _value(v) for k, v in args.parameter}
        rows = grade_notebook(args.submission, params, args.timeout)
        print(grades_table(rows))
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
