"""ResNet18 on CIFAR-10: block pruning of the FC head (experiment A, the authors'
set-up) and of the convolutions (experiment B, beyond the paper).

* :mod:`.data`   - CIFAR-10 as uint8 tensors, on-device augmentation;
* :mod:`.config` - run configuration, profiles, the row schema, store keys;
* :mod:`.network` - ResNet18Cifar from a seed, the layers each experiment prunes;
* :mod:`.device`, :mod:`.budget` - device settings, the time budget of a command;
* :mod:`.runs`   - the baseline and the pruning runs of A and B;
* :mod:`.study`  - :func:`run_study`: a profile from end to end;
* :mod:`.export` - CSV exports, and reading the committed ones (:func:`load_results`);
* :mod:`.cli`    - the command line (``python -m blockprune_utils.sweep --study cifar``).

Its plots and captions are in :mod:`blockprune_utils.plots.cifar`.
"""
from .config import (
    AUTHORS_README,
    EXPERIMENTS,
    HEAD_LAYERS,
    PROFILES,
    SCHEMA,
    STUDY,
    CifarProfile,
    ConvPruning,
    DataConfig,
    HeadPruning,
    ModelConfig,
    Phase,
    cifar_profile,
    profile_table,
    store_config,
    with_axes,
)
from .export import StudyResult, flat_frame, head_blocks_frame, load_results
from .network import build_model, conv_prune_layers, freeze_backbone
from .runs import Run, baseline, plan, prune_run, run_experiment
from .study import run_study

__all__ = [
    "AUTHORS_README", "EXPERIMENTS", "HEAD_LAYERS", "PROFILES", "SCHEMA", "STUDY", "CifarProfile", "ConvPruning",
    "DataConfig", "HeadPruning", "ModelConfig", "Phase", "cifar_profile", "profile_table", "store_config", "with_axes",
    "StudyResult", "flat_frame", "head_blocks_frame", "load_results",
    "Run", "baseline", "build_model", "conv_prune_layers", "freeze_backbone", "plan", "prune_run", "run_experiment",
    "run_study",
]
