"""CIFAR-10 / ResNet18 study: loading, on-device augmentation, experiments A and B.

The experiment tests run a tiny profile on synthetic images (seconds on a CPU);
the loader test reads a few images per class of the JPEG copy when DATA_DIR has it."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from blockprune_utils import cifar
from blockprune_utils import cifar_study as cs
from blockprune_utils.blocks import block_mask_of
from blockprune_utils.cache import ResultStore
from blockprune_utils.masks import is_masked
from blockprune_utils.pruning import n_to_prune

TINY = cs.CifarProfile(
    name="tiny",
    data=cs.DataConfig(train_per_class=4, test_per_class=2, image_size=8, synthetic=True),
    model=cs.ModelConfig(),
    baseline=cs.Phase(epochs=1, lr=1e-3, batch_size=20),
    a=cs.HeadPruning(rounds=2, retrain=cs.Phase(epochs=1, lr=1e-4, batch_size=20)),
    b=cs.ConvPruning(ks=(1, 4), rounds=2, retrain=cs.Phase(epochs=1, lr=3e-4, batch_size=20, schedule="cosine", warmup_frac=0.1)),
    eval_batch=100,
)
ROW_COLUMNS = {
    "experiment", "k", "round", "seed", "test_acc", "test_acc_best_epoch", "test_acc_pruned", "density", "density_head",
    "density_conv", "density_model", "layer_density", "wall_s", "data_source", "n_train", "n_test", "device", "torch",
    "torchvision", "commit", "config_hash", "profile", "amp",
}


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """A private RESULTS_DIR and one CPU thread (the test machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("cifar")
        mp.setenv("RESULTS_DIR", str(root / "results"))
        mp.setitem(cs.PROFILES, "tiny", TINY)
        yield root
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_result(tiny_env):
    return cs.run_study(TINY, ("A", "B"), device="cpu", out_dir=tiny_env / "out", log=lambda m: None)


# ------------------------------------------------------------------ augmentation
def test_crop_flip_small_example():
    x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4) + 1
    zero = torch.zeros(1, dtype=torch.long)
    out = cifar.crop_flip(x, zero, zero, torch.tensor([False]), padding=1)  # window at the padded corner
    expected = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]], dtype=torch.uint8)
    assert torch.equal(out[0, 0], expected)
    centred = cifar.crop_flip(x, zero + 1, zero + 1, torch.tensor([True]), padding=1)
    assert torch.equal(centred, x.flip(3))
    assert torch.equal(cifar.crop_flip(x, zero, zero, torch.tensor([False]), padding=0), x)


def test_crop_flip_matches_torchvision():
    import torchvision.transforms.functional as TF

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    oy = torch.randint(0, 9, (6,), generator=g)
    ox = torch.randint(0, 9, (6,), generator=g)
    flip = torch.tensor([True, False, True, False, False, True])
    out = cifar.crop_flip(x, oy, ox, flip, padding=4)
    for i in range(6):
        ref = TF.crop(TF.pad(x[i], [4]), int(oy[i]), int(ox[i]), 32, 32)
        if flip[i]:
            ref = TF.hflip(ref)
        assert torch.equal(out[i], ref)


def test_augmentation_shapes_and_determinism():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = cifar.random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    b = cifar.random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    c = cifar.random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    tf = cifar.CifarTransform("cpu", seed=3)
    t1 = tf(x, train=True)
    assert t1.shape == (64, 3, 32, 32) and t1.dtype == torch.float32
    assert torch.equal(tf.reseed(3)(x, train=True), t1)
    assert not torch.equal(tf(x, train=True), t1)  # the generator moved on
    # evaluation: no augmentation, just the authors' normalisation
    mean = torch.tensor(cifar.MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(cifar.STD).reshape(1, 3, 1, 1)
    torch.testing.assert_close(tf(x, train=False), (x.float() / 255 - mean) / std)
    small = cifar.CifarTransform("cpu", image_size=8, channels_last=True)(x, train=True)
    assert small.shape == (64, 3, 8, 8) and small.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="divide 32"):
        cifar.CifarTransform("cpu", image_size=12)


# ------------------------------------------------------------------------ loading
def test_missing_data_names_what_is_needed(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        cifar.load_cifar10(root=tmp_path, download=False)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "CIFAR-10-jpeg" in msg and "DATA_DIR" in msg


def test_jpeg_loader_per_class(tmp_path, monkeypatch):
    root = Path(os.environ.get("DATA_DIR", "data"))
    if cifar.has_original(root) or not cifar.has_jpeg_copy(root):
        pytest.skip(f"no CIFAR-10 JPEG copy (alone) under DATA_DIR={root}")
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    split, source = cifar.load_cifar10(train=True, root=root, per_class=3)
    assert source == cifar.SOURCE_JPEG == "CIFAR-10 (JPEG copy)"
    assert split.x.shape == (30, 3, 32, 32) and split.x.dtype == torch.uint8
    assert split.y.tolist() == [c for c in range(10) for _ in range(3)]
    cached = list((tmp_path / "cache").glob("cifar10-jpeg-train-3-*.pt"))
    assert len(cached) == 1
    again, _ = cifar.load_cifar10(train=True, root=root, per_class=3)
    assert torch.equal(again.x, split.x)
    files, labels = cifar.jpeg_files(root, train=True, per_class=3)
    assert torch.equal(cifar._decode_pil(files[4]), split.x[4]) and int(labels[4]) == 1
    test, _ = cifar.load_cifar10(train=False, root=root, per_class=1, cache=False)
    assert test.x.shape == (10, 3, 32, 32)


# --------------------------------------------------------------------- experiments
def test_rows_schema_and_counts(tiny_result):
    df = tiny_result.rows
    assert tiny_result.complete
    assert ROW_COLUMNS <= set(df.columns)
    assert len(df[df.experiment == "A"]) == 1 + TINY.a.rounds
    assert len(df[df.experiment == "B"]) == len(TINY.b.ks) * (1 + TINY.b.rounds)
    assert not df.duplicated(["experiment", "k", "round", "seed"]).any()
    assert df["test_acc"].between(0, 1).all()
    assert (df["data_source"] == cifar.SOURCE_SYNTHETIC).all()
    assert (df.loc[df["round"] == -1, "density"] == 1.0).all()
    assert df.loc[df["round"] >= 0, "test_acc_pruned"].notna().all()
    out = {p.name for p in tiny_result.files}
    assert {"cifar_tiny_results_all.csv", "cifar_tiny_rows_all.jsonl", "cifar_tiny_head_blocks.csv"} <= out


def _expected_alive(n_blocks: int, p: float, rounds: int) -> int:
    for _ in range(rounds):
        n_blocks -= n_to_prune(p, n_blocks)
    return n_blocks


def test_density_per_round(tiny_result):
    df = tiny_result.rows
    a = df[df.experiment == "A"].set_index("round")
    for r in range(TINY.a.rounds):
        # head.0 300x512 and head.2 10x300 are tiled exactly by k=2 blocks: density = alive blocks / all
        assert a.loc[r, "layer_density"]["head.0"] == pytest.approx(_expected_alive(150 * 256, 0.2, r + 1) / (150 * 256))
        assert a.loc[r, "layer_density"]["head.2"] == pytest.approx(_expected_alive(5 * 150, 0.2, r + 1) / (5 * 150))
        assert a.loc[r, "density_conv"] == 1.0
    b = df[df.experiment == "B"]
    for k in TINY.b.ks:
        dens = b[b.k == k].sort_values("round")["density"].tolist()
        assert dens[0] == 1.0 and all(x > y for x, y in zip(dens, dens[1:]))
        assert dens[-1] == pytest.approx((1 - TINY.b.rate) ** TINY.b.rounds, abs=0.01)


def test_block_counts_in_checkpoints(tiny_result, tiny_env):
    """Every pruned layer of B keeps exactly the block count of the per-layer rule."""
    runner = cs.CifarRunner(TINY, device="cpu", log=lambda m: None)
    store = runner.store("B")
    model = cs.build_model(TINY.model, 0, "cpu")
    layers = cs.conv_prune_layers(model, TINY.b)
    assert "backbone.conv1" not in layers and "backbone.layer2.0.downsample.0" in layers and "head.0" not in layers
    assert len(layers) == 19  # 16 3x3 convs of the stages + 3 shortcuts
    for k in TINY.b.ks:
        ckpt = store.load_checkpoint({"experiment": "B", "k": k, "seed": 0})
        assert ckpt["round"] == TINY.b.rounds - 1
        for name in layers:
            mask = ckpt["state_dict"][f"{name}.parametrizations.weight.0.mask"]
            alive = block_mask_of(mask, k)
            assert int(alive.sum()) == _expected_alive(alive.numel(), TINY.b.rate, TINY.b.rounds), (k, name)
        assert "backbone.conv1.weight" in ckpt["state_dict"]  # the stem stays dense


def test_head_only_pruning_leaves_convs_untouched_and_frozen(tiny_result):
    runner = cs.CifarRunner(TINY, device="cpu", log=lambda m: None)
    base_state, base_row = runner.baseline(0)  # cached
    store = ResultStore("cifar-frozen-test", {"t": 1})
    model, start = runner.resume(store, "A", 2, 0, base_state)
    assert start == 0
    cs.freeze_backbone(model)
    runner.prune_round(store, "A", 2, 0, 0, model, cs.BlockPruner(2, dict(TINY.a.rates)), TINY.a.retrain,
                       list(cs.HEAD_LAYERS), head_only=True)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    masked = {n for n, m in model.named_modules() if is_masked(m)}
    assert masked == set(cs.HEAD_LAYERS)
    state = model.state_dict()
    for key, value in base_state.items():
        if key.startswith("backbone.") and not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(state[key], value), key  # conv weights and BN affine untouched
    # the authors' quirk: BN running statistics still move (retraining runs in train mode)
    assert not torch.equal(state["backbone.bn1.running_mean"], base_state["backbone.bn1.running_mean"])
    assert not torch.equal(state["head.0.parametrizations.weight.original"], base_state["head.0.weight"])
    # the checkpoint stores masks as bool; loading it gives the same model
    ckpt = store.load_checkpoint({"experiment": "A", "k": 2, "seed": 0})
    assert ckpt["state_dict"]["head.0.parametrizations.weight.0.mask"].dtype == torch.bool
    again, nxt = runner.resume(store, "A", 2, 0, base_state)
    assert nxt == 1 and torch.equal(again.head[0].weight, model.head[0].weight)


def test_cached_rows_are_skipped(tiny_result, tiny_env, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a cached row was recomputed")

    monkeypatch.setattr(cs.CifarRunner, "fit", boom)
    again = cs.run_study(TINY, ("A", "B"), device="cpu", out_dir=tiny_env / "out2", log=lambda m: None)
    assert again.complete
    cols = ["experiment", "k", "round", "seed", "test_acc"]
    assert again.rows[cols].equals(tiny_result.rows[cols])


def test_killed_run_resumes(tiny_env, monkeypatch, tmp_path):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    calls = {"n": 0}
    real_fit = cs.CifarRunner.fit

    def dies_on_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # baseline, A round 0, then killed in A round 1
            raise KeyboardInterrupt
        return real_fit(self, *a, **k)

    monkeypatch.setattr(cs.CifarRunner, "fit", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        cs.run_study(TINY, ("A",), device="cpu", out_dir=tmp_path / "out", log=lambda m: None)
    runner = cs.CifarRunner(TINY, device="cpu", log=lambda m: None)
    store = runner.store("A")
    assert sorted(r["round"] for r in store.read_rows()) == [-1, 0]
    row0 = store.row_path({"experiment": "A", "k": 2, "round": 0, "seed": 0}).read_text()
    calls["n"] = -100
    res = cs.run_study(TINY, ("A",), device="cpu", out_dir=tmp_path / "out", log=lambda m: None)
    assert res.complete and calls["n"] == -99  # only round 1 was trained again
    assert store.row_path({"experiment": "A", "k": 2, "round": 0, "seed": 0}).read_text() == row0


def test_row_lost_after_checkpoint_is_restored(tiny_result, tiny_env, monkeypatch):
    """Killed between writing a round's checkpoint and its row: the row comes from the checkpoint."""
    runner = cs.CifarRunner(TINY, device="cpu", log=lambda m: None)
    last = TINY.b.rounds - 1
    for k in TINY.b.ks:
        runner.store("B").row_path({"experiment": "B", "k": k, "round": last, "seed": 0}).unlink()

    def boom(*a, **k):
        raise AssertionError("nothing should be retrained")

    monkeypatch.setattr(cs.CifarRunner, "fit", boom)
    again = cs.run_study(TINY, ("B",), device="cpu", out_dir=tiny_env / "out3", log=lambda m: None)
    assert again.complete
    cols = ["experiment", "k", "round", "test_acc"]
    b = tiny_result.rows[tiny_result.rows.experiment == "B"][cols].reset_index(drop=True)
    assert again.rows[cols].equals(b)


def test_budget_stops_early(tiny_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tiny_env / "results"))
    res = cs.run_study(TINY, ("B",), ks=(2,), device="cpu", out_dir=tmp_path, budget_s=0.0, log=lambda m: None)
    assert not res.complete and res.rows["round"].tolist() == [-1]


def test_cli_writes_rows_and_csv(tiny_result, tiny_env, capsys):
    out = tiny_env / "cli"
    assert cs.main(["--profile", "tiny", "--experiment", "A", "--out", str(out), "--device", "cpu"]) == 0
    csv = out / "cifar_tiny_results_A.csv"
    import pandas as pd

    df = pd.read_csv(csv)
    assert len(df) == 1 + TINY.a.rounds and set(df.experiment) == {"A"}
    assert json.loads(df["layer_density"].iloc[-1])["head.0"] < 1
    assert (out / "cifar_tiny_rows_A.jsonl").exists() and (out / "cifar_tiny_log_A.txt").exists()
    loaded = cs.load_results("tiny", out)
    assert loaded is not None and len(loaded.rows) == len(df) and loaded.head_blocks is not None
    assert "complete" in capsys.readouterr().out


def test_sweep_dispatches_and_paper_needs_a_gpu(monkeypatch, capsys):
    from blockprune_utils import sweep

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sweep.main(["--study", "cifar", "--profile", "paper", "--experiment", "A"]) == 2
    assert "CUDA GPU" in capsys.readouterr().err


def test_paper_profile_is_the_documented_design():
    p = cs.PROFILES["paper"]
    assert p.a.k == 2 and p.a.rounds == 16 and dict(p.a.rates) == {"head.0": 0.2, "head.2": 0.2}
    assert p.b.ks == (1, 2, 4, 8) and not p.b.include_stem and p.b.include_shortcuts and not p.b.include_head
    assert p.baseline.batch_size == 1024 and p.model.channels_last and p.model.amp
    assert p.data.train_per_class is None and p.data.image_size == 32
    assert 0.8 ** 16 == pytest.approx(0.028, abs=1e-3)  # the authors' final head density
    cmd = cs.gpu_command("B")
    assert "--study cifar --profile paper --experiment B --out $OUT" in cmd
    assert dataclasses.replace(p, name="x").a == p.a


def test_lr_schedule_shapes():
    f = cs.Phase(epochs=1, lr=1.0, schedule="cosine", warmup_frac=0.2).lr_schedule()
    assert f(0.0) < 0.1 and f(0.2) == pytest.approx(1.0) and f(0.6) == pytest.approx(0.5) and f(0.999) < 1e-4
    assert cs.Phase(epochs=1, lr=1.0).lr_schedule() is None
    with pytest.raises(ValueError):
        cs.Phase(epochs=1, lr=1.0, schedule="step")
