"""The training bar, the MLP bar and the crossover measure of the benchmark
(blockprune_utils.bench.training), at tiny sizes: every number is a positive ratio
of two timings of one run, and the training bar's line has the documented form."""
from __future__ import annotations

import re

import numpy as np

from blockprune_utils.bench import training as T
from blockprune_utils.bsr.sparse_training import CROSSOVER, crossover_density


def test_training_bar_is_three_positive_ratios():
    bar = T.training_bar(steps=1, repeats=1)
    assert list(bar) == ["epoch_r16_k4", "epoch_r11_k4", "run_k4"]
    assert all(np.isfinite(v) and v > 0 for v in bar.values())
    line = T.bar_line("training bar", bar)
    assert re.fullmatch(r"training bar: epoch_r16_k4=\S+ epoch_r11_k4=\S+ run_k4=\S+", line), line


def test_mlp_bar_checks_and_times_the_sparse_mlp():
    bar = T.mlp_bar(ks=(16,), tokens=24)
    assert list(bar) == ["mlp_k16_frac_of_ideal"] and 0 < bar["mlp_k16_frac_of_ideal"] < 100


def test_crossover_is_a_measured_density_and_the_table_is_monotone_in_use():
    out = T.training_crossover(ks=(4,), densities=(0.01,), batch=16)
    assert set(out) == {4} and out[4] in (0.0, 0.01)
    fc1 = CROSSOVER[300, 784]
    assert crossover_density(6) == fc1[4] and crossover_density(64) == fc1[max(fc1)]
    assert crossover_density(0) == fc1[1]  # k = 0 (no pruning): the CSR value
    assert crossover_density(4, (3072, 768)) == fc1[4] and crossover_density(4, (10, 100)) == CROSSOVER[10, 100][4]
    assert crossover_density(4, (2, 3)) == CROSSOVER[10, 100][4]  # smaller than every measured shape: the smallest's
