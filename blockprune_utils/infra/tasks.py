"""A study's tasks, and running them: in this process, on a local Dask cluster (one
single-threaded worker process per core), or on any running Dask cluster.

A sweep is a list of :class:`Task`: independent units
whose results are rows of the results store, with their real dependencies (a seed's
baseline before its pruning runs).  Dask's ``distributed`` scheduler does the rest:
it starts long tasks first (``priority``), re-runs a task whose worker died (the task
then resumes from its last checkpoint in the store), and reports each finished task,
which drives one progress bar with an estimate of the time left.

Workers must see the same results folder (and data folder) as the process that
submits: on one machine that holds; on a cluster, use a shared file system (as on
Slurm or PBS clusters, see the README for dask-jobqueue).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


@dataclass(frozen=True)
class Task:
    """One unit of a sweep.  ``fn(*args)`` computes what the store lacks and returns
    the number of rows it holds when done; ``deps`` are names of tasks that must have
    finished first; ``cost`` is a rough relative cost (epochs), used to start long
    tasks first and for the progress bar's estimate."""

    name: str
    fn: Callable[..., int]
    args: tuple = ()
    deps: tuple = ()
    cost: float = 1.0


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class SweepError(RuntimeError):
    """Tasks failed or did not finish (the message says which, and why); finished rows are kept."""


def check_workers(workers) -> int | None:
    """``workers`` if it is a whole number >= 1 (or None: one per core)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a whole number >= 1 (1 = in this process), got {workers!r}")
    return workers


def check_scheduler(scheduler: str) -> str:
    """The address of the Dask scheduler ``scheduler`` names: an address
    (``tcp://host:port``, ``host:port``) as it is, or the address in the scheduler
    file at that path; a one-line ValueError when it is neither."""
    text = str(scheduler)
    if re.fullmatch(r"[a-z]+://\S+|[\w.\-\[\]:]+:\d+", text) and not os.path.exists(text):
        return text
    why = None
    try:
        info = json.loads(Path(text).read_text())
    except FileNotFoundError:
        why = "no such file"
    except (OSError, ValueError) as err:
        why = f"not a readable JSON file: {type(err).__name__}: {err}"
    else:
        if not isinstance(info, dict) or not isinstance(info.get("address"), str):
            why = "a JSON file without an 'address' entry"
    if why:
        raise ValueError(f"scheduler {text!r} is neither a Dask scheduler address (tcp://host:port) nor a scheduler "
                         f"file written by 'dask scheduler --scheduler-file' ({why})")
    return info["address"]


def topological(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` ordered so that each comes after its dependencies; a dependency
    that is not in the list counts as done.  Longer tasks first among the ready ones."""
    by_name = {t.name: t for t in tasks}
    if len(by_name) != len(tasks):
        raise ValueError("task names must be unique")
    done: set[str] = set()
    out: list[Task] = []
    pending = sorted(tasks, key=lambda t: -t.cost)
    while pending:
        ready = [t for t in pending if all(d in done or d not in by_name for d in t.deps)]
        if not ready:
            raise ValueError(f"dependency cycle among {[t.name for t in pending]}")
        for t in ready:
            out.append(t)
            done.add(t.name)
        pending = [t for t in pending if t.name not in done]
    return out


# Dask's defaults that cost a small-tensor training loop most of its speed (measured
# for one LeNet epoch in a worker: 2.5-2.8 s with them, 1.4-1.5 s without, as in a
# plain process): the nanny sets MALLOC_TRIM_THRESHOLD_, which turns off glibc's
# adaptive mmap threshold, so every tensor above 128 KiB is mmap'ed and page-faulted
# anew; and the worker's statistical profiler samples the running thread's stack
# every 10 ms, taking the GIL from it.
WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


def _call(task_fn, args, *_deps):
    return task_fn(*args)


def _progress(total: float, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=round(total, 1), desc=desc, disable=not enabled, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")


def _run_here(ordered: list[Task], total: float, desc: str, progress: bool) -> dict:
    """The tasks in this process, in order; a failed task's dependents are skipped."""
    results, failed = {}, {}
    with _progress(total, desc, progress) as bar:
        for i, t in enumerate(ordered, 1):
            lost = [d for d in t.deps if d in failed]
            try:
                if lost:
                    raise RuntimeError(f"not run: it needs {', '.join(lost)}, which failed")
                results[t.name] = t.fn(*t.args)
            except Exception as err:
                failed[t.name] = err
            bar.set_description_str(f"{desc} {i}/{len(ordered)} runs" + (f", {len(failed)} failed" if failed else ""),
                                    refresh=False)
            bar.update(round(t.cost, 1))
    _raise_failures(failed, len(ordered))
    return results


def _raise_failures(failed: dict, n: int) -> None:
    if failed:
        lines = "\n".join(f"  {name}: {type(err).__name__}: {err}" for name, err in sorted(failed.items()))
        raise SweepError(f"{len(failed)} of {n} tasks failed (finished rows are kept; rerun to retry):\n{lines}")


def run_tasks(tasks: Sequence[Task], *, workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, desc: str = "sweep", worker_timeout: float = 120.0) -> dict[str, object]:
    """Run ``tasks``; returns each task's result by name.

    ``scheduler``: the address of a running Dask scheduler (``tcp://host:8786``) or
    the path of its scheduler file.  Otherwise ``workers`` single-threaded worker
    processes on this machine (default: one per core); ``workers=1`` runs the tasks
    here, in order, without Dask.  One progress bar counts finished runs, weighted
    by their cost; failures are collected and raised together at the end (the other
    tasks still finish; a task whose dependency failed is not run) as a
    :class:`SweepError`.  When no worker has joined after ``worker_timeout`` seconds,
    or the scheduler cannot be reached or is lost, a :class:`SweepError` says so, with
    the scheduler's address."""
    check_workers(workers)
    address = None if scheduler is None else check_scheduler(scheduler)
    ordered = topological(tasks)
    total = sum(t.cost for t in ordered)
    if scheduler is None and (workers or default_workers()) <= 1:
        return _run_here(ordered, total, desc, progress)
    from distributed import Client, LocalCluster, as_completed

    if scheduler is None:
        import dask

        with dask.config.set(WORKER_CONFIG):
            cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(cluster)
    else:
        cluster = None
        try:
            by_file = os.path.exists(scheduler)  # a scheduler file may also carry security settings
            client = (Client(scheduler_file=scheduler, timeout=worker_timeout) if by_file
                      else Client(address, timeout=worker_timeout))
        except (OSError, TimeoutError) as err:
            raise SweepError(f"cannot reach the Dask scheduler at {address}: {type(err).__name__}: {err}") from None
    address = client.scheduler.address
    try:
        try:
            client.wait_for_workers(1, timeout=worker_timeout)
        except TimeoutError:
            raise SweepError(f"no Dask worker joined the scheduler at {address} within {worker_timeout:g} s: start "
                             f"workers for it (dask worker {address}), or run without --scheduler") from None
        return _run_on(client, address, ordered, total, desc, progress, as_completed)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_on(client, address: str, ordered: list[Task], total: float, desc: str, progress: bool, as_completed) -> dict:
    futures = {}
    for t in ordered:
        deps = [futures[d] for d in t.deps if d in futures]
        futures[t.name] = client.submit(_call, t.fn, t.args, *deps, key=t.name.replace("/", "-"), pure=False,
                                        priority=int(t.cost * 10) + (100000 if not t.deps else 0))
    names = {f.key: name for name, f in futures.items()}
    costs = {t.name: t.cost for t in ordered}
    results, failed, cancelled = {}, {}, []
    with _progress(total, desc, progress) as bar:
        for n, fut in enumerate(as_completed(list(futures.values())), 1):
            name = names[fut.key]
            if fut.status == "finished":
                results[name] = fut.result()
            elif fut.status == "cancelled":  # the scheduler went away (or cancelled it): no exception to report
                cancelled.append(name)
            else:
                failed[name] = fut.exception()
            bar.set_description_str(f"{desc} {n}/{len(futures)} runs" + (f", {len(failed)} failed" if failed else ""),
                                    refresh=False)
            bar.update(round(costs[name], 1))
    if cancelled:
        what = (f"lost the connection to the Dask scheduler at {address}" if client.status != "running"
                else f"the Dask scheduler at {address} cancelled tasks")
        raise SweepError(f"{what}: {len(cancelled)} of {len(futures)} tasks did not finish ({len(failed)} failed); "
                         "finished rows are kept, rerun to resume")
    _raise_failures(failed, len(futures))
    return results
