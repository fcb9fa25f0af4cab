"""ResNet18 on CIFAR-10: block pruning of the FC head (experiment A, the authors'
set-up) and of the convolutions (experiment B, beyond the paper).

* :mod:`.data`   - CIFAR-10 as uint8 tensors, on-device augmentation;
* :mod:`.config` - run configuration, profiles, the row schema, store keys;
* :mod:`.describe` - a profile's training phases as a table, the cpu profile's time arithmetic;
* :mod:`.network` - ResNet18Cifar from a seed, the layers each experiment prunes;
* :mod:`.device`, :mod:`.budget` - device settings, the time budget of a command;
* :mod:`.runs`   - the baseline and the pruning runs of A and B;
* :mod:`.trunk`  - the ``cpu`` profile's baseline: small-budget training in resumable epochs;
* :mod:`.features` - A on the trunk's cached features (the ``cpu`` profile);
* :mod:`.study`  - :func:`run_study`: a profile from end to end;
* :mod:`.export` - CSV exports, and reading the committed ones (:func:`load_results`);
* :mod:`.cli`    - the command line (``python -m blockprune_utils.sweep --study cifar``).

Its plots and captions are in :mod:`blockprune_utils.plots.cifar`.
"""
from .config import (
    AUTHORS_README,
    CPU_RATES,
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
    TrunkSchedule,
    cifar_profile,
    store_config,
    with_axes,
)
from .describe import cpu_minutes, profile_table
from .export import StudyResult, flat_frame, head_blocks_frame, head_summary, load_results, publish
from .features import FeatureHead, run_on_features, trunk_features
from .network import build_model, conv_prune_layers, freeze_backbone
from .runs import Run, baseline, plan, prune_run, run_experiment
from .study import run_study
from .trunk import train_trunk, trunk_baseline

__all__ = [
    "AUTHORS_README", "CPU_RATES", "EXPERIMENTS", "HEAD_LAYERS", "PROFILES", "SCHEMA", "STUDY", "CifarProfile",
    "ConvPruning", "DataConfig", "HeadPruning", "ModelConfig", "Phase", "TrunkSchedule", "cifar_profile",
    "store_config", "with_axes", "cpu_minutes", "profile_table",
    "StudyResult", "flat_frame", "head_blocks_frame", "head_summary", "load_results", "publish",
    "FeatureHead", "run_on_features", "trunk_features",
    "Run", "baseline", "build_model", "conv_prune_layers", "freeze_backbone", "plan", "prune_run", "run_experiment",
    "run_study", "train_trunk", "trunk_baseline",
]
