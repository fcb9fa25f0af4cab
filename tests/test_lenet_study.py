"""The LeNet study on a small slice of real MNIST: the density schedule, the random
controls, the cache, checkpoints and resuming after a kill."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch
from conftest import tiny_lenet_config

from blockprune_utils.infra.store import ResultStore, config_hash
from blockprune_utils.masks import get_mask
from blockprune_utils.models import LENET_RATES, LeNet300100
from blockprune_utils.schedule import BlockPruner, layer_densities
from blockprune_utils.studies import lenet as L
from blockprune_utils.studies.base import checkpoint, restore
from blockprune_utils.train import evaluate

KS = (1, 3)
ROUNDS = 4
TINY = tiny_lenet_config(n_train=1200, n_test=1000, rounds=ROUNDS, scratch_rounds=(2, 4), sensitivity_densities=(0.5, 0.1))
PRUNE = ("block", "random_retrain")


def run(root, variants=L.VARIANTS, ks=KS):
    return L.run_study("quick", ks=ks, seeds=(0,), variants=variants, progress=False, config=TINY, results_root=root)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, run(root)


def test_rows_complete_and_accuracy_valid(study):
    _, df = study
    assert len(df[df.variant == "baseline"]) == 1
    for v in PRUNE:
        for k in KS:
            assert sorted(df[(df.variant == v) & (df.k == k)]["round"]) == list(range(1, ROUNDS + 1))
    assert len(df[df.variant == "random_scratch"]) == len(KS) * 2
    assert len(df[df.variant == "sensitivity"]) == len(KS) * 3 * 2
    scan = df.variant.isin(["baseline_scan", "retrain_scan", "epochs_scan"])
    acc = df.loc[~scan, "test_acc"]
    assert acc.notna().all() and ((acc >= 0) & (acc <= 1)).all()
    # the schedule scans choose on the validation split: they never record a test accuracy
    assert scan.any() and df.loc[scan, "test_acc"].isna().all() and df.loc[scan, "val_acc"].notna().all()
    ctrl = df[df.variant == "dense_control"]
    assert sorted(ctrl["round"]) == list(range(1, ROUNDS + 1)) and (ctrl["density_total"] == 1.0).all()
    assert df.loc[df.variant == "baseline", "test_acc"].iloc[0] > 0.5  # it learned something
    assert df["config_hash"].nunique() == 1
    for col in ("device", "torch", "commit", "wall_s", "profile"):
        assert df[col].notna().all(), col


def test_density_follows_the_per_layer_schedule(study):
    _, df = study
    rates = dict(LENET_RATES)
    full = {"fc1": 235200, "fc2": 30000, "fc3": 1000}
    for v in PRUNE:
        for k in KS:
            rows = df[(df.variant == v) & (df.k == k)].sort_values("round")
            grid = {"fc1": math.ceil(300 / k) * math.ceil(784 / k), "fc2": math.ceil(100 / k) * math.ceil(300 / k),
                    "fc3": math.ceil(10 / k) * math.ceil(100 / k)}
            for name, p in rates.items():
                n = grid[name]
                for _, row in rows.iterrows():
                    n -= int(round(p * n))  # round(p * N_alive) blocks per round
                    assert row[f"blocks_{name}"] == n
                    # element density: (1-p)^r up to edge-block rounding (exact for k=1)
                    tol = 1e-9 if k == 1 and name != "fc3" else (0.01 if name != "fc3" else 0.03)
                    assert abs(row[f"density_{name}"] - (1 - p) ** row["round"]) <= tol + 0.5 * row["round"] / full[name]
            total = (rows[[f"density_{n}" for n in full]] * pd.Series(full).values).sum(axis=1) / sum(full.values())
            assert (total - rows["density_total"]).abs().max() < 1e-6


def test_random_controls_have_the_block_counts_of_block_pruning(study):
    _, df = study
    cols = ["blocks_fc1", "blocks_fc2", "blocks_fc3"]
    b = df[df.variant == "block"].set_index(["k", "round"])[cols]
    r = df[df.variant == "random_retrain"].set_index(["k", "round"])[cols]
    pd.testing.assert_frame_equal(b.sort_index(), r.sort_index())
    s = df[df.variant == "random_scratch"].set_index(["k", "round"])[cols]
    pd.testing.assert_frame_equal(s.sort_index(), r.loc[s.index].sort_index())


def test_random_masks_are_nested_and_differ_from_block_masks(study):
    root, _ = study
    cfg = TINY
    prev = None
    for r in range(1, ROUNDS + 1):
        m = L.random_masks(cfg, 3, 0, r)
        masks = {n: get_mask(getattr(m, n)).bool() for n in L.LAYERS}
        if prev is not None:
            assert all(not (masks[n] & ~prev[n]).any() for n in L.LAYERS)  # pruned never returns
        prev = masks
    block = _pruned(root, 3, ROUNDS)
    assert not torch.equal(get_mask(block.fc1).bool(), prev["fc1"])


def _pruned(root, k, rnd, seed=0):
    return L.pruned_lenet("mnist", k, rnd, seed, results_root=root, config=TINY)


def test_pruned_lenet_returns_the_cached_model_of_every_round(study):
    root, df = study
    _, _, test = L.load_splits(TINY.data)
    for k in KS:
        for rnd in range(1, ROUNDS + 1):
            model = _pruned(root, k, rnd)
            row = df[(df.variant == "block") & (df.k == k) & (df["round"] == rnd)].iloc[0]
            dens = layer_densities(model, L.LAYERS)
            assert all(abs(dens[n] - row[f"density_{n}"]) < 1e-12 for n in L.LAYERS)
            assert evaluate(model, test) == pytest.approx(row["test_acc"], abs=1e-12)
    base = _pruned(root, 3, 0)
    assert evaluate(base, test) == pytest.approx(df[df.variant == "baseline"].iloc[0]["test_acc"], abs=1e-12)
    assert _pruned(root, 2, 1) is None  # k=2 was never run
    assert L.pruned_lenet("mnist", 1, 1, profile="paper", results_root=root) is None


def test_sensitivity_prunes_one_layer_only(study):
    _, df = study
    sens = df[df.variant == "sensitivity"]
    for _, row in sens.iterrows():
        others = [n for n in L.LAYERS if n != row["layer"]]
        assert all(row[f"density_{n}"] == 1.0 for n in others)
        assert abs(row[f"density_{row['layer']}"] - row["target_density"]) < 0.05


def test_rerun_reads_the_cache(study):
    root, df = study
    rows = {p: p.stat().st_mtime_ns for p in root.rglob("rows/*.json")}
    assert not L.tasks("quick", ks=KS, seeds=(0,), config=TINY, results_root=root)  # nothing left to do
    again = run(root)
    pd.testing.assert_frame_equal(df, again)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("rows/*.json")} == rows  # no row rewritten


def test_resume_after_a_kill_loses_nothing(tmp_path, study, data_dir, monkeypatch):
    _, reference = study

    class Killed(BaseException):  # like a signal: it stops the process (a failing task would be collected)
        pass

    put = ResultStore.put
    written = []

    def put_then_kill(self, key, values, prov):
        row = put(self, key, values, prov)
        written.append(key)
        if len(written) == 3:  # baseline, block k=1 rounds 1 and 2: killed mid-run
            raise Killed
        return row

    monkeypatch.setattr(ResultStore, "put", put_then_kill)
    with pytest.raises(Killed):
        run(tmp_path, variants=PRUNE)
    rows_dir = next(tmp_path.glob("lenet/*/rows"))
    before = {p.name: p.read_bytes() for p in rows_dir.glob("*.json")}
    assert len(before) == 3
    written.clear()
    monkeypatch.setattr(ResultStore, "put", lambda self, key, values, prov: written.append(key) or put(self, key, values, prov))
    df = run(tmp_path, variants=PRUNE)
    resumed = written
    assert resumed and all(key["round"] >= 3 or key["k"] != 1 for key in resumed if key["variant"] == "block")
    after = {p.name: p.read_bytes() for p in rows_dir.glob("*.json")}
    assert all(after[name] == data for name, data in before.items())
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(df) == 1 + len(PRUNE) * len(KS) * ROUNDS
    # the resumed run is the uninterrupted run (same weights, same data order)
    cols = ["variant", "k", "round", "test_acc", "val_acc", "density_total"]
    ref = reference[reference.variant.isin(("baseline",) + PRUNE)][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(df[cols].reset_index(drop=True), ref)


def test_checkpoint_roundtrip_is_exact():
    torch.manual_seed(0)
    model = LeNet300100()
    pruner = BlockPruner(3, LENET_RATES)
    pruner.step(model)
    ck = checkpoint(model, 1, {"x": 1}, pruner)
    assert all(v.dtype == torch.bool for k, v in ck["model"].items() if k.endswith(".mask"))
    other = BlockPruner(3, LENET_RATES)
    back = restore(ck, LeNet300100(), other)
    assert other.round == 1 and other.history == pruner.history
    for n in L.LAYERS:
        assert torch.equal(getattr(model, n).weight, getattr(back, n).weight)
        assert torch.equal(get_mask(getattr(model, n)), get_mask(getattr(back, n)))


def test_profiles_and_authors_config():
    quick, paper = L.run_config("quick", "mnist"), L.run_config("paper", "fashion_mnist")
    assert quick.data.n_train and paper.data.n_train is None and paper.data.dataset == "fashion_mnist"
    assert paper.pruning.rounds == 16 and dict(paper.pruning.rates) == LENET_RATES
    assert len(L.PROFILES["paper"].seeds) >= 3 and set(L.PROFILES["paper"].ks) == {1, 2, 3, 4, 5, 6}
    a = L.run_config("paper", "mnist", authors=True)
    assert a.authors and a.training.authors_softmax and a.training.select_on == "test"
    assert not a.training.retrain.zero_grad and a.training.retrain.reset_optimizer_each_epoch
    assert (a.training.retrain.lr, a.training.retrain.batch_size) == (1e-6, 50)
    assert L.run_config("paper", "fashion_mnist", authors=True).training.select_on == "train"
    assert len({config_hash(c) for c in (quick, paper, a, L.run_config("paper", "mnist"))}) == 4
    with pytest.raises(ValueError, match="scratch_rounds"):
        L.PruningConfig(rounds=3, scratch_rounds=(7,))
    with pytest.raises(ValueError, match="unknown LeNet profile 'huge'"):
        L.run_config("huge")
    with pytest.raises(ValueError, match="unknown variants"):
        L.run_study("quick", variants=("magic",))
    assert dataclasses.is_dataclass(a) and a.__dataclass_params__.frozen


def test_authors_mode_runs(tmp_path, data_dir):
    cfg = L.authors_config(dataclasses.replace(TINY, pruning=L.PruningConfig(rounds=1, scratch_rounds=(1,))))
    df = L.run_study("quick", ks=(2,), seeds=(0,), variants=("block",), progress=False, config=cfg, results_root=tmp_path)
    assert set(df.variant) == {"baseline", "block"} and df["val_acc"].isna().all() and df["authors"].all()


def test_sparse_retraining_gives_the_rows_of_dense_retraining(tmp_path):
    """Retraining the layers below the crossover density on their live blocks only is
    the same method as retraining the masked dense layers: the same masks in every
    round and accuracies within 0.2 percentage points (rounding differs)."""
    from blockprune_utils.bsr.sparse_training import sparse_plan

    variants = ("block", "random_retrain", "random_scratch")
    dense_cfg = dataclasses.replace(TINY, training=dataclasses.replace(TINY.training, sparse=False))
    frames = {}
    for name, cfg in (("sparse", TINY), ("dense", dense_cfg)):
        frames[name] = L.run_study("quick", ks=(4,), seeds=(0,), variants=variants, progress=False, config=cfg,
                                   results_root=tmp_path / name).set_index(["variant", "k", "round", "layer", "setting"])
    sparse, dense = frames["sparse"], frames["dense"]
    assert sparse.index.sort_values().equals(dense.index.sort_values())
    assert sparse["config_hash"].iloc[0] != dense["config_hash"].iloc[0]
    dense = dense.loc[sparse.index]
    for col in [f"blocks_{n}" for n in L.LAYERS] + [f"density_{n}" for n in L.LAYERS]:
        assert (sparse[col] == dense[col]).all(), col
    assert (sparse["test_acc"] - dense["test_acc"]).abs().max() <= 0.002
    for rnd in range(1, ROUNDS + 1):
        a = L.pruned_lenet("mnist", 4, rnd, 0, results_root=tmp_path / "sparse", config=TINY)
        b = L.pruned_lenet("mnist", 4, rnd, 0, results_root=tmp_path / "dense", config=dense_cfg)
        assert all(torch.equal(get_mask(getattr(a, n)), get_mask(getattr(b, n))) for n in L.LAYERS)
    assert sparse_plan(a, L.LAYERS, 4)  # the last rounds did train sparse


def test_report_reads_the_rows(study):
    from blockprune_utils.studies.lenet import report

    _, df = study
    assert "one seed: no spread" in report.baseline_sentence(df, "mnist")
    lines = report.end_of_pruning(df).splitlines()
    assert [line.split(":")[0] for line in lines] == [f"k={k}" for k in KS]
    assert all("vs the equal-training dense control" in line for line in lines)
    assert set(report.key_density_table(df).index) == set(KS)
    control = report.dense_control_table(df)
    assert "dense control" in control.index and {f"block k={k}" for k in KS} <= set(control.index)
    assert "more epochs" in report.dense_control_sentence(df)
    assert report.dense_control_table(df[df["variant"] != "dense_control"]).empty
    gap = report.random_gap_table(df)
    assert set(gap.columns) == {"random_retrain", "random_scratch"} and set(gap.index.get_level_values("round")) == {2, 4}
    assert report.authors_table(df, pd.DataFrame(), (3,)).empty
    assert "no rows of the authors' set-up" in report.authors_baseline_sentence(df, pd.DataFrame())
    assert "retraining (pp), per k" in report.retraining_and_time(df)
    assert list(report.training_phases(TINY).index) == ["baseline", "retrain", "scratch"]
    for name in report.FIGURES:
        if name != "acc_vs_k":
            assert report.caption(name, "quick", "mnist", [0]).startswith("LeNet-300-100 on mnist: ")
    with pytest.raises(ValueError, match="pass table="):
        report.caption("acc_vs_k", "quick", "mnist", [0])
    with pytest.raises(ValueError, match="no LeNet figure 'acc'.*acc_vs_density"):
        report.caption("acc", "quick", "mnist", [0])
