"""The retraining-budget and accuracy-for-the-time parts of the LeNet study: neuron
masks, narrow sizes, the epochs-per-round rule, the budget table, the Pareto
frontier, and a tiny run of the new variants with their latency rows."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from conftest import tiny_lenet_config
from hypothesis import given, settings
from hypothesis import strategies as st

from blockprune_utils.data import Split
from blockprune_utils.models import LENET_RATES, LeNet300100
from blockprune_utils.studies import lenet as L
from blockprune_utils.studies.lenet import budget as B
from blockprune_utils.studies.lenet import neurons as N
from blockprune_utils.studies.lenet import pareto as P
from blockprune_utils.train import TrainConfig, train

ROUNDS = 3
TINY = tiny_lenet_config(n_train=1000, n_test=600, rounds=ROUNDS, scratch_rounds=(ROUNDS,), sensitivity_densities=(0.5,))
NEW = ("block", "dense_control", "epochs_scan", "budget", "neuron", "narrow_dense")


# ----------------------------------------------------------------- neuron pruning


def test_pruned_units_stay_zero_through_retraining():
    torch.manual_seed(0)
    model = LeNet300100()
    pruner = N.NeuronPruner(LENET_RATES)
    for _ in range(3):
        pruner.step(model)
    a1, a2 = N.unit_masks(model)
    assert (int(a1.sum()), int(a2.sum())) == N.unit_counts(LENET_RATES, 3)
    x = torch.randn(256, 1, 28, 28)
    data = Split(x, torch.randint(0, 10, (256,)))
    train(model, data, TrainConfig(epochs=2, lr=1e-2, batch_size=32, select="last"), torch.Generator().manual_seed(0))
    w1, w2, w3 = model.fc1.weight, model.fc2.weight, model.fc3.weight
    assert (w1[~a1] == 0).all() and (w2[:, ~a1] == 0).all()  # a dead first-layer unit: its row and fc2's column
    assert (w2[~a2] == 0).all() and (w3[:, ~a2] == 0).all()  # a dead second-layer unit: its row and fc3's column
    assert (w1[a1] != 0).any(dim=1).all() and (w3 != 0).any(dim=1).all()  # alive units and every output kept
    small = N.shrink(model)
    assert small.sizes == (784, int(a1.sum()), int(a2.sum()), 10)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_neuron_pruner_removes_the_lowest_norm_units_and_resumes():
    torch.manual_seed(1)
    model = LeNet300100()
    with torch.no_grad():
        model.fc1.weight[:5] *= 1e-3  # five obviously weak first-layer units
    pruner = N.NeuronPruner(LENET_RATES)
    pruner.step(model)
    a1, _ = N.unit_masks(model)
    assert not a1[:5].any()
    twin = N.NeuronPruner(LENET_RATES)
    twin.load_state_dict(pruner.state_dict())
    assert twin.round == 1
    with pytest.raises(ValueError, match="not this neuron pruner"):
        N.NeuronPruner({"fc1": 0.5, "fc2": 0.2, "fc3": 0.1}).load_state_dict(pruner.state_dict())


@given(st.integers(1, 30))
def test_unit_counts_match_the_schedule_weight_count(r):
    h1, h2 = N.unit_counts(LENET_RATES, r)
    prev = N.unit_counts(LENET_RATES, r - 1)
    assert h1 <= prev[0] and h2 <= prev[1]  # nested: units are only removed
    target = sum(N.schedule_kept(LENET_RATES, r))
    kept = N.weight_count((784, h1, h2, 10))
    if h1 > 1:  # not clamped: within half a unit of each hidden layer of the target
        assert abs(kept - target) <= (784 + h2) / 2 + (h1 + 10) / 2 + 1


# ----------------------------------------------------------------- narrow dense


@settings(max_examples=60)
@given(st.floats(2000, 266_200))
def test_narrow_sizes_match_the_weight_count_within_one_unit(target):
    n_in, h1, h2, n_out = N.narrow_sizes(target)
    assert (n_in, n_out) == (784, 10)
    assert abs(N.weight_count((n_in, h1, h2, n_out)) - target) <= n_in + h2  # one first-layer unit
    assert abs(h1 / max(h2, 1) - 3) <= 3 / max(h2, 1) + 1  # the 300:100 ratio, up to whole units


def test_narrow_sizes_of_the_key_rounds_and_bad_targets():
    for r in (11, 16):
        target = sum(N.schedule_kept(LENET_RATES, r))
        sizes = N.narrow_sizes(target)
        assert abs(N.weight_count(sizes) - target) <= 784 + sizes[2]
    assert N.narrow_sizes(266_200) == (784, 300, 100, 10)
    with pytest.raises(ValueError, match="outside"):
        N.narrow_sizes(0)


# ----------------------------------------------------------------- the scan rule and tables


def _scan_frame(val: dict) -> pd.DataFrame:
    """epochs_scan rows: val[(epochs, k)] = validation accuracy of every round (4 rounds)."""
    return pd.DataFrame([{"variant": "epochs_scan", "epochs": e, "k": k, "round": r, "val_acc": v + (r <= 2) * 0.5,
                          "setting": f"{e}ep", "seed": 0} for (e, k), v in val.items() for r in range(1, 5)])


def test_epochs_rule_picks_the_fewest_epochs_near_the_best():
    # late rounds (3, 4) only: the early rounds' +0.5 must not count
    df = _scan_frame({(1, 1): 0.970, (1, 4): 0.960, (2, 1): 0.975, (2, 4): 0.9695, (4, 1): 0.976, (4, 4): 0.970,
                      (8, 1): 0.974, (8, 4): 0.967})
    choice = B.epochs_choice(df)
    assert list(choice["epochs"]) == [1, 2, 4, 8]
    assert choice.loc[choice["epochs"] == 4, "mean_val"].item() == pytest.approx(0.973)
    assert B.epochs_pick(df) == 2  # 0.97225 is within 0.1 pp of 0.973; 1 epoch (0.965) is not
    assert B.epochs_pick(df, L.config.EpochsRule(tol=0.0)) == 4
    assert "matches the profile" in B.epochs_verdict(choice, 2)
    assert "DIFFERS" in B.epochs_verdict(choice, 1)
    assert "not among" in B.epochs_verdict(choice, 16)
    assert B.epochs_pick(df.iloc[:0]) is None and "no scan rows" in B.epochs_verdict(B.epochs_choice(df.iloc[:0]), 1)


def test_epochs_rule_leaves_out_runs_still_under_way():
    """A scan run without all its late rounds would be averaged over earlier, denser
    rounds: it does not compete; the verdict says how far inside the tolerance the pick is."""
    df = _scan_frame({(1, 1): 0.970, (2, 1): 0.975, (4, 1): 0.974})
    partial = pd.concat([df[df["epochs"] != 4], df[(df["epochs"] == 4) & (df["round"] < 4)].assign(val_acc=0.99)])
    choice = B.epochs_choice(partial)
    assert list(choice["epochs"]) == [1, 2] and B.epochs_pick(partial) == 2
    assert "0.10 pp inside the tolerance" in B.epochs_verdict(choice, 2)


def test_schedule_scan_rules_and_the_margin_of_a_differing_pick():
    rows = [{"variant": "retrain_scan", "setting": s, "round": r, "val_acc": v + r / 1000}
            for s, v in (("lr-a", 0.9700), ("lr-b", 0.9704)) for r in range(1, 5)]
    rows += [{"variant": "baseline_scan", "setting": s, "round": r, "val_acc": v}
             for s, n, v in (("short", 2, 0.9795), ("long", 4, 0.9800)) for r in range(1, n + 1)]
    df = pd.DataFrame(rows)
    retrain = L.scan_choice(df, "retrain_scan")
    assert retrain.loc[retrain["chosen"], "setting"].tolist() == ["lr-b"]
    assert "matches the profile" in L.scan_verdict(retrain, "retrain_scan", "lr-b")
    assert "mean validation accuracy is 0.04 pp above" in L.scan_verdict(retrain, "retrain_scan", "lr-a")
    base = L.scan_choice(df, "baseline_scan")  # within 0.1 pp of the best final accuracy: the shorter schedule
    assert base.loc[base["chosen"], "setting"].tolist() == ["short"]
    assert "final validation accuracy is 0.05 pp below" in L.scan_verdict(base, "baseline_scan", "long")
    assert "not among" in L.scan_verdict(base, "baseline_scan", "other")


def test_budget_reading_words_the_sign_and_the_noise():
    def table(gaps):  # gaps[e] = accuracy of k = 1 minus k = 6 (pp), one round
        return pd.DataFrame([{"dataset": "mnist", "round": 16, "density": 0.029, "k": k, "epochs_per_round": e,
                              "acc_mean": 0.95 - (k == 6) * g / 100, "acc_sd": 0.0, "n_seeds": 1}
                             for e, g in gaps.items() for k in (1, 6)])
    assert "shrinks" in B.budget_reading(table({1: 2.0, 8: 0.5}))
    assert "grows" in B.budget_reading(table({1: 0.5, 8: 2.0}))
    assert "within seed noise" in B.budget_reading(table({1: 1.0, 8: 1.1}))
    assert "k = 6 leads k = 1 by 0.30 pp" in B.budget_reading(table({1: -0.3, 8: 1.0}))
    assert "one epochs per round only" in B.budget_reading(table({2: 1.0}))  # one E: nothing to compare


def test_epochs_rule_re_chooses_the_learning_rate_with_the_epochs():
    df = pd.concat([_scan_frame({(1, 1): 0.960, (2, 1): 0.970, (4, 1): 0.971}),
                    _scan_frame({(1, 1): 0.962, (2, 1): 0.9705, (4, 1): 0.968}).assign(
                        setting=lambda d: d["epochs"].astype(str) + "ep-low")], ignore_index=True)
    choice = B.epochs_choice(df)
    assert len(choice) == 6 and choice.loc[choice["chosen"], "setting"].tolist() == ["2ep-low"]
    assert B.epochs_pick(df) == 2
    assert "matches the profile" in B.epochs_verdict(choice, 2, used_setting="2ep-low")
    assert "DIFFERS" in B.epochs_verdict(choice, 2, used_setting="2ep")


def test_budget_table_joins_the_block_rows_at_the_profile_epochs():
    rows = []
    for variant, e, seeds in (("block", 1, (0, 1)), ("budget", 4, (0,))):
        for seed in seeds:
            for k in (1, 4):
                for r in range(1, 17):
                    rows.append({"dataset": "mnist", "variant": variant, "k": k, "round": r, "seed": seed,
                                 "epochs": e, "density_total": 0.85 ** r, "test_acc": 0.9 + 0.01 * e - 0.001 * k})
    table = B.budget_table(pd.DataFrame(rows), epochs_per_round=1, targets=(0.87 ** 11,))
    assert list(table.columns) == B.BUDGET_COLUMNS
    assert set(table["epochs_per_round"]) == {1, 4} and (table["n_seeds"] == 1).all()  # seed 1 left out
    assert table.loc[(table["k"] == 4) & (table["epochs_per_round"] == 4), "acc_mean"].item() == pytest.approx(0.936)
    assert "k = 4 trails k = 1" in B.budget_reading(table)


def test_pareto_frontier_keeps_only_undominated_points():
    pts = pd.DataFrame({"median_us": [10, 20, 15, 30, 5, 20], "acc_mean": [0.90, 0.95, 0.89, 0.94, 0.80, 0.96]})
    front = P.frontier(pts)
    assert list(zip(front["median_us"], front["acc_mean"])) == [(5, 0.80), (10, 0.90), (20, 0.96)]
    assert P.frontier(pts.iloc[:0]).empty


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 50)), min_size=1, max_size=20))
def test_frontier_points_are_never_dominated(points):
    pts = pd.DataFrame(points, columns=["median_us", "acc_mean"])
    front = P.frontier(pts)
    for x, y in zip(front["median_us"], front["acc_mean"]):
        assert not ((pts["median_us"] <= x) & (pts["acc_mean"] >= y) & ((pts["median_us"] < x) | (pts["acc_mean"] > y))).any()
    best = pts["acc_mean"].max()
    assert front["acc_mean"].iloc[-1] == best and front["median_us"].is_monotonic_increasing


def test_literature_table_names_its_sources():
    table = B.literature_table()
    assert list(table["source"]) == ["Han et al. 2015", "Frankle & Carbin 2019"]
    assert table.loc[0, "kept_%"] == 8.2 and table.loc[1, "kept_%"] == 3.6


# ----------------------------------------------------------------- a tiny run of the new variants


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget-results")
    prof = dataclasses.replace(L.PROFILES["quick"], epochs_candidates=(1, 2), epochs_scan_ks=(2,), budget_ks=(2,),
                               budget_epochs=(1, 2), narrow_rounds=(ROUNDS,))
    torch.set_num_threads(1)
    df = L.run_study(prof, ks=(2,), seeds=(0,), variants=NEW, progress=False, config=TINY, results_root=root)
    return root, prof, df


def test_new_variants_write_their_rows(tiny):
    _, _, df = tiny
    counts = df.groupby("variant").size().to_dict()
    assert counts == {"baseline": 1, "block": ROUNDS, "dense_control": ROUNDS, "epochs_scan": 2 * ROUNDS,
                      "budget": ROUNDS, "neuron": ROUNDS, "narrow_dense": 1}
    scan = df[df["variant"] == "epochs_scan"]
    assert scan["test_acc"].isna().all() and scan["val_acc"].notna().all()  # judged on validation only
    assert set(scan["epochs"]) == {1, 2} and set(df.loc[df["variant"] == "budget", "epochs"]) == {2}
    neuron = df[df["variant"] == "neuron"].sort_values("round")
    block = df[(df["variant"] == "block")].sort_values("round")
    # comparable densities: the neuron net keeps the schedule's weight count, as block pruning does
    assert (neuron["density_total"].to_numpy() - block["density_total"].to_numpy()).__abs__().max() < 0.01
    narrow = df[df["variant"] == "narrow_dense"].iloc[0]
    assert abs(narrow["density_total"] - block["density_total"].iloc[-1]) < 0.01 and narrow["round"] == ROUNDS
    assert df.loc[df["variant"] != "epochs_scan", "test_acc"].between(0, 1).all()
    table = B.budget_table(df, epochs_per_round=1, targets=(block["density_total"].iloc[-1],))
    assert set(table["epochs_per_round"]) == {1, 2} and set(table["k"]) == {2}
    assert B.epochs_pick(df, L.config.EpochsRule()) in (1, 2)
    summary = L.summary_table(df)
    assert {"neuron", "narrow_dense"} <= set(summary["variant"])


def test_latency_rows_time_every_stored_model(tiny):
    root, prof, df = tiny
    lat = P.latency_rows(TINY, (2,), ROUNDS, prof.narrow_rounds, batches=(1, 8), budget_s=0.001, results_root=root)
    models = lat.groupby(["variant", "k", "round"]).size()
    assert len(models) == 1 + ROUNDS + ROUNDS + 1  # baseline, block rounds, neuron rounds, narrow
    assert (lat.groupby(["variant", "k", "round", "batch"])["fastest"].sum() == 1).all()
    assert set(lat.loc[lat["variant"] == "block", "backend"]) == set(P.BACKENDS["sparse"])
    assert set(lat.loc[lat["variant"] == "neuron", "backend"]) == set(P.BACKENDS["dense"])
    assert (lat["median_us"] > 0).all()
    pts = P.accuracy_latency(lat, df)
    assert set(pts["line"]) == {"dense baseline", "blocks k = 2", "neuron pruning", "narrow dense"}
    text = P.pareto_reading(pts, 1)
    assert text.startswith("under ") and "the most accurate model is" in text and "Neuron pruning" in text
    best = P.best_line(pts, 8)
    assert set(best.split(" (tied")[0].split(" and ")) <= set(pts["line"])


def test_best_line_names_a_tie():
    pts = pd.DataFrame([{"batch": 1, "line": line, "median_us": us, "acc_mean": acc}
                        for line, us, acc in (("a", 1.0, 0.90), ("b", 2.0, 0.95), ("a", 3.0, 0.96), ("b", 4.0, 0.97),
                                              ("c", 5.0, 0.50))])
    assert P.best_line(pts, 1) == "b and a (tied, 2 points each)"
    full = pts.assign(variant="block", round=1, density=0.5, backend="numba_bsr")
    assert "b and a hold most of it, tied" in P.pareto_reading(full, 1)  # the same order in the sentence
    assert P.best_line(pts[pts["line"] != "a"], 1) == "b"
    assert P.best_line(pts, 256) is None


def test_pareto_axis_labels_minor_ticks_at_two_and_five_only():
    from blockprune_utils.plots.pareto import _two_and_five

    assert [_two_and_five(v) for v in (20, 30, 50, 90, 200, 0.5, 0.3, 0)] == ["20", "", "50", "", "200", "0.5", "", ""]


def test_latency_frame_reuses_its_rows_until_a_model_is_missing(tiny, monkeypatch):
    root, prof, _ = tiny
    monkeypatch.setitem(L.PROFILES, "tiny-budget", dataclasses.replace(prof, name="tiny-budget", ks=(2,)))
    calls = []
    real = P.latency_rows

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **{**kwargs, "batches": (1,)})

    monkeypatch.setattr(P, "latency_rows", counted)
    first = P.latency_frame("tiny-budget", config=TINY, budget_s=0.001, results_root=root)
    again = P.latency_frame("tiny-budget", config=TINY, budget_s=0.001, results_root=root)
    assert len(calls) == 1 and len(first) == len(again) > 0
    path = L.store_for(TINY, root).dir / "latency.csv"
    pd.read_csv(path).query("variant != 'neuron'").to_csv(path, index=False)  # a model the rows hold is missing
    P.latency_frame("tiny-budget", config=TINY, budget_s=0.001, results_root=root)
    assert len(calls) == 2
    stored = pd.read_csv(path)
    assert set(stored["cpu"]) == {P.timing_context(0.001)["cpu"]} and set(stored["budget_s"]) == {0.001}
    stored.assign(cpu="another-cpu").to_csv(path, index=False)  # timed on another machine: timed again here
    P.latency_frame("tiny-budget", config=TINY, budget_s=0.001, results_root=root)
    P.latency_frame("tiny-budget", config=TINY, budget_s=0.002, results_root=root)  # another budget: again
    assert len(calls) == 4


def test_scan_and_budget_units_of_the_paper_profile():
    from blockprune_utils.studies.lenet.study import units

    prof = dataclasses.replace(L.PROFILES["paper"], epochs_scan_lrs=(1e-3,))
    cfg = L.run_config("paper", "mnist")
    us = units(cfg, prof, prof.ks, (0,), ("epochs_scan", "budget"))
    scan = {(u.k, u.phase.epochs, u.phase.lr) for u in us if u.kind == "epochs_scan"}
    assert scan == {(k, e, lr) for k in (1, 4) for e in (1, 2, 4, 8) for lr in (cfg.training.retrain.lr, 1e-3)}
    budget = [u for u in us if u.kind == "budget"]
    own = cfg.training.retrain.epochs  # the profile's own E is the block run itself
    assert {(u.k, u.phase.epochs) for u in budget} == {(k, e) for k in (1, 2, 4, 6) for e in (1, 2, 4, 8) if e != own}
    assert all(u.phase.lr == cfg.training.retrain.lr and len(u.keys) == 16 for u in budget)
    assert prof.epochs_per_round == cfg.training.retrain.epochs == L.config.PAPER_EPOCHS_PER_ROUND


def test_figure_captions_name_their_figure():
    assert "rounds [9, 10, 11, 12, 13, 14, 15, 16]" in B.figure_caption("epochs_scan", "mnist", 16)
    assert "fashion_mnist" in B.figure_caption("pareto", "fashion_mnist") and "8.7%" in B.figure_caption("budget")
    with pytest.raises(ValueError, match="unknown figure 'nope'"):
        B.figure_caption("nope")


def test_a_data_set_can_get_its_own_epochs_per_round():
    from blockprune_utils.infra.store import config_hash

    prof = dataclasses.replace(L.PROFILES["paper"], dataset_epochs=(("fashion_mnist", 4),))
    assert prof.epochs_for("fashion_mnist") == 4 and prof.epochs_for("mnist") == prof.epochs_per_round
    assert L.run_config(prof, "fashion_mnist").training.retrain.epochs == 4
    assert config_hash(L.run_config(prof, "mnist")) == config_hash(L.run_config("paper", "mnist"))  # rows kept
    assert L.run_config(prof, "fashion_mnist", retrain_epochs=2).training.retrain.epochs == 2


def test_dense_control_sentence_counts_every_epoch_of_its_rounds():
    from blockprune_utils.studies.lenet import report

    rows = [{"variant": "baseline", "k": 0, "round": 0, "seed": s, "epochs": 20, "test_acc": 0.98} for s in (0, 1)]
    rows += [{"variant": "dense_control", "k": 0, "round": r, "seed": s, "epochs": 2, "test_acc": 0.981}
             for r in range(1, 17) for s in (0, 1)]
    text = report.dense_control_sentence(pd.DataFrame(rows))
    assert "after 32 more epochs (16 rounds)" in text and "+0.10 pp" in text
