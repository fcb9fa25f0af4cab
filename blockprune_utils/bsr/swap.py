"""Where in an arbitrary ``nn.Module`` a Linear layer can be swapped for a BSR layer.

A :class:`~.layers.BSRLinear` computes ``x W^T + b`` from its sparse form and has
no dense ``weight``.  That is safe wherever the layer is only *called*.  It is not
safe where some module reads the layer's ``weight`` (or ``bias``) itself:
``nn.MultiheadAttention`` passes ``out_proj.weight`` to the attention function,
and a weight tied to another module (a language-model head sharing the embedding)
would lose the tie.  :func:`swap_plan` finds, for each Linear layer:

* every place (parent module, attribute name) that holds it - a module shared by
  two parents is swapped in both places, for the same BSR layer;
* the reason it must stay dense, if any: an ancestor whose source reads
  ``.<name>.weight`` / ``.<name>.bias``, or a weight parameter owned by another
  module too.

The output projection of an ``nn.MultiheadAttention`` is the one such layer that is
swapped all the same: the attention module around it is replaced by a
:class:`~.attention.BSRMultiheadAttention`, which calls ``out_proj`` as a module
(``Slot.attention``; where :func:`~.attention.attention_supported` says it can).

Reads that happen only on one of torch's inference fast paths
(``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``) are not a reason: those
paths are switched off in the converted copy with torch's own switch
(:data:`FAST_PATH_SWITCHES`), and the ordinary path calls the layers.  The source
check is a text search, so it errs on the safe side: a false alarm leaves a layer
dense, never wrong.
"""
from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field

from torch import nn

from .attention import attention_supported

# module type -> (attribute, value) that turns off its fused inference path, the one
# path on which it reads its Linear layers' weights directly
FAST_PATH_SWITCHES = {nn.TransformerEncoderLayer: ("activation_relu_or_gelu", 0),
                      nn.TransformerEncoder: ("use_nested_tensor", False)}


@dataclass
class Slot:
    """One Linear layer of a model: its name, the places that hold it, and why it must stay dense (or None)."""

    name: str
    module: nn.Module
    places: list = field(default_factory=list)  # (parent module, attribute name, full name)
    reason: str | None = None
    attention: nn.Module | None = None  # the nn.MultiheadAttention to replace, for its out_proj


# methods that set weights up rather than compute with them: reads there are no reason to keep a layer dense
SET_UP = frozenset({"__init__", "__setstate__", "reset_parameters", "_reset_parameters", "init_weights", "_init_weights",
                    "extra_repr", "_load_from_state_dict"})


@functools.lru_cache(maxsize=None)
def _class_source(cls) -> str:
    """The source of the methods ``cls`` itself defines, set-up methods aside ("" where it has none to read)."""
    parts = []
    for name, obj in vars(cls).items():
        fn = obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj
        if name in SET_UP or not inspect.isfunction(fn):
            continue
        try:
            parts.append(inspect.getsource(fn))
        except (OSError, TypeError):  # built in, or created at run time
            continue
    return "\n".join(parts)


def _reads_child(cls, child: str) -> bool:
    """Whether the source of ``cls`` or of a base reads ``.<child>.weight`` or ``.<child>.bias`` (nn.Module
    and the torch classes of :data:`FAST_PATH_SWITCHES` aside)."""
    pattern = re.compile(rf"\.\s*{re.escape(child)}\s*\.\s*(weight|bias)\b")
    skip = (object, nn.Module, *FAST_PATH_SWITCHES)
    return any(pattern.search(_class_source(c)) for c in cls.__mro__ if c not in skip)


def _weight_param(module: nn.Module):
    """The parameter that stores a (possibly masked) Linear weight."""
    if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
        return module.parametrizations.weight.original
    return module.weight


def _owners(model: nn.Module) -> dict[int, set[str]]:
    """id(parameter) -> names of the modules that hold it directly (a masked weight's
    holder is its parametrization list, reported as the layer itself)."""
    out: dict[int, set[str]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            holder = name.removesuffix(".parametrizations.weight")
            out.setdefault(id(p), set()).add(holder)
    return out


def _ancestors(model: nn.Module, full_name: str):
    """(name, module) of every module above ``full_name``, the root first."""
    parts = full_name.split(".")[:-1]
    yield "", model
    module = model
    for i, part in enumerate(parts):
        module = module._modules[part]
        yield ".".join(parts[: i + 1]), module


def swap_plan(model: nn.Module, names) -> dict[str, Slot]:
    """A :class:`Slot` per named Linear layer of ``model``."""
    by_id: dict[int, Slot] = {}
    slots: dict[str, Slot] = {}
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise TypeError(f"layer {name!r} is a {type(module).__name__}, not nn.Linear")
        slots[name] = by_id.setdefault(id(module), Slot(name, module))
    for pname, parent in model.named_modules(remove_duplicate=False):
        for child, module in parent._modules.items():
            slot = by_id.get(id(module))
            if slot is not None:
                slot.places.append((parent, child, f"{pname}.{child}" if pname else child))
    owners = _owners(model)
    for slot in by_id.values():
        others = sorted(owners.get(id(_weight_param(slot.module)), set()) - {p[2] for p in slot.places})
        if others:
            slot.reason = f"its weight is shared with {others}"
            continue
        for parent, child, full in slot.places:
            for aname, ancestor in _ancestors(model, full):
                kind = type(ancestor)
                if ancestor is parent and child == "out_proj" and attention_supported(parent):
                    slot.attention = parent
                elif _reads_child(kind, child):
                    where = repr(aname) if aname else "the model"
                    slot.reason = f"{where} ({kind.__name__}) reads {child}.weight directly"
                    break
            if slot.reason:
                break
    return slots


def switch_off_fast_paths(model: nn.Module) -> list[str]:
    """Turn off, in place, the fused inference paths that read Linear weights directly; returns the modules changed."""
    changed = []
    for name, module in model.named_modules():
        for kind, (attr, value) in FAST_PATH_SWITCHES.items():
            if isinstance(module, kind):
                setattr(module, attr, value)
                changed.append(name)
    return changed


def places_of(model: nn.Module, module: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every (parent, attribute name) of ``model`` that holds ``module``."""
    return [(parent, child) for _, parent in model.named_modules(remove_duplicate=False)
            for child, m in parent._modules.items() if m is module]
