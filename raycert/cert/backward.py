"""The backward linear pass of CROWN-style bounds: one linear function of a layer's input,
carried back through the relaxed network to the input box, where it is concretized.

A lower bound of ``A h + b`` goes back layer by layer: through an affine layer ``A <- A W`` and
``b <- b + A bias``; through a ReLU whose input lies in ``[l, u]``, positive coefficients take
the lower line and negative ones the upper line (``relu_back``). A stable ReLU is exact
(identity for ``l >= 0``, zero for ``u <= 0``); an unstable one (``l < 0 < u``) is bounded above
by the chord ``u (z - l) / (u - l)`` and below by ``alpha z``, with CROWN's adaptive slope
(``alpha = 1`` when ``u > -l`` else 0) or given ``Slopes`` (any in [0, 1] is sound). At the
input the box gives ``A center - |A| radius + b`` (``concretize``).

BatchNorm is affine per channel: running statistics in eval mode, or in train mode the clean
batch's statistics (``bn_stats`` from ``bounds.clean_forward``; computed from ``x`` if missing),
folded into the weights of a Conv2d or Linear right before it. Conv2d and AvgPool2d map their
coefficients back through their transposes (for Conv2d padding other than zeros, and for
AvgPool2d, by autograd's vector-Jacobian product of the layer without bias).
``raycert.cert.linear`` builds CROWN-IBP and CROWN on this; ``raycert.cert.slopes`` optimizes
the slopes through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raycert.cert.bounds import (
    BATCHNORM,
    BatchStats,
    IntervalPass,
    batchnorm_affine,
    check_supported,
    clean_forward,
    input_box,
    propagate,
)
from raycert.cert.models import Normalize

# Largest backward coefficient tensor (bytes) held at once; bigger passes run in chunks.
MEMORY_BUDGET = 256 * 2**20
FEW_CHANNELS = 3  # float32 Conv2d with at most this many inputs maps back without oneDNN

Bounds = tuple[Tensor, Tensor]  # (lower, upper) of a ReLU's input, shape (batch, *neurons)
Slopes = dict[int, Tensor]  # lower slopes per ReLU layer index: (batch, C-1, *neurons) in [0, 1]


@dataclass
class Network:
    """What the backward passes need from the hidden layers ``model[:-1]`` for one batch."""

    layers: list[nn.Module]
    shapes: list[torch.Size]  # input shape of each hidden layer (no batch), then its output
    affine: dict[int, tuple[Tensor, Tensor]]  # (scale, shift) of Normalize and BatchNorm layers
    relu_bounds: dict[int, Bounds]  # input bounds of each ReLU, by layer index
    # (weight, bias) of a Conv2d or Linear with the BatchNorm after it folded in; a BatchNorm
    # without ``affine`` entry is such a folded one, and the backward pass steps over it.
    weights: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    # Each ReLU's relaxation, with the bounds it was computed from (``relaxation``).
    relaxed: dict[int, tuple[Bounds, Relaxation]] = field(default_factory=dict, repr=False)

    def relaxation(self, index: int) -> Relaxation:
        """The relaxation of the ReLU at ``index`` for its current bounds, computed once: a
        slope optimization runs several passes over the same bounds."""
        bounds = self.relu_bounds[index]
        known = self.relaxed.get(index)
        if known is None or known[0] is not bounds:
            known = (bounds, Relaxation(*bounds))
            self.relaxed[index] = known
        return known[1]


class Relaxation:
    """The lines of a ReLU whose input lies in [lower, upper], per neuron (batch, *neurons).

    With l = min(lower, 0) and u = max(upper, 0), the upper line u (z - l) / (u - l) is the
    chord of an unstable neuron, the identity of an active one (l = 0) and zero of an inactive
    one (u = 0); a neuron fixed at 0 gets the zero line. What a pass does not use (the adaptive
    lower slopes where slopes are given) is not computed."""

    def __init__(self, lower: Tensor, upper: Tensor) -> None:
        low_end, up_end = lower.clamp(max=0), upper.clamp(min=0)
        self.up_slope = up_end / (up_end - low_end).clamp(min=torch.finfo(lower.dtype).tiny)
        self.up_shift = -self.up_slope * low_end  # > 0 for unstable neurons only

    @cached_property
    def unstable(self) -> Tensor:
        """lower < 0 < upper."""
        return self.up_shift > 0

    @cached_property
    def adaptive(self) -> Tensor:
        """CROWN's lower slopes: 1 where u > -l, that is where the chord is steeper than 1/2
        (active neurons too), else 0."""
        return (self.up_slope > 0.5).to(self.up_slope.dtype)


def layer_shapes(layers: list[nn.Module], x: Tensor) -> list[torch.Size]:
    """Input shape of each layer and the last output shape, from one sample (BatchNorm keeps
    its shape, so it is skipped: a train-mode BatchNorm1d refuses a batch of one)."""
    h = x[:1]
    shapes = [h.shape[1:]]
    with torch.no_grad():
        for layer in layers:
            if not isinstance(layer, BATCHNORM):
                h = layer(h)
            shapes.append(h.shape[1:])
    return shapes


def network(model: nn.Sequential, x: Tensor, stats: BatchStats) -> Network:
    """The hidden layers of ``model`` for backward passes over batch ``x``: affine maps read
    from Normalize and BatchNorm (``stats`` for train-mode ones), and each BatchNorm right after
    a Conv2d or Linear folded into its weights, which saves the backward rows a pass over it."""
    layers = list(model[:-1])
    shapes = layer_shapes(layers, x)
    affine: dict[int, tuple[Tensor, Tensor]] = {}
    weights: dict[int, tuple[Tensor, Tensor]] = {}
    for index, layer in enumerate(layers):
        probe = x.new_zeros(1, *shapes[index])
        if isinstance(layer, BATCHNORM):
            scale, shift = batchnorm_affine(layer, probe, stats.get(index))
            before = layers[index - 1] if index else None
            if isinstance(before, nn.Conv2d | nn.Linear):
                scale, shift = scale.flatten(), shift.flatten()
                weight = before.weight * scale.view(-1, *[1] * (before.weight.dim() - 1))
                bias = shift if before.bias is None else before.bias * scale + shift
                weights[index - 1] = (weight, bias)
            else:
                affine[index] = (scale, shift)
        elif isinstance(layer, Normalize):
            affine[index] = (1 / layer.std, -layer.mean / layer.std)
    return Network(layers, shapes, affine, {}, weights)


def by_autograd(fn: Callable[[Tensor], Tensor], coeffs: Tensor, in_shape: torch.Size) -> Tensor:
    """``coeffs @ J`` for the linear map ``fn`` (its vector-Jacobian product), rows batched;
    differentiable in ``coeffs`` when they require grad (optimized slopes)."""
    rows = coeffs.shape[:2]
    with torch.enable_grad():
        z = coeffs.new_zeros(rows.numel(), *in_shape, requires_grad=True)
        out = fn(z)
        (grad,) = torch.autograd.grad(
            out, z, coeffs.reshape(out.shape), create_graph=coeffs.requires_grad
        )
    return grad.view(*rows, *in_shape)


def conv_transpose(
    layer: nn.Conv2d, coeffs: Tensor, in_shape: torch.Size, weight: Tensor | None = None
) -> Tensor:
    """``coeffs`` (batch, rows, C_out, H_out, W_out) mapped back through the conv's weights
    (``weight`` in their place where given: the BatchNorm after it folded in)."""
    weight = layer.weight if weight is None else weight
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return by_autograd(lambda z: layer._conv_forward(z, weight, None), coeffs, in_shape)
    rows = coeffs.shape[:2]
    flat = coeffs.reshape(rows.numel(), *coeffs.shape[2:])
    out_pad = []
    for dim in range(2):
        size = (flat.shape[2 + dim] - 1) * layer.stride[dim] - 2 * layer.padding[dim]
        size += layer.dilation[dim] * (layer.kernel_size[dim] - 1) + 1
        out_pad.append(in_shape[1 + dim] - size)
    cpu32 = flat.device.type == "cpu" and flat.dtype == torch.float32
    if cpu32 and in_shape[0] <= FEW_CHANNELS and layer.groups == 1 and len(flat):
        # Into an image's few channels in float32 on a CPU, PyTorch's own kernel beats the
        # oneDNN one that conv_transpose2d picks (oneDNN wins into many channels, and they tie
        # in float64: benchmarks/bounds.py (f) times both). It fails on no rows, which
        # conv_transpose2d maps to none.
        back = torch.ops.aten.slow_conv_transpose2d(
            flat,
            weight,
            list(layer.kernel_size),
            None,
            list(layer.stride),
            list(layer.padding),
            out_pad,
            list(layer.dilation),
        )
    else:
        back = F.conv_transpose2d(
            flat,
            weight,
            None,
            layer.stride,
            layer.padding,
            tuple(out_pad),
            layer.groups,
            layer.dilation,
        )
    return back.view(*rows, *in_shape)


def relu_back(
    coeffs: Tensor, bias: Tensor, relaxation: Relaxation, slope: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Relax a ReLU for a lower bound of ``coeffs @ relu(z) + bias`` given its ``relaxation``.

    ``slope`` (batch, rows, *neurons), values in [0, 1], sets the lower lines of unstable
    neurons per row (``raycert.cert.slopes``); without it, CROWN's adaptive 0 or 1."""
    up_slope = relaxation.up_slope[:, None]
    if slope is None:
        low_slope = relaxation.adaptive[:, None]
    else:  # stable neurons are exact: their lower line is the upper one
        low_slope = torch.where(relaxation.unstable[:, None], slope, up_slope)
    negative = coeffs.clamp(max=0)
    bias = bias + torch.einsum("bri,bi->br", negative.flatten(2), relaxation.up_shift.flatten(1))
    # Positive coefficients take the lower line, the others the upper one: the same values as
    # ``coeffs * where(coeffs > 0, low, up)``, without a broadcast select (slow on a CPU).
    return negative * up_slope + (coeffs - negative) * low_slope, bias


def backward(
    net: Network,
    stop: int,
    coeffs: Tensor,
    bias: Tensor,
    slopes: Slopes | None = None,
) -> tuple[Tensor, Tensor]:
    """Carry ``coeffs @ h + bias`` (``h`` the input of layer ``stop``) back to the input, with
    the ReLUs' lower ``slopes`` by layer index where given."""
    for index in reversed(range(stop)):
        layer, in_shape = net.layers[index], net.shapes[index]
        if isinstance(layer, nn.ReLU):
            slope = None if slopes is None else slopes[index]
            coeffs, bias = relu_back(coeffs, bias, net.relaxation(index), slope)
        elif isinstance(layer, BATCHNORM) and index not in net.affine:
            continue  # folded into the Conv2d or Linear before it (``Network.weights``)
        elif index in net.affine:
            scale, shift = net.affine[index]
            shift = shift.expand(1, *in_shape)[0]
            bias = bias + (coeffs * shift).flatten(2).sum(-1)
            coeffs = coeffs * scale.expand(1, *in_shape)[0]
        elif isinstance(layer, nn.Linear | nn.Conv2d):
            weight, layer_bias = net.weights.get(index, (layer.weight, layer.bias))
            if isinstance(layer, nn.Linear):
                if layer_bias is not None:
                    bias = bias + coeffs @ layer_bias
                coeffs = coeffs @ weight
            else:
                if layer_bias is not None:
                    bias = bias + torch.einsum("brchw,c->br", coeffs, layer_bias)
                coeffs = conv_transpose(layer, coeffs, in_shape, weight)
        elif isinstance(layer, nn.Flatten):
            coeffs = coeffs.reshape(*coeffs.shape[:2], *in_shape)
        else:  # AvgPool2d
            coeffs = by_autograd(layer, coeffs, in_shape)
    return coeffs, bias


def concretize(coeffs: Tensor, bias: Tensor, center: Tensor, radius: Tensor) -> Tensor:
    """Lower bound of ``coeffs @ x + bias`` over the box (center, radius): (batch, rows)."""
    flat = coeffs.flatten(2)
    lower = torch.einsum("bri,bi->br", flat, center.flatten(1))
    return lower - torch.einsum("bri,bi->br", flat.abs(), radius.flatten(1)) + bias


def chunk(total: int, row_bytes: int) -> int:
    """How many of ``total`` items fit ``MEMORY_BUDGET`` at ``row_bytes`` each (at least 1)."""
    return max(1, min(total, MEMORY_BUDGET // max(1, row_bytes)))


def interval_pass(
    model: nn.Sequential, x: Tensor, eps: Tensor | float, bn_stats: BatchStats | None
) -> tuple[Network, Tensor, Tensor, IntervalPass]:
    """IBP through the hidden layers: the network with interval ReLU bounds, the input box
    (center, radius) and the box at the last layer's input."""
    check_supported(model)
    if model.training and bn_stats is None and any(isinstance(m, BATCHNORM) for m in model):
        with torch.no_grad():
            _, bn_stats = clean_forward(model, x)
    stats = dict(bn_stats or {})
    box = propagate(model, x, eps, bn_stats=stats, collect_preacts=True)
    net = network(model, x, stats)
    relu_at = [i for i, m in enumerate(net.layers) if isinstance(m, nn.ReLU)]
    for index, (c, r) in zip(relu_at, box.preacts, strict=True):
        net.relu_bounds[index] = (c - r, c + r)
    center, radius = input_box(x, eps)
    return net, center, radius, box


def subset(net: Network, rows: Tensor | slice) -> Network:
    """The network with the ReLU bounds of batch ``rows`` only."""
    bounds = {i: (lo[rows], up[rows]) for i, (lo, up) in net.relu_bounds.items()}
    return Network(net.layers, net.shapes, net.affine, bounds, net.weights)


def every_or(rows: Tensor, count: int) -> Tensor | slice:
    """``rows`` as an index into ``count`` batch rows: ``slice(None)`` where it is all of them
    in order (the common case of a search pass), so indexing takes views, not copies."""
    if len(rows) == count and torch.equal(rows, torch.arange(count, device=rows.device)):
        return slice(None)
    return rows
