"""Command line of the CIFAR-10 study (``python -m blockprune_utils.sweep --study cifar``).

Runs the experiments of a profile with :func:`~.study.run_study`: rows are kept in the
results store (``RESULTS_DIR/cifar``), finished rows are skipped and a stopped run
resumes; the exports and a log go to the output folder.  ``--to-figures`` also writes
a finished run's A rows into the figures folder (:func:`~.export.publish`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...infra.paths import results_dir
from .config import EXPERIMENTS, PROFILES, STUDY, cifar_profile
from .export import publish
from .network import resolve_device
from .study import run_study

PROG = "python -m blockprune_utils.sweep --study cifar"


def gpu_command(experiment: str = "A") -> str:
    """The command that makes the paper-profile rows of one experiment on a GPU machine."""
    return f"{PROG} --profile paper --experiment {experiment} --out OUTDIR"


CPU_COMMAND = "make figures-cifar PROFILE=cpu"
CPU_HOWTO = f"""\
How the cpu-profile numbers of experiment A are made (about 90 minutes on 2 CPU cores, no GPU):
  {CPU_COMMAND}
or, without make, `{PROG} --profile cpu --to-figures`, then this notebook. A stopped run
resumes from its last finished epoch or round when the same command is run again."""


GPU_HOWTO = """\
How the paper-profile numbers are made (one CUDA GPU, no Jupyter needed there):
  1. on the GPU machine, in the repository root, with CIFAR-10 under DATA_DIR (default ./data: either
     cifar-10-batches-py/ or the image-folder copy CIFAR-10-jpeg/), run
       {cmd_a}
       {cmd_b}
     The first trains the baseline, the second reuses it when both share RESULTS_DIR. A run that is
     stopped resumes from its checkpoints when the same command is run again.
  2. copy OUTDIR/cifar_paper_results_*.csv and OUTDIR/cifar_paper_head_blocks.csv into figures/ and commit them;
     `make figures-cifar` then plots them."""


def howto(which: str = "gpu") -> str:
    """:data:`GPU_HOWTO` with the commands of both experiments filled in
    (``which="gpu"``), or :data:`CPU_HOWTO` (``which="cpu"``)."""
    if which == "cpu":
        return CPU_HOWTO
    return GPU_HOWTO.format(cmd_a=gpu_command("A"), cmd_b=gpu_command("B"))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="ResNet18 on CIFAR-10: A = the authors' head-only block pruning, B = convolutions too. "
                    "Rows are stored under RESULTS_DIR/cifar; finished rows are skipped, stopped runs resume.",
    )
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--experiment", choices=[*EXPERIMENTS, "all"], default="all")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the rows (JSONL), the CSV exports and the log (default RESULTS_DIR/cifar/export)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="override the profile's seeds")
    ap.add_argument("--ks", type=int, nargs="+", default=None, help="override B's block sizes")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no trunk epoch or pruning round that would end past this many seconds (run again to resume)")
    ap.add_argument("--no-download", action="store_true", help="never try torchvision's download")
    ap.add_argument("--to-figures", action="store_true",
                    help="when the run is complete, also write its A rows to FIGURES_DIR/cifar_<profile>_experiment_a.csv "
                         "(with a provenance sidecar) and its head blocks beside")
    return ap


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 done, 1 data missing, 2 the
    paper profile without a GPU; a profile without the experiment asked for exits 2 too)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser()
    args = ap.parse_args(argv)
    offered = cifar_profile(args.profile).experiments
    if args.experiment != "all" and args.experiment not in offered:
        ap.error(f"profile {args.profile} runs experiment(s) {', '.join(offered)} only")
    device = resolve_device(args.device)
    if args.profile == "paper" and device.type != "cuda" and args.device == "auto":
        print("the paper profile is made for a CUDA GPU (it would take days on a CPU); pass --device cpu to force it",
              file=sys.stderr)
        return 2
    out = args.out or results_dir() / STUDY / "export"
    out.mkdir(parents=True, exist_ok=True)
    experiments = None if args.experiment == "all" else (args.experiment,)
    log_path = out / f"cifar_{args.profile}_log_{args.experiment}.txt"
    with open(log_path, "a") as log_file:
        def log(msg: str) -> None:
            print(msg, flush=True)
            log_file.write(msg + "\n")
            log_file.flush()

        log(f"command: {PROG} {' '.join(argv)}")
        try:
            res = run_study(args.profile, experiments, seeds=args.seeds, ks=args.ks, device=device, out_dir=out,
                            budget_s=args.budget_s, download=not args.no_download, log=log)
        except FileNotFoundError as err:
            log(f"error: {err}")
            return 1
        log(f"data source: {res.source}; {'complete' if res.complete else 'INCOMPLETE: run the same command again to resume'}")
        if args.to_figures and res.complete:
            res.files += publish(res, command=f"{PROG} {' '.join(argv)}")
        elif args.to_figures:
            log("the run is incomplete: nothing written to the figures folder")
        for f in res.files + [log_path]:
            log(f"  wrote {f}")
    return 0
