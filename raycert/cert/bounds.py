"""Interval bound propagation (IBP) for ``nn.Sequential`` classifiers, in center-radius form.

A box is held as ``center`` and ``radius`` tensors. An affine layer maps the center through the
layer and the radius through its absolute weights, so a bound costs about two forward passes.
The last ``Linear`` is merged with the specification ``e_y - e_t`` before bounding: margins
``f_y - f_t`` are bounded directly, which is tighter than subtracting bounds on the logits.

BatchNorm is an affine map per channel: with the running statistics in eval mode, and in train
mode with the statistics of the *clean* batch (as the model's own clean forward uses them), so
that the bounds hold for the very function the training loss sees. Conv2d pads the radius with
its own ``padding_mode`` (zeros, reflect, replicate, circular), as it pads the center.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raycert.cert.models import Normalize

BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
SUPPORTED_LAYERS = (Normalize, nn.Conv2d, nn.Linear, *BATCHNORM, nn.ReLU, nn.Flatten, nn.AvgPool2d)

# Per-channel (mean, biased variance) of each train-mode BatchNorm's input, by layer index.
BatchStats = dict[int, tuple[Tensor, Tensor]]


class UnsupportedLayerError(TypeError):
    """The model holds a layer that interval bounds are not implemented for."""


@dataclass
class IntervalPass:
    """The box at the input of the last Linear, plus the pre-activation boxes on the way."""

    center: Tensor
    radius: Tensor | None  # None on a clean pass (eps = 0 everywhere)
    preacts: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (center, radius) per ReLU


def check_supported(model: nn.Module) -> nn.Sequential:
    """Return ``model`` if bounds can walk it: a Sequential of supported layers ending in Linear."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(
            f"bounds need an nn.Sequential model, got {type(model).__name__}"
        )
    for index, layer in enumerate(model):
        if not isinstance(layer, SUPPORTED_LAYERS):
            names = ", ".join(t.__name__ for t in SUPPORTED_LAYERS)
            raise UnsupportedLayerError(
                f"layer {index} ({type(layer).__name__}) has no interval bound; supported: {names}"
            )
    if not isinstance(model[-1], nn.Linear):
        raise UnsupportedLayerError(
            f"the last layer must be Linear to merge it with the margin spec, "
            f"got {type(model[-1]).__name__}"
        )
    return model


def _reduce_dims(h: Tensor) -> list[int]:
    return [0] + list(range(2, h.dim()))


def _channel_view(v: Tensor, h: Tensor) -> Tensor:
    return v.view(1, -1, *([1] * (h.dim() - 2)))


def clean_forward(model: nn.Sequential, x: Tensor) -> tuple[Tensor, BatchStats]:
    """Run ``model`` on ``x`` as usual and return the logits and the train-mode BatchNorm stats.

    The stats are what bounds of this batch must use in train mode; pass them on as ``bn_stats``
    so a bound on any subset of the batch uses the statistics of the whole clean batch.
    """
    stats: BatchStats = {}
    h = x
    for index, layer in enumerate(model):
        if isinstance(layer, BATCHNORM) and layer.training:
            dims = _reduce_dims(h)
            stats[index] = (h.mean(dims), h.var(dims, unbiased=False))
        h = layer(h)
    return h, stats


def input_box(x: Tensor, eps: Tensor | float) -> tuple[Tensor, Tensor]:
    """The L-inf box ``[x - eps, x + eps]`` clipped to ``[0, 1]``, as (center, radius).

    ``eps`` is a float, a tensor of shape (batch,) (one radius per sample) or of ``x``'s shape
    (one per pixel: a box that is not a ball, such as SABR's), in pixel units.
    """
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.dim() == 1:
        eps_t = eps_t.view(-1, *([1] * (x.dim() - 1)))
    lower = (x - eps_t).clamp(0.0, 1.0)
    upper = (x + eps_t).clamp(0.0, 1.0)
    return (upper + lower) / 2, (upper - lower) / 2


def batchnorm_affine(
    layer: nn.modules.batchnorm._BatchNorm, h: Tensor, stats: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor]:
    """BatchNorm as ``scale * h + shift`` per channel, with the given or running statistics."""
    if layer.training:
        if stats is None:
            raise ValueError(
                "a train-mode BatchNorm needs the clean batch's statistics: pass bn_stats from "
                "clean_forward(model, x), or put the model in eval mode"
            )
        mean, var = stats
    else:
        mean, var = layer.running_mean, layer.running_var
    scale = torch.rsqrt(var + layer.eps)
    if layer.affine:
        scale = scale * layer.weight
    shift = -mean * scale
    if layer.affine:
        shift = shift + layer.bias
    return _channel_view(scale, h), _channel_view(shift, h)


def propagate(
    model: nn.Sequential,
    x: Tensor,
    eps: Tensor | float | None,
    *,
    bn_stats: BatchStats | None = None,
    collect_preacts: bool = False,
) -> IntervalPass:
    """Propagate the box around ``x`` through every layer but the last.

    ``eps=None`` runs the clean function alone (radius None), at the cost of one forward pass.
    In train mode, ``bn_stats`` missing means "this is the whole clean batch": the stats are
    computed from the clean activations, which then ride along as one more center.
    """
    check_supported(model)
    needs_clean = model.training and bn_stats is None and eps is not None
    needs_clean = needs_clean and any(isinstance(m, BATCHNORM) for m in model)
    stats: BatchStats = dict(bn_stats or {})
    if eps is None:
        center, radius = x, None
    else:
        center, radius = input_box(x, eps)
    clean = x if needs_clean else None
    preacts: list[tuple[Tensor, Tensor]] = []

    for index, layer in enumerate(model[:-1]):
        if isinstance(layer, nn.ReLU):
            if collect_preacts:
                preacts.append((center, radius if radius is not None else torch.zeros_like(center)))
            if radius is None:
                center = F.relu(center)
            else:
                lower, upper = F.relu(center - radius), F.relu(center + radius)
                center, radius = (upper + lower) / 2, (upper - lower) / 2
            if clean is not None:
                clean = F.relu(clean)
        elif isinstance(layer, BATCHNORM):
            if layer.training and index not in stats:
                source = clean if clean is not None else center
                dims = _reduce_dims(source)
                stats[index] = (source.mean(dims), source.var(dims, unbiased=False))
            scale, shift = batchnorm_affine(layer, center, stats.get(index))
            center = scale * center + shift
            radius = None if radius is None else scale.abs() * radius
            if clean is not None:
                clean = scale * clean + shift
        elif isinstance(layer, Normalize):
            center = layer(center)
            radius = None if radius is None else radius / layer.std
            if clean is not None:
                clean = layer(clean)
        elif isinstance(layer, nn.Conv2d | nn.Linear):
            if clean is not None:
                both = layer(torch.cat([center, clean]))
                center, clean = both[: len(center)], both[len(center) :]
            else:
                center = layer(center)
            if radius is not None:
                radius = _abs_linear(layer, radius)
        else:  # Flatten and AvgPool2d are linear with non-negative weights
            center = layer(center)
            radius = None if radius is None else layer(radius)
            if clean is not None:
                clean = layer(clean)
    return IntervalPass(center, radius, preacts)


def _abs_linear(layer: nn.Conv2d | nn.Linear, radius: Tensor) -> Tensor:
    """The radius through a Conv2d or Linear: the same map with ``|W|`` and no bias.

    A Conv2d pads the radius the way it pads the center (``padding_mode``): reflected,
    replicated and circular padding copy input pixels, whose radii must come along; zeros pad
    with exact zeros, whose radius is 0.
    """
    weight = layer.weight.abs()
    if isinstance(layer, nn.Linear):
        return F.linear(radius, weight)
    return layer._conv_forward(radius, weight, None)


def _other_classes(y: Tensor, num_classes: int) -> Tensor:
    """For each label, the ``num_classes - 1`` other classes in increasing order: (batch, C-1).
    Column ``j`` holds ``j`` below the label and ``j + 1`` from it on: no mask, so no shape that
    depends on the data (a GPU need not wait for the host)."""
    columns = torch.arange(num_classes - 1, device=y.device).expand(len(y), num_classes - 1)
    return columns + (columns >= y[:, None])


def exact_margins(logits: Tensor, y: Tensor) -> Tensor:
    """``f_y - f_t`` for every ``t != y`` from logits, in class order: (batch, C-1)."""
    others = _other_classes(y, logits.shape[1])
    return logits.gather(1, y[:, None]) - logits.gather(1, others)


def margin_spec(last: nn.Linear, y: Tensor) -> tuple[Tensor, Tensor | float]:
    """The last Linear merged with the spec ``e_y - e_t`` (``t != y``, in class order).

    Returns the weights (batch, C-1, hidden) and biases (batch, C-1) (0.0 without a bias) of
    the margins ``f_y - f_t`` as affine functions of the last layer's input.
    """
    # Rows are gathered with embedding: its CPU backward is deterministic, while the backward of
    # tensor indexing accumulates in thread order, which would make seeded runs irreproducible.
    rows = torch.cat([y[:, None], _other_classes(y, last.out_features)], dim=1)  # label first
    weights = F.embedding(rows, last.weight)
    weight_diff = weights[:, :1] - weights[:, 1:]  # (batch, C-1, hidden)
    bias_diff: Tensor | float = 0.0
    if last.bias is not None:
        biases = F.embedding(rows, last.bias[:, None]).squeeze(-1)
        bias_diff = biases[:, :1] - biases[:, 1:]
    return weight_diff, bias_diff


def margins_from_pass(last: nn.Linear, box: IntervalPass, y: Tensor) -> Tensor:
    """Lower bounds of ``f_y - f_t`` for ``t != y`` from the box at the last layer's input."""
    weight_diff, bias_diff = margin_spec(last, y)
    lower = torch.einsum("bkh,bh->bk", weight_diff, box.center) + bias_diff
    if box.radius is not None:
        lower = lower - torch.einsum("bkh,bh->bk", weight_diff.abs(), box.radius)
    return lower


def margin_lower_bounds(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    *,
    bn_stats: BatchStats | None = None,
) -> Tensor:
    """Lower bounds of ``f_y(x') - f_t(x')`` over the eps-box around ``x``, shape (batch, C-1).

    ``eps`` is a float or one radius per sample (shape (batch,)), in pixel units of [0, 1]
    images; the box is clipped to [0, 1]. A sample is certified at eps when every bound is > 0.
    """
    box = propagate(model, x, eps, bn_stats=bn_stats)
    return margins_from_pass(model[-1], box, y)
