"""The ResNet18 / CIFAR-10 study from end to end: :func:`run_study` sets up the
device, runs (or reads from the store) the baseline and the experiments of a
profile, and exports their rows after every round.  :func:`baseline` picks how a
profile's baseline is trained: a :class:`~.config.Phase` by :mod:`.runs`, a
:class:`~.config.TrunkSchedule` by :mod:`.trunk`.  In a profile with
``head_on_features`` (``cpu``) one trunk is trained, its features are cached, and A
runs on them for every k and head seed.

The study keeps this driver rather than the task engine of
:mod:`blockprune_utils.infra.tasks`: it runs on one GPU (or one CPU), where parallel
worker processes gain nothing, and under a time budget, which needs its rounds in
round-major order (round r of every k before round r + 1) so that a stopped run has
every k pruned to similar densities."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from ...infra.paths import results_dir
from .config import STUDY, TrunkSchedule, with_axes
from .export import StudyResult, export_head_blocks, export_rows, head_blocks_frame, rows_frame
from .network import setup_device
from .runs import Baseline, ProfileRun, phase_baseline, plan, run_experiment
from .trunk import trunk_baseline, trunk_features


def baseline(run: ProfileRun, seed: int) -> Optional[Baseline]:
    """The baseline of ``seed``: from its checkpoint, or trained now (and stored) -
    by :func:`.trunk.trunk_baseline` for a :class:`~.config.TrunkSchedule` (None when
    the time budget stopped it), else by :func:`.runs.phase_baseline`."""
    if isinstance(run.p.baseline, TrunkSchedule):
        return trunk_baseline(run, seed)
    return phase_baseline(run, seed)


def study_rows(run: ProfileRun, experiments) -> list[dict]:
    """The stored rows of ``experiments`` for the profile's seeds and block sizes."""
    out = []
    for e in experiments:
        pl = plan(run.p, e)
        out += [r for r in run.store(e).rows() if r["seed"] in run.p.seeds and r["k"] in pl.ks]
    return out


def head_blocks(run: ProfileRun) -> Optional[pd.DataFrame]:
    """The surviving head blocks of every seed's A run at its latest checkpoint (None
    when there is no checkpoint yet)."""
    k = run.p.a.k
    frames = []
    for seed in run.p.seeds:
        ck = run.store("A").load_checkpoint({"experiment": "A", "k": k, "seed": seed})
        if ck is not None:
            frames.append(head_blocks_frame(ck["model"], k, ck["round"], seed))
    return pd.concat(frames, ignore_index=True) if frames else None


def expected_rows(run: ProfileRun, experiments) -> int:
    """How many rows the finished experiments have (round 0 included)."""
    return sum(len(run.p.seeds) * len(pl.ks) * (1 + pl.rounds) for pl in (plan(run.p, e) for e in experiments))


def run_study(profile="quick", experiments=None, *, seeds=None, ks=None, device="auto", data=None,
              out_dir=None, budget_s: Optional[float] = None, download: bool = True,
              log: Callable[[str], None] = print, results_root=None) -> StudyResult:
    """Run (or read from the store) the experiments of a profile (None: all it has);
    returns their rows.

    ``seeds``/``ks`` override the profile's (B's block sizes are a row axis: rows of
    other ks stay stored and are left out here).  ``data`` = (train, test, source)
    skips loading.  ``out_dir`` (default ``RESULTS_DIR/cifar/export``) receives the
    exports, rewritten after every round.  ``budget_s``: start no pruning round that
    would end past that many seconds; the result is then incomplete, and the same
    call resumes it."""
    p = with_axes(profile, seeds, ks)
    experiments = tuple(p.experiments if experiments is None else experiments)
    bad = [e for e in experiments if e not in p.experiments]
    if bad or not experiments:
        raise ValueError(f"experiments of profile {p.name!r} must be a non-empty subset of {p.experiments}, "
                         f"got {experiments}")
    run = ProfileRun(p, setup_device(device), data=data, budget_s=budget_s, download=download, log=log,
                     results_root=results_root)
    run.log(f"device {run.prov['device']}, torch {run.prov['torch']}, experiments {experiments}, seeds {list(p.seeds)}")
    out_dir = Path(out_dir) if out_dir is not None else results_dir() / STUDY / "export"
    tag = experiments[0] if len(experiments) == 1 else "all"

    def export() -> list[Path]:
        return export_rows(study_rows(run, experiments), out_dir, p.name, tag)

    for seed in (p.trunk_seed,) if p.head_on_features else p.seeds:
        base = baseline(run, seed)
        if base is None:  # the time budget stopped the baseline's training
            break
        feats = trunk_features(run, base.network, seed) if p.head_on_features else None
        for e in experiments:
            if not run.budget.stopped:
                run_experiment(run, e, base, on_round=export, feats=feats)
    files = export()
    blocks = head_blocks(run) if "A" in experiments else None
    path = export_head_blocks(blocks, out_dir, p.name)
    files += [path] if path is not None else []
    rows = rows_frame(study_rows(run, experiments))
    expected = expected_rows(run, experiments)
    complete = len(rows) == expected
    run.log(f"{len(rows)}/{expected} rows{'' if complete else ' (incomplete)'}; wrote {', '.join(str(f) for f in files)}")
    return StudyResult(rows=rows, head_blocks=blocks, profile=p.name, complete=complete, files=files)
