"""The package's imports follow the data flow: every import, at module level or
inside a function, points down the layers below, and no modules import each other
in a circle."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "blockprune_utils"
# bottom first; a module may import its own layer and the layers before it
LAYERS = (("infra",), ("blocks", "pruning", "masks", "schedule"), ("models", "data", "train"), ("bsr",), ("studies",),
          ("bench",), ("sweep",), ("plots",), ("pretrained",), ("lab",), ("book",))
KNOWN_CIRCLES = ()  # pairs of modules allowed to import each other (none)


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (names relative to the package; '' is the package)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        here = [p for p in name.split(".") if p] if is_pkg else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[: len(here) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("blockprune_utils"):
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                target = ".".join(base + [alias.name])
                target = target if target in mods else ".".join(base)
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    graph[name].add(target)
    return graph


def layer(module: str) -> int | None:
    top = module.split(".")[0]
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def rank(module: str) -> int:
    """The layer of ``module``; the package itself (its re-exports) and a module of no layer rank above all."""
    r = layer(module) if module else None
    return len(LAYERS) if r is None else r


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m and layer(m) is None] == []


def test_imports_point_down_the_layers():
    up = [(a, b) for a, bs in import_graph().items() for b in bs if a and rank(b) > rank(a)]
    assert up == [], f"imports that point up the data flow: {up}"


def test_no_import_circle():
    packages = {m for m, (_, is_pkg) in _modules().items() if is_pkg}  # a package re-exports what is below it
    graph = {a: {b for b in bs if b not in packages and not any({a, b} <= c for c in KNOWN_CIRCLES)}
             for a, bs in import_graph().items() if a not in packages}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"modules that import each other in a circle: {' -> '.join(err.args[1])}")


@pytest.mark.parametrize("module", ["studies.base", "infra.tasks"])
def test_the_study_skeleton_and_task_runner_know_no_study(module):
    assert not [b for b in import_graph()[module] if b.startswith(("studies.lenet", "studies.cifar"))]
