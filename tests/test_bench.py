"""The BSR speed benchmark (blockprune_utils.bench), the lean inference path and
the automatic backend choice (blockprune_utils.bsr): correctness of every path and
the row schema (the cachegrind side: test_bench_cachegrind.py).  Timings are not asserted."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from blockprune_utils import bench as B
from blockprune_utils.bench import products
from blockprune_utils.bench.cli import main
from blockprune_utils.bench.config import LAYERS
from blockprune_utils.bench.formats import FORMATS, GPU_FORMATS, MODEL_VARIANTS
from blockprune_utils.bench.gpu import measure_gpu
from blockprune_utils.bench.products import MATRIX_SCHEMA
from blockprune_utils.bench.weights import pruned_lenet_model, synthetic_matrices
from blockprune_utils.bsr import LEAN_FORMATS, LeanMLP, auto, auto_backends, auto_choice, num_threads, to_bsr_model
from blockprune_utils.models import LeNet300100
from blockprune_utils.schedule import layer_densities

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse BSR tensor support is in beta state"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")]


@pytest.fixture(autouse=True)
def _tmp_results(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))


def tiny_cfg(**kw):
    base = dict(ks=(3,), rounds=(2,), layers=("fc2", "fc3"), batches=(1, 3), threads=(1,), synthetic_sizes=(24,),
                synthetic_ks=(4,), synthetic_densities=(0.3,), synthetic_batches=(1,), model_ks=(3,), model_rounds=(2,),
                model_batches=(1,), model_threads=(1,), cache_ks=(3,), cache_rounds=(2,), cache_products=2,
                budget_s=1e-4, model_budget_s=1e-4, min_repeats=2, max_repeats=3, min_sample_s=0.0)
    base.update(kw)
    return B.get_config("quick", **base)


@pytest.fixture(scope="module")
def pruned():
    """An untrained LeNet pruned 3 rounds with k=3 (3 divides neither 784 nor 100: padding is exercised)."""
    return pruned_lenet_model(3, 3, lenet_profile=None)


def test_untrained_fallback_is_pruned_and_labelled(pruned):
    model, source = pruned
    assert source in ("untrained", "trained-cache")
    dens = layer_densities(model, LAYERS)
    assert 0.45 < dens["fc1"] < 0.6 and 0.65 < dens["fc3"] < 0.8  # 0.8^3 and 0.9^3, up to edge blocks


@pytest.mark.parametrize("batch", [1, 5])
def test_every_backend_equals_the_dense_forward(pruned, batch):
    model, _ = pruned
    x = torch.randn(batch, 784, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        ref = model(x).numpy()
        for backend in ("torch", "scipy", "dense"):
            np.testing.assert_allclose(to_bsr_model(model, 3, backend=backend)(x).numpy(), ref, rtol=1e-4, atol=1e-5)
    for fmt in LEAN_FORMATS:
        lean = LeanMLP(model, 3, fmt)
        np.testing.assert_allclose(lean(x.numpy()), ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(lean(x), ref, rtol=1e-4, atol=1e-5)  # again: reused buffers stay correct
    mixed = LeanMLP(model, {"fc1": 3, "fc2": 2, "fc3": 3}, {"fc1": "bsr", "fc2": "csr", "fc3": "bsr"})
    np.testing.assert_allclose(mixed(x.numpy()), ref, rtol=1e-4, atol=1e-5)


def test_matrix_rows_schema_and_cache():
    cfg = tiny_cfg()
    rows = B.matrix_rows(cfg)
    n_lenet = len(cfg.layers) * len(cfg.batches) * len(cfg.formats)
    n_syn = len(cfg.synthetic_batches) * len(cfg.formats)
    assert len(rows) == n_lenet + n_syn
    required = {"matrix", "family", "layer", "rows", "cols", "k", "round", "weights", "density", "block_density", "nnz",
                "nnz_blocks", "format", "lib", "layout", "batch", "threads", "threads_label", "device", "ok", "error",
                "max_rel_err", "median_ns", "q25_ns", "q75_ns", "repeats", "dense_ns", "dense_format", "speedup",
                "speedup_same_lib", "torch", "numpy", "scipy", "commit", "cpu_model", "isa", "blas_control", "config_hash"}
    assert required <= set(MATRIX_SCHEMA.columns)
    for r in rows:
        assert required <= r.keys(), required - r.keys()
        assert r["ok"], r["error"]
        assert r["median_ns"] > 0 and r["speedup"] > 0 and r["repeats"] >= 2
        assert r["q25_ns"] <= r["median_ns"] <= r["q75_ns"]
    assert {r["format"] for r in rows} == set(FORMATS)
    assert {r["isa"] for r in rows} == {B.machine()["isa"]}  # the instruction set the numba kernels ran
    assert {r["weights"] for r in rows if r["family"] == "lenet"} <= {"untrained", "trained-cache"}
    # one row per (matrix, format, batch, threads)
    keys = {(r["matrix"], r["format"], r["batch"], r["threads_label"]) for r in rows}
    assert len(keys) == len(rows)
    # cached: a rerun reads the same rows instead of measuring
    again = B.matrix_rows(cfg)
    assert [r["median_ns"] for r in again] == [r["median_ns"] for r in rows]
    table = B.speedup_table(rows)
    assert not table.empty


def test_a_new_format_is_one_entry_of_the_table(monkeypatch):
    """A backend added to the formats table (here scipy's CSC, a builder and an input layout)
    is built, checked against dense, timed and labelled by the product rows as it is."""
    import scipy.sparse

    from blockprune_utils.bench import formats as F

    csc = F.Format("scipy_csc", "scipy", "csc", "scipy CSC", lambda w, k: scipy.sparse.csc_matrix(w.numpy()), "numpy")
    monkeypatch.setitem(F.FORMAT, csc.name, csc)
    cfg = tiny_cfg(layers=("fc3",), batches=(1, 4), formats=("numpy_dense", "scipy_csc"))
    rows = B.matrix_rows(cfg, families=("lenet",), cache=False)
    new = [r for r in rows if r["format"] == "scipy_csc"]
    assert len(new) == 2 and all(r["ok"] and r["lib"] == "scipy" and r["layout"] == "csc" for r in new)
    assert all(r["dense_format"] == "numpy_dense" and r["speedup_same_lib"] > 0 for r in new)


def test_the_formats_table_is_consistent():
    from blockprune_utils.bench import formats as F

    for f in F.FORMAT.values():
        assert f.input in F.INPUTS and f.layout in ("dense", "csr", "bsr") and f.name.startswith(f.lib)
    assert len({f.label for f in F.FORMAT.values()}) == len(F.FORMAT)
    assert set(F.DENSE_FORMATS) | set(F.SPARSE_FORMATS) == set(F.FORMATS)
    assert F.csr_bsr_pairs() == {"scipy": ("scipy_csr", "scipy_bsr"), "torch": ("torch_csr", "torch_bsr"),
                                 "numba": ("numba_csr", "numba_bsr")}
    assert list(F.SIMULATED) == ["csr", "bsr", "numba_csr", "numba_bsr", "dense"]  # Figure 6's order: sparse, then dense
    assert all(v.group in F.GROUPS and v.role in ("dense", "sparse", "") for v in F.VARIANT.values())
    assert F.REFERENCE in F.DENSE_VARIANTS


def test_a_format_that_disagrees_with_dense_is_not_timed(monkeypatch):
    real = products.build_operands

    def broken(w, k, formats=FORMATS):
        ops, errors = real(w, k, formats)
        ops["scipy_csr"] = ops["scipy_csr"] * 2.0
        return ops, errors

    monkeypatch.setattr(products, "build_operands", broken)
    rows = B.matrix_rows(tiny_cfg(layers=("fc3",), batches=(1,)), families=("lenet",), cache=False)
    by = {r["format"]: r for r in rows}
    assert not by["scipy_csr"]["ok"] and by["scipy_csr"]["median_ns"] is None
    assert "differs" in by["scipy_csr"]["error"]
    assert all(r["ok"] for f, r in by.items() if f != "scipy_csr")


def test_numba_products_run_parallel_with_all_threads():
    rows = B.matrix_rows(tiny_cfg(layers=("fc3",), threads=(0,), formats=("numpy_dense", "numba_csr", "numba_bsr")),
                         families=("lenet",), cache=False)
    assert {(r["format"], r["batch"]) for r in rows} == {(f, b) for f in ("numpy_dense", "numba_csr", "numba_bsr")
                                                          for b in (1, 3)}
    assert all(r["ok"] and r["lib"] in ("numpy", "numba") and r["threads_label"] == "all" for r in rows), rows


class _FastWrongLayer:
    """A 'format' that is instantaneous and wrong."""

    def __init__(self, real):
        self.n_in, self.n_out = real.n_in, real.n_out

    def ops(self, x, y):
        return [lambda: y.fill(0.0)]


class _FastWrongModule(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return torch.zeros(x.shape[0], self.out)


def test_auto_backends_never_picks_a_format_that_failed(pruned, monkeypatch):
    model, _ = pruned
    real_lean, real_module = auto._lean_candidates, auto._module_candidates

    def lean(w, b, k):
        c = real_lean(w, b, k)
        c["csr"] = _FastWrongLayer(c["csr"])
        return c

    def module(w, b, k):
        c = real_module(w, b, k)
        c["scipy"] = _FastWrongModule(w.shape[0])
        return c

    monkeypatch.setattr(auto, "_lean_candidates", lean)
    monkeypatch.setattr(auto, "_module_candidates", module)
    choice, rows = auto_choice(model, 3, 1, path="lean", budget_s=1e-3, min_repeats=3, max_repeats=5)
    assert set(choice) == set(LAYERS) and "csr" not in choice.values()
    assert all(not r["ok"] for r in rows if r["candidate"] == "csr")
    assert auto_backends(model, 3, 2, path="module", budget_s=1e-3, min_repeats=3, max_repeats=5).keys() == set(LAYERS)
    assert "scipy" not in auto_backends(model, 3, 2, path="module", budget_s=1e-3, min_repeats=3, max_repeats=5).values()


def test_auto_module_path_weighs_numba_and_the_fused_forward(pruned):
    model, _ = pruned
    choice, rows = auto_choice(model, 3, 4, path="module", budget_s=1e-3, min_repeats=3, max_repeats=5)
    assert {"torch", "scipy", "numba", "dense"} <= {r["candidate"] for r in rows if r["layer"] != "model"}
    fused = [r for r in rows if r["layer"] == "model" and r["candidate"] == "fused"]
    assert len(fused) == 1 and fused[0]["ok"]
    x = torch.randn(4, 784, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        np.testing.assert_allclose(to_bsr_model(model, 3, backend=choice)(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    soft = LeNet300100(authors_softmax=True)  # not a plain MLP: no fused candidate, the rest still works
    choice, rows = auto_choice(soft, 3, 1, path="module", budget_s=1e-3, min_repeats=3, max_repeats=5)
    assert "fused" not in choice.values()
    assert not any(r["ok"] for r in rows if r["candidate"] == "fused")


def test_auto_backends_stays_dense_on_a_dense_network():
    torch.manual_seed(0)
    dense = LeNet300100().eval()  # nothing pruned: no sparse format can win at batch 32
    assert auto_backends(dense, 2, 32, path="lean", budget_s=3e-3) == {n: "dense" for n in LAYERS}


def test_model_rows_every_variant_checked_and_summary():
    cfg = tiny_cfg()
    rows = B.model_rows(cfg)
    assert {r["variant"] for r in rows} == set(MODEL_VARIANTS)
    for r in rows:
        assert r["ok"], (r["variant"], r["error"])
        assert r["median_ns"] > 0 and r["dense_ns"] > 0
    autos = [r for r in rows if r["variant"] in ("module_auto", "lean_auto")]
    assert all(r["auto_choice"] for r in autos)
    summary = B.speedup_summary(rows, round=2, batch=1)
    assert list(summary["k"]) == [3]
    assert {"ratio_vs_dense", "ideal", "gap_to_ideal", "ratio_vs_best_dense", "meets_target"} <= set(summary.columns)
    assert summary["target"].iloc[0] == 5 and summary["meets_target"].dtype == bool
    assert not B.model_table(rows).empty


def test_storage_rows():
    rows = B.storage_rows(tiny_cfg(ks=(4,), rounds=(1, 6)))
    tot = {(r["k"], r["round"], r["format"]): r["bytes"] for r in rows if r["layer"] == "all"}
    assert tot[(4, 6, "bsr")] < tot[(4, 6, "csr")] < tot[(4, 6, "dense")]
    assert tot[(4, 1, "csr")] > tot[(4, 1, "dense")]  # CSR at 80% density is larger than dense
    k1 = B.storage_rows(tiny_cfg(ks=(1,), rounds=(1,), model_rounds=(1,), cache_rounds=(1,)))
    t1 = {r["format"]: r["bytes"] for r in k1 if r["layer"] == "all"}
    assert t1["bsr"] == t1["csr"]  # k=1: BSR stores exactly what CSR stores


def test_num_threads_restores():
    before = torch.get_num_threads()
    with num_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert B.blas_control() in ("threadpoolctl", "openblas-ctypes", "none")


def test_gpu_path_skips_cleanly_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the GPU path runs in the benchmark, not in this test")
    assert B.gpu_rows(tiny_cfg()) == []
    assert capsys.readouterr().err == ""  # the library is quiet; the command line and notebook 02 say why


def test_gpu_measurement_code_path_on_the_cpu():
    """measure_gpu with device="cpu" stands in for CUDA: rows per format and dtype,
    failures (no bf16 sparse kernel on the CPU) recorded instead of raised."""
    cfg = tiny_cfg()
    m = synthetic_matrices(cfg)[0]
    rows = measure_gpu(m, 2, cfg, device="cpu")
    assert [r["format"] for r in rows] == list(GPU_FORMATS)
    by = {r["format"]: r for r in rows}
    assert by["cuda_dense_fp32"]["ok"] and by["cuda_bsr_fp32"]["ok"] and by["cuda_bsr_fp32"]["speedup"] > 0
    assert all(r["ok"] or r["error"] for r in rows)
    assert {r["dtype"] for r in rows} == {"fp32", "bf16"}


def test_cli_storage_only(capsys):
    assert main(["--quick", "--only", "storage", "--no-progress"]) == 0
    assert "storage of the three LeNet layers" in capsys.readouterr().out


def test_kernel_bar_reads_the_numba_rows():
    rows = B.model_rows(tiny_cfg(model_ks=(4,), model_batches=(1, 256)))
    bar = B.kernel_bar(rows, k=4, round=2)
    assert set(bar) == {"batch1_vs_fastest_dense", "batch256_frac_of_ideal", "bsr_over_csr_b256_k4"}
    assert all(v > 0 for v in bar.values())
    t = {(r["variant"], r["batch"]): r["median_ns"] for r in rows}
    assert bar["bsr_over_csr_b256_k4"] == pytest.approx(t["numba_csr", 256] / t["numba_bsr", 256])
    assert all(np.isnan(v) for v in B.kernel_bar(rows, k=2, round=2).values())  # no such k: NaN, not a made-up ratio


def test_cli_models_ends_with_the_kernel_bar(capsys):
    assert main(["--quick", "--only", "models", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"kernel bar: batch1_vs_fastest_dense=(\S+) batch256_frac_of_ideal=(\S+) bsr_over_csr_b256_k4=(\S+)"
                     r" mlp_k16_frac_of_ideal=(\S+) mlp_k32_frac_of_ideal=(\S+)", last)
    assert m and all(float(v) > 0 for v in m.groups()), last


def _product_row(family, fmt, k, ns, *, rows=1024, density=0.1, batch=1, round=16, layer="fc1", threads="1"):
    return {"family": family, "layer": layer if family == "lenet" else f"{rows}x{rows}", "rows": rows, "format": fmt,
            "k": k, "density": density, "batch": batch, "round": round, "threads_label": threads, "ok": True,
            "median_ns": ns}


def test_findings_compare_the_numba_formats_on_the_synthetic_matrices():
    from blockprune_utils.bench import findings

    rows = []
    for n, csr_ns, bsr_ns in ((1024, 200.0, 100.0), (4096, 300.0, 400.0)):
        for d in (0.1, 0.01):
            rows += [_product_row("synthetic", "numba_csr", 4, csr_ns, rows=n, density=d),
                     _product_row("synthetic", "numba_bsr", 4, bsr_ns, rows=n, density=d),
                     _product_row("synthetic", "scipy_bsr", 4, 1.0, rows=n, density=d)]  # another library: not compared
    s = findings.synthetic_formats(rows)
    assert len(s) == 4 and set(s["rows"]) == {1024, 4096}
    assert s.loc[s["rows"] == 1024, "csr_over_bsr"].tolist() == [2.0, 2.0]
    assert s.loc[s["rows"] == 4096, "csr_over_bsr"].tolist() == [0.75, 0.75]
    text = findings.synthetic_sentence(rows)
    assert "1024x1024 at batch 1: 2 of 2" in text and "4096x4096 at batch 1: 0 of 2" in text and "1%, 10%" in text
    # the verdict counts every case of kernels written alike: here 2 wins of 4
    lenet = [_product_row("lenet", f, 4, ns) for f, ns in (("scipy_csr", 1.0), ("scipy_bsr", 2.0))]
    storage = [{"layer": "all", "k": 4, "round": 16, "format": f, "bytes": b} for f, b in (("csr", 10), ("bsr", 6))]
    verdict = findings.conclusion(rows + lenet, [], storage)
    assert "BSR needs 0.6x the bytes of CSR" in verdict and "less space than CSR" in verdict
    assert "BSR computes faster than CSR in 50% of the 4 cases" in verdict
    assert "library kernels (scipy, torch), BSR is faster than CSR in 0%" in verdict
    assert findings.synthetic_sentence([r for r in rows if r["format"] != "numba_bsr"]) == ""


def test_the_model_budget_keys_the_model_store_only():
    from blockprune_utils.bench import config as BC

    a, b = tiny_cfg(model_budget_s=0.01), tiny_cfg(model_budget_s=0.02)
    assert BC.bench_store("bench", a, MATRIX_SCHEMA).hash == BC.bench_store("bench", b, MATRIX_SCHEMA).hash
    fields = BC.MODEL_TIMING_FIELDS
    assert (BC.bench_store("bench_model", a, MATRIX_SCHEMA, fields=fields).hash
            != BC.bench_store("bench_model", b, MATRIX_SCHEMA, fields=fields).hash)


def test_cache_cases_refuse_numba_block_sizes_without_their_own_kernel():
    from blockprune_utils.bench.cachesim.cases import cache_cases

    with pytest.raises(ValueError, match=r"cache_ks \[16\] are above 8"):
        cache_cases(B.get_config("quick", cache_ks=(4, 16), cache_batches=(1,)))
