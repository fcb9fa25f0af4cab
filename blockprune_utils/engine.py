"""Running a sweep's tasks: in this process, on a local Dask cluster (one
single-threaded worker process per core), or on any running Dask cluster.

A sweep is a list of :class:`~blockprune_utils.studies.base.Task`: independent units
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

import os
from typing import Sequence

from .studies.base import Task


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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


def run_tasks(tasks: Sequence[Task], *, workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, desc: str = "sweep") -> dict[str, object]:
    """Run ``tasks``; returns each task's result by name.

    ``scheduler``: the address of a running Dask scheduler (``tcp://host:8786``) or
    the path of its scheduler file.  Otherwise ``workers`` single-threaded worker
    processes on this machine (default: one per core); ``workers=1`` runs the tasks
    here, in order, without Dask.  One progress bar counts finished runs, weighted
    by their cost; failures are collected and raised together at the end (the other
    tasks still finish)."""
    ordered = topological(tasks)
    total = sum(t.cost for t in ordered)
    if scheduler is None and (workers or default_workers()) <= 1:
        results = {}
        with _progress(total, desc, progress) as bar:
            for i, t in enumerate(ordered):
                results[t.name] = t.fn(*t.args)
                bar.set_description_str(f"{desc} {i + 1}/{len(ordered)} runs", refresh=False)
                bar.update(round(t.cost, 1))
        return results
    from distributed import Client, LocalCluster, as_completed

    if scheduler is None:
        import dask

        with dask.config.set(WORKER_CONFIG):
            cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(cluster)
    else:
        cluster = None
        client = Client(scheduler_file=scheduler) if os.path.exists(scheduler) else Client(scheduler)
    try:
        return _run_on(client, ordered, total, desc, progress, as_completed)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_on(client, ordered: list[Task], total: float, desc: str, progress: bool, as_completed) -> dict:
    futures = {}
    for t in ordered:
        deps = [futures[d] for d in t.deps if d in futures]
        futures[t.name] = client.submit(_call, t.fn, t.args, *deps, key=t.name.replace("/", "-"), pure=False,
                                        priority=int(t.cost * 10) + (100000 if not t.deps else 0))
    names = {f.key: name for name, f in futures.items()}
    costs = {t.name: t.cost for t in ordered}
    results, failed = {}, {}
    with _progress(total, desc, progress) as bar:
        for n, fut in enumerate(as_completed(list(futures.values())), 1):
            name = names[fut.key]
            if fut.status == "finished":
                results[name] = fut.result()
            else:
                failed[name] = fut.exception()
            bar.set_description_str(f"{desc} {n}/{len(futures)} runs" + (f", {len(failed)} failed" if failed else ""),
                                    refresh=False)
            bar.update(round(costs[name], 1))
    if failed:
        lines = "\n".join(f"  {name}: {type(err).__name__}: {err}" for name, err in sorted(failed.items()))
        raise RuntimeError(f"{len(failed)} of {len(futures)} tasks failed (finished rows are kept; rerun to retry):\n{lines}")
    return results
