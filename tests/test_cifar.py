"""CIFAR-10 / ResNet18 study: loading, on-device augmentation, experiments A and B.

The experiment tests run a tiny profile on synthetic images (seconds on a CPU);
the loader test reads a few images per class of the JPEG copy when DATA_DIR has it."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import private_study

from blockprune_utils.blocks import block_mask_of
from blockprune_utils.masks import MASK_SUFFIX
from blockprune_utils.pruning import n_to_prune
from blockprune_utils.studies.base import restore
from blockprune_utils.studies.cifar import cli, config, export, network, runs, study
from blockprune_utils.studies.cifar import data as cdata
from blockprune_utils.studies.cifar.study import run_study

TINY = config.CifarProfile(
    name="tiny",
    data=config.CifarDataConfig(train_per_class=4, test_per_class=2, image_size=8, synthetic=True),
    model=config.ModelConfig(),
    baseline=config.Phase(epochs=1, lr=1e-3, batch_size=20),
    a=config.HeadPruning(rounds=2, retrain=config.Phase(epochs=1, lr=1e-4, batch_size=20)),
    b=config.ConvPruning(ks=(1, 4), rounds=2,
                         retrain=config.Phase(epochs=1, lr=3e-4, batch_size=20, schedule="cosine", warmup_frac=0.1)),
    eval_batch=100,
)
ROW_COLUMNS = {
    "experiment", "k", "round", "seed", "test_acc", "test_acc_best_epoch", "test_acc_pruned", "density", "density_head",
    "density_conv", "density_model", "layer_density", "wall_s", "data_source", "n_train", "n_test", "device", "torch",
    "torchvision", "commit", "config_hash", "profile", "amp",
}
QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """A private RESULTS_DIR and one CPU thread (the test machine is shared)."""
    with private_study(tmp_path_factory, "cifar", config.PROFILES, {"tiny": TINY}) as root:
        yield root


@pytest.fixture(scope="module")
def tiny_result(tiny_env):
    return run_study(TINY, ("A", "B"), device="cpu", out_dir=tiny_env / "out", **QUIET)


# ------------------------------------------------------------------ augmentation
def test_crop_flip_small_example():
    x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4) + 1
    zero = torch.zeros(1, dtype=torch.long)
    out = cdata.crop_flip(x, zero, zero, torch.tensor([False]), padding=1)  # window at the padded corner
    expected = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]], dtype=torch.uint8)
    assert torch.equal(out[0, 0], expected)
    centred = cdata.crop_flip(x, zero + 1, zero + 1, torch.tensor([True]), padding=1)
    assert torch.equal(centred, x.flip(3))
    assert torch.equal(cdata.crop_flip(x, zero, zero, torch.tensor([False]), padding=0), x)


def test_crop_flip_matches_torchvision():
    import torchvision.transforms.functional as TF

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    oy = torch.randint(0, 9, (6,), generator=g)
    ox = torch.randint(0, 9, (6,), generator=g)
    flip = torch.tensor([True, False, True, False, False, True])
    out = cdata.crop_flip(x, oy, ox, flip, padding=4)
    for i in range(6):
        ref = TF.crop(TF.pad(x[i], [4]), int(oy[i]), int(ox[i]), 32, 32)
        if flip[i]:
            ref = TF.hflip(ref)
        assert torch.equal(out[i], ref)


def test_augmentation_shapes_and_determinism():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = cdata.random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    b = cdata.random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    c = cdata.random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    tf = cdata.CifarTransform("cpu", seed=3)
    t1 = tf(x, train=True)
    assert t1.shape == (64, 3, 32, 32) and t1.dtype == torch.float32
    assert torch.equal(tf.reseed(3)(x, train=True), t1)
    assert not torch.equal(tf(x, train=True), t1)  # the generator moved on
    # evaluation: no augmentation, just the authors' normalisation
    mean = torch.tensor(cdata.MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(cdata.STD).reshape(1, 3, 1, 1)
    torch.testing.assert_close(tf(x, train=False), (x.float() / 255 - mean) / std)
    small = cdata.CifarTransform("cpu", image_size=8, channels_last=True)(x, train=True)
    assert small.shape == (64, 3, 8, 8) and small.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="1..32"):
        cdata.CifarTransform("cpu", image_size=0)


# ------------------------------------------------------------------------ loading
def test_missing_data_names_what_is_needed(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        cdata.load_cifar10(root=tmp_path, download=False)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "CIFAR-10-jpeg" in msg and "DATA_DIR" in msg


def test_jpeg_loader_per_class(tmp_path, monkeypatch):
    root = Path(os.environ.get("DATA_DIR", "data"))
    if cdata.has_original(root) or not cdata.has_jpeg_copy(root):
        pytest.skip(f"no CIFAR-10 JPEG copy (alone) under DATA_DIR={root}")
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    split, source = cdata.load_cifar10(train=True, root=root, per_class=3)
    assert source == cdata.SOURCE_JPEG == "CIFAR-10 (JPEG copy)"
    assert split.x.shape == (30, 3, 32, 32) and split.x.dtype == torch.uint8
    assert split.y.tolist() == [c for c in range(10) for _ in range(3)]
    cached = list((tmp_path / "cache").glob("cifar10-jpeg-train-3-*.pt"))
    assert len(cached) == 1
    again, _ = cdata.load_cifar10(train=True, root=root, per_class=3)
    assert torch.equal(again.x, split.x)
    cached[0].write_bytes(b"not a torch file")  # a damaged cache file is rebuilt
    rebuilt, _ = cdata.load_cifar10(train=True, root=root, per_class=3)
    assert torch.equal(rebuilt.x, split.x)
    files, labels = cdata.jpeg_files(root, train=True, per_class=3)
    assert torch.equal(cdata._decode_pil(files[4]), split.x[4]) and int(labels[4]) == 1
    test, _ = cdata.load_cifar10(train=False, root=root, per_class=1, cache=False)
    assert test.x.shape == (10, 3, 32, 32)


# --------------------------------------------------------------------- experiments
def test_rows_schema_and_counts(tiny_result):
    df = tiny_result.rows
    assert tiny_result.complete
    assert ROW_COLUMNS <= set(df.columns) and list(df.columns) == list(config.SCHEMA.columns)
    assert len(df[df.experiment == "A"]) == 1 + TINY.a.rounds
    assert len(df[df.experiment == "B"]) == len(TINY.b.ks) * (1 + TINY.b.rounds)
    assert not df.duplicated(["experiment", "k", "round", "seed"]).any()
    assert df["test_acc"].between(0, 1).all()
    assert (df["data_source"] == cdata.SOURCE_SYNTHETIC).all()
    # round 0 = the unpruned baseline, rounds 1..R after r pruning steps
    assert sorted(set(df.loc[df.experiment == "A", "round"])) == list(range(TINY.a.rounds + 1))
    for k in TINY.b.ks:
        assert sorted(df.loc[(df.experiment == "B") & (df.k == k), "round"]) == list(range(TINY.b.rounds + 1))
    round0 = df[df["round"] == 0]
    assert (round0["density"] == 1.0).all() and round0["test_acc_pruned"].isna().all()
    base = runs.ProfileRun(TINY, "cpu", **QUIET).store("baseline").get(runs.row_key("baseline", 0, 0, 0))
    assert base is not None and (round0["test_acc"] == base["test_acc"]).all()
    assert df.loc[df["round"] >= 1, "test_acc_pruned"].notna().all()
    out = {p.name for p in tiny_result.files}
    assert {"cifar_tiny_results_all.csv", "cifar_tiny_rows_all.jsonl", "cifar_tiny_head_blocks.csv"} <= out


def _expected_alive(n_blocks: int, p: float, rounds: int) -> int:
    for _ in range(rounds):
        n_blocks -= n_to_prune(p, n_blocks)
    return n_blocks


def test_density_per_round(tiny_result):
    df = tiny_result.rows
    a = df[df.experiment == "A"].set_index("round")
    assert a.loc[0, "layer_density"] == {"head.0": 1.0, "head.2": 1.0}
    for r in range(1, TINY.a.rounds + 1):
        # head.0 300x512 and head.2 10x300 are tiled exactly by k=2 blocks: density = alive blocks / all
        assert a.loc[r, "layer_density"]["head.0"] == pytest.approx(_expected_alive(150 * 256, 0.2, r) / (150 * 256))
        assert a.loc[r, "layer_density"]["head.2"] == pytest.approx(_expected_alive(5 * 150, 0.2, r) / (5 * 150))
        assert a.loc[r, "density"] == pytest.approx(0.8 ** r, abs=1e-3)
        assert a.loc[r, "density_conv"] == 1.0
    b = df[df.experiment == "B"]
    for k in TINY.b.ks:
        dens = b[b.k == k].sort_values("round")["density"].tolist()
        assert dens[0] == 1.0 and all(x > y for x, y in zip(dens, dens[1:]))
        assert dens[-1] == pytest.approx((1 - TINY.b.rate) ** TINY.b.rounds, abs=0.01)


def test_block_counts_in_checkpoints(tiny_result, tiny_env):
    """Every pruned layer of B keeps exactly the block count of the per-layer rule."""
    store = runs.ProfileRun(TINY, "cpu", **QUIET).store("B")
    model = network.build_model(TINY.model, 0, "cpu")
    layers = network.conv_prune_layers(model, TINY.b)
    assert "backbone.conv1" not in layers and "backbone.layer2.0.downsample.0" in layers and "head.0" not in layers
    assert len(layers) == 19  # 16 3x3 convs of the stages + 3 shortcuts
    assert list(runs.plan(TINY, "B").rates) == layers
    for k in TINY.b.ks:
        ckpt = store.load_checkpoint({"experiment": "B", "k": k, "seed": 0})
        assert ckpt["round"] == TINY.b.rounds
        for name in layers:
            mask = ckpt["model"][name + MASK_SUFFIX]
            alive = block_mask_of(mask, k)
            assert int(alive.sum()) == _expected_alive(alive.numel(), TINY.b.rate, TINY.b.rounds), (k, name)
        assert "backbone.conv1.weight" in ckpt["model"]  # the stem stays dense


def test_head_only_pruning_leaves_convs_untouched_and_frozen(tiny_env, tmp_path):
    run = runs.ProfileRun(TINY, "cpu", results_root=tmp_path, **QUIET)
    base = study.baseline(run, 0)
    pl = runs.plan(TINY, "A")
    model = runs.start_model(pl, base)  # what prune_run retrains
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    runs.prune_run(run, pl, 2, base, upto=1)
    store = run.store("A")
    ckpt = store.load_checkpoint({"experiment": "A", "k": 2, "seed": 0})
    assert ckpt["round"] == 1 and store.has(runs.row_key("A", 2, 1, 0)) and not store.has(runs.row_key("A", 2, 2, 0))
    state, base_state = ckpt["model"], base.ckpt["model"]
    masked = {key[: -len(MASK_SUFFIX)] for key in state if key.endswith(MASK_SUFFIX)}
    assert masked == set(config.HEAD_LAYERS)
    for key, value in base_state.items():
        if key.startswith("backbone.") and not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(state[key], value), key  # conv weights and BN affine untouched
    # the authors' quirk: BN running statistics still move (retraining runs in train mode)
    assert not torch.equal(state["backbone.bn1.running_mean"], base_state["backbone.bn1.running_mean"])
    assert not torch.equal(state["head.0.parametrizations.weight.original"], base_state["head.0.weight"])
    # the checkpoint stores masks as bool; loading it gives the same model
    assert state["head.0" + MASK_SUFFIX].dtype == torch.bool
    again = restore(ckpt, network.build_model(TINY.model, 0, "cpu"))
    expected = state["head.0.parametrizations.weight.original"] * state["head.0" + MASK_SUFFIX]
    assert torch.equal(again.head[0].weight, expected)


def test_cached_rows_are_skipped(tiny_result, tiny_env, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a cached row was recomputed")

    monkeypatch.setattr(runs.ProfileRun, "fit", boom)
    again = run_study(TINY, ("A", "B"), device="cpu", out_dir=tiny_env / "out2", **QUIET)
    assert again.complete
    cols = ["experiment", "k", "round", "seed", "test_acc"]
    assert again.rows[cols].equals(tiny_result.rows[cols])


def test_killed_run_resumes(tiny_env, monkeypatch, tmp_path):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    calls = {"n": 0}
    real_fit = runs.ProfileRun.fit

    def dies_on_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # baseline, A round 1, then killed in A round 2
            raise KeyboardInterrupt
        return real_fit(self, *a, **k)

    monkeypatch.setattr(runs.ProfileRun, "fit", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_study(TINY, ("A",), device="cpu", out_dir=tmp_path / "out", **QUIET)
    store = runs.ProfileRun(TINY, "cpu", **QUIET).store("A")
    assert sorted(r["round"] for r in store.rows()) == [0, 1]
    row1 = store.row_path(runs.row_key("A", 2, 1, 0)).read_text()
    calls["n"] = -100
    res = run_study(TINY, ("A",), device="cpu", out_dir=tmp_path / "out", **QUIET)
    assert res.complete and calls["n"] == -99  # only round 2 was trained again
    assert store.row_path(runs.row_key("A", 2, 1, 0)).read_text() == row1


def test_row_lost_after_checkpoint_is_restored(tiny_result, tiny_env, monkeypatch):
    """Killed between writing a round's checkpoint and its row: the row comes from the checkpoint."""
    store = runs.ProfileRun(TINY, "cpu", **QUIET).store("B")
    for k in TINY.b.ks:
        store.row_path(runs.row_key("B", k, TINY.b.rounds, 0)).unlink()

    def boom(*a, **k):
        raise AssertionError("nothing should be retrained")

    monkeypatch.setattr(runs.ProfileRun, "fit", boom)
    again = run_study(TINY, ("B",), device="cpu", out_dir=tiny_env / "out3", **QUIET)
    assert again.complete
    cols = ["experiment", "k", "round", "test_acc"]
    b = tiny_result.rows[tiny_result.rows.experiment == "B"][cols].reset_index(drop=True)
    assert again.rows[cols].equals(b)


def test_budget_stops_early(tiny_result, tiny_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tiny_env / "results"))
    res = run_study(TINY, ("B",), ks=(2,), device="cpu", out_dir=tmp_path, budget_s=0.0, **QUIET)
    assert not res.complete and res.rows["round"].tolist() == [0] and res.rows["k"].tolist() == [2]
    # B's block sizes are a row axis: the run of k=2 shares the store of the other ks
    src = cdata.SOURCE_SYNTHETIC
    assert config.store_config(TINY, "B", src) == config.store_config(config.with_axes(TINY, ks=(2,)), "B", src)
    assert config.store_config(TINY, "A", src) != config.store_config(TINY, "B", src)


def test_budget_allows_rounds_that_fit():
    said = []
    budget = runs.Budget(3600.0, said.append)
    assert budget.allows("A")
    budget.spent("A", 10_000.0)  # the next A round would end past the budget
    assert not budget.allows("A") and budget.stopped and not budget.allows("B")
    assert len(said) == 1 and "time budget" in said[0]
    assert runs.Budget(None).allows("A")


def test_cli_writes_rows_and_csv(tiny_result, tiny_env, capsys):
    out = tiny_env / "cli"
    assert cli.main(["--profile", "tiny", "--experiment", "A", "--out", str(out), "--device", "cpu"]) == 0
    df = pd.read_csv(out / "cifar_tiny_results_A.csv")
    assert len(df) == 1 + TINY.a.rounds and set(df.experiment) == {"A"}
    assert df["round"].tolist() == list(range(TINY.a.rounds + 1))
    assert json.loads(df["layer_density"].iloc[-1])["head.0"] < 1
    assert (out / "cifar_tiny_rows_A.jsonl").exists() and (out / "cifar_tiny_log_A.txt").exists()
    loaded = export.load_results("tiny", out)
    assert loaded is not None and len(loaded.rows) == len(df) and loaded.head_blocks is not None
    assert set(loaded.head_blocks["round"]) == {TINY.a.rounds}
    assert "complete" in capsys.readouterr().out


def test_sweep_dispatches_and_paper_needs_a_gpu(monkeypatch, capsys):
    from blockprune_utils import sweep

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sweep.main(["--study", "cifar", "--profile", "paper", "--experiment", "A"]) == 2
    assert "CUDA GPU" in capsys.readouterr().err


def test_paper_profile_is_the_documented_design():
    p = config.PROFILES["paper"]
    assert p.a.k == 2 and p.a.rounds == 16 and dict(p.a.rates) == {"head.0": 0.2, "head.2": 0.2}
    assert p.b.ks == (1, 2, 4, 8) and not p.b.include_stem and p.b.include_shortcuts and not p.b.include_head
    assert p.baseline.batch_size == 1024 and p.model.channels_last and p.model.amp
    assert p.data.train_per_class is None and p.data.image_size == 32
    assert 0.8 ** 16 == pytest.approx(0.028, abs=1e-3)  # the authors' final head density, after round 16
    cmd = cli.gpu_command("B")
    assert cmd == "python -m blockprune_utils.sweep --study cifar --profile paper --experiment B --out OUTDIR"
    howto = cli.howto()
    assert cli.gpu_command("A") in howto and cmd in howto
    assert "BLOCKPRUNE_COMMIT" not in howto and "--budget-s" not in howto
    assert dataclasses.replace(p, name="x").a == p.a


def test_lr_schedule_shapes():
    f = config.Phase(epochs=1, lr=1.0, schedule="cosine", warmup_frac=0.2).lr_schedule()
    assert f(0.0) < 0.1 and f(0.2) == pytest.approx(1.0) and f(0.6) == pytest.approx(0.5) and f(0.999) < 1e-4
    assert config.Phase(epochs=1, lr=1.0).lr_schedule() is None
    with pytest.raises(ValueError):
        config.Phase(epochs=1, lr=1.0, schedule="step")
