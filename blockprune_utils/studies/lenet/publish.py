"""The LeNet summary table over both data sets: ``figures/lenet_summary.csv`` and
the same numbers at the top of ``figures/README.md``.

    python -m blockprune_utils.studies.lenet.publish --profile paper
"""
from __future__ import annotations

import argparse

import pandas as pd

from ...infra.figures import save_table
from .config import DATASETS, PROFILES, lenet_profile
from .report import summary_caption
from .study import authors_frame, cached_frame
from .summary import compact_summary, summary_table

SOURCE = "blockprune_utils/studies/lenet/publish.py"


def publish_summary(profile: str = "paper", datasets=DATASETS) -> pd.DataFrame:
    """Write ``lenet_summary`` (CSV and index table) from the stored rows."""
    prof = lenet_profile(profile)
    frames = [cached_frame(profile, ds) for ds in datasets]
    authors = [authors_frame(profile, ds, budget=min(prof.authors_retrain_epochs)) for ds in datasets]
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    au = pd.concat([a for a in authors if len(a)], ignore_index=True) if any(len(a) for a in authors) else None
    table = summary_table(df, au)
    runs = pd.concat([x for x in [df, au] if x is not None and len(x)]) if len(df) else None
    seeds = sorted(int(s) for s in df["seed"].unique()) if len(df) else []
    save_table(table, "lenet_summary", summary=compact_summary(table), dataset=", ".join(datasets), seeds=seeds,
               device=", ".join(sorted(df["device"].dropna().unique())) if len(df) else "", source=SOURCE,
               profile=profile, runs=runs,
               caption=summary_caption(prof))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blockprune_utils.studies.lenet.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    parser.add_argument("--dataset", nargs="+", default=list(DATASETS), choices=DATASETS)
    args = parser.parse_args(argv)
    table = publish_summary(args.profile, tuple(args.dataset))
    print(f"lenet_summary: {len(table)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
