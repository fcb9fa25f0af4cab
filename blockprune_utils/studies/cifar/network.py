"""The network of the CIFAR-10 study and the device it runs on: ResNet18Cifar built
from a seed, the layers each experiment prunes or freezes, the head alone on cached
features, and the device's settings (cuDNN autotuning, TF32, bf16 autocast)."""
from __future__ import annotations

import contextlib
import copy
import functools

import torch
from torch import nn

from ...infra.seeds import derive_seed
from ...models import ResNet18Cifar
from .config import HEAD_LAYERS, ConvPruning, ModelConfig


def build_model(mcfg: ModelConfig, seed: int, device) -> ResNet18Cifar:
    """A freshly initialised ResNet18Cifar (initial weights drawn from
    ``derive_seed("init", seed)``; the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", seed))
        model = ResNet18Cifar(hidden=mcfg.hidden, authors_softmax=mcfg.authors_softmax)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if mcfg.channels_last else model


def conv_prune_layers(model: ResNet18Cifar, cfg: ConvPruning) -> list[str]:
    """The layers experiment B prunes: every conv but the stem (unless ``include_stem``),
    the 1x1 shortcuts with ``include_shortcuts``, the head's two Linear layers with
    ``include_head``."""
    names = [n for n in model.conv_layer_names()
             if (cfg.include_stem or n != "backbone.conv1") and (cfg.include_shortcuts or "downsample" not in n)]
    return names + (list(HEAD_LAYERS) if cfg.include_head else [])


def weight_layers(model: nn.Module) -> list[str]:
    """The names of every conv and linear layer of ``model`` (the layers of a row's ``density_model``)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def freeze_backbone(model: ResNet18Cifar) -> None:
    """The authors' set-up for head pruning: conv and BN parameters get no gradient
    (BN running statistics still update in train mode)."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)


class FeatureHead(nn.Module):
    """A copy of a ResNet18Cifar's head that reads 512-d features; its Linear layers
    keep the whole network's names (``head.0``, ``head.2``)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = copy.deepcopy(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


@functools.lru_cache(maxsize=4)
def layout(hidden: int) -> ResNet18Cifar:
    """A ResNet18Cifar without weights (on the meta device): its layer names."""
    with torch.device("meta"):
        return ResNet18Cifar(hidden=hidden)


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` (or None): CUDA when available, else the CPU; anything else as given."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def setup_device(device="auto") -> torch.device:
    """Resolve ``device``; on CUDA, let cuDNN pick the fastest convolution algorithms
    and allow TF32 in float32 matrix products and convolutions."""
    device = resolve_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    return device


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; otherwise nothing."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def amp_label(device: torch.device, amp: bool) -> str:
    """The ``amp`` column of a row: ``"bf16"`` or ``"off"``."""
    return "bf16" if amp and device.type == "cuda" else "off"
