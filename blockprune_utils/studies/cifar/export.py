"""Result files of the CIFAR-10 study, for bringing results back from a GPU machine
and for the notebook.

A command writes into its output folder (:func:`export_rows`,
:func:`export_head_blocks`):

* ``cifar_<profile>_rows_<tag>.jsonl``: the rows of its experiments, one JSON object
  a line, exactly as stored;
* ``cifar_<profile>_results_<tag>.csv``: the same rows as a CSV (dict columns as JSON);
* ``cifar_<profile>_head_blocks.csv``: the surviving head blocks after A's last round.

``<tag>`` is the experiment (``A`` or ``B``) or ``all``.  Committed under
``figures/``, the CSVs are what :func:`load_results` reads back.  :func:`publish`
writes a finished run's A rows straight into the figures folder as
``cifar_<profile>_experiment_a.csv`` (with a provenance sidecar: data set, seeds,
device, commits) and its head-block table beside.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from ...blocks import block_mask_of, block_scores
from ...infra.paths import figures_dir
from ...infra.store import atomic_write_text
from ...masks import MASK_SUFFIX
from .config import HEAD_LAYERS, SCHEMA

ROW_ORDER = ["experiment", "seed", "k", "round"]


@dataclass
class StudyResult:
    """What a run (or the committed CSVs) gives the notebook: the rows (one per
    experiment, k, round, seed; A and B only), the head-block table, and the files."""

    rows: pd.DataFrame
    head_blocks: Optional[pd.DataFrame] = None
    profile: str = "quick"
    complete: bool = True
    files: list = field(default_factory=list)

    @property
    def source(self) -> str:
        return ", ".join(sorted(set(self.rows["data_source"].dropna()))) if len(self.rows) else ""

    @property
    def seeds(self) -> list:
        return sorted(int(s) for s in set(self.rows["seed"]))

    @property
    def device(self) -> str:
        return ", ".join(sorted(set(self.rows["device"].dropna()))) if len(self.rows) else ""

    @property
    def commits(self) -> str:
        return ", ".join(sorted(set(self.rows["commit"].dropna().astype(str)))) if len(self.rows) else ""


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts) as a DataFrame with the schema's columns, in study order."""
    df = pd.DataFrame(rows, columns=list(SCHEMA.columns))
    return df.sort_values(ROW_ORDER, kind="stable").reset_index(drop=True)


def flat_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Rows as a CSV-able frame: dict columns become JSON strings."""
    out = df.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, dict)).any():
            out[col] = out[col].map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
    return out


def export_rows(rows: list[dict], out_dir, profile: str, tag: str) -> list[Path]:
    """Write ``rows`` as ``cifar_<profile>_rows_<tag>.jsonl`` and
    ``cifar_<profile>_results_<tag>.csv`` into ``out_dir`` (nothing when there are none)."""
    if not rows:
        return []
    out_dir = Path(out_dir)
    rows = sorted(rows, key=lambda r: tuple(r[c] for c in ROW_ORDER))
    jsonl = out_dir / f"cifar_{profile}_rows_{tag}.jsonl"
    atomic_write_text(jsonl, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
    csv = out_dir / f"cifar_{profile}_results_{tag}.csv"
    atomic_write_text(csv, flat_frame(rows_frame(rows)).to_csv(index=False))
    return [jsonl, csv]


def head_blocks_frame(state_dict: dict, k: int, rnd: int, seed: int = 0) -> pd.DataFrame:
    """The surviving k x k blocks of the two head matrices, one row per block, with its
    score (mean |w|), from a (masked) state_dict."""
    parts = []
    for layer in HEAD_LAYERS:
        orig = state_dict.get(f"{layer}.parametrizations.weight.original")
        if orig is None:
            w, mask = state_dict[f"{layer}.weight"].float().cpu(), None
        else:
            mask = state_dict[layer + MASK_SUFFIX].cpu()
            w = (orig * mask).float().cpu()
        alive = block_mask_of(mask if mask is not None else torch.ones_like(w), k)
        br, bc = torch.nonzero(alive, as_tuple=True)
        parts.append(pd.DataFrame({
            "layer": layer, "k": k, "round": rnd, "seed": seed, "block_row": br.numpy(), "block_col": bc.numpy(),
            "score": block_scores(w, k)[br, bc].double().numpy(), "rows": w.shape[0], "cols": w.shape[1],
            "density": float(mask.float().mean()) if mask is not None else 1.0,
        }))
    return pd.concat(parts, ignore_index=True)


def export_head_blocks(blocks: Optional[pd.DataFrame], out_dir, profile: str) -> Optional[Path]:
    """Write the head-block table as ``cifar_<profile>_head_blocks.csv`` (None when there is none)."""
    if blocks is None or blocks.empty:
        return None
    path = Path(out_dir) / f"cifar_{profile}_head_blocks.csv"
    atomic_write_text(path, blocks.to_csv(index=False))
    return path


def load_results(profile: str = "paper", directory=None) -> Optional[StudyResult]:
    """The committed result CSVs ``cifar_<profile>_results_*.csv`` and
    ``cifar_<profile>_experiment_*.csv`` (and head blocks)
    from ``directory`` (default: the figures folder), or None when there are none.
    A row present in several files is taken from the last one (by file name)."""
    directory = Path(directory) if directory is not None else figures_dir()
    paths = sorted([*directory.glob(f"cifar_{profile}_results_*.csv"),
                    *directory.glob(f"cifar_{profile}_experiment_*.csv")])
    if not paths:
        return None
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    df = df.drop_duplicates(["experiment", "k", "round", "seed"], keep="last")
    if "layer_density" in df:
        df["layer_density"] = df["layer_density"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
    df = df.sort_values(ROW_ORDER, kind="stable").reset_index(drop=True)
    blocks_path = directory / f"cifar_{profile}_head_blocks.csv"
    blocks = pd.read_csv(blocks_path) if blocks_path.exists() else None
    return StudyResult(rows=df, head_blocks=blocks, profile=profile, files=paths + ([blocks_path] if blocks is not None else []))


def head_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Experiment A per k: unpruned accuracy, head density and accuracy after the last
    round (mean and standard deviation over seeds; percent)."""
    a = rows[rows["experiment"] == "A"]
    out = []
    for k, g in a.groupby("k"):
        last = g[g["round"] == g["round"].max()]
        acc = 100 * last["test_acc"].astype(float)
        out.append({"k": int(k), "seeds": len(last), "last round": int(last["round"].iloc[0]),
                    "unpruned %": round(100 * float(g.loc[g["round"] == 0, "test_acc"].mean()), 2),
                    "head density %": round(100 * float(last["density"].mean()), 2),
                    "test acc %": round(float(acc.mean()), 2),
                    "sd": round(float(acc.std(ddof=1)), 2) if len(acc) > 1 else float("nan")})
    return pd.DataFrame(out)


def publish(res: StudyResult, directory=None, command: str = "") -> list[Path]:
    """Write the A rows of ``res`` into the figures folder as
    ``cifar_<profile>_experiment_a.csv`` with its sidecar (caption, data set, seeds,
    device, commits; the index shows the per-k summary), and the head-block table as
    ``cifar_<profile>_head_blocks.csv``."""
    from ...infra.figures import output_dir, save_table

    a = res.rows[res.rows["experiment"] == "A"]
    if a.empty:
        return []
    name = f"cifar_{res.profile}_experiment_a"
    caption = (f"Experiment A, profile {res.profile}: ResNet18 (CIFAR form) with the authors' 512-300-10 head; the "
               f"head block-pruned per layer (p = 0.2 of the surviving blocks per round, k in "
               f"{sorted(int(k) for k in set(a['k']))}) and retrained after each round. One row per (k, round, seed); "
               f"round 0 = unpruned. Data: {res.source}; device {res.device}.")
    path = save_table(flat_frame(a.reset_index(drop=True)), name, caption=caption, dataset=res.source,
                      seeds=res.seeds, device=res.device, source=command or "blockprune_utils.studies.cifar.export.publish",
                      profile=res.profile, summary=head_summary(a), runs=a, out_dir=directory)
    files = [path]
    blocks = export_head_blocks(res.head_blocks, output_dir(res.profile, directory), res.profile)
    return files + ([blocks] if blocks is not None else [])
