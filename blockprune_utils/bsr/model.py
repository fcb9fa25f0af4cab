"""The public conversion of a pruned model to BSR layers: :func:`to_bsr_model`, whose
backends are named per layer or, with ``"auto"``, measured (:mod:`.auto`) before
:func:`.layers.convert_model` swaps the layers."""
from __future__ import annotations

from torch import nn

from .auto import auto_layer_backends
from .layers import convert_model


def to_bsr_model(model: nn.Module, k, backend="torch", layers=None, example=None, auto_options=None) -> nn.Module:
    """A copy of ``model`` in eval mode whose (masked) Linear layers are BSRLinear.

    Works on any ``nn.Module``: ``k`` is one block size or a dict layer-name -> k;
    ``backend`` one of :data:`BACKENDS`, ``"auto"``, or a dict layer-name -> backend.
    ``layers`` defaults to every Linear layer.  Masks are read from the pruned
    weights' zero pattern at block granularity.  A layer held in several places (a
    shared module) is swapped everywhere for one BSR layer.  A layer that some module
    reads the weight of directly (a weight tied to an embedding, a custom module
    reading ``self.fc.weight``) stays dense, and one warning names each such layer
    and the reason (:mod:`.swap`).  The output projection of an
    ``nn.MultiheadAttention`` is converted, the attention module around it replaced by
    a :class:`~.attention.BSRMultiheadAttention` that calls it; torch's fused
    transformer inference paths, which read the weights too, are switched off in
    the copy.  ``backends_of(result)`` says which
    backend each layer got.

    ``backend="auto"`` picks each layer's backend by a short measurement
    (:func:`~.auto.auto_choice`) at the number of rows that reach the layer when the
    model runs on ``example`` (an input tensor, or a shape for a float32 normal
    one; ``auto_options``: keyword arguments of the measurement, such as a longer
    ``budget_s`` on a busy machine); a backend that cannot hold a layer
    (:func:`unsupported`) is never picked, while naming such a backend explicitly is
    a ValueError.  ``backend="fused"``
    (or a dict giving every layer ``"fused"``) returns instead a :class:`FusedMLP` of
    the whole model, after checking on a random input that the model's forward is
    Linear, ReLU, ..., Linear over ``layers`` (a ValueError names the deviation
    otherwise).
    """

    def measure(model_copy: nn.Module, ks: dict, names: list) -> dict[str, str]:
        return auto_layer_backends(model_copy, ks, example, names, **(auto_options or {}))

    return convert_model(model, k, backend, layers, measure=measure)
