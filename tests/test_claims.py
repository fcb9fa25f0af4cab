"""The paper-vs-study table: statuses follow the numbers in the result tables."""
from __future__ import annotations

import pandas as pd

from blockprune_utils.studies.claims import NOT_MEASURED, paper_vs_study


def _summary(drop_k6: float) -> pd.DataFrame:
    rows = [{"dataset": "mnist", "variant": "baseline", "k": 0, "round": 0, "density": 1.0, "acc_mean": 0.98}]
    rows += [{"dataset": "mnist", "variant": "block", "k": k, "round": 16, "density": 0.029,
              "acc_mean": 0.978 - (drop_k6 if k == 6 else 0.0)} for k in range(1, 7)]
    return pd.DataFrame(rows)


def test_empty_folder_reports_nothing_measured(tmp_path):
    table = paper_vs_study(tmp_path)
    assert len(table) == 7
    assert (table["status"] == NOT_MEASURED).all()


def test_lenet_status_follows_the_drop(tmp_path):
    _summary(0.0).to_csv(tmp_path / "lenet_summary.csv", index=False)
    t = paper_vs_study(tmp_path).set_index("claim")
    mnist = t.loc[[c for c in t.index if "MNIST:" in c and "Fashion" not in c]]
    assert list(mnist["status"]) == ["supported", "not supported"]  # 0.2 pp drop; k = 6 not below k = 2
    _summary(0.05).to_csv(tmp_path / "lenet_summary.csv", index=False)
    t = paper_vs_study(tmp_path).set_index("claim")
    mnist = t.loc[[c for c in t.index if "MNIST:" in c and "Fashion" not in c]]
    assert list(mnist["status"]) == ["mixed", "supported"]  # k = 6 drops 5.2 pp, the others 0.2 pp


def test_speed_cache_and_cifar(tmp_path):
    speed = pd.DataFrame({"matrix": ["a", "a", "b", "b"], "batch": [1, 1, 1, 1], "threads_label": [1] * 4,
                          "k": [4] * 4, "format": ["scipy_bsr", "scipy_csr", "numba_bsr", "numba_csr"],
                          "median_ns": [1.0, 2.0, 3.0, 2.0]})
    speed.to_csv(tmp_path / "bsr_speedup_fc1.csv", index=False)
    cache = pd.DataFrame({"matrix": ["a", "a"], "fmt": ["bsr", "csr"], "k": [4, 4], "d1_misses": [10.0, 20.0]})
    cache.to_csv(tmp_path / "bsr_cache_misses.csv", index=False)
    pd.DataFrame({"k": [2, 2], "round": [0, 16], "test_acc": [0.85, 0.86]}).to_csv(tmp_path / "cifar_cpu.csv", index=False)
    t = paper_vs_study(tmp_path).set_index("claim")["status"]
    assert t["BSR makes the sparse product faster than CSR"] == "mixed"
    assert t["BSR uses the cache better than CSR"] == "supported"
    assert t[[c for c in t.index if "CIFAR" in c][0]] == "supported"
