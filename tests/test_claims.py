"""The paper-vs-study table: every rule is tested on numbers that support it, contradict
it and leave it undecided; quick-run tables make no claim."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from blockprune_utils.studies.claims import (
    CONTRADICTED,
    NO_CLAIM,
    NOT_MEASURED,
    QUICK_RUN,
    SUPPORTED,
    UNDECIDED,
    judge_cifar,
    judge_drop,
    judge_share,
    judge_trend,
    paper_vs_study,
)


def test_drop_rule():
    assert judge_drop(98.0, {2: 97.5, 6: 97.1})[0] == SUPPORTED
    assert judge_drop(98.0, {2: 96.5, 6: 95.0})[0] == CONTRADICTED
    status, text = judge_drop(98.0, {2: 97.5, 6: 95.0})
    assert status == UNDECIDED and "k = 2: 97.50% (-0.50 pp)" in text and "k = 6: 95.00% (-3.00 pp)" in text


def test_trend_rule_reads_every_k():
    assert judge_trend({1: 97.3, 2: 96.6, 4: 96.0, 6: 94.6})[0] == SUPPORTED
    status, text = judge_trend({1: 97.3, 2: 96.6, 3: 95.99, 4: 96.05, 6: 94.6})  # a rise from 3 to 4
    assert status == UNDECIDED and "does not fall from k = 3 to 4" in text and "rho" in text
    # k = 2 above k = 6 alone would have said "falls"; all k together show no fall (rho = 0)
    assert judge_trend({2: 95.0, 3: 95.5, 4: 96.0, 5: 96.5, 6: 94.9})[0] == CONTRADICTED
    assert judge_trend({2: 94.0, 3: 95.0, 4: 96.0, 6: 97.0})[0] == CONTRADICTED
    assert judge_trend({2: 95.0, 4: 95.0})[0] == CONTRADICTED  # no fall is not a fall


def test_share_rule():
    assert judge_share(5, 5) == SUPPORTED and judge_share(0, 5) == CONTRADICTED and judge_share(3, 5) == UNDECIDED


def test_cifar_rule():
    assert judge_cifar(90.37, 90.73, 0.2)[0] == SUPPORTED
    status, text = judge_cifar(80.33, 79.62, 0.40)  # a fall larger than the noise is a fall
    assert status == CONTRADICTED and "-0.71 ± 0.40 pp" in text
    assert judge_cifar(80.33, 80.10, 0.40)[0] == UNDECIDED
    status, text = judge_cifar(10.2, 15.2, 3.57)  # a gain from a chance-level baseline
    assert status == NO_CLAIM and "near chance" in text


def _summary(drop_k6: float) -> pd.DataFrame:
    rows = [{"dataset": "mnist", "variant": "baseline", "k": 0, "round": 0, "density": 1.0, "acc_mean": 0.98}]
    rows += [{"dataset": "mnist", "variant": "block", "k": k, "round": 16, "density": 0.029,
              "acc_mean": 0.978 - 0.001 * k - (drop_k6 if k == 6 else 0.0)} for k in range(1, 7)]
    return pd.DataFrame(rows)


def _mnist(folder):
    t = paper_vs_study(folder).set_index("claim")
    return t.loc[[c for c in t.index if "MNIST:" in c and "Fashion" not in c]]


def test_empty_folder_reports_nothing_measured(tmp_path):
    table = paper_vs_study(tmp_path)
    assert len(table) == 7 and "rule" in table.columns
    assert (table["status"] == NOT_MEASURED).all()


def test_lenet_status_follows_the_numbers(tmp_path):
    _summary(0.0).to_csv(tmp_path / "lenet_summary.csv", index=False)
    mnist = _mnist(tmp_path)
    assert list(mnist["status"]) == [SUPPORTED, SUPPORTED]  # drops of 0.4-0.8 pp; falls at every k
    _summary(0.05).to_csv(tmp_path / "lenet_summary.csv", index=False)
    mnist = _mnist(tmp_path)
    assert list(mnist["status"]) == [UNDECIDED, SUPPORTED]  # k = 6 drops 5.8 pp, the others below 1 pp
    assert "k = 6: 92.20% (-5.80 pp)" in mnist["this study"].iloc[0]


def test_quick_tables_make_no_claim(tmp_path):
    _summary(0.0).to_csv(tmp_path / "lenet_summary.csv", index=False)
    (tmp_path / "lenet_summary.json").write_text(json.dumps({"name": "lenet_summary", "profile": "quick"}))
    assert (_mnist(tmp_path)["status"] == QUICK_RUN).all()
    speed = pd.DataFrame({"matrix": ["a", "a"], "batch": [1, 1], "threads_label": [1, 1], "k": [4, 4],
                          "format": ["scipy_bsr", "scipy_csr"], "median_ns": [1.0, 2.0]})
    speed.to_csv(tmp_path / "bsr_speedup_fc1.csv", index=False)
    (tmp_path / "bsr_speedup_fc1.json").write_text(json.dumps({"profile": "quick"}))
    t = paper_vs_study(tmp_path).set_index("claim")["status"]
    assert t["BSR makes the sparse product faster than CSR"] == QUICK_RUN
    (tmp_path / "bsr_speedup_fc1.json").write_text(json.dumps({"profile": "paper"}))
    t = paper_vs_study(tmp_path).set_index("claim")["status"]
    assert t["BSR makes the sparse product faster than CSR"] == SUPPORTED


@pytest.mark.parametrize("accs, status", [((0.8033, 0.7962), CONTRADICTED), ((0.80, 0.83), SUPPORTED),
                                          ((0.10, 0.15), NO_CLAIM)])
def test_speed_cache_and_cifar(tmp_path, accs, status):
    speed = pd.DataFrame({"matrix": ["a", "a", "b", "b"], "batch": [1, 1, 1, 1], "threads_label": [1] * 4,
                          "k": [4] * 4, "format": ["scipy_bsr", "scipy_csr", "numba_bsr", "numba_csr"],
                          "median_ns": [1.0, 2.0, 3.0, 2.0]})
    speed.to_csv(tmp_path / "bsr_speedup_fc1.csv", index=False)
    cache = pd.DataFrame({"matrix": ["a", "a"], "fmt": ["bsr", "csr"], "k": [4, 4], "d1_misses": [10.0, 20.0]})
    cache.to_csv(tmp_path / "bsr_cache_misses.csv", index=False)
    rows = pd.DataFrame({"experiment": "A", "k": 2, "round": [0, 0, 0, 16, 16, 16], "seed": [0, 1, 2] * 2,
                         "test_acc": [accs[0]] * 3 + [accs[1] - 0.001, accs[1], accs[1] + 0.001],
                         "test_acc_best_epoch": accs[1], "density": [1.0] * 3 + [0.03] * 3, "n_test": 10000})
    rows.to_csv(tmp_path / "cifar_cpu_experiment_a.csv", index=False)
    t = paper_vs_study(tmp_path).set_index("claim")
    assert t.loc["BSR makes the sparse product faster than CSR", "status"] == UNDECIDED  # 1 of 2 cases
    assert t.loc["BSR uses the cache better than CSR", "status"] == SUPPORTED
    cifar = t.loc[[c for c in t.index if "CIFAR" in c][0]]
    assert cifar["status"] == status and "cifar_cpu_experiment_a" in cifar["this study"]


def test_cifar_sentence_makes_no_claim_from_chance_or_a_quick_run():
    from blockprune_utils.studies.cifar import export, report

    def rows(a0, a1):
        return pd.DataFrame({"experiment": "A", "k": 2, "round": [0, 0, 2, 2], "seed": [0, 1] * 2,
                             "test_acc": [a0, a0, a1 - 0.01, a1 + 0.01], "test_acc_best_epoch": a1,
                             "density": [1.0, 1.0, 0.64, 0.64], "n_test": 2000})
    chance = report.authors_sentence({"cpu": export.StudyResult(rows(0.10, 0.15), profile="cpu")})
    assert "no claim" in chance and "a gain" not in chance
    quick = report.authors_sentence({"quick": export.StudyResult(rows(0.50, 0.60), profile="quick")})
    assert "no claim" in quick and "a gain" not in quick
    real = report.authors_sentence({"cpu": export.StudyResult(rows(0.50, 0.60), profile="cpu")})
    assert "a gain, like the authors'" in real
