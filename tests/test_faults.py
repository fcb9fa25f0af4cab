"""Bad input and faults: paths with spaces in make, result files that lie about
themselves, unusable checkpoints, lost or absent Dask schedulers and workers, bad
command-line and notebook parameters, damaged data files.  Each is refused with a
message naming the bad value, or set aside (never deleted) and computed again."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from blockprune_utils.data import DataFileError, load_mnist_like
from blockprune_utils.infra.provenance import provenance
from blockprune_utils.infra.store import ResultStore, Schema
from blockprune_utils.infra.tasks import SweepError, Task, check_scheduler, run_tasks
from blockprune_utils.schedule import BlockPruner
from blockprune_utils.studies import lenet as L
from blockprune_utils.studies.base import RoundsRun, UnknownName, checkpoint, load_restored, resumable_rounds

REPO = Path(__file__).resolve().parent.parent
SCHEMA = Schema(key=("k", "seed"), values=("acc", "note"), types=(("k", int), ("seed", int), ("acc", float),
                                                                  ("note", str)))
PROV = provenance("cpu", commit="abc")
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def store(root, config=None) -> ResultStore:
    return ResultStore("toy", config or {"lr": 0.1}, SCHEMA, root=root)


def make(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={**os.environ, **env})


# -- make: a path with spaces is one path; clean-results removes the one folder it names

def test_make_clean_results_keeps_a_path_with_spaces_whole():
    out = make("-n", "clean-results", "RESULTS_DIR=/x/my results")
    assert out.returncode == 0, out.stderr
    assert "rm -rf -- '/x/my results'" in out.stdout
    assert "rm -rf /x/my" not in out.stdout and "rm -rf -- /x/my " not in out.stdout


def test_make_paths_with_spaces(tmp_path):
    out = make("-s", "paths", f"PY={sys.executable}", "DATA_DIR=my data", f"RESULTS_DIR={tmp_path}/my results",
               "FIGURES_DIR=rel/my figures", "QUICK_FIGURES_DIR=rel/my quick figures")
    assert out.returncode == 0, out.stderr
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert seen == {"DATA_DIR": str(REPO / "my data"), "RESULTS_DIR": str(tmp_path / "my results"),
                    "FIGURES_DIR": str(REPO / "rel" / "my figures"),
                    "QUICK_FIGURES_DIR": str(REPO / "rel" / "my quick figures")}
    out = make("-n", "sweep-lenet", "PY=python", "STAMP=", "SCHEDULER=/tmp/my scheduler.json")
    assert "--scheduler '/tmp/my scheduler.json'" in out.stdout


def test_make_clean_results_removes_only_that_folder(tmp_path):
    (tmp_path / "my results" / "lenet").mkdir(parents=True)
    (tmp_path / "my").mkdir()
    (tmp_path / "my" / "keep").write_text("x")
    out = make("-s", "clean-results", f"RESULTS_DIR={tmp_path}/my results")
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "my results").exists() and (tmp_path / "my" / "keep").exists()


@pytest.mark.parametrize("bad", ["/", "..", ".", str(REPO.parent)])
def test_make_clean_results_refuses_a_folder_holding_the_repo(bad):
    out = make("-s", "clean-results", f"RESULTS_DIR={bad}")
    assert out.returncode != 0 and "refusing to remove" in out.stderr and "holds this repository" in out.stderr
    assert (REPO / "Makefile").exists()


def test_make_refuses_a_venv_path_with_spaces():
    out = make("-n", "test", "VENV=my venv")
    assert out.returncode != 0 and "VENV='my venv' has a space" in out.stderr and not out.stdout


# -- the store checks what it reads

def _plant(s: ResultStore, key: dict, content) -> Path:
    path = s.row_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _recomputed(s: ResultStore, key: dict, path: Path, why: str) -> None:
    with pytest.warns(UserWarning, match=rf"unreadable result row {path}.*{why}.*computed again") as rec:
        row = s.cached(key, lambda: {"acc": 0.7, "note": None}, PROV)
    assert len(rec) == 1 and row["acc"] == 0.7 and s.get(key) == row
    assert len(list((s.dir / "rejected").iterdir())) == 1


def test_row_whose_key_columns_are_not_its_file_name_is_set_aside(tmp_path):
    s = store(tmp_path)
    s.put({"k": 1, "seed": 0}, {"acc": 0.1, "note": None}, PROV)
    s.put({"k": 4, "seed": 0}, {"acc": 0.4, "note": None}, PROV)
    shutil.copy(s.row_path({"k": 1, "seed": 0}), s.row_path({"k": 4, "seed": 0}))  # k=1's row in k=4's place
    with pytest.warns(UserWarning, match=r"key columns say k=1__seed=0, not the file's key") as rec:
        assert sorted(r["k"] for r in s.rows()) == [1]
    assert len(rec) == 1
    _ = s.cached({"k": 4, "seed": 0}, lambda: {"acc": 0.4, "note": None}, PROV)
    assert sorted((r["k"], r["acc"]) for r in s.rows()) == [(1, 0.1), (4, 0.4)]


def test_row_of_another_store_is_set_aside(tmp_path):
    other = store(tmp_path, {"lr": 0.2})
    row = other.put({"k": 1, "seed": 0}, {"acc": 0.9, "note": None}, PROV)
    s = store(tmp_path)
    path = _plant(s, {"k": 1, "seed": 0}, row)
    _recomputed(s, {"k": 1, "seed": 0}, path, f"config_hash '{other.hash}' is not this store's")


@pytest.mark.parametrize("column, value", [("acc", "0.9"), ("acc", True), ("k", "1"), ("note", 3)])
def test_row_value_of_the_wrong_type_is_set_aside(tmp_path, column, value):
    s = store(tmp_path)
    row = s.put({"k": 1, "seed": 0}, {"acc": 0.9, "note": "x"}, PROV)
    path = _plant(s, {"k": 1, "seed": 0}, {**row, column: value})
    _recomputed(s, {"k": 1, "seed": 0}, path, f"wrong type: {column}=")


def test_lenet_rows_declare_their_types():
    types = dict(L.SCHEMA.types)
    assert types["test_acc"] is float and types["k"] is int and types["dataset"] is str and types["authors"] is bool


def test_directory_in_a_rows_place_is_set_aside(tmp_path):
    s = store(tmp_path)
    path = s.row_path({"k": 1, "seed": 0})
    path.mkdir(parents=True)
    with pytest.warns(UserWarning, match=rf"unreadable result row {path}.*IsADirectoryError") as rec:
        assert s.rows() == []
    assert len(rec) == 1 and (s.dir / "rejected" / path.name).is_dir()
    assert s.cached({"k": 1, "seed": 0}, lambda: {"acc": 0.5, "note": None}, PROV)["acc"] == 0.5


@pytest.mark.skipif(ROOT_USER, reason="root reads files whatever their mode")
def test_row_without_read_permission_is_set_aside(tmp_path):
    s = store(tmp_path)
    s.put({"k": 1, "seed": 0}, {"acc": 0.5, "note": None}, PROV)
    path = s.row_path({"k": 1, "seed": 0})
    path.chmod(0)
    with pytest.warns(UserWarning, match=rf"unreadable result row {path}.*PermissionError"):
        assert s.frame().empty


def test_config_json_is_checked_against_the_config(tmp_path):
    s = store(tmp_path)
    path = s.dir / "config.json"
    good = path.read_text()
    path.write_text(json.dumps({"lr": 0.5}))
    with pytest.warns(UserWarning, match=rf"unreadable configuration file {path}.*not the configuration.*written again"):
        store(tmp_path)
    assert path.read_text() == good and len(list((s.dir / "rejected").iterdir())) == 1
    path.write_text('{"lr": 0.')
    with pytest.warns(UserWarning, match="not readable as JSON"):
        store(tmp_path)
    assert path.read_text() == good


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_created_with_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        s = store(tmp_path)
        s.put({"k": 1, "seed": 0}, {"acc": 0.5, "note": None}, PROV)
        s.save_checkpoint({"run": 1}, {"round": 1})
    finally:
        os.umask(old)
    for path in (s.dir / "config.json", s.row_path({"k": 1, "seed": 0}), s.ckpt_path({"run": 1})):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


class _Unpicklable:
    pass


@pytest.mark.parametrize("content", [b"P", b"PK\x03", b"not a zip file at all", b"\x80\x04K\x01."])
def test_damaged_checkpoint_is_set_aside_as_a_checkpoint(tmp_path, content):
    s = store(tmp_path)
    path = s.ckpt_path({"run": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.warns(UserWarning, match=rf"unreadable checkpoint {path} \(cannot be loaded") as rec:
        assert s.load_checkpoint({"run": 1}) is None
    assert len(rec) == 1 and "result row" not in str(rec[0].message)
    assert (s.dir / "rejected" / path.name).read_bytes() == content and not path.exists()


def test_checkpoint_that_cannot_be_unpickled_is_set_aside(tmp_path, monkeypatch):
    s = store(tmp_path)
    s.save_checkpoint({"run": 1}, {"round": 1, "thing": _Unpicklable()})
    monkeypatch.delattr(sys.modules[__name__], "_Unpicklable")  # as if the class had been renamed since
    with pytest.warns(UserWarning, match="unreadable checkpoint .*AttributeError"):
        assert s.load_checkpoint({"run": 1}) is None


def test_directory_in_a_checkpoints_place_is_set_aside(tmp_path):
    s = store(tmp_path)
    s.ckpt_path({"run": 1}).mkdir(parents=True)
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        assert s.load_checkpoint({"run": 1}) is None
    assert (s.dir / "rejected").exists()


ROUND_SCHEMA = Schema(key=("round",), values=("density",))


def _toy_run(root, rounds: int = 3, k: int = 2):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8))
    s = ResultStore("rounds", {"k": k}, ROUND_SCHEMA, root=root)
    run = RoundsRun(s, {"run": "toy"}, lambda r: {"round": r}, PROV, rounds)
    pruner = BlockPruner(k, {"0": 0.5})
    return run, model, pruner


def _rounds(run, model, pruner):
    return resumable_rounds(run, model, pruner, lambda m, r: None,
                            lambda r, m, _: {"density": float(m[0].parametrizations.weight[0].mask.mean())})


@pytest.mark.parametrize("content", [
    {"round": 1},                                            # no model
    {"model": {}, "row": None},                              # no round
    "a string",                                              # not a mapping
    "other k",                                               # a pruner of another block size
    "round 9",                                               # a round the run does not have
])
def test_checkpoint_of_the_wrong_content_is_set_aside_and_the_run_restarts(tmp_path, content):
    run, model, pruner = _toy_run(tmp_path)
    if content == "other k":
        other_run, m4, p4 = _toy_run(tmp_path / "k4", k=4)
        p4.step(m4)
        content = checkpoint(m4, 1, {"density": 0.5}, p4)
    elif content == "round 9":
        content = checkpoint(model, 9, {"density": 0.5}, pruner)
    run.store.save_checkpoint(run.run_key, content)
    with pytest.warns(UserWarning, match=r"unreadable checkpoint .*cannot (be used|be loaded).*restarts without it") as rec:
        assert _rounds(run, model, pruner) == 3
    assert len([r for r in rec if "checkpoint" in str(r.message)]) == 1
    assert [r["round"] for r in run.store.rows()] == [1, 2, 3] and pruner.round == 3
    assert (run.store.dir / "rejected").exists()


def test_load_restored_leaves_the_model_alone_when_it_fails(tmp_path):
    run, model, pruner = _toy_run(tmp_path)
    _, m4, p4 = _toy_run(tmp_path / "k4", k=4)
    p4.step(m4)
    run.store.save_checkpoint(run.run_key, checkpoint(m4, 1, {"density": 0.5}, p4))
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.warns(UserWarning, match="pruner state has k=4"):
        assert load_restored(run.store, run.run_key, model, pruner) is None
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    assert pruner.round == 0


# -- the task runner (infra/tasks.py)

def _ok(x):
    return x


def _boom(x):
    raise ZeroDivisionError(f"task {x} failed")


def test_in_process_run_collects_failures_and_finishes_the_rest():
    done = []
    ts = [Task("a", _boom, (1,), cost=5), Task("b", done.append, ("b",)), Task("c", _ok, (3,), deps=("a",)),
          Task("d", _boom, (4,))]
    with pytest.raises(SweepError) as info:
        run_tasks(ts, workers=1, progress=False)
    msg = str(info.value)
    assert msg.startswith("3 of 4 tasks failed") and done == ["b"]
    assert "a: ZeroDivisionError: task 1 failed" in msg and "d: ZeroDivisionError: task 4 failed" in msg
    assert "c: RuntimeError: not run: it needs a, which failed" in msg


@pytest.mark.parametrize("workers", [0, -3, 1.5, True, "2"])
def test_workers_must_be_at_least_one(workers):
    with pytest.raises(ValueError, match=rf"workers must be a whole number >= 1.*got {workers!r}"):
        run_tasks([Task("a", _ok, (1,))], workers=workers, progress=False)


def test_scheduler_argument_is_checked(tmp_path):
    assert check_scheduler("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    assert check_scheduler("localhost:8786") == "localhost:8786"
    good = tmp_path / "scheduler.json"
    good.write_text(json.dumps({"address": "tcp://10.0.0.2:8786", "type": "Scheduler"}))
    assert check_scheduler(str(good)) == "tcp://10.0.0.2:8786"
    for content, why in [(None, "no such file"), ("garbage", "not a readable JSON file"),
                         ("[1, 2]", "without an 'address'"), ("{}", "without an 'address'")]:
        path = tmp_path / "bad.json"
        if content is not None:
            path.write_text(content)
        with pytest.raises(ValueError, match=rf"scheduler '{path}' is neither a Dask scheduler address.*{why}"):
            check_scheduler(str(path))
        with pytest.raises(ValueError, match="is neither"):  # checked before any task runs
            run_tasks([Task("a", _boom, (1,))], scheduler=str(path), progress=False)


def test_waiting_for_workers_that_never_come_times_out():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        t0 = time.perf_counter()
        with pytest.raises(SweepError, match=rf"no Dask worker joined the scheduler at {cluster.scheduler_address} "
                                             r"within 1 s"):
            run_tasks([Task("a", _ok, (1,))], scheduler=cluster.scheduler_address, progress=False, worker_timeout=1)
        assert time.perf_counter() - t0 < 30


def _slow(x):
    time.sleep(1.0)
    return x


def test_a_lost_scheduler_is_reported_with_its_address():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    address, caught = cluster.scheduler_address, []

    def sweep():
        try:
            run_tasks([Task(f"t{i}", _slow, (i,)) for i in range(8)], scheduler=address, progress=False)
        except Exception as err:  # noqa: BLE001 - the test looks at what came out
            caught.append(err)

    thread = threading.Thread(target=sweep)
    thread.start()
    time.sleep(2.5)
    cluster.close()
    thread.join(60)
    assert not thread.is_alive() and len(caught) == 1
    err = caught[0]
    assert isinstance(err, SweepError) and "\n" not in str(err) and "NoneType" not in str(err)
    assert str(err).startswith(f"lost the connection to the Dask scheduler at {address}: ")


# -- command lines and notebook parameters: checked before any work

def _sweep_error(capsys, monkeypatch, tmp_path, *args) -> str:
    from blockprune_utils import sweep

    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    with pytest.raises(SystemExit) as info:
        sweep.main(["--study", "lenet", "--profile", "quick", "--no-progress", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert not list((tmp_path / "results").rglob("rows/*.json"))  # nothing computed
    return err


@pytest.mark.parametrize("args, message", [
    (["--ks", "0"], r"ks \[0\] not allowed: each must be a whole number in 1..10"),
    (["--ks", "1000"], r"ks \[1000\] not allowed: each must be a whole number in 1..10 \(a larger block would cover"),
    (["--ks", "4", "4"], r"ks \[4, 4\] repeats \[4\]: give each value once"),
    (["--seeds", "-1"], r"seeds \[-1\] not allowed: each must be a whole number >= 0"),
    (["--variants", "block", "block"], r"variants \['block', 'block'\] repeat a value"),
    (["--dataset", "mnist", "mnist"], r"datasets \['mnist', 'mnist'\] repeat a value"),
    (["--workers", "0"], r"argument --workers: '0' is not a whole number >= 1"),
    (["--workers", "-3"], r"argument --workers: '-3' is not a whole number >= 1"),
    (["--worker-timeout", "0"], r"--worker-timeout must be > 0 seconds"),
    (["--scheduler", "/nonexistent/scheduler.json"], r"scheduler '/nonexistent/scheduler.json' is neither.*no such file"),
    (["--profile", "nope"], r"argument --profile: invalid choice: 'nope' \(choose from"),
])
def test_sweep_command_line_is_checked_before_any_work(capsys, monkeypatch, tmp_path, args, message):
    import re

    err = _sweep_error(capsys, monkeypatch, tmp_path, *args)
    assert re.search(message, err), err


def test_sweep_garbage_scheduler_file(capsys, monkeypatch, tmp_path):
    bad = tmp_path / "scheduler.json"
    bad.write_bytes(b"\x00\x01garbage")
    err = _sweep_error(capsys, monkeypatch, tmp_path, "--scheduler", str(bad))
    assert f"scheduler '{bad}' is neither" in err and "not a readable JSON file" in err


def test_run_study_checks_its_axes_before_any_work(tmp_path):
    for ks, message in [((0,), "ks"), ((1000,), "ks"), ((4, 4), "repeats")]:
        with pytest.raises(ValueError, match=message):
            L.run_study("quick", "mnist", ks=ks, results_root=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.json"))


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(UnknownName) as info:
        L.PROFILES["nope"]
    assert str(info.value) == "unknown LeNet profile 'nope'; choose one of ['paper', 'quick']"
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "nope" not in L.PROFILES and L.PROFILES.get("nope") is None
    with pytest.raises(ValueError, match=r"unknown LeNet profile 'nope'; choose one of \['paper', 'quick'\]"):
        L.run_config("nope")


@pytest.mark.notebook
@pytest.mark.parametrize("notebook, message", [
    ("01_lenet_mnist.ipynb", "unknown LeNet profile 'nope'; choose one of ['paper', 'quick']"),
    ("05_accuracy_for_the_time.ipynb", "unknown LeNet profile 'nope'; choose one of ['paper', 'quick']"),
    ("03_cifar10_resnet18.ipynb", "unknown CIFAR profile 'nope'; choose one of ['cpu', 'paper', 'quick']")])
def test_notebook_with_an_unknown_profile_says_which_exist(run_notebook, notebook, message):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as info:
        run_notebook(notebook, profile="nope")
    assert message in str(info.value)
    assert not list(run_notebook.results_dir.rglob("*.json"))


@pytest.mark.parametrize("only, named", [("nope", "['nope']"), ("matrices,nope", "['nope']"), ("", "no part")])
def test_bench_only_names_unknown_parts(capsys, only, named):
    from blockprune_utils.bench.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--quick", "--only", only])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and f"--only {only!r} names {named}; choose from matrices, models, storage, cache" in err


# -- data files

def _idx(path: Path, magic: int, dims: tuple, payload: bytes | None = None) -> None:
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    n = 1
    for d in dims:
        n *= d
    path.write_bytes(head + (payload if payload is not None else bytes(n)))


def _mnist(root: Path, n: int = 5) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 0x803, (n, 28, 28))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 0x801, (n,))
    return raw


def test_small_idx_files_load(tmp_path):
    _mnist(tmp_path)
    assert len(load_mnist_like("mnist", train=True, root=tmp_path, download=False)) == 5


@pytest.mark.parametrize("file, damage, message", [
    ("train-images-idx3-ubyte", lambda b: b[:1000], r"has 1,000 bytes, but its header \(5 items\) needs 3,936: truncated"),
    ("train-images-idx3-ubyte", lambda b: b + b"x", r"has 3,937 bytes.*needs 3,936: extra bytes at the end"),
    ("train-labels-idx1-ubyte", lambda b: b"", r"is empty \(0 bytes\)"),
    ("train-labels-idx1-ubyte", lambda b: b[:6], r"is truncated: 6 bytes, less than its 8-byte header"),
    ("train-images-idx3-ubyte", lambda b: b"<html>" + b[6:], r"is not an IDX file of 3-d unsigned bytes"),
])
def test_damaged_data_file_is_named(tmp_path, file, damage, message):
    raw = _mnist(tmp_path)
    path = raw / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataFileError, match=rf"data file {path} {message}"):
        load_mnist_like("mnist", train=True, root=tmp_path, download=False)
    assert len(load_mnist_like("mnist", train=False, root=tmp_path, download=False)) == 5  # the other split is fine


def test_images_and_labels_of_different_counts(tmp_path):
    raw = _mnist(tmp_path)
    _idx(raw / "train-labels-idx1-ubyte", 0x801, (4,))
    with pytest.raises(DataFileError, match=r"holds 5 images, train-labels-idx1-ubyte 4 labels"):
        load_mnist_like("mnist", train=True, root=tmp_path, download=False)


def test_images_of_the_wrong_shape(tmp_path):
    raw = _mnist(tmp_path)
    _idx(raw / "train-images-idx3-ubyte", 0x803, (5, 32, 32))
    with pytest.raises(DataFileError, match=r"holds items of shape \(32, 32\), expected \(28, 28\)"):
        load_mnist_like("mnist", train=True, root=tmp_path, download=False)


@pytest.mark.skipif(ROOT_USER, reason="root reads files whatever their mode")
def test_unreadable_data_file_is_named(tmp_path):
    raw = _mnist(tmp_path)
    (raw / "train-labels-idx1-ubyte").chmod(0)
    with pytest.raises(DataFileError, match=r"train-labels-idx1-ubyte cannot be read \(PermissionError"):
        load_mnist_like("mnist", train=True, root=tmp_path, download=False)


# -- pruning input

def test_fixed_scores_with_nan_are_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    scores = {"0": torch.tensor([[float("nan"), 1.0], [2.0, 3.0]])}
    with pytest.raises(ValueError, match=r"block scores hold 1 NaN value\(s\) of 4"):
        BlockPruner(2, {"0": 0.5}, score=scores).step(model)


def test_zero_size_layer_is_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    model[0].weight = nn.Parameter(torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"holds no blocks \(the layer's weight has a zero dimension\)"):
        BlockPruner(2, {"0": 0.5}).step(model)


def test_lenet_checkpoint_without_a_model_is_set_aside(tmp_path):
    cfg = L.run_config("quick", "mnist")
    store = L.store_for(cfg, tmp_path)
    run_key = {"dataset": "mnist", "seed": 0, "variant": "baseline"}
    store.save_checkpoint(run_key, {"round": 0, "row": None})
    with pytest.warns(UserWarning, match=r"unreadable checkpoint .*cannot be used: KeyError: .model."):
        assert L.pruned_lenet("mnist", 1, 0, profile="quick", results_root=tmp_path) is None
    assert not store.ckpt_path(run_key).exists() and (store.dir / "rejected").exists()
