"""The device a CIFAR run trains on, and its settings."""
from __future__ import annotations

import contextlib

import torch


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
