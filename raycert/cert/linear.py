"""Linear-relaxation margin bounds, CROWN-IBP and CROWN, for ``nn.Sequential`` classifiers.

The models, boxes and margin specification are those of ``raycert.cert.bounds``: the L-inf box
of radius ``eps`` (pixel units) around ``x``, clipped to [0, 1], and the margins
``f_y - f_t`` (``t != y``) with the last Linear merged into the specification.

Relaxation. A ReLU whose input lies in ``[l, u]`` is exact when stable (identity for
``l >= 0``, zero for ``u <= 0``). An unstable one (``l < 0 < u``) is bounded above by the chord
``u (z - l) / (u - l)`` and below by ``alpha z`` with CROWN's adaptive slope: ``alpha = 1`` when
``u > -l`` else 0, whichever line leaves the smaller area (``raycert.cert.slopes`` optimizes
them, as alpha-CROWN does). A lower bound of ``A h + b`` is carried backward layer by layer:
through an affine layer ``A <- A W`` and ``b <- b + A bias``; through a ReLU, positive
coefficients take the lower line and negative ones the upper line. At the input the box gives
``A center - |A| radius + b``.

- **CROWN-IBP**: the ReLUs' input bounds come from interval bounds (``bounds.propagate``), then
  one backward pass of the margin specification.
- **CROWN**: each ReLU's input bounds come from a backward pass started at that ReLU's input
  (both ends: rows ``+e_i`` and ``-e_i``), intersected with the interval bounds (both are
  sound). Only neurons the interval bounds leave unstable are bounded this way; a ReLU whose
  input is a single Conv2d or Linear of the box (up to per-channel affine maps: Normalize,
  BatchNorm) keeps its interval bounds, which are exact there. For the ``mlp`` architecture
  this makes CROWN equal to CROWN-IBP. The backward rows of one ReLU are dense: for ``cnn7``
  on 32x32 inputs they are far beyond memory (see ``crown_rows_bytes``).

Each returned margin bound is the larger of the linear bound and the interval bound of the same
pass (both sound, the latter free). Given a verification threshold (``verify_above``), only the
margins that deciding it needs are refined: the lowest interval margin first, the others only
where it clears the threshold (a radius search mostly probes eps where that one fails).

BatchNorm is affine per channel: running statistics in eval mode, or in train mode the clean
batch's statistics (``bn_stats`` from ``bounds.clean_forward``; computed from ``x`` if missing).
Conv2d and AvgPool2d map their coefficients back through their transposes (for Conv2d padding
other than zeros, and for AvgPool2d, by autograd's vector-Jacobian product of the layer without
bias). The bounds are for certification: no gradient through them is promised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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
    margin_spec,
    margins_from_pass,
    propagate,
)
from raycert.cert.models import Normalize

# Largest backward coefficient tensor (bytes) held at once; bigger passes run in chunks.
MEMORY_BUDGET = 256 * 2**20
FEW_CHANNELS = 3  # float32 Conv2d with at most this many inputs maps back without oneDNN

Bounds = tuple[Tensor, Tensor]  # (lower, upper) of a ReLU's input, shape (batch, *neurons)
Slopes = dict[int, Tensor]  # lower slopes per ReLU layer index: (batch, C-1, *neurons) in [0, 1]


@dataclass
class _Network:
    """What the backward passes need from the hidden layers ``model[:-1]`` for one batch."""

    layers: list[nn.Module]
    shapes: list[torch.Size]  # input shape of each hidden layer (no batch), then its output
    affine: dict[int, tuple[Tensor, Tensor]]  # (scale, shift) of Normalize and BatchNorm layers
    relu_bounds: dict[int, Bounds]  # input bounds of each ReLU, by layer index


def _layer_shapes(layers: list[nn.Module], x: Tensor) -> list[torch.Size]:
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


def _network(model: nn.Sequential, x: Tensor, stats: BatchStats) -> _Network:
    layers = list(model[:-1])
    shapes = _layer_shapes(layers, x)
    affine: dict[int, tuple[Tensor, Tensor]] = {}
    for index, layer in enumerate(layers):
        probe = x.new_zeros(1, *shapes[index])
        if isinstance(layer, BATCHNORM):
            affine[index] = batchnorm_affine(layer, probe, stats.get(index))
        elif isinstance(layer, Normalize):
            affine[index] = (1 / layer.std, -layer.mean / layer.std)
    return _Network(layers, shapes, affine, {})


def _by_autograd(fn: Callable[[Tensor], Tensor], coeffs: Tensor, in_shape: torch.Size) -> Tensor:
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


def _conv_transpose(layer: nn.Conv2d, coeffs: Tensor, in_shape: torch.Size) -> Tensor:
    """``coeffs`` (batch, rows, C_out, H_out, W_out) mapped back through the conv's weights."""
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return _by_autograd(lambda z: layer._conv_forward(z, layer.weight, None), coeffs, in_shape)
    rows = coeffs.shape[:2]
    flat = coeffs.reshape(rows.numel(), *coeffs.shape[2:])
    out_pad = []
    for dim in range(2):
        size = (flat.shape[2 + dim] - 1) * layer.stride[dim] - 2 * layer.padding[dim]
        size += layer.dilation[dim] * (layer.kernel_size[dim] - 1) + 1
        out_pad.append(in_shape[1 + dim] - size)
    cpu32 = flat.device.type == "cpu" and flat.dtype == torch.float32
    if cpu32 and in_shape[0] <= FEW_CHANNELS and layer.groups == 1:
        # Into an image's few channels, PyTorch's own kernel ran up to 3x faster in float32 on
        # a CPU than the oneDNN one conv_transpose2d picks, which is far faster into many
        # channels, and as fast in float64 (benchmarks/bounds.py (f)).
        back = torch.ops.aten.slow_conv_transpose2d(
            flat,
            layer.weight,
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
            layer.weight,
            None,
            layer.stride,
            layer.padding,
            tuple(out_pad),
            layer.groups,
            layer.dilation,
        )
    return back.view(*rows, *in_shape)


def _relu_back(
    coeffs: Tensor, bias: Tensor, bounds: Bounds, slope: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Relax a ReLU for a lower bound of ``coeffs @ relu(z) + bias`` given ``z`` in bounds.

    ``slope`` (batch, rows, *neurons), values in [0, 1], sets the lower lines of unstable
    neurons per row (``raycert.cert.slopes``); without it, CROWN's adaptive 0 or 1."""
    lower, upper = bounds
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).to(coeffs.dtype)
    width = torch.where(unstable, upper - lower, torch.ones_like(upper))
    up_slope = torch.where(unstable, upper / width, active)
    up_shift = torch.where(unstable, -upper * lower / width, torch.zeros_like(upper))
    if slope is None:
        low_slope = torch.where(unstable, (upper > -lower).to(coeffs.dtype), active)[:, None]
    else:
        low_slope = torch.where(unstable[:, None], slope, active[:, None])
    negative = coeffs.clamp(max=0)
    bias = bias + torch.einsum("bri,bi->br", negative.flatten(2), up_shift.flatten(1))
    # Positive coefficients take the lower line, the others the upper one.
    return coeffs * torch.where(coeffs > 0, low_slope, up_slope[:, None]), bias


def _backward(
    net: _Network,
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
            coeffs, bias = _relu_back(coeffs, bias, net.relu_bounds[index], slope)
        elif index in net.affine:
            scale, shift = net.affine[index]
            shift = shift.expand(1, *in_shape)[0]
            bias = bias + (coeffs * shift).flatten(2).sum(-1)
            coeffs = coeffs * scale.expand(1, *in_shape)[0]
        elif isinstance(layer, nn.Linear):
            if layer.bias is not None:
                bias = bias + coeffs @ layer.bias
            coeffs = coeffs @ layer.weight
        elif isinstance(layer, nn.Conv2d):
            if layer.bias is not None:
                bias = bias + torch.einsum("brchw,c->br", coeffs, layer.bias)
            coeffs = _conv_transpose(layer, coeffs, in_shape)
        elif isinstance(layer, nn.Flatten):
            coeffs = coeffs.reshape(*coeffs.shape[:2], *in_shape)
        else:  # AvgPool2d
            coeffs = _by_autograd(layer, coeffs, in_shape)
    return coeffs, bias


def _concretize(coeffs: Tensor, bias: Tensor, center: Tensor, radius: Tensor) -> Tensor:
    """Lower bound of ``coeffs @ x + bias`` over the box (center, radius): (batch, rows)."""
    flat = coeffs.flatten(2)
    lower = torch.einsum("bri,bi->br", flat, center.flatten(1))
    return lower - torch.einsum("bri,bi->br", flat.abs(), radius.flatten(1)) + bias


def _chunk(total: int, row_bytes: int) -> int:
    """How many of ``total`` items fit ``MEMORY_BUDGET`` at ``row_bytes`` each (at least 1)."""
    return max(1, min(total, MEMORY_BUDGET // max(1, row_bytes)))


def _single_affine_of_input(net: _Network, stop: int) -> bool:
    """Whether layers before ``stop`` are one Conv2d/Linear up to per-channel affine maps and
    Flatten: interval bounds are exact there, so CROWN has nothing to add."""
    mixing = [m for m in net.layers[:stop] if isinstance(m, nn.Conv2d | nn.Linear | nn.AvgPool2d)]
    relus = [m for m in net.layers[:stop] if isinstance(m, nn.ReLU)]
    return len(mixing) <= 1 and not relus


def _crown_relu_bounds(net: _Network, stop: int, center: Tensor, radius: Tensor) -> None:
    """Tighten the input bounds of the ReLU at ``stop`` by backward passes from its input."""
    lower, upper = net.relu_bounds[stop]
    batch = len(lower)
    flat_lower, flat_upper = lower.flatten(1).clone(), upper.flatten(1).clone()
    unstable = (flat_lower < 0) & (flat_upper > 0)
    counts = unstable.sum(dim=1)
    width = int(counts.max()) if batch else 0
    if width == 0:
        return
    order = unstable.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :width]
    neurons = flat_lower.shape[1]
    widest = max(math.prod(s) for s in net.shapes[: stop + 1])
    step = _chunk(width, 2 * batch * widest * center.element_size())
    for start in range(0, width, step):
        which = order[:, start : start + step]  # (batch, rows) neuron indices
        rows = which.shape[1]
        eye = torch.zeros(batch, rows, neurons, dtype=center.dtype, device=center.device)
        eye.scatter_(2, which[:, :, None], 1.0)
        coeffs = torch.cat([eye, -eye], dim=1).view(batch, 2 * rows, *net.shapes[stop])
        bias = center.new_zeros(batch, 2 * rows)
        coeffs, bias = _backward(net, stop, coeffs, bias)
        bound = _concretize(coeffs, bias, center, radius)
        low, neg_up = bound[:, :rows], bound[:, rows:]
        flat_lower.scatter_(1, which, torch.maximum(flat_lower.gather(1, which), low))
        flat_upper.scatter_(1, which, torch.minimum(flat_upper.gather(1, which), -neg_up))
    net.relu_bounds[stop] = (flat_lower.view_as(lower), flat_upper.view_as(upper))


def _interval_pass(
    model: nn.Sequential, x: Tensor, eps: Tensor | float, bn_stats: BatchStats | None
) -> tuple[_Network, Tensor, Tensor, IntervalPass]:
    """IBP through the hidden layers: the network with interval ReLU bounds, the input box
    (center, radius) and the box at the last layer's input."""
    check_supported(model)
    if model.training and bn_stats is None and any(isinstance(m, BATCHNORM) for m in model):
        with torch.no_grad():
            _, bn_stats = clean_forward(model, x)
    stats = dict(bn_stats or {})
    box = propagate(model, x, eps, bn_stats=stats, collect_preacts=True)
    net = _network(model, x, stats)
    relu_at = [i for i, m in enumerate(net.layers) if isinstance(m, nn.ReLU)]
    for index, (c, r) in zip(relu_at, box.preacts, strict=True):
        net.relu_bounds[index] = (c - r, c + r)
    center, radius = input_box(x, eps)
    return net, center, radius, box


def preactivation_bounds(
    model: nn.Sequential,
    x: Tensor,
    eps: Tensor | float,
    *,
    intermediate: str = "crown",
    bn_stats: BatchStats | None = None,
) -> list[Bounds]:
    """Input bounds (lower, upper) of every ReLU over the box, from ``ibp`` or ``crown``."""
    net, center, radius, _ = _interval_pass(model, x, eps, bn_stats)
    if intermediate == "crown":
        for index in sorted(net.relu_bounds):
            if not _single_affine_of_input(net, index):
                _crown_relu_bounds(net, index, center, radius)
    return [net.relu_bounds[i] for i in sorted(net.relu_bounds)]


def linear_margin_bounds(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    *,
    intermediate: str = "ibp",
    bn_stats: BatchStats | None = None,
    verify_above: Tensor | float | None = None,
    slopes: Slopes | None = None,
    slope_rows: Tensor | None = None,
) -> Tensor:
    """Lower bounds of ``f_y(x') - f_t(x')`` over the eps-box around ``x``: (batch, C-1).

    ``intermediate`` picks the ReLU input bounds: ``ibp`` (CROWN-IBP) or ``crown`` (CROWN).
    ``slopes`` (per sample and margin, ``raycert.cert.slopes``) replace CROWN's adaptive lower
    slopes of unstable ReLUs; any in [0, 1] give sound bounds. ``slope_rows`` (batch,) says which
    row of ``slopes`` is each sample's (default: its own), so a search need not copy them.
    ``eps`` is a float or one radius per sample (pixel units); the box is clipped to [0, 1].
    Every margin is refined by the backward pass unless ``verify_above`` (a float or one value
    per sample) is given: then only what deciding ``min bound > verify_above`` needs is refined.
    Margins whose interval bound is already above it keep that bound, and a sample's lowest
    interval margin is refined first: if it stays at or below ``verify_above``, the sample
    cannot verify and its other margins keep their interval bounds. Every value is sound.
    """
    return _linear_bounds(
        model, x, y, eps, intermediate, bn_stats, verify_above, slopes, slope_rows
    )[0]


def linear_decision(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    verify_above: Tensor | float,
    *,
    intermediate: str = "ibp",
    bn_stats: BatchStats | None = None,
    slopes: Slopes | None = None,
    slope_rows: Tensor | None = None,
) -> Tensor:
    """One value per sample that exceeds ``verify_above`` exactly when every margin bound of
    ``linear_margin_bounds(..., verify_above=...)`` does: their minimum, except where the lowest
    interval margin's linear bound already fails, which is then that bound. A radius search
    interpolates on it, so a failing sample is not dragged down by interval margins it never
    needed to refine."""
    return _linear_bounds(
        model, x, y, eps, intermediate, bn_stats, verify_above, slopes, slope_rows
    )[1]


def _linear_bounds(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    intermediate: str,
    bn_stats: BatchStats | None,
    verify_above: Tensor | float | None,
    slopes: Slopes | None,
    slope_rows: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``linear_margin_bounds`` and ``linear_decision`` from one pass."""
    if intermediate not in ("ibp", "crown"):
        raise ValueError(f"intermediate must be ibp or crown, got {intermediate!r}")
    if slopes is not None and intermediate != "ibp":
        raise ValueError("optimized slopes are for interval intermediate bounds (ibp)")
    net, center, radius, box = _interval_pass(model, x, eps, bn_stats)
    last = model[-1]
    bounds = margins_from_pass(last, box, y)
    if verify_above is None:
        above = torch.full_like(bounds[:, 0], math.inf)
    else:
        above = torch.as_tensor(verify_above, dtype=bounds.dtype, device=bounds.device)
        above = above.expand(len(bounds)) if above.dim() == 0 else above
    todo = bounds <= above[:, None]
    chosen = torch.nonzero(todo.any(dim=1)).flatten()  # samples with a margin to refine
    if len(chosen) == 0:
        return bounds, bounds.min(dim=1).values
    net, center, radius = _subset(net, chosen), center[chosen], radius[chosen]
    if intermediate == "crown":
        for index in sorted(net.relu_bounds):
            if not _single_affine_of_input(net, index):
                _crown_relu_bounds(net, index, center, radius)
    weight_diff, bias_diff = margin_spec(last, y[chosen])
    refined, todo = bounds[chosen], todo[chosen]
    if slopes is not None:
        slope_rows = chosen if slope_rows is None else slope_rows[chosen]
    if verify_above is None:  # every margin
        _refine(net, center, radius, weight_diff, bias_diff, todo, refined, slopes, slope_rows)
        decision = refined.min(dim=1).values
    else:  # the lowest interval margin, then the rest only where it cleared the threshold
        first = torch.zeros_like(todo).scatter_(1, refined.argmin(dim=1, keepdim=True), True)
        _refine(net, center, radius, weight_diff, bias_diff, first, refined, slopes, slope_rows)
        lowest = refined[first]  # one per sample, in order
        cleared = lowest > above[chosen]
        rest = todo & ~first & cleared[:, None]
        if rest.any():
            _refine(net, center, radius, weight_diff, bias_diff, rest, refined, slopes, slope_rows)
        decision = torch.where(cleared, refined.min(dim=1).values, lowest)
    bounds[chosen] = refined
    decisions = bounds.min(dim=1).values
    decisions[chosen] = decision
    return bounds, decisions


def _refine(
    net: _Network,
    center: Tensor,
    radius: Tensor,
    weight_diff: Tensor,
    bias_diff: Tensor | float,
    which: Tensor,
    refined: Tensor,
    slopes: Slopes | None = None,
    slope_rows: Tensor | None = None,
) -> None:
    """Raise ``refined`` at the margins ``which`` marks (a (batch, C-1) mask) to their linear
    bounds where higher, with each margin's lower ``slopes`` (sample ``i``'s at row
    ``slope_rows[i]``) where given: one backward row per marked (sample, margin), in
    memory-sized chunks, so no row is spent on a margin that needs none."""
    sample, margin = torch.nonzero(which, as_tuple=True)
    # Per row: its coefficients (twice the widest layer, as a layer maps them), and the ReLU
    # bounds and slopes gathered for it.
    widest = max(math.prod(s) for s in net.shapes)
    relus = sum(math.prod(lower.shape[1:]) for lower, _ in net.relu_bounds.values())
    step = _chunk(len(sample), (2 * widest + 3 * relus) * center.element_size())
    for part in torch.arange(len(sample), device=sample.device).split(step):
        rows, pick = sample[part], margin[part]
        coeffs = weight_diff[rows, pick][:, None]
        if isinstance(bias_diff, Tensor):
            bias = bias_diff[rows, pick][:, None]
        else:
            bias = coeffs.new_zeros(coeffs.shape[:2])
        chosen = None
        if slopes is not None:
            chosen = {
                index: s[slope_rows[rows], pick][:, None].to(center.dtype).clamp(0.0, 1.0)
                for index, s in slopes.items()
            }
        coeffs, bias = _backward(_subset(net, rows), len(net.layers), coeffs, bias, chosen)
        lin = _concretize(coeffs, bias, center[rows], radius[rows])[:, 0]
        refined[rows, pick] = torch.maximum(refined[rows, pick], lin)


def _subset(net: _Network, rows: Tensor) -> _Network:
    """The network with the ReLU bounds of batch ``rows`` only."""
    bounds = {i: (lo[rows], up[rows]) for i, (lo, up) in net.relu_bounds.items()}
    return _Network(net.layers, net.shapes, net.affine, bounds)


def crown_rows_bytes(model: nn.Sequential, shape: tuple[int, ...], dtype=torch.float64) -> dict:
    """Memory of CROWN's backward rows for one sample with every neuron unstable (worst case).

    Per ReLU that CROWN bounds: its rows (2 per neuron) times the widest layer on the way back,
    in bytes. ``peak`` is the largest of them: the memory one sample needs to run that ReLU's
    rows at once (``MEMORY_BUDGET`` runs them in chunks, trading memory for passes).
    """
    layers = list(model[:-1])
    x = torch.zeros(1, *shape, dtype=next(model.parameters()).dtype)
    shapes = _layer_shapes(layers, x)
    net = _Network(layers, shapes, {}, {})
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_relu = {}
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.ReLU) and not _single_affine_of_input(net, index):
            widest = max(math.prod(s) for s in shapes[: index + 1])
            per_relu[index] = 2 * math.prod(shapes[index]) * widest * itemsize
    return {"per_relu": per_relu, "peak": max(per_relu.values(), default=0)}
