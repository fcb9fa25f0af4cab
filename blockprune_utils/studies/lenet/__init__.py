"""LeNet-300-100 on MNIST and Fashion-MNIST: accuracy vs density and block size,
against element-wise pruning (k = 1) and random block masks.

* :mod:`.config`  - run configuration, profiles, the authors' settings, row schema;
* :mod:`.runs`    - one function per kind of task (baseline, prune run, controls);
* :mod:`.study`   - the task graph, :func:`run_study`, reading stored results;
* :mod:`.summary` - tables of the rows;
* :mod:`.report`  - the words and tables of notebook 01 (captions, readings);
* :mod:`.publish` - writes ``lenet_summary`` into ``figures/``;
* :mod:`.budget`  - the epochs-per-round scan and its rule, the budget table, the literature;
* :mod:`.neurons` - neuron pruning and the narrow dense nets;
* :mod:`.pareto`  - accuracy against measured latency (the Pareto frontier and its reading).
"""
from .config import (
    AUTHORS_SETTINGS,
    DATASETS,
    LAYERS,
    PROFILES,
    SCHEMA,
    STUDY,
    VARIANTS,
    DataConfig,
    Profile,
    PruningConfig,
    RunConfig,
    TrainingConfig,
    authors_config,
    lenet_profile,
    run_config,
    setting_name,
)
from .runs import load_splits, random_masks, store_for
from .study import authors_frame, cached_frame, expected_keys, pruned_lenet, run_study, tasks, weight_frame
from .summary import (
    KEY_DENSITIES,
    baseline_summary,
    compact_summary,
    controls_summary,
    mean_sd,
    nearest_round,
    scan_choice,
    scan_verdict,
    select_rows,
    sensitivity_reading,
    summary_at,
    summary_table,
)

__all__ = [
    "AUTHORS_SETTINGS", "DATASETS", "LAYERS", "PROFILES", "SCHEMA", "STUDY", "VARIANTS", "DataConfig", "Profile",
    "PruningConfig", "RunConfig", "TrainingConfig", "authors_config", "lenet_profile", "run_config",
    "load_splits", "random_masks", "store_for",
    "authors_frame", "cached_frame", "expected_keys", "pruned_lenet", "run_study", "tasks", "weight_frame",
    "KEY_DENSITIES", "baseline_summary", "compact_summary", "controls_summary", "mean_sd", "nearest_round", "scan_choice",
    "scan_verdict", "select_rows",
    "sensitivity_reading",
    "summary_at", "summary_table", "setting_name",
]
