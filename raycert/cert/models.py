"""Classifiers as plain ``nn.Sequential`` stacks that interval bounds can walk layer by layer.

Normalization is the first layer, so bounds are computed on [0, 1] pixels and see it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from raycert.errors import UserError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; a fixed affine map, bounded exactly."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def cnn7(shape: Sequence[int], num_classes: int, width: int = 64, fc_width: int = 512) -> list:
    """CNN7 with BatchNorm as in the ACERT and Shi et al. (2021) code.

    conv64, conv64, conv128/2, conv128, conv128 (3x3), fc512, fc-classes; BatchNorm and ReLU after
    every layer but the last. Inputs of 64x64 and larger (TinyImageNet) take stride 2 on the fifth
    conv too, as in ``cnn_7layer_bn_imagenet``.
    """
    channels, height, _ = shape
    last_stride = 2 if height >= 64 else 1
    spec = [(width, 1), (width, 1), (2 * width, 2), (2 * width, 1), (2 * width, last_stride)]
    layers: list[nn.Module] = []
    c_in, size = channels, height
    for c_out, stride in spec:
        layers += _conv_bn(c_in, c_out, 3, stride, 1)
        c_in, size = c_out, _conv_out(size, 3, stride, 1)
    layers += [nn.Flatten(), nn.Linear(c_in * size * size, fc_width), nn.BatchNorm1d(fc_width)]
    layers += [nn.ReLU(), nn.Linear(fc_width, num_classes)]
    return layers


def cnn_small(shape: Sequence[int], num_classes: int) -> list:
    """A CPU-sized CNN: two strided 4x4 convs (16, 32 channels) and fc100, all with BatchNorm."""
    channels, height, _ = shape
    size = _conv_out(_conv_out(height, 4, 2, 1), 4, 2, 1)
    return [
        *_conv_bn(channels, 16, 4, 2, 1),
        *_conv_bn(16, 32, 4, 2, 1),
        nn.Flatten(),
        nn.Linear(32 * size * size, 100),
        nn.BatchNorm1d(100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    ]


def mlp(shape: Sequence[int], num_classes: int, hidden: int = 64) -> list:
    """A two-layer perceptron with BatchNorm: the smallest model, for tests and toy data."""
    return [
        nn.Flatten(),
        nn.Linear(math.prod(shape), hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    ]


ARCHITECTURES: dict[str, Callable[..., list]] = {"cnn7": cnn7, "cnn_small": cnn_small, "mlp": mlp}


def build_model(
    name: str,
    shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Sequential:
    """Build architecture ``name`` for inputs of ``shape`` (C, H, W), normalization first."""
    if name not in ARCHITECTURES:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(ARCHITECTURES)}")
    return nn.Sequential(Normalize(mean, std), *ARCHITECTURES[name](tuple(shape), num_classes))


def ibp_init(model: nn.Module) -> None:
    """IBP initialization (Shi et al. 2021): weights ~ N(0, sqrt(2 pi) / fan_in), last layer kept.

    It keeps interval widths from growing with depth at initialization, which is what lets IBP
    training get away with a short warm-up.
    """
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        for layer in weighted[:-1]:
            fan_in = layer.weight[0].numel()
            layer.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in)
