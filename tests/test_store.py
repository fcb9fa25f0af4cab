"""The results store: declared row schema, unreadable rows moved aside and computed
again, concurrent writers, checkpoints."""
from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from blockprune_utils.infra.provenance import provenance
from blockprune_utils.infra.store import ResultStore, Schema, open_store

SCHEMA = Schema(key=("k", "seed"), values=("acc", "note"))
PROV = provenance("cpu", commit="abc")


def store(root) -> ResultStore:
    return ResultStore("toy", {"lr": 0.1}, SCHEMA, root=root)


def test_put_get_and_schema(tmp_path):
    s = store(tmp_path)
    row = s.put({"k": 2, "seed": 0}, {"acc": 0.5, "note": None}, PROV)
    assert s.get({"k": 2, "seed": 0}) == row and set(row) == set(SCHEMA.columns)
    assert row["commit"] == "abc" and row["config_hash"] == s.hash
    with pytest.raises(ValueError, match=r"missing \['note'\]"):
        s.put({"k": 2, "seed": 1}, {"acc": 0.5}, PROV)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        s.put({"k": 2, "seed": 1}, {"acc": 0.5, "note": 1, "extra": 2}, PROV)
    with pytest.raises(ValueError, match="row key has columns"):
        s.get({"k": 2})
    assert s.frame().columns.tolist() == list(SCHEMA.columns)
    assert open_store("toy", {"lr": 0.2}, SCHEMA, tmp_path) is None


def test_cached_computes_once(tmp_path):
    s = store(tmp_path)
    calls = []
    for _ in range(3):
        s.cached({"k": 1, "seed": 0}, lambda: calls.append(1) or {"acc": 1.0, "note": "x"}, PROV)
    assert len(calls) == 1


@pytest.mark.parametrize("content, why", [
    (b'{"acc": 0.5, "no', "not JSON"),            # truncated by a full disk
    (b"", "not JSON"),                             # empty file
    (b"{}", "not this study's row schema"),        # an empty object
    (b"\xff\xfe\x00", "not JSON"),                 # binary garbage
    (json.dumps({"k": 1, "seed": 0, "test_acc": 0.9}).encode(), "not this study's row schema"),  # older schema
])
def test_unreadable_row_is_moved_aside_and_recomputed(tmp_path, content, why):
    s = store(tmp_path)
    key = {"k": 1, "seed": 0}
    path = s.row_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with pytest.warns(UserWarning, match=rf"unreadable result row {path}.*{why}.*computed again") as rec:
        row = s.cached(key, lambda: {"acc": 0.7, "note": None}, PROV)
    assert len(rec) == 1
    assert row["acc"] == 0.7 and s.get(key) == row
    rejected = list((s.dir / "rejected").iterdir())
    assert [p.read_bytes() for p in rejected] == [content]
    assert len(s.rows()) == 1


def _hammer(args):
    root, worker = args
    s = store(root)
    for i in range(60):
        s.put({"k": i % 3, "seed": 0}, {"acc": float(worker), "note": "x" * 2000}, PROV)
    return worker


def test_concurrent_writers_leave_whole_rows(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_hammer, [(str(tmp_path), w) for w in range(4)])
    s = store(tmp_path)
    rows = s.rows()
    assert len(rows) == 3 and all(r["note"] == "x" * 2000 for r in rows)
    assert not list(tmp_path.rglob("*.tmp")) and not (s.dir / "rejected").exists()


def test_unreadable_checkpoint_is_moved_aside(tmp_path):
    s = store(tmp_path)
    s.save_checkpoint({"run": 1}, {"round": 3})
    assert s.load_checkpoint({"run": 1}) == {"round": 3}
    s.ckpt_path({"run": 1}).write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="cannot be loaded"):
        assert s.load_checkpoint({"run": 1}) is None
    assert s.load_checkpoint({"run": 1}) is None
