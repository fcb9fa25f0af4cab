"""The graded lab: its checks pass the package's own functions and name the first
mismatch of wrong ones; the student version strips every solution; the pretrained
LeNet loads and is checked; the solution notebook passes every check and the
student version fails them."""
from __future__ import annotations

import json
import math
import re
import shutil

import nbformat
import pytest
import torch

from blockprune_utils import block_scores, expand_block_mask, prune_fraction, set_mask, storage_bytes
from blockprune_utils.blocks import block_mask_of
from blockprune_utils.bsr import bsr_arrays
from blockprune_utils.infra.paths import REPO_ROOT as REPO
from blockprune_utils.lab import TASKS, LabCheckError, checks
from blockprune_utils.lab.build import BEGIN, END, grade_notebook, strip_code, student_version, write_release
from blockprune_utils.lab.design import DesignResult, check_design
from blockprune_utils.pretrained import LENET_PROVENANCE, LENET_WEIGHTS, lenet_provenance, load_lenet
from blockprune_utils.train import TrainConfig, train

LAB = REPO / "notebooks" / "10_lab_block_pruning.ipynb"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the checks train a LeNet for a few steps: one thread is fastest on a shared machine
    yield
    torch.set_num_threads(threads)


def package_round(model, k, rates, train_set, epochs=1):
    for name, p in rates.items():
        layer = getattr(model, name)
        w = layer.weight.detach()
        alive = prune_fraction(block_scores(w, k), block_mask_of(w, k), p)
        set_mask(layer, expand_block_mask(alive, w.shape, k).float())
    train(model, train_set, TrainConfig(epochs=epochs, batch_size=64, select="last"), torch.Generator().manual_seed(0))
    return model


def zero_once_round(model, k, rates, train_set, epochs=1):
    """Prunes the right blocks but zeroes them once, without a mask."""
    for name, p in rates.items():
        layer = getattr(model, name)
        w = layer.weight.detach()
        alive = prune_fraction(block_scores(w, k), block_mask_of(w, k), p)
        with torch.no_grad():
            layer.weight.mul_(expand_block_mask(alive, w.shape, k).float())
    return model


def padded_mean_scores(weight, k):
    """Zero-pads partial tiles into the mean: wrong at the edges."""
    R, C = math.ceil(weight.shape[0] / k), math.ceil(weight.shape[1] / k)
    w = torch.nn.functional.pad(weight.abs().double(), (0, C * k - weight.shape[1], 0, R * k - weight.shape[0]))
    return w.reshape(R, k, C, k).mean(dim=(1, 3))


def cutoff_prune(scores, alive, p):
    """The authors' rule, score < cutoff: prunes fewer blocks when scores tie."""
    vals = torch.sort(scores[alive]).values
    n = round(p * int(alive.sum()))
    if n == 0:
        return alive.clone()
    return alive & ~(scores < vals[n])


def column_major_bsr(weight, k, mask):
    data, indices, indptr, _ = bsr_arrays(weight.T, k, mask.T)
    return data, indices, indptr


GOOD = {
    "1": block_scores,
    "2": prune_fraction,
    "3": expand_block_mask,
    "4a": lambda w, k, m: bsr_arrays(w, k, m)[:3],
    "4b": lambda w, k, m: storage_bytes(w, k, m).bsr,
    "5": package_round,
}
BAD = {
    "1": (padded_mean_scores, "the package gives"),
    "2": (cutoff_prune, "round(p*N)"),
    "3": (lambda m, shape, k: m.repeat_interleave(k, 0).repeat_interleave(k, 1), "has shape"),
    "4a": (column_major_bsr, "weight (7, 8), k=3, 3 of 9 blocks kept: indptr[1] is 3, the package gives 1"),
    "4b": (lambda w, k, m: int(m.sum()) * k * k * 4, "the package counts"),
    "5": (zero_once_round, "kept weights did not change"),
}


@pytest.mark.parametrize("task", sorted(GOOD))
def test_check_passes_the_package_itself(task):
    assert TASKS[task].check(GOOD[task]) == TASKS[task].points


@pytest.mark.parametrize("task", sorted(BAD))
def test_check_names_the_first_mismatch(task):
    fn, words = BAD[task]
    with pytest.raises(LabCheckError, match=re.escape(words)):
        TASKS[task].check(fn)


def test_retrain_check_catches_weights_that_come_back():
    def no_mask(model, k, rates, train_set, epochs=1):  # zeroes once, then trains: Adam revives the zeros
        zero_once_round(model, k, rates, train_set)
        for name in rates:
            getattr(model, name).weight.register_hook(lambda g: g)  # nothing holds the zeros
        w = {n: getattr(model, n).weight.detach().clone() for n in rates}
        train(model, train_set, TrainConfig(epochs=1, batch_size=64, select="last"), torch.Generator().manual_seed(0))
        with torch.no_grad():  # ... and hides it by zeroing again after training
            for n in rates:
                getattr(model, n).weight.mul_((w[n] != 0).float())
        return model

    with pytest.raises(LabCheckError, match="must stay zero"):
        checks.check_prune_retrain_round(no_mask)


def test_check_reports_an_error_of_the_students_code_with_its_input():
    with pytest.raises(LabCheckError, match=r"weight of shape \(7, 8\), k=3: your function raised ZeroDivisionError"):
        checks.check_block_scores(lambda w, k: 1 / 0)


def test_prune_check_rejects_a_function_that_changes_its_input():
    def in_place(scores, alive, p):
        new = prune_fraction(scores, alive, p)
        alive.copy_(new)
        return new

    with pytest.raises(LabCheckError, match="changed the alive mask"):
        checks.check_prune_fraction(in_place)


def test_grade_scores_missing_and_unfinished_functions_zero():
    def unfinished(*args):
        raise NotImplementedError

    rows = {r["task"]: r for r in checks.grade({"my_block_scores": block_scores, "my_prune_fraction": unfinished})}
    assert rows["1"]["earned"] == 15 and rows["1"]["verdict"] == "passed"
    assert rows["2"]["earned"] == 0 and "not implemented" in rows["2"]["verdict"]
    assert rows["3"]["earned"] == 0 and "not defined" in rows["3"]["verdict"]
    assert rows["7"]["earned"] is None
    assert sum(t.points for t in TASKS.values()) == 100


def test_design_check_and_targets():
    base = {"k": 4, "rates": {"fc1": 0.5, "fc2": 0.5, "fc3": 0.2}, "rounds": 3, "epochs_per_round": 2}
    assert check_design(base, 6)["rounds"] == 3
    with pytest.raises(ValueError, match="= 8 epochs, over the budget of 6"):
        check_design({**base, "rounds": 4}, 6)
    with pytest.raises(ValueError, match=r"missing \['rounds'\]"):
        check_design({k: v for k, v in base.items() if k != "rounds"}, 6)
    with pytest.raises(ValueError, match="a rate for each of"):
        check_design({**base, "rates": {"fc1": 0.5}}, 6)
    result = DesignResult(base, 6, bsr_bytes=120_000, dense_bytes=1_000_000, density=0.1, test_acc=0.96, n_test=10, wall_s=1)
    with pytest.raises(LabCheckError, match=r"12.00% of dense, over the target 10%.*96.00% is under the target 97%"):
        checks.check_design_result(result)
    assert checks.check_design_result(result, target_acc=0.95, max_bytes_ratio=0.15) == 10
    with pytest.raises(LabCheckError, match="what run_design"):
        checks.check_design_result({"test_acc": 0.99})


def test_strip_code_replaces_regions_at_their_indentation():
    src = f"def f(x):\n    y = 1\n    {BEGIN}\n    return x + y\n    {END}\nprint(f)"
    assert strip_code(src) == "def f(x):\n    y = 1\n    # your code here\n    raise NotImplementedError\nprint(f)"
    with pytest.raises(ValueError, match="never closed"):
        strip_code(f"{BEGIN}\nx = 1")
    with pytest.raises(ValueError, match="line 2: '### END SOLUTION' without"):
        strip_code(f"x = 1\n{END}")


def test_student_version_has_no_solution_left():
    solution = nbformat.read(str(LAB), as_version=4)
    student = student_version(solution)
    text = "\n".join(c.source for c in student.cells)
    assert BEGIN not in text and END not in text
    assert "stable=True).indices" not in text  # the tie rule's solution line
    assert '"k": 3' not in text  # the design
    assert "*Model answer.*" not in text
    n_regions = sum(c.source.count(BEGIN) for c in solution.cells if c.cell_type == "code")
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert code.count("raise NotImplementedError") == n_regions == 7
    for task in TASKS.values():  # every task's name is still defined by the student's notebook
        assert not task.name or task.name in text
    assert nbformat.validate(student) is None


def test_source_notebook_is_committed_without_outputs():
    nb = nbformat.read(str(LAB), as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_pretrained_lenet_loads_and_is_checked(tmp_path, data_dir):
    from blockprune_utils.data import load_mnist_like
    from blockprune_utils.pretrained import pretrained_lenet
    from blockprune_utils.train import evaluate

    prov = lenet_provenance()
    assert {prov["dataset"], prov["profile"], prov["seed"]} == {"mnist", "paper", 0}
    assert not prov["commit"].endswith("-dirty") and prov["test_acc"] > 0.98
    assert LENET_WEIGHTS.stat().st_size < 1_200_000
    model = pretrained_lenet()
    assert not model.training
    test = load_mnist_like("mnist", train=False).subset(slice(0, 2000))
    assert evaluate(model, test) > 0.97
    changed = tmp_path / LENET_WEIGHTS.name
    shutil.copy(LENET_WEIGHTS, changed)
    raw = bytearray(changed.read_bytes())
    raw[-100] ^= 1
    changed.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="the file was changed"):
        load_lenet(changed, LENET_PROVENANCE)
    with pytest.raises(FileNotFoundError, match="python -m blockprune_utils.pretrained"):
        load_lenet(tmp_path / "missing.pt")


def test_release_writes_student_version_and_autograder(tmp_path):
    paths = write_release(LAB, tmp_path / "lab")
    tasks = json.loads(paths["tasks"].read_text())
    assert [t["task"] for t in tasks] == list(TASKS) and sum(t["points"] for t in tasks) == 100
    assert (tmp_path / "lab" / "autograder" / "README.md").exists()
    assert not (tmp_path / "lab.part").exists()
    with pytest.raises(ValueError, match="already a student version"):
        write_release(paths["student"], tmp_path / "again")
    assert not (tmp_path / "again").exists()


@pytest.mark.notebook
def test_solution_notebook_passes_every_check(run_notebook, data_dir):
    out = run_notebook(LAB.name, n_train=2000, n_test=2000)
    nb = nbformat.read(str(out), as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    for task in TASKS.values():
        if task.check is not None:
            assert f"task {task.number} ({task.title}): passed, {task.points}/{task.points} points" in text
    assert "automatic checks: 90/90 points" in text


@pytest.mark.notebook
def test_student_version_fails_every_check(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("FIGURES_DIR", str(tmp_path / "figures"))
    paths = write_release(LAB, tmp_path / "lab")
    rows = grade_notebook(paths["student"], {"n_train": 1000, "n_test": 1000}, timeout=300)
    auto = [r for r in rows if r["earned"] is not None]
    assert len(auto) == 7 and all(r["earned"] == 0 for r in auto), rows
    assert all("not implemented" in r["verdict"] or "not defined" in r["verdict"] for r in auto), rows


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.notebook
def test_make_lab_serves_the_repository_root(tmp_path):
    """`make lab`'s own command line (as root too) serves docs/ and figures/ and opens on notebooks/."""
    import http.client
    import os
    import shlex
    import subprocess
    import sys
    import time
    from pathlib import Path

    venv = Path(sys.executable).parent.parent
    dry = subprocess.run(["make", "-n", "lab", f"VENV={venv}"], cwd=REPO, capture_output=True, text=True, check=True)
    cmd = shlex.split([line for line in dry.stdout.splitlines() if "jupyter lab" in line][-1])
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    server = subprocess.Popen(cmd + ["--no-browser", f"--port={port}", "--IdentityProvider.token=t"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path, headers={"Authorization": "token t"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Location")

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, _ = get("/api/contents/docs/paper_notes.md?content=0")
                break
            except OSError:
                assert server.poll() is None, f"jupyter lab exited with {server.returncode}"
                assert time.monotonic() < deadline, "jupyter lab did not answer in 120 s"
                time.sleep(1)
        assert status == 200
        assert get("/files/figures/bsr_storage.png")[0] == 200
        assert get("/api/contents/notebooks/10_lab_block_pruning.ipynb?content=0")[0] == 200
        status, location = get("/")
        assert status in (301, 302) and location.split("?")[0].endswith("/lab/tree/notebooks")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _pins(path) -> list[str]:
    return [line.strip()[2:] for line in path.read_text().splitlines() if re.match(r"\s+- [\w.-]+==", line)]


def test_binder_builds_from_the_pins_of_environment_yml():
    binder = REPO / "binder"
    assert _pins(binder / "environment.yml") == _pins(REPO / "environment.yml") and len(_pins(REPO / "environment.yml")) > 10
    post = (binder / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post and post.startswith("#!/bin/bash")
    assert (binder / "postBuild").stat().st_mode & 0o111


def test_one_click_routes_name_one_repository_and_install_only_when_missing():
    notebooks = [REPO / "notebooks" / n for n in ("00_block_pruning_walkthrough.ipynb", LAB.name)]
    texts = [(REPO / "README.md").read_text()] + [p.read_text() for p in notebooks]
    owners = {m for t in texts for m in re.findall(r"github(?:\.com)?/([\w-]+)/blockprune", t)}
    assert len(owners) == 1, owners
    for path in notebooks:
        nb = nbformat.read(str(path), as_version=4)
        assert "colab.research.google.com/github/" in nb.cells[0].source and path.name in nb.cells[0].source
        setup = next(c.source for c in nb.cells if c.cell_type == "code" and "pip" in c.source)
        assert 'if importlib.util.find_spec("blockprune_utils") is None:' in setup  # a no-op where the package imports


def test_readme_opens_with_students_then_teachers_then_researchers():
    text = (REPO / "README.md").read_text()
    order = [text.index(s) for s in ("**Students.** `make lab`", "**Teachers.** `make lab-student`", "make book",
                                     "**Researchers.**", "## Quick start: two commands", "make figures   #", "make test      #")]
    assert order == sorted(order)


def test_the_student_version_never_replaces_a_folder_it_did_not_write(tmp_path):
    from blockprune_utils.infra.paths import REPO_ROOT
    from blockprune_utils.lab.build import write_release

    solution = REPO_ROOT / "notebooks" / "10_lab_block_pruning.ipynb"
    for out in (REPO_ROOT / "notebooks", REPO_ROOT, REPO_ROOT.parent):
        with pytest.raises(ValueError, match="holds the solution notebook or the repository"):
            write_release(solution, out)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no earlier release"):
        write_release(solution, other)
    assert (other / "keep.txt").read_text() == "mine"


def test_written_questions_read_their_numbers_from_the_committed_figures():
    from blockprune_utils.lab.figures import figure_data, random_controls_at

    table = random_controls_at(k=6)
    csv = figure_data("lenet_mnist_random_controls")
    assert table is not None and csv is not None, "figures/lenet_mnist_random_controls.csv is committed"
    assert set(table["variant"]) == {"block", "random_retrain", "random_scratch"}
    assert (table["round"] == csv["round"].max()).all() and (table["density"] < 0.05).all()
    assert figure_data("no_such_figure") is None
    # what question 7b and its model answer say: 2.9% density; about 96% against about 51%; the two controls
    # within their seed spread of each other
    t = table.set_index("variant")
    assert (t["density"].mul(100).round(1) == 2.9).all()
    assert round(t.loc["block", "acc_mean"]) == 96
    assert all(abs(t.loc[v, "acc_mean"] - 51) < 1.5 for v in ("random_retrain", "random_scratch"))
    gap = abs(t.loc["random_retrain", "acc_mean"] - t.loc["random_scratch", "acc_mean"])
    assert gap < t.loc[["random_retrain", "random_scratch"], "acc_sd"].max()


def test_the_pattern_question_7a_asks_about_holds_in_the_committed_figure():
    """7a states a pattern of bsr_speedup_fc1; a re-rendered figure must still show it."""
    from blockprune_utils.lab.figures import best_speedups

    best = best_speedups()
    assert best is not None, "figures/bsr_speedup_fc1.csv is committed"
    bsr, csr = best.loc["scipy_bsr"], best.loc["scipy_csr"]
    for b in (64, 256):
        assert (bsr.loc[[2, 3], b] < 1).all() and (csr[b] > 2).all() and (bsr.loc[bsr.index >= 4, b] > 1).all()
