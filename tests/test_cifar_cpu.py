"""The ``cpu`` profile of the CIFAR-10 study: the trunk trained in resumable epochs,
its cached features, and experiment A on them for several k and head seeds.

Every test runs a tiny version of the profile on synthetic 32x32 images (40 train,
20 test; the trunk at 4, 6 and 8 pixels), a few seconds on one CPU thread."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import private_study

from blockprune_utils.studies.cifar import cli, config, export, report, runs, study, trunk
from blockprune_utils.studies.cifar import data as cdata
from blockprune_utils.studies.cifar.study import run_study

TINY_CPU = config.CifarProfile(
    name="tinycpu",
    data=config.CifarDataConfig(train_per_class=4, test_per_class=2, image_size=8, synthetic=True),
    model=config.ModelConfig(),
    baseline=config.TrunkSchedule(sizes=(4, 6, 8), lr=0.05, batch_size=20),
    a=config.HeadPruning(rounds=2, compare_ks=(1, 4, 8), retrain=config.Phase(epochs=1, lr=1e-3, batch_size=20)),
    b=config.ConvPruning(),
    seeds=(0, 1),
    eval_batch=100,
    head_on_features=True,
    experiments=("A",),
)
QUIET = {"log": lambda m: None}
KS = (2, 1, 4, 8)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private RESULTS_DIR and FIGURES_DIR, one CPU thread, the tiny profile registered."""
    with private_study(tmp_path_factory, "cifar_cpu", config.PROFILES, {"tinycpu": TINY_CPU}, figures=True) as root:
        yield root


@pytest.fixture(scope="module")
def result(env):
    return run_study("tinycpu", device="cpu", out_dir=env / "out", **QUIET)


def test_cpu_profile_design_and_time_arithmetic():
    p = config.PROFILES["cpu"]
    assert p.head_on_features and p.experiments == ("A",) and len(p.seeds) == 3
    assert p.a.k == 2 and p.a.ks == (2, 1, 4, 8) and p.a.rounds == 16 and dict(p.a.rates) == {"head.0": 0.2, "head.2": 0.2}
    sched = p.baseline
    assert isinstance(sched, config.TrunkSchedule) and sched.sizes[-1] == p.data.image_size == 32
    assert list(sched.sizes) == sorted(sched.sizes) and p.data.train_per_class is None
    minutes = report.cpu_minutes("cpu")
    assert 65 <= minutes["trunk training"] <= 75 and minutes["total"] <= 100
    assert minutes["trunk training"] == pytest.approx(50_000 * (4 / 110 + 1 / 56 + 1 / 35) / 60)
    # one-cycle: from lr/start_div up to lr at the end of the warm-up, then down to lr/end_div
    assert sched.lr_at(0.0) == pytest.approx(sched.lr / sched.start_div)
    assert sched.lr_at(sched.warmup_frac) == pytest.approx(sched.lr)
    assert sched.lr_at(1 - 1e-9) == pytest.approx(sched.lr / sched.end_div, rel=1e-3)
    lrs = [sched.lr_at(i / 100) for i in range(100)]
    peak = lrs.index(max(lrs))
    assert all(x <= y for x, y in zip(lrs[:peak], lrs[1 : peak + 1])) and all(x >= y for x, y in zip(lrs[peak:], lrs[peak + 1 :]))
    # a new profile leaves the store keys of the others alone; A's extra ks are a row axis
    src = cdata.SOURCE_JPEG
    assert config.store_config(p, "A", src) == config.store_config(
        config.dataclasses.replace(p, a=config.dataclasses.replace(p.a, compare_ks=())), "A", src)
    assert "compare_ks" not in json.dumps(config.store_config(config.PROFILES["paper"], "A", src), default=str)
    table = report.profile_table("cpu")
    assert "one-cycle" in table.iloc[0]["schedule"] and "B:" not in " ".join(table["phase"])


def test_transform_resizes_to_any_size():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    full = cdata.CifarTransform("cpu")(x)
    out24 = cdata.CifarTransform("cpu", image_size=24, channels_last=True)(x)
    assert out24.shape == (4, 3, 24, 24) and out24.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out24, F.interpolate(full, size=(24, 24), mode="bilinear", antialias=True))
    torch.testing.assert_close(cdata.CifarTransform("cpu", image_size=16)(x), F.avg_pool2d(full, 2))
    with pytest.raises(ValueError, match="1..32"):
        cdata.CifarTransform("cpu", image_size=33)


def test_head_pruning_rows(result):
    df = result.rows
    assert result.complete and set(df["experiment"]) == {"A"}
    assert {"profile", "device", "experiment", "k", "round", "density", "test_acc", "commit", "data_source"} <= set(df)
    assert (df["profile"] == "tinycpu").all() and df["device"].str.startswith("cpu").all()
    assert len(df) == len(KS) * len(TINY_CPU.seeds) * (1 + TINY_CPU.a.rounds)
    assert not df.duplicated(["experiment", "k", "round", "seed"]).any()
    base = runs.ProfileRun(TINY_CPU, "cpu", **QUIET).store("baseline").get(runs.row_key("baseline", 0, 0, 0))
    assert base is not None and base["epochs"] == 3
    r0 = df[df["round"] == 0]
    assert (r0["test_acc"] == base["test_acc"]).all() and (r0["density"] == 1.0).all()
    for k in (1, 2):  # the head's matrices are tiled exactly: density 0.8^r per round
        for r in (1, 2):
            d = df[(df.k == k) & (df["round"] == r)]
            assert d["density"].to_numpy() == pytest.approx(0.8 ** r, abs=2e-3)
    for k in KS:
        dens = df[(df.k == k) & (df.seed == 0)].sort_values("round")["density"].tolist()
        assert dens[0] == 1.0 and dens[0] > dens[1] > dens[2]
    rest = df[df["round"] >= 1]
    assert rest["test_acc_pruned"].notna().all() and (rest["density_conv"] == 1.0).all()
    assert (rest["density_model"] > 0.98).all() and (rest["density_model"] < 1).all()  # the head is 1.4% of it
    store = runs.ProfileRun(TINY_CPU, "cpu", **QUIET).store("A")
    heads = [store.load_checkpoint({"experiment": "A", "k": 2, "seed": s})["model"] for s in TINY_CPU.seeds]
    key = "head.0.parametrizations.weight.original"
    assert not torch.equal(heads[0][key], heads[1][key])  # the seeds retrain differently


def test_feature_cache_hit(result, env, monkeypatch, tmp_path):
    run = runs.ProfileRun(TINY_CPU, "cpu", **QUIET)
    base_store = run.store("baseline")
    cached = base_store.load_checkpoint({"experiment": "features", "seed": 0})
    assert cached["train"].shape == (40, 512) and cached["test"].shape == (20, 512)
    assert base_store.ckpt_path({"experiment": "features", "seed": 0}).parent.parent.name == base_store.hash
    # the head on the test features is the whole network on the test images
    base = study.baseline(run, 0)
    assert run.evaluate(base.network) == base.row["test_acc"]
    shutil.rmtree(run.store("A").dir)  # forget A: it is recomputed from the cached features alone

    def boom(*a, **k):
        raise AssertionError("the trunk was trained or its features extracted again")

    monkeypatch.setattr(trunk, "extract", boom)
    monkeypatch.setattr(trunk, "train_epoch", boom)
    again = run_study("tinycpu", device="cpu", out_dir=env / "out2", **QUIET)
    assert again.complete
    cols = ["experiment", "k", "round", "seed", "test_acc", "density"]
    assert again.rows[cols].equals(result.rows[cols])
    # other trunk weights: the cache does not match them and they are extracted anew
    monkeypatch.undo()
    model = base.model()
    with torch.no_grad():
        model.backbone.conv1.weight.mul_(2)
    assert trunk.fingerprint(model.backbone) != cached["fingerprint"]
    other = runs.ProfileRun(TINY_CPU, "cpu", results_root=tmp_path, **QUIET)
    shutil.copytree(base_store.dir, other.store("baseline").dir, dirs_exist_ok=True)
    assert trunk.trunk_features(other, model, 0).fingerprint == trunk.fingerprint(model.backbone)


def test_killed_trunk_resumes_at_last_finished_epoch(result, env, monkeypatch, tmp_path):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    real_epoch, calls = trunk.train_epoch, []

    def killed_in_second_epoch(*a, **k):
        calls.append(a[4])
        out = real_epoch(*a, **k)
        if len(calls) == 2:  # the weights moved, but the epoch's checkpoint was never written
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(trunk, "train_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_study("tinycpu", device="cpu", out_dir=tmp_path / "out", **QUIET)
    run = runs.ProfileRun(TINY_CPU, "cpu", **QUIET)
    ck = run.store("baseline").load_checkpoint(trunk.trunk_key(0))
    assert ck["round"] == 1 and len(ck["history"]) == 1 and not run.store("A").rows()
    res = run_study("tinycpu", device="cpu", out_dir=tmp_path / "out", **QUIET)
    assert res.complete and calls == [0, 1, 1, 2]  # resumed at epoch 2, not from scratch
    # the resumed trunk is exactly the one that was never stopped
    resumed = run.store("baseline").load_checkpoint({"experiment": "baseline", "seed": 0})["model"]
    monkeypatch.setenv("RESULTS_DIR", str(env / "results"))
    whole = runs.ProfileRun(TINY_CPU, "cpu", **QUIET).store("baseline").load_checkpoint({"experiment": "baseline", "seed": 0})
    assert resumed.keys() == whole["model"].keys()
    assert all(torch.equal(resumed[key], whole["model"][key]) for key in resumed)
    cols = ["k", "round", "seed", "test_acc"]
    assert res.rows[cols].equals(result.rows[cols])


def test_budget_stops_the_trunk(env, tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    res = run_study("tinycpu", device="cpu", out_dir=tmp_path / "out", budget_s=0.0, **QUIET)
    assert not res.complete and res.rows.empty
    with pytest.raises(ValueError, match="subset"):
        run_study("tinycpu", ("B",), device="cpu", **QUIET)


def test_cli_writes_the_figures_table(result, env, capsys):
    assert cli.main(["--profile", "tinycpu", "--out", str(env / "cli"), "--device", "cpu", "--to-figures"]) == 0
    figs = env / "figures"
    table = pd.read_csv(figs / "cifar_tinycpu_experiment_a.csv")
    assert len(table) == len(result.rows) and set(table["experiment"]) == {"A"}
    assert (table["data_source"] == cdata.SOURCE_SYNTHETIC).all() and table["commit"].notna().all()
    meta = json.loads((figs / "cifar_tinycpu_experiment_a.json").read_text())
    assert meta["kind"] == "table" and meta["dataset"] == cdata.SOURCE_SYNTHETIC and meta["seeds"] == [0, 1]
    assert meta["device"].startswith("cpu") and meta["run_commits"] and meta["profile"] == "tinycpu"
    assert "cifar_tinycpu_experiment_a" in (figs / "README.md").read_text()
    loaded = export.load_results("tinycpu", figs)
    assert loaded is not None and len(loaded.rows) == len(result.rows) and loaded.head_blocks is not None
    assert set(loaded.head_blocks["k"]) == {2} and set(loaded.head_blocks["seed"]) == set(TINY_CPU.seeds)
    summary = export.head_summary(loaded.rows)
    assert sorted(summary["k"]) == sorted(KS) and (summary["seeds"] == 2).all()
    assert "complete" in capsys.readouterr().out
    assert "make figures-cifar PROFILE=cpu" in cli.howto("cpu") and "--budget-s" not in cli.howto("cpu")
    with pytest.raises(SystemExit) as stop:
        cli.main(["--profile", "tinycpu", "--experiment", "B"])
    assert stop.value.code == 2 and "runs experiment(s) A only" in capsys.readouterr().err


def test_report_words_follow_the_numbers(result):
    empty = report.status({}, quick=False)
    assert "No GPU run has been made yet" in empty and "No CPU run has been made yet" in empty
    assert "--profile paper --experiment A" in empty and "make figures-cifar PROFILE=cpu" in empty
    rows = result.rows.copy()
    rows["n_test"] = 10_000
    last = rows["round"] == rows["round"].max()
    rows.loc[rows["round"] == 0, "test_acc"] = 0.90
    rows.loc[last, "test_acc"] = 0.901  # +0.1 points: inside the sampling noise of 10,000 test images
    assert "about the same" in report.head_sentence(rows)
    rows.loc[last & (rows.seed == 0), "test_acc"] = 0.95
    rows.loc[last & (rows.seed == 1), "test_acc"] = 0.951
    assert "higher by" in report.head_sentence(rows)
    assert "within the noise" not in report.authors_sentence({"cpu": export.StudyResult(rows, profile="cpu")})
    table = report.authors_table({"cpu": export.StudyResult(rows, profile="cpu")})
    assert table["unpruned %"].tolist() == [90.37, 90.0] and table["pruned %"].iloc[1] == pytest.approx(95.05)
    assert "within" in report.ks_sentence(rows.assign(test_acc=0.9))


def test_cached_features_serve_the_head_experiment_only(env):
    run = runs.ProfileRun(TINY_CPU, "cpu", **QUIET)
    with pytest.raises(ValueError, match="experiment B prunes the convolutions"):
        runs.run_experiment(run, "B", base=None, feats=object())
