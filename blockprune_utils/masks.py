"""Masks that keep pruned weights exactly zero, through any optimizer.

A mask is a ``torch.nn.utils.parametrize`` parametrization: the module's
``weight`` becomes ``original * mask``.  Whatever an optimizer (momentum, Adam
moments, weight decay) does to ``original``, the weight the network uses is
exactly zero where the mask is zero.  The mask is a buffer, so it travels in the
``state_dict``:

* a model that already carries masks loads a pruned ``state_dict`` with plain
  ``model.load_state_dict(sd)``;
* a fresh, unmasked model loads one with :func:`load_masked_state_dict`, which
  first registers (all-ones) masks where the ``state_dict`` has them;
* :func:`dense_state_dict` gives the plain keys (``fc1.weight`` with the zeros
  baked in) for code that knows nothing of masks.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from .blocks import as_matrix

MASK_SUFFIX = ".parametrizations.weight.0.mask"


class WeightMask(nn.Module):
    """Parametrization ``W -> W * mask`` with the mask kept as a buffer."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def is_masked(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, WeightMask) for p in module.parametrizations.weight
    )


def get_mask(module: nn.Module) -> torch.Tensor:
    """The element mask of a module's weight (all ones when it has none)."""
    if is_masked(module):
        return next(p for p in module.parametrizations.weight if isinstance(p, WeightMask)).mask
    return torch.ones_like(module.weight)


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Give ``module.weight`` the element ``mask`` (same shape as the weight, or its
    2-D matrix view for convolutions).  The underlying parameter is zeroed where the
    mask is zero, so stale values cannot leak back if the mask is ever removed."""
    weight = module.weight
    mask = mask.to(dtype=weight.dtype, device=weight.device)
    if mask.shape != weight.shape:
        if mask.shape == as_matrix(weight).shape:
            mask = mask.reshape(weight.shape)
        else:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit weight of shape {tuple(weight.shape)}")
    if is_masked(module):
        get_mask(module).copy_(mask)
        original = module.parametrizations.weight.original
    else:
        parametrize.register_parametrization(module, "weight", WeightMask(mask), unsafe=False)
        original = module.parametrizations.weight.original
    with torch.no_grad():
        original.mul_(mask)


def masked_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if is_masked(module):
            yield name, module


def density(model: nn.Module, names=None) -> float:
    """The fraction of weights kept (mask 1) over the named modules together, or over
    every masked module when ``names`` is None; 1.0 when there are none.  The one
    density of the package: a study's total density is this over its pruned layers."""
    mods = dict(model.named_modules())
    if names is None:
        chosen = [m for _, m in masked_modules(model)]
    else:
        names = list(names)
        missing = [n for n in names if not hasattr(mods.get(n), "weight")]
        if missing:
            raise KeyError(f"model has no layer(s) {missing}; layers with weights: "
                           f"{[n for n, m in mods.items() if hasattr(m, 'weight')]}")
        chosen = [mods[n] for n in names]
    total = sum(m.weight.numel() for m in chosen)
    kept = sum(float(get_mask(m).sum()) for m in chosen)
    return kept / total if total else 1.0


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake the masks into plain ``weight`` parameters (zeros stay zeros).

    Safe on a ``copy.deepcopy`` of a masked model: a deep copy shares the dynamic
    ``Parametrized*`` class with its original, and torch's removal deletes the
    ``weight`` property from that class, which would break the original.  Each
    module gets a private copy of the class first."""
    for _, module in list(masked_modules(model)):
        cls = module.__class__
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain state_dict (``x.weight`` keys, masked entries zero) of a masked model."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith(MASK_SUFFIX):
            continue
        if key.endswith(".parametrizations.weight.original"):
            prefix = key[: -len(".parametrizations.weight.original")]
            out[prefix + ".weight"] = value * model.state_dict()[prefix + MASK_SUFFIX]
        else:
            out[key] = value
    return out


def load_masked_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
    """Load a (possibly masked) state_dict into a model, registering the masks it has."""
    mods = dict(model.named_modules())
    for key, value in state_dict.items():
        if key.endswith(MASK_SUFFIX):
            name = key[: -len(MASK_SUFFIX)]
            if name not in mods:
                raise KeyError(f"state_dict has a mask for {name!r}, which the model does not have")
            if not is_masked(mods[name]):
                set_mask(mods[name], torch.ones_like(value))
    return model.load_state_dict(state_dict, strict=strict)


def compact_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of a (masked) model's state_dict with the masks as bool: the one
    checkpoint format of the studies (load it with :func:`load_masked_state_dict`,
    which copies the bool masks back into the float mask buffers)."""
    return {k: v.detach().to("cpu", copy=True).bool() if k.endswith(MASK_SUFFIX) else v.detach().to("cpu", copy=True)
            for k, v in model.state_dict().items()}
