"""The study's networks: LeNet-300-100 and the CIFAR form of ResNet18; and a small
transformer on MNIST rows, the "your own model" example."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

# The layers that block pruning acts on, with the authors' per-round rates.
LENET_RATES = {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
LENET_LAYERS = tuple(LENET_RATES)  # ("fc1", "fc2", "fc3"): every module that names LeNet's layers imports these
RESNET_HEAD_RATES = {"head.0": 0.2, "head.2": 0.2}


class LeNet300100(nn.Module):
    """784-300-100-10 MLP with ReLU.

    ``authors_softmax=True`` ends the forward in a softmax, as the authors' code does
    before feeding CrossEntropyLoss (a double softmax); the default returns logits.
    """

    def __init__(self, authors_softmax: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)
        self.authors_softmax = authors_softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        x = self.fc3(x)
        return torch.softmax(x, dim=1) if self.authors_softmax else x


class ResNet18Cifar(nn.Module):
    """torchvision's resnet18 in its CIFAR form: 3x3 stride-1 stem, no max-pool, and
    the authors' head 512 -> 300 -> ReLU -> 10 (``head.0`` and ``head.2`` are the two
    Linear layers).  torchvision's global average pool equals the authors'
    ``avg_pool2d(4)`` on 32x32 inputs."""

    def __init__(self, num_classes: int = 10, hidden: int = 300, authors_softmax: bool = False):
        super().__init__()
        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.backbone = net
        layers = [nn.Linear(512, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)]
        if authors_softmax:
            layers.append(nn.Softmax(dim=1))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def conv_layer_names(self) -> list[str]:
        return [f"backbone.{n}" for n, m in self.backbone.named_modules() if isinstance(m, nn.Conv2d)]


class RowTransformer(nn.Module):
    """A small transformer encoder that reads an image as a sequence of its rows
    (MNIST: 28 tokens of 28 pixels): a Linear embedding of each row plus a learnt
    position embedding, ``layers`` ``nn.TransformerEncoderLayer`` (batch first,
    pre-norm), the mean over tokens, and a Linear ``head``.  Takes (batch, rows,
    cols) or (batch, 1, rows, cols) inputs."""

    def __init__(self, rows: int = 28, cols: int = 28, d_model: int = 64, nhead: int = 4, dim_feedforward: int = 256,
                 layers: int = 2, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(cols, d_model)
        self.position = nn.Parameter(torch.zeros(rows, d_model))
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *x.shape[-2:])
        h = self.encoder(self.embed(x) + self.position)
        return self.head(self.norm(h.mean(dim=1)))
