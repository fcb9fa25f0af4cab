"""The cachegrind side of the benchmark: the parser (blockprune_utils.bench.cachesim.cachegrind),
the scipy driver and the two-run measurement of the numba kernels
(blockprune_utils.bench.cachesim.valgrind, .numba_driver), and the rows of
blockprune_utils.bench.cachesim.cases.  Runs under valgrind are skipped without it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from blockprune_utils.bench import isa as ISA
from blockprune_utils.bench.cachesim import cachegrind as CG
from blockprune_utils.bench.cachesim import cases as C
from blockprune_utils.bench.cachesim import numba_driver
from blockprune_utils.bench.cachesim import valgrind as V
from blockprune_utils.bench.formats import SIMULATED
from blockprune_utils.blocks import expand_block_mask

CANNED = """\
desc: I1 cache:         32768 B, 64 B, 8-way associative
desc: D1 cache:         32768 B, 64 B, 8-way associative
desc: LL cache:         524288 B, 64 B, 8-way associative
cmd: python cachesim.py driver --fmt bsr
events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
fl=???
fn=PyEval_EvalFrameDefault
0 1000 10 5 400 20 2 100 3 1
fn=bsr_matvec_thunk
0 600 1 0 200 8 1 40 2 0
0 400 0 0 100 2 1 20 0 0
fn=void csr_matvec<int, float>(int, int, int const*, int const*, float const*, float const*, float*)
0 50 0 0 20 1
fn=csr_matvecs_thunk
0 7 0 0 7 7 7 7 7 7
summary: 2057 11 5 727 38 11 167 12 8
"""


def test_parse_cachegrind_canned_output():
    cg = CG.parse_cachegrind(CANNED)
    assert cg.events[:4] == ["Ir", "I1mr", "ILmr", "Dr"]
    assert cg.totals["Ir"] == 2057 and cg.totals["DLmw"] == 8
    assert cg.functions["bsr_matvec_thunk"]["Dr"] == 300  # two cost lines summed
    assert cg.functions["void csr_matvec<int, float>(int, int, int const*, int const*, float const*, float const*, float*)"][
        "D1mw"] == 0  # missing trailing counts are zero
    bsr = cg.select(SIMULATED["bsr"].kernel)  # bsr_matvec_thunk + csr_matvec<...>, not csr_matvecs_thunk
    assert bsr["Ir"] == 1050 and bsr["Dr"] == 320 and bsr["Dw"] == 60
    assert cg.select(SIMULATED["csr"].kernel)["Ir"] == 50
    pp = CG.per_product(bsr, n=10)
    assert pp["data_refs"] == pytest.approx(38.0)
    assert pp["d1_misses"] == pytest.approx((11 + 2) / 10)
    assert pp["ll_misses"] == pytest.approx(0.2)
    assert pp["d1_miss_ratio"] == pytest.approx(13 / 380)
    # without a summary line the totals are summed over functions
    no_summary = CG.parse_cachegrind(CANNED.rsplit("summary:", 1)[0])
    assert no_summary.totals["Ir"] == 2057
    with pytest.raises(ValueError, match="events"):
        CG.parse_cachegrind("fn=x\n0 1 2\n")


AVX512 = ("avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd")


def avx512_target() -> ISA.Target:
    """An AVX-512 numba target on any x86-64 host: this process's feature string with
    the AVX-512 features turned on, for LLVM's skylake-avx512 CPU."""
    flags = {f.lstrip("+-"): f[0] for f in ISA.numba_target().features.split(",") if f}
    flags.update(dict.fromkeys(AVX512, "+"))
    return ISA.Target("skylake-avx512", ",".join(sign + name for name, sign in flags.items()))


@pytest.mark.skipif(C.valgrind_path() is None, reason="valgrind is not installed")
@pytest.mark.parametrize("fmt,kernel", [("bsr", "bsr_matvec"), ("numba_bsr", "numba JIT code")])
def test_tiny_real_cachegrind_run(tmp_path, fmt, kernel):
    """A real run; the numba kernel is timed with an AVX-512 target (which valgrind cannot
    decode, on any CPU): it is counted as compiled for a target valgrind runs, and says so."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 24, generator=g) * expand_block_mask(torch.rand(4, 6, generator=g) < 0.5, (16, 24), 4)
    C.write_operands(tmp_path / "ops.npz", w, 4)
    forced = avx512_target() if fmt.startswith("numba") and ISA.is_x86() else None
    res = C.run_cachegrind(tmp_path / "ops.npz", fmt, n=3, target=forced)
    assert kernel in res["kernel_functions"] and res["n_products"] == 3
    assert res["instructions"] > 0 and res["data_refs"] > 0 and 0 <= res["d1_miss_ratio"] <= 1
    assert res["d1_misses"] >= 0 and res["ll_misses"] >= 0
    assert res["counted_target"]
    if forced is not None:
        assert forced.isa == "avx512" and res["timed_target"] == "skylake-avx512 (avx512)"
        assert res["counted_isa"] in ("avx2", "avx", "sse4.2", "sse2")
        assert res["counted_target"] == f"skylake-avx512 ({res['counted_isa']})"
        assert res["counted_target"] in res["kernel_functions"]


def test_the_counted_target_is_what_valgrind_decodes_and_the_host_has():
    """AVX-512 and the other extensions valgrind cannot decode are turned off (also those the
    feature string leaves to the CPU name); nothing the host lacks is turned on."""
    avx512_host = {"sse2": True, "avx": True, "avx2": True, "fma": True, "avx512f": True, "avx512vl": True, "gfni": True,
                   "amx-tile": False, "sse4a": True}
    timed = ISA.Target("znver4", "+sse2,+avx,+avx2,+fma,+avx512f,+avx512vl,+gfni,-amx-tile,+sse4a")
    counted = ISA.valgrind_target(timed, host=avx512_host)
    assert timed.isa == "avx512" and counted.isa == "avx2" and counted.cpu == "znver4"
    assert ISA.enabled(counted.features) == {"sse2", "avx", "avx2", "fma"}
    assert counted.env() == {"NUMBA_CPU_NAME": "znver4", "NUMBA_CPU_FEATURES": counted.features}
    # an AVX-512 target on an AVX-only host: counted with what the host runs
    avx_host = {**avx512_host, "avx2": False, "fma": False, "avx512f": False, "avx512vl": False}
    assert ISA.valgrind_target(timed, host=avx_host).isa == "avx"
    # a CPU name alone (no features): the undecodable features are turned off explicitly
    bare = ISA.valgrind_target(ISA.Target("skylake-avx512", ""), host=avx512_host)
    assert ISA.enabled(bare.features) == set() and "-avx512f" in bare.features.split(",") and "-sse2" not in bare.features
    # an AVX2 target is counted as itself
    avx2 = ISA.Target("haswell", "+sse2,+avx,+avx2,+fma")
    assert ISA.valgrind_target(avx2, host={"sse2": True, "avx": True, "avx2": True, "fma": True}) == avx2
    assert [ISA.isa_of(f, "x86_64") for f in ("+avx512f,+avx2", "+avx2", "+sse4.2", "")] == ["avx512", "avx2", "sse4.2", "sse2"]
    assert ISA.isa_of("+neon", "aarch64") == "neon" and ISA.isa_of("+sve", "aarch64") == "sve"


def test_numba_counts_are_the_difference_of_two_runs(monkeypatch, tmp_path):
    """JIT code has no symbol: the counts per product are (run of 2n - run of n) / n of
    the code cachegrind cannot name, so start-up and warm-up cancel."""
    calls = []

    def fake(driver, args, timeout, env):
        n = int(args[args.index("--n") + 1])
        calls.append((n, env))
        return CG.parse_cachegrind("events: Ir Dr D1mr DLmr Dw D1mw DLmw\n"
                                   f"fn=???\n0 {10**6 + 70 * n} {5000 + 30 * n} {900 + 2 * n} {80 + n} {700 + 10 * n} 7 3\n"
                                   "fn=PyEval_EvalFrameDefault\n0 99 9 9 9 9 9 9\n")

    warmed = []
    monkeypatch.setattr(V, "run_cachegrind_tool", fake)
    monkeypatch.setattr(V, "warm_numba_driver", lambda npz, fmt, batch, env, timeout: warmed.append(env))
    forced = ISA.Target("skylake-avx512", "+avx,+avx2,+fma,+avx512f,+avx512vl")
    res = V.numba_product_counts(tmp_path / "ops.npz", "numba_bsr", 5, target=forced)
    assert sorted(n for n, _ in calls) == [5, 10]  # the two runs may go side by side
    assert res["instructions"] == 70 and res["data_refs"] == 40 and res["d1_misses"] == 2 and res["ll_misses"] == 1
    # the runs (and the native warm-up before them) get the counted target: no AVX-512
    assert len(warmed) == 1 and all(env == warmed[0] for _, env in calls)
    assert warmed[0]["NUMBA_CPU_NAME"] == "skylake-avx512"
    assert "+avx512f" not in warmed[0]["NUMBA_CPU_FEATURES"] or not ISA.is_x86()
    assert res["timed_target"] == "skylake-avx512 (avx512)" and res["counted_isa"] != "avx512"
    monkeypatch.setattr(V, "run_cachegrind_tool", lambda *a: CG.parse_cachegrind("events: Ir\nfn=???\n0 5\n"))
    with pytest.raises(RuntimeError, match="no JIT instructions"):
        V.numba_product_counts(tmp_path / "ops.npz", "numba_csr", 5)


@pytest.mark.parametrize("fmt,batch", [("numba_bsr", 1), ("numba_csr", 3), ("numba_bsr", 3)])
def test_numba_cachegrind_driver_computes_the_product(tmp_path, capsys, fmt, batch):
    """The driver (run here in-process, not under valgrind) loads the kernels from
    their file and computes W x on the operand file (k = 3 divides neither 10 nor 16)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(10, 16, generator=g) * expand_block_mask(torch.rand(4, 6, generator=g) < 0.5, (10, 16), 3)
    C.write_operands(tmp_path / "ops.npz", w, 3)
    assert numba_driver.main(["--npz", str(tmp_path / "ops.npz"), "--fmt", fmt, "--n", "2",
                                         "--batch", str(batch), "--jit", V.jit.__file__]) == 0
    out = json.loads(capsys.readouterr().out)
    args, _ = numba_driver.operands(np.load(tmp_path / "ops.npz"), fmt, batch)
    ref = w.double().numpy() @ args[3].astype(np.float64)
    assert out["checksum"] == pytest.approx(float(ref.sum()), rel=1e-4, abs=1e-3)




def test_cache_cases_and_rows_hold_the_numba_kernels_at_each_batch(monkeypatch, tmp_path):
    from blockprune_utils.bench import config as B

    cfg = B.get_config("quick", lenet_profile=None, cache_ks=(3,), cache_rounds=(2,), cache_batches=(1, 8), cache_dense=True)
    cases = C.cache_cases(cfg)
    assert [(c.fmt, c.batch) for c in cases] == [("csr", 1), ("bsr", 1), ("numba_csr", 1), ("numba_bsr", 1),
                                                ("numba_csr", 8), ("numba_bsr", 8), ("dense", 1)]
    calls = []

    def fake(npz, fmt, n, timeout=600, batch=1):
        calls.append((fmt, batch))
        counted = {"counted_target": "znver4 (avx2)", "counted_isa": "avx2"} if fmt.startswith("numba") else {}
        return {"fmt": fmt, "n_products": n, **CG.per_product({"Ir": 10 * n, "Dr": 4 * n, "D1mr": n}, n),
                "kernel_functions": "fake", **counted}

    monkeypatch.setattr(C, "run_cachegrind", fake)
    rows = C.cachesim_rows(cases, n=2)
    assert [(r["format"], r["batch"]) for r in rows] == [(c.fmt, c.batch) for c in cases] == calls
    assert {r["method"] for r in rows if r["format"].startswith("numba")} == {C.METHOD["numba"]}
    assert all(r["instructions"] == 10 and r["rows"] == 300 and r["cols"] == 784 for r in rows)
    # what notebook 02 shows of them (its quick profile runs no numba case under valgrind: too slow for CI)
    from blockprune_utils.bench import findings
    from blockprune_utils.plots import bench as BP

    fig, table = BP.cache_misses(rows)
    assert {"numba CSR", "numba BSR"} <= set(table["kernel"]) and set(table["batch"]) == {1, 8}
    caption = BP.cache_misses_caption(table)
    assert "numba" in caption and f"compiled for znver4 (avx2) (the timings ran {rows[0]['isa']} code)" in caption
    assert "numba at batch 8: BSR has 1x the D1 misses of CSR" in findings.cache_sentence(rows)
    assert "counted: the numba kernels as compiled for znver4 (avx2)" in findings.cache_sentence(rows)
    assert all(r["isa"] == B.machine()["isa"] and r["ok"] for r in rows)
    fig.clf()


def test_a_failed_case_becomes_a_marked_row_and_is_tried_again(monkeypatch, tmp_path):
    """A simulation that fails (here: valgrind's SIGILL on the numba cases) gives a row with
    ok=False and the reason, is not stored, and is run again next time; the figure,
    its caption and the sentences of notebook 02 say so instead of stopping."""
    from blockprune_utils.bench import config as B
    from blockprune_utils.bench import findings
    from blockprune_utils.bench.config import bench_store
    from blockprune_utils.plots import bench as BP

    cfg = B.get_config("quick", lenet_profile=None, cache_ks=(3,), cache_rounds=(2,), cache_batches=(1,), cache_dense=True)
    calls = []

    def fake(npz, fmt, n, timeout=600, batch=1, target=None):
        calls.append(fmt)
        if fmt.startswith("numba"):
            raise RuntimeError("cachegrind run failed (exit -4):\nvex amd64->IR: unhandled instruction bytes\n"
                               "Your program just tried to execute an instruction that Valgrind did not recognise")
        return {"fmt": fmt, "n_products": n, **CG.per_product({"Ir": 10 * n, "Dr": 4 * n, "D1mr": n}, n),
                "kernel_functions": "fake", "counted_target": SIMULATED[fmt].counted, "counted_isa": None, "timed_target": None}

    monkeypatch.setattr(C, "run_cachegrind", fake)
    store = bench_store("bench_cache", cfg, C.CACHE_SCHEMA, tmp_path)
    rows = C.cachesim_rows(C.cache_cases(cfg), n=2, store=store)
    bad = [r for r in rows if not r["ok"]]
    assert sorted(r["format"] for r in bad) == ["numba_bsr", "numba_csr"]
    assert all("SIGILL" in r["error"] and r["instructions"] is None and r["isa"] for r in bad)
    assert all(r["ok"] and r["error"] is None and r["instructions"] == 10 for r in rows if r not in bad)
    assert len(store.rows()) == 3  # only the cases that ran
    calls.clear()
    C.cachesim_rows(C.cache_cases(cfg), n=2, store=store)
    assert sorted(calls) == ["numba_bsr", "numba_csr"]  # the failed cases only, again
    gaps = findings.cache_gaps(rows)
    assert gaps.startswith("cachegrind failed for 2 of 5 cases") and "tries them again" in gaps
    assert findings.cache_sentence(rows).startswith("cachegrind, one product of fc1: scipy at batch 1")
    fig, table = BP.cache_misses(rows)
    assert (~table["ok"]).sum() == 2 and "Red crosses: 2 case(s)" in BP.cache_misses_caption(table)
    assert any(len(c.get_offsets()) == 2 for ax in fig.axes for c in ax.collections)  # the two crosses of each panel
    fig.clf()



def test_the_cli_prints_the_cache_rows_and_their_failures(monkeypatch, capsys):
    """``--only cache`` ends normally when cases failed: the table, the counted code and one
    sentence on the failures (no traceback)."""
    from blockprune_utils.bench import cli

    ok = {"matrix": "m", "fmt": "numba_bsr", "batch": 1, "k": 4, "density": 0.03, "instructions": 9.0, "data_refs": 4.0,
          "d1_misses": 1.0, "ll_misses": 0.0, "d1_miss_ratio": 0.25, "ll_miss_ratio": 0.0, "counted_isa": "avx2",
          "counted_target": "znver4 (avx2)", "isa": "avx512", "ok": True, "error": None}
    bad = {**ok, "fmt": "numba_csr", "instructions": None, "ok": False, "error": "RuntimeError: cachegrind run failed"}
    monkeypatch.setattr(cli, "valgrind_path", lambda: "/usr/bin/valgrind")
    monkeypatch.setattr(cli, "cache_rows", lambda cfg, progress=False: [ok, bad])
    assert cli.main(["--quick", "--only", "cache", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "the numba kernels as compiled for znver4 (avx2); the timings ran avx512 code" in out
    assert "cachegrind failed for 1 of 2 cases (numba_csr at k=4, batch 1): RuntimeError: cachegrind run failed" in out


def test_two_run_difference_is_never_negative():
    from blockprune_utils.bench.cachesim.cachegrind import difference

    assert difference({"Ir": 200, "DLmr": 0}, {"Ir": 100, "DLmr": 1, "D1mr": 2}) == {"Ir": 100, "DLmr": 0, "D1mr": 0}
