"""Running a study's tasks: order, a local Dask cluster with a worker killed mid-run,
a separately started scheduler and workers, and the command line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from blockprune_utils.infra.tasks import Task, run_tasks, topological
from blockprune_utils.studies import lenet as L

REPO = Path(__file__).resolve().parent.parent
AXES = {"ks": (1, 4), "seeds": (0,), "variants": ("block", "random_retrain", "random_scratch")}
COLS = ["variant", "k", "round", "seed", "layer", "test_acc", "density_total", "blocks_fc1"]


def _noop(x):
    return x


def test_topological_order_and_errors():
    ts = [Task("c", _noop, (3,), deps=("b",)), Task("b", _noop, (2,), deps=("a",)), Task("a", _noop, (1,), cost=5)]
    assert [t.name for t in topological(ts)] == ["a", "b", "c"]
    assert run_tasks(ts, workers=1, progress=False) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(ValueError, match="cycle"):
        topological([Task("x", _noop, (0,), deps=("y",)), Task("y", _noop, (0,), deps=("x",))])
    with pytest.raises(ValueError, match="unique"):
        topological([Task("x", _noop), Task("x", _noop)])


def _rows(root) -> pd.DataFrame:
    df = L.cached_frame("quick", "mnist", results_root=root)
    return df[COLS].sort_values(COLS[:5]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("serial")
    L.run_study("quick", "mnist", progress=False, results_root=root, workers=1, **AXES)
    return _rows(root)


def _expected(root):
    cfg = L.run_config("quick", "mnist")
    return list(L.expected_keys(cfg, AXES["ks"], AXES["seeds"], AXES["variants"]))


def test_local_cluster_survives_a_killed_worker(tmp_path, reference, data_dir):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        killed = {}

        def kill_a_pruning_worker():
            # wait for the first finished round of a pruning run, then SIGKILL the worker running one
            deadline = time.time() + 120
            while time.time() < deadline and not killed:
                if list(tmp_path.glob("lenet/*/rows/*round=1*variant=block*")):
                    pids = client.run(os.getpid)
                    for addr, tasks in client.processing().items():
                        if any("block" in str(t) or "random" in str(t) for t in tasks):
                            killed[addr] = pids[addr]
                            os.kill(pids[addr], signal.SIGKILL)
                            return
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_a_pruning_worker)
        watcher.start()
        todo = L.tasks("quick", ("mnist",), results_root=tmp_path, data_root=data_dir, **AXES)
        run_tasks(todo, scheduler=cluster.scheduler_address, progress=False)
        watcher.join()
    assert killed, "no worker was killed: the test did not exercise a failure"
    store = L.store_for(L.run_config("quick", "mnist"), tmp_path)
    assert all(store.has(k) for k in _expected(tmp_path))
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("rejected"))
    pd.testing.assert_frame_equal(_rows(tmp_path), reference)
    # a rerun finds nothing left to do
    assert not L.tasks("quick", ("mnist",), results_root=tmp_path, **AXES)


def test_separate_scheduler_and_workers_match_a_local_run(tmp_path, reference, data_dir):
    sched_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DATA_DIR", None)  # workers get the data folder from the submitting process
    procs = [subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(sched_file)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(300):
            if sched_file.exists():
                break
            time.sleep(0.1)
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
                  "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"]
        procs += [subprocess.Popen(worker, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(2)]
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        results = tmp_path / "results"
        out = subprocess.run(
            [sys.executable, "-m", "blockprune_utils.sweep", "--study", "lenet", "--profile", "quick", "--dataset", "mnist",
             "--ks", "1", "4", "--seeds", "0", "--variants", *AXES["variants"], "--scheduler", str(sched_file),
             "--no-progress"],
            env={**os.environ, "RESULTS_DIR": str(results), "DATA_DIR": str(data_dir)}, cwd=REPO,
            capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "tasks to run on" in out.stdout
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    pd.testing.assert_frame_equal(_rows(results), reference)


def test_sweep_help_points_to_the_layout():
    out = subprocess.run([sys.executable, "-m", "blockprune_utils.sweep", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0 and "--study" in out.stdout
    assert "'Layout' section of README.md" in " ".join(out.stdout.split())
    out = subprocess.run([sys.executable, "-m", "blockprune_utils.sweep", "--study", "lenet", "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and "--scheduler" in out.stdout and "--workers" in out.stdout


def test_make_resolves_relative_paths(tmp_path):
    """``make`` turns relative DATA_DIR / RESULTS_DIR / FIGURES_DIR into absolute paths
    before anything runs in notebooks/ (where papermill executes)."""
    out = subprocess.run(["make", "-s", "paths", f"PY={sys.executable}", "DATA_DIR=rel/data",
                          "RESULTS_DIR=rel/results", "FIGURES_DIR=rel/figures"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = dict(line.split("=", 1) for line in out.stdout.split())
    for name in ("DATA_DIR", "RESULTS_DIR", "FIGURES_DIR"):
        assert seen[name] == str(REPO / "rel" / name.split("_")[0].lower()), seen


def _layout_entries() -> dict[str, str]:
    """The README's layout map as {head: text}: a head is what a line at two spaces'
    indent names before its description (``bsr/``, ``studies/base.py``, ``models.py,
    data.py, train.py``); the text is that line and the deeper lines under it."""
    import re

    readme = (REPO / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    entries, head = {}, None
    for line in block.splitlines():
        m = re.match(r"^  (\S.*?)(?:\s{2,}|$)", line)
        if m:
            head = m.group(1).strip()
            entries[head] = line
        elif head is not None and line.startswith("    "):
            entries[head] += "\n" + line
    return entries


def test_the_readme_layout_names_every_module():
    """The README's map (the only one) names every module of the package under its folder."""
    import re

    import blockprune_utils

    entries = _layout_entries()
    package = REPO / "blockprune_utils"
    missing = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        folder = "/".join(rel.parts[:-1]) + "/" if len(rel.parts) > 1 else ""
        if rel.name in ("__init__.py", "__main__.py"):
            if folder and folder not in entries and not any(h.startswith(folder) for h in entries):
                missing.append(str(rel))
            continue
        if any(rel.as_posix() in [n.strip() for n in h.split(",")] for h in entries):
            continue  # named as the head of an entry (studies/claims.py, book.py, blocks.py, ...)
        if folder in entries and re.search(rf"\b{re.escape(path.stem)}\b", entries[folder]):
            continue
        missing.append(str(rel))
    assert not missing, f"README.md's layout map does not name {missing}"
    assert "'Layout' section of README.md" in " ".join(blockprune_utils.__doc__.split())
