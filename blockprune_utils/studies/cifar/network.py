"""The network of the CIFAR-10 study: ResNet18Cifar, built from a seed, and the
layers each experiment prunes or freezes."""
from __future__ import annotations

import functools

import torch
from torch import nn

from ...infra.seeds import derive_seed
from ...models import ResNet18Cifar
from ...schedule import total_density
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


def freeze_backbone(model: ResNet18Cifar) -> None:
    """The authors' set-up for head pruning: conv and BN parameters get no gradient
    (BN running statistics still update in train mode)."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)


def model_density(model: nn.Module) -> float:
    """Kept fraction of all conv and linear weights of the model."""
    return total_density(model, [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))])


@functools.lru_cache(maxsize=4)
def layout(hidden: int) -> ResNet18Cifar:
    """A ResNet18Cifar without weights (on the meta device): its layer names."""
    with torch.device("meta"):
        return ResNet18Cifar(hidden=hidden)
