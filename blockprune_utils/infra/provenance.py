"""Where a result was made: device, library versions, threads and the git commit."""
from __future__ import annotations

import os
import platform
import subprocess

import torch

from .paths import REPO_ROOT

PROVENANCE_COLUMNS = ("device", "torch", "numpy", "scipy", "python", "threads", "commit")


def git_commit() -> str:
    """The repo's commit, with ``-dirty`` when tracked source files differ from it
    (the rendered outputs under ``figures/`` do not count).  Outside a git checkout
    (e.g. a copy on a GPU machine) the ``BLOCKPRUNE_COMMIT`` variable names it."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()

        sha = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)figures")
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BLOCKPRUNE_COMMIT", "unknown")


def device_name(device: str | torch.device = "cpu") -> str:
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return f"{dev.type}:{name}"


def provenance(device: str | torch.device = "cpu", commit: str | None = None) -> dict:
    """The provenance columns of a result row."""
    import numpy
    import scipy

    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "commit": commit or git_commit(),
    }
