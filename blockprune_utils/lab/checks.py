"""Automatic checks of the graded lab (notebook 10): each compares a student's
function with the package's own implementation on fixed and seeded random inputs,
and names the first case and the first entry that differ.

A check returns its points when everything matches and raises :class:`LabCheckError`
otherwise.  :func:`grade` runs every check on the functions found in a namespace
(a notebook's ``globals()``) and never raises: a missing or unfinished function
scores 0 with the reason.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..blocks import block_mask_of, block_scores, expand_block_mask
from ..bsr import bsr_arrays, storage_bytes
from ..data import Split
from ..models import LeNet300100
from ..pruning import prune_fraction
from ..train import TrainConfig, train
from .design import DesignResult


class LabCheckError(AssertionError):
    """A student's result differs from the package's; the message names where."""


# fixed cases: shapes where k divides neither dimension, one dimension, both; LeNet's fc3
SHAPES_K = [((7, 8), 3), ((4, 4), 2), ((5, 5), 5), ((1, 1), 1), ((10, 100), 4), ((3, 7), 4), ((6, 2), 6)]


def _random_cases(seed: int, n: int = 12):
    g = np.random.default_rng(seed)
    return [((int(g.integers(1, 14)), int(g.integers(1, 14))), int(g.integers(1, 7))) for _ in range(n)]


def _weight(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _as_tensor(value, what: str, case: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise LabCheckError(f"{case}: {what} returned {type(value).__name__}, which is not an array ({err})") from None


def _compare(case: str, got, expected: torch.Tensor, what: str, exact: bool = False) -> None:
    got = _as_tensor(got, what, case)
    if tuple(got.shape) != tuple(expected.shape):
        raise LabCheckError(f"{case}: {what} has shape {tuple(got.shape)}, the package gives {tuple(expected.shape)}")
    if expected.dtype == torch.bool:
        bad = got.to(torch.bool) != expected
    elif exact:
        bad = got.to(torch.float64) != expected.to(torch.float64)
    else:
        bad = ~torch.isclose(got.to(torch.float64), expected.to(torch.float64), rtol=1e-5, atol=1e-6)
    if bool(bad.any()):
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        index = where if len(where) != 1 else where[0]
        raise LabCheckError(f"{case}: {what}[{index}] is {_show(got[where])}, the package gives {_show(expected[where])} "
                            f"({int(bad.sum())} of {bad.numel()} entries differ)")


def _show(x: torch.Tensor):
    v = x.item()
    return round(v, 6) if isinstance(v, float) else v


def _call(fn: Callable, case: str, *args):
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as err:  # the student's code failed: say on which input
        raise LabCheckError(f"{case}: your function raised {type(err).__name__}: {err}") from err


def check_block_scores(fn: Callable) -> int:
    """``fn(weight, k)``: mean |w| of every k x k block over its real elements, shape (R, C)."""
    cases = [(s, k, i) for i, (s, k) in enumerate(SHAPES_K)] + [(s, k, 100 + i) for i, (s, k) in enumerate(_random_cases(1))]
    for shape, k, seed in cases:
        w = _weight(shape, seed)
        case = f"weight of shape {shape}, k={k}"
        _compare(case, _call(fn, case, w.clone(), k), block_scores(w, k), "block score")
    return TASKS["1"].points


def _score_cases():
    yield "all scores equal (ties), 4x4 blocks, p=0.25", torch.ones(4, 4), torch.ones(4, 4, dtype=torch.bool), 0.25
    yield "5 alive blocks, p=0.5: round(2.5) = 2", torch.arange(5.0).reshape(1, 5), torch.ones(1, 5, dtype=torch.bool), 0.5
    yield "15 blocks, p=0.1: round(1.5) = 2", torch.rand(3, 5, generator=torch.Generator().manual_seed(3)), \
        torch.ones(3, 5, dtype=torch.bool), 0.1
    dead = torch.ones(4, 6, dtype=torch.bool)
    dead[0, :3] = False
    yield "dead blocks (score 0) are not counted", torch.linspace(0, 1, 24).reshape(4, 6) * dead, dead, 0.2
    yield "p=0 prunes nothing", torch.rand(3, 3, generator=torch.Generator().manual_seed(4)), \
        torch.ones(3, 3, dtype=torch.bool), 0.0
    g = torch.Generator().manual_seed(5)
    for i in range(10):
        shape = tuple(int(v) for v in torch.randint(1, 9, (2,), generator=g))
        scores = torch.randint(0, 4, shape, generator=g).double()  # few values: many ties
        alive = torch.rand(shape, generator=g) < 0.8
        p = float(torch.randint(0, 10, (1,), generator=g)) / 10
        yield f"random case {i}: {shape} blocks, {int(alive.sum())} alive, p={p}", scores * alive, alive, p


def check_prune_fraction(fn: Callable) -> int:
    """``fn(scores, alive, p)``: the new alive mask after pruning round(p * N_alive)
    alive blocks of lowest score, ties to the lower row-major index."""
    for case, scores, alive, p in _score_cases():
        before = alive.clone()
        got = _call(fn, case, scores.clone(), alive, p)
        if not torch.equal(alive, before):
            raise LabCheckError(f"{case}: your function changed the alive mask it was given; return a new mask instead")
        expected = prune_fraction(scores, before, p)
        got_t = _as_tensor(got, "alive mask", case)
        if tuple(got_t.shape) == tuple(expected.shape) and int(got_t.bool().sum()) != int(expected.sum()):
            n = int(before.sum())
            raise LabCheckError(f"{case}: you keep {int(got_t.bool().sum())} blocks alive, the package keeps "
                                f"{int(expected.sum())} (N = {n} alive, round(p*N) = {round(p * n)} pruned)")
        _compare(case, got, expected, "alive")
    return TASKS["2"].points


def check_expand_block_mask(fn: Callable) -> int:
    """``fn(block_mask, shape, k)``: the element mask of ``shape`` (padding cropped)."""
    cases = list(SHAPES_K) + _random_cases(2)
    for i, (shape, k) in enumerate(cases):
        R, C = -(-shape[0] // k), -(-shape[1] // k)
        mask = torch.rand(R, C, generator=torch.Generator().manual_seed(200 + i)) < 0.6
        case = f"block mask {tuple(mask.shape)} -> weight {shape}, k={k}"
        _compare(case, _call(fn, case, mask.clone(), shape, k), expand_block_mask(mask, shape, k), "element mask")
    return TASKS["3"].points


def _bsr_cases():
    for i, (shape, k) in enumerate(list(SHAPES_K) + _random_cases(3)):
        w = _weight(shape, 300 + i)
        R, C = -(-shape[0] // k), -(-shape[1] // k)
        mask = torch.rand(R, C, generator=torch.Generator().manual_seed(400 + i)) < 0.5
        w = w * expand_block_mask(mask, shape, k)
        yield f"weight {shape}, k={k}, {int(mask.sum())} of {mask.numel()} blocks kept", w, k, mask


def check_bsr_arrays(fn: Callable) -> int:
    """``fn(weight, k, block_mask)`` -> ``(data, indices, indptr)``: the kept blocks
    (zero-padded to k x k, row-major order), their block columns, the block-row pointers."""
    for case, w, k, mask in _bsr_cases():
        got = _call(fn, case, w.clone(), k, mask.clone())
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise LabCheckError(f"{case}: return the three arrays (data, indices, indptr), got {type(got).__name__}")
        data, indices, indptr, _ = bsr_arrays(w, k, mask)
        for name, g, e in (("indptr", got[2], indptr), ("indices", got[1], indices), ("data", got[0], data)):
            _compare(case, g, torch.from_numpy(np.ascontiguousarray(e)), name, exact=name != "data")
    return TASKS["4a"].points


def check_bsr_bytes(fn: Callable) -> int:
    """``fn(weight, k, block_mask)``: bytes of BSR storage (values at the weight's dtype,
    padding included, int32 indices and indptr)."""
    cases = list(_bsr_cases())
    w64 = cases[0][1].to(torch.float64)
    cases.append((cases[0][0] + ", float64", w64, cases[0][2], cases[0][3]))
    for case, w, k, mask in cases:
        got = _call(fn, case, w.clone(), k, mask.clone())
        expected = storage_bytes(w, k, mask).bsr
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)) or int(got) != expected:
            raise LabCheckError(f"{case}: you count {got!r} bytes, the package counts {expected}")
    return TASKS["4b"].points


def _toy_data(n: int = 256, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def check_prune_retrain_round(fn: Callable) -> int:
    """``fn(model, k, rates, train_set, epochs)``: prune every layer of ``rates`` (as
    task 2, on the current alive blocks), then retrain in place; pruned weights must
    be exactly zero afterwards and stay zero under further training."""
    torch.manual_seed(0)
    model = LeNet300100()
    data = _toy_data()
    rates = {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
    for rnd, k in ((1, 4), (2, 4)):
        case = f"round {rnd} at k={k}, rates {rates}"
        before = {n: copy.deepcopy(getattr(model, n).weight.detach()) for n in rates}
        alive = {n: block_mask_of(before[n], k) for n in rates}
        expected = {n: prune_fraction(block_scores(before[n], k), alive[n], rates[n]) for n in rates}
        out = _call(fn, case, model, k, dict(rates), data, 1)
        if out is not None and out is not model:
            model = out
        for n in rates:
            w = getattr(model, n).weight.detach()
            _compare(f"{case}, layer {n}", block_mask_of(w, k), expected[n], "alive block")
            kept = expand_block_mask(expected[n], w.shape, k)
            if torch.equal(w[kept], before[n][kept]):
                raise LabCheckError(f"{case}, layer {n}: the kept weights did not change; the round must retrain the model")
    # three more Adam steps, made here: a mask keeps the pruned weights at zero, zeroing them once does not
    train(model, data.subset(slice(0, 96)), TrainConfig(epochs=1, lr=1e-2, batch_size=32, select="last"),
          torch.Generator().manual_seed(1))
    for n in rates:
        w = getattr(model, n).weight.detach()
        pruned = ~expand_block_mask(expected[n], w.shape, 4)
        if bool((w[pruned] != 0).any()):
            where = tuple(int(i) for i in torch.nonzero(pruned & (w != 0))[0])
            raise LabCheckError(f"after 3 further Adam steps, {n}.weight{list(where)} in a pruned block is "
                                f"{float(w[where]):.3g}: pruned weights must stay zero in training (use a mask)")
    return TASKS["5"].points


def check_design_result(result, target_acc: float = 0.97, max_bytes_ratio: float = 0.10) -> int:
    """A :class:`DesignResult` of :func:`~blockprune_utils.lab.design.run_design` that meets the targets."""
    if not isinstance(result, DesignResult):
        raise LabCheckError(f"design_result must be what run_design(design) returns, got {type(result).__name__}")
    problems = []
    if result.bytes_ratio > max_bytes_ratio:
        problems.append(f"BSR bytes are {result.bytes_ratio:.2%} of dense, over the target {max_bytes_ratio:.0%}")
    if result.test_acc < target_acc:
        problems.append(f"test accuracy {result.test_acc:.2%} is under the target {target_acc:.0%}")
    if problems:
        raise LabCheckError("design misses its target: " + "; ".join(problems))
    return TASKS["6"].points


@dataclass(frozen=True)
class Task:
    number: str
    title: str
    points: int
    minutes: int
    name: str  # what the student defines in the notebook
    check: Callable | None  # None: graded by hand


TASKS = {t.number: t for t in (
    Task("1", "block scores with partial edge tiles", 15, 15, "my_block_scores", check_block_scores),
    Task("2", "round(p*N) pruning with the tie rule", 20, 20, "my_prune_fraction", check_prune_fraction),
    Task("3", "block mask -> element mask", 10, 10, "my_expand_block_mask", check_expand_block_mask),
    Task("4a", "BSR arrays", 12, 20, "my_bsr_arrays", check_bsr_arrays),
    Task("4b", "BSR bytes", 8, 10, "my_bsr_bytes", check_bsr_bytes),
    Task("5", "one prune -> retrain round, pruned weights stay zero", 15, 20, "my_prune_retrain_round",
         check_prune_retrain_round),
    Task("6", "design: <= 10% of dense bytes, >= 97% accuracy, 6 epochs", 10, 25, "design_result", check_design_result),
    Task("7", "written questions on the committed figures", 10, 20, "", None),
)}


def run_check(number: str, obj, **kwargs) -> int:
    """Run task ``number``'s check on ``obj``, print the verdict, return the points (raises on a mismatch)."""
    task = TASKS[number]
    points = task.check(obj, **kwargs)
    print(f"task {number} ({task.title}): passed, {points}/{task.points} points")
    return points


def grade(namespace: dict, **design_targets) -> list[dict]:
    """Every automatic check on the names a notebook defined; one row per task."""
    rows = []
    for task in TASKS.values():
        row = {"task": task.number, "title": task.title, "points": task.points, "minutes": task.minutes}
        if task.check is None:
            rows.append({**row, "earned": None, "verdict": "graded by hand"})
            continue
        obj = namespace.get(task.name)
        try:
            if obj is None:
                raise LabCheckError(f"{task.name} is not defined (or is None)")
            kwargs = design_targets if task.check is check_design_result else {}
            earned, verdict = task.check(obj, **kwargs), "passed"
        except NotImplementedError:
            earned, verdict = 0, f"{task.name} is not implemented yet"
        except Exception as err:  # a failed check, or anything the student's code raised
            earned, verdict = 0, f"{type(err).__name__}: {err}"
        rows.append({**row, "earned": earned, "verdict": verdict})
    return rows


GRADES_MARK = "LAB-GRADES:"


def print_grades(namespace: dict, **design_targets) -> None:
    """The autograder's last cell: the grades as one marked JSON line."""
    print(GRADES_MARK + json.dumps(grade(namespace, **design_targets)))
