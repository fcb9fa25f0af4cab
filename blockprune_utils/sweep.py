"""Command line for the studies (no Jupyter needed):

    python -m blockprune_utils.sweep --study lenet --profile paper --dataset mnist fashion_mnist
    python -m blockprune_utils.sweep --study lenet --scheduler tcp://host:8786     # any Dask cluster
    python -m blockprune_utils.sweep --study cifar --profile paper --experiment A --out OUTDIR

``lenet`` runs the LeNet-300-100 study as a graph of tasks on a local Dask cluster of
single-threaded worker processes (one per core; ``--workers 1`` runs in this
process) or on the Dask cluster at ``--scheduler``; finished rows are kept in the
results store (``RESULTS_DIR``), so an interrupted sweep resumes.  ``cifar`` runs the
ResNet18 / CIFAR-10 study (its options: ``--study cifar --help``).
"""
from __future__ import annotations

import argparse
import sys
import time

from .infra.paths import data_dir, results_dir
from .infra.tasks import SweepError, check_scheduler, default_workers, run_tasks
from .studies.cifar import cli as cifar_cli
from .studies.lenet import DATASETS, PROFILES, VARIANTS, run_config, store_for, tasks

LAYOUT = "The package's modules, folder by folder: the 'Layout' section of README.md."


def workers_count(text: str) -> int:
    """``--workers``: a whole number >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1 (1 = run in this process)")
    return n


def lenet_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m blockprune_utils.sweep --study lenet",
                                     description="LeNet-300-100 block-pruning sweep (rows stored under RESULTS_DIR)",
                                     epilog=LAYOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    parser.add_argument("--dataset", nargs="+", default=["mnist"], choices=DATASETS)
    parser.add_argument("--ks", type=int, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS)
    parser.add_argument("--authors", action="store_true", help="reproduce the authors' training choices")
    parser.add_argument("--workers", type=workers_count, default=default_workers(),
                        help="local worker processes, one thread each (default: one per core); 1 = in this process")
    parser.add_argument("--scheduler", help="address (tcp://host:port) or scheduler file of a running Dask cluster")
    parser.add_argument("--worker-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="give up when no Dask worker has joined after this long (default: 120)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:  # every argument checked before any work
        if not args.worker_timeout > 0:
            raise ValueError(f"--worker-timeout must be > 0 seconds, got {args.worker_timeout}")
        if args.scheduler is not None:
            check_scheduler(args.scheduler)
        todo = tasks(args.profile, args.dataset, args.ks, args.seeds, args.variants, authors=args.authors,
                     results_root=results_dir(), data_root=data_dir())
    except ValueError as err:
        parser.error(str(err))
    where = args.scheduler or (f"{args.workers} local workers" if args.workers > 1 else "this process")
    print(f"lenet {' '.join(args.dataset)} profile={args.profile}: {len(todo)} tasks to run on {where}", flush=True)
    if todo:
        try:
            run_tasks(todo, workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress,
                      desc=f"lenet {args.profile}", worker_timeout=args.worker_timeout)
        except SweepError as err:
            print(f"lenet: {err}", file=sys.stderr)
            return 1
    for ds in args.dataset:
        store = store_for(run_config(args.profile, ds, args.authors))
        print(f"lenet {ds}: {len(store.rows())} rows in {store.dir}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


STUDIES = {"lenet": lenet_main, "cifar": cifar_cli.main}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m blockprune_utils.sweep", description=__doc__, epilog=LAYOUT,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    parser.add_argument("--study", choices=sorted(STUDIES))
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.study is None:
        parser.print_help()
        return 0 if args.help else 2
    return STUDIES[args.study](rest + (["--help"] if args.help else []))


if __name__ == "__main__":
    raise SystemExit(main())
