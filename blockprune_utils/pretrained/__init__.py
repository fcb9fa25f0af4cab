"""A pretrained LeNet-300-100 shipped with the repository, and the code that made it.

``lenet300100_mnist.pt`` holds the dense baseline of the LeNet study's paper profile
on MNIST, seed 0 (the same training as the sweep's ``baseline`` task: Adam, cosine
decay, the checkpoint of best validation accuracy), as a plain float32
``state_dict``.  ``lenet300100_mnist.json`` beside it records how it was made (data
set, seed, profile, training schedule, commit, accuracies) and the SHA-256 of the
weights file, which :func:`load_lenet` checks.

Remake it with ``python -m blockprune_utils.pretrained`` (about 20 epochs on one
thread; run it from a clean checkout so that the recorded commit is exact).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from ..models import LeNet300100

HERE = Path(__file__).resolve().parent
LENET_WEIGHTS = HERE / "lenet300100_mnist.pt"
LENET_PROVENANCE = HERE / "lenet300100_mnist.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lenet_provenance(path: Path = LENET_PROVENANCE) -> dict:
    """The provenance record of the shipped LeNet (data set, seed, profile, commit, accuracies...)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no provenance file {path}: remake the weights with `python -m blockprune_utils.pretrained`")
    return json.loads(path.read_text())


def load_lenet(weights: Path = LENET_WEIGHTS, provenance: Path = LENET_PROVENANCE, check: bool = True) -> LeNet300100:
    """The pretrained LeNet-300-100 (logits output, eval mode, on the CPU).

    With ``check`` the weights file must have the SHA-256 its provenance records, so a
    changed or truncated file is an error rather than a silently different network."""
    weights = Path(weights)
    if not weights.exists():
        raise FileNotFoundError(f"no pretrained weights at {weights}: remake them with `python -m blockprune_utils.pretrained`")
    if check:
        expected = lenet_provenance(provenance)["sha256"]
        got = sha256(weights)
        if got != expected:
            raise ValueError(f"{weights.name} has SHA-256 {got}, but its provenance records {expected}: "
                             "the file was changed; remake it with `python -m blockprune_utils.pretrained`")
    model = LeNet300100()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def pretrained_lenet() -> LeNet300100:
    """The LeNet-300-100 trained on MNIST that ships with the package (the study's
    paper-profile baseline, seed 0), checked against its provenance, in eval mode on
    the CPU."""
    return load_lenet()


def export_lenet(out_dir: Path = HERE, profile: str = "paper", seed: int = 0, data_root=None, threads: int = 1) -> dict:
    """Train the study's dense MNIST baseline of ``profile`` and ``seed`` (in a
    throw-away results store) and write its weights and provenance into ``out_dir``;
    returns the provenance record.  Both files are written to temporary names first
    and renamed only when both are complete."""
    from ..infra.provenance import git_commit
    from ..studies.lenet import runs
    from ..studies.lenet.config import run_config
    from ..train import evaluate

    torch.set_num_threads(threads)
    commit = git_commit()
    cfg = run_config(profile, "mnist")
    with tempfile.TemporaryDirectory() as tmp:
        run = runs.Run(cfg, profile, results_root=tmp, data_root=data_root, commit=commit)
        model = runs.baseline(run, seed).eval()
        _, val, test = run.splits
        record = {
            "model": "LeNet-300-100 (784-300-100-10, ReLU, logits)",
            "dataset": "mnist", "seed": int(seed), "profile": profile, "variant": "baseline",
            "training": dataclasses.asdict(cfg.training.baseline),
            "select_on": cfg.training.select_on, "val_size": cfg.data.val_size, "split_seed": cfg.data.split_seed,
            "test_acc": evaluate(model, test), "val_acc": evaluate(model, val) if len(val) else None,
            "commit": commit, "torch": torch.__version__, "threads": threads,
            "made_by": "python -m blockprune_utils.pretrained",
        }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, prov = out_dir / LENET_WEIGHTS.name, out_dir / LENET_PROVENANCE.name
    tmp_w, tmp_p = weights.with_suffix(".pt.part"), prov.with_suffix(".json.part")
    try:
        torch.save({k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}, tmp_w)
        record["sha256"] = sha256(tmp_w)
        tmp_p.write_text(json.dumps(record, indent=2) + "\n")
        tmp_w.replace(weights)
        tmp_p.replace(prov)
    finally:
        tmp_w.unlink(missing_ok=True)
        tmp_p.unlink(missing_ok=True)
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m blockprune_utils.pretrained", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder for the weights and provenance (default: the package)")
    ap.add_argument("--profile", default="paper", help="LeNet profile whose baseline is trained (default: paper)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    record = export_lenet(args.out, args.profile, args.seed, threads=args.threads)
    print(f"wrote {args.out / LENET_WEIGHTS.name}: test accuracy {record['test_acc']:.4f} at commit {record['commit']}")
