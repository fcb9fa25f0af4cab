"""ResNet18 on CIFAR-10: block pruning of the FC head (experiment A, the authors'
set-up) and of the convolutions (experiment B, beyond the paper).

* :mod:`.config`  - run configuration, profiles, the row schema, store keys;
* :mod:`.data`    - CIFAR-10 as uint8 tensors, on-device augmentation;
* :mod:`.network` - ResNet18Cifar from a seed, the layers each experiment prunes, the
  head on cached features, device settings;
* :mod:`.runs`    - the time budget, the baseline of a Phase profile, the one prune
  loop of A and B (also A on cached trunk features), round-major per experiment;
* :mod:`.trunk`   - the ``cpu`` profile's baseline: small-budget training in resumable
  epochs, and its cached features;
* :mod:`.study`   - :func:`run_study`: a profile from end to end (which baseline, which
  experiments);
* :mod:`.export`  - CSV exports, and reading the committed ones (:func:`load_results`);
* :mod:`.cli`     - the command line (``python -m blockprune_utils.sweep --study cifar``);
* :mod:`.report`  - words and tables for notebook 03 (a profile's phases and time too).

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
    CifarDataConfig,
    CifarProfile,
    ConvPruning,
    HeadPruning,
    ModelConfig,
    Phase,
    TrunkSchedule,
    cifar_profile,
    store_config,
    with_axes,
)
from .export import StudyResult, flat_frame, head_blocks_frame, head_summary, load_results, publish
from .network import FeatureHead, build_model, conv_prune_layers, freeze_backbone
from .report import cpu_minutes, profile_table
from .runs import Features, ProfileRun, plan, prune_run, run_experiment
from .study import baseline, run_study
from .trunk import train_trunk, trunk_baseline, trunk_features

__all__ = [
    "AUTHORS_README", "CPU_RATES", "EXPERIMENTS", "HEAD_LAYERS", "PROFILES", "SCHEMA", "STUDY", "CifarDataConfig",
    "CifarProfile", "ConvPruning", "HeadPruning", "ModelConfig", "Phase", "TrunkSchedule", "cifar_profile",
    "store_config", "with_axes",
    "StudyResult", "flat_frame", "head_blocks_frame", "head_summary", "load_results", "publish",
    "FeatureHead", "build_model", "conv_prune_layers", "freeze_backbone",
    "cpu_minutes", "profile_table",
    "Features", "ProfileRun", "plan", "prune_run", "run_experiment",
    "baseline", "run_study",
    "train_trunk", "trunk_baseline", "trunk_features",
]
