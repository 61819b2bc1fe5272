"""Linear-relaxation margin bounds, CROWN-IBP and CROWN, for ``nn.Sequential`` classifiers.

The models, boxes and margin specification are those of ``raycert.cert.bounds``: the L-inf box
of radius ``eps`` (pixel units) around ``x``, clipped to [0, 1], and the margins
``f_y - f_t`` (``t != y``) with the last Linear merged into the specification.

The relaxation and the backward pass are ``raycert.cert.backward``'s: a ReLU's lower line has
CROWN's adaptive slope unless ``Slopes`` are given (``raycert.cert.slopes`` optimizes them, as
alpha-CROWN does).

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

The bounds above are for certification: no gradient through them is promised. Training takes
``crown_ibp_training_bounds``: the same CROWN-IBP pass over every margin, with gradients, and
without the interval bound's maximum (CROWN-IBP training mixes the two itself).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from raycert.cert.backward import (
    Bounds,
    Network,
    Slopes,
    backward,
    chunk,
    concretize,
    every_or,
    interval_pass,
    layer_shapes,
    subset,
)
from raycert.cert.bounds import BatchStats, IntervalPass, margin_spec, margins_from_pass


def _single_affine_of_input(net: Network, stop: int) -> bool:
    """Whether layers before ``stop`` are one Conv2d/Linear up to per-channel affine maps and
    Flatten: interval bounds are exact there, so CROWN has nothing to add."""
    mixing = [m for m in net.layers[:stop] if isinstance(m, nn.Conv2d | nn.Linear | nn.AvgPool2d)]
    relus = [m for m in net.layers[:stop] if isinstance(m, nn.ReLU)]
    return len(mixing) <= 1 and not relus


def _crown_relu_bounds(net: Network, stop: int, center: Tensor, radius: Tensor) -> None:
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
    step = chunk(width, 2 * batch * widest * center.element_size())
    for start in range(0, width, step):
        which = order[:, start : start + step]  # (batch, rows) neuron indices
        rows = which.shape[1]
        eye = torch.zeros(batch, rows, neurons, dtype=center.dtype, device=center.device)
        eye.scatter_(2, which[:, :, None], 1.0)
        coeffs = torch.cat([eye, -eye], dim=1).view(batch, 2 * rows, *net.shapes[stop])
        bias = center.new_zeros(batch, 2 * rows)
        coeffs, bias = backward(net, stop, coeffs, bias)
        bound = concretize(coeffs, bias, center, radius)
        low, neg_up = bound[:, :rows], bound[:, rows:]
        flat_lower.scatter_(1, which, torch.maximum(flat_lower.gather(1, which), low))
        flat_upper.scatter_(1, which, torch.minimum(flat_upper.gather(1, which), -neg_up))
    net.relu_bounds[stop] = (flat_lower.view_as(lower), flat_upper.view_as(upper))


def crown_ibp_training_bounds(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    *,
    bn_stats: BatchStats | None = None,
) -> tuple[IntervalPass, Tensor]:
    """The interval pass over the eps-box around ``x`` (pre-ReLU boxes included) and the
    CROWN-IBP lower bounds of every margin ``f_y - f_t`` (batch, C-1), differentiable in the
    model's parameters and BatchNorm statistics.

    One backward pass of the margin specification through the ReLUs relaxed on their interval
    bounds, with CROWN's adaptive lower slopes (Zhang et al. 2020, whose reference code relaxes
    the same way). Each bound is sound but may lie below the interval bound of the same margin:
    the bound alone, as CROWN-IBP training uses it, not their maximum (``linear_margin_bounds``).
    """
    net, center, radius, box = interval_pass(model, x, eps, bn_stats)
    weight_diff, bias_diff = margin_spec(model[-1], y)
    bias = torch.as_tensor(bias_diff, dtype=center.dtype, device=center.device)
    bias = bias.expand(weight_diff.shape[:2])
    coeffs, bias = backward(net, len(net.layers), weight_diff, bias)
    return box, concretize(coeffs, bias, center, radius)


def preactivation_bounds(
    model: nn.Sequential,
    x: Tensor,
    eps: Tensor | float,
    *,
    intermediate: str = "crown",
    bn_stats: BatchStats | None = None,
) -> list[Bounds]:
    """Input bounds (lower, upper) of every ReLU over the box, from ``ibp`` or ``crown``."""
    net, center, radius, _ = interval_pass(model, x, eps, bn_stats)
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
    net, center, radius, box = interval_pass(model, x, eps, bn_stats)
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
    chosen = every_or(chosen, len(bounds))
    net, center, radius = subset(net, chosen), center[chosen], radius[chosen]
    if intermediate == "crown":
        for index in sorted(net.relu_bounds):
            if not _single_affine_of_input(net, index):
                _crown_relu_bounds(net, index, center, radius)
    weight_diff, bias_diff = margin_spec(last, y[chosen])
    refined, todo = bounds[chosen], todo[chosen]
    if slopes is not None:
        if slope_rows is None:  # each sample's own row
            slope_rows = torch.arange(len(bounds), device=bounds.device)
        slope_rows = slope_rows[chosen]
    if verify_above is None:  # every margin
        refine_margins(
            net, center, radius, weight_diff, bias_diff, todo, refined, slopes, slope_rows
        )
        decision = refined.min(dim=1).values
    else:  # the lowest interval margin, then the rest only where it cleared the threshold
        first = torch.zeros_like(todo).scatter_(1, refined.argmin(dim=1, keepdim=True), True)
        refine_margins(
            net, center, radius, weight_diff, bias_diff, first, refined, slopes, slope_rows
        )
        lowest = refined[first]  # one per sample, in order
        cleared = lowest > above[chosen]
        rest = todo & ~first & cleared[:, None]
        if rest.any():
            refine_margins(
                net, center, radius, weight_diff, bias_diff, rest, refined, slopes, slope_rows
            )
        decision = torch.where(cleared, refined.min(dim=1).values, lowest)
    bounds[chosen] = refined
    decisions = bounds.min(dim=1).values
    decisions[chosen] = decision
    return bounds, decisions


def refine_margins(
    net: Network,
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
    step = chunk(len(sample), (2 * widest + 3 * relus) * center.element_size())
    for part in torch.arange(len(sample), device=sample.device).split(step):
        rows, pick = sample[part], margin[part]
        coeffs = weight_diff[rows, pick][:, None]
        batch_rows = every_or(rows, len(center))  # per-sample tensors: views where it can
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
        coeffs, bias = backward(subset(net, batch_rows), len(net.layers), coeffs, bias, chosen)
        lin = concretize(coeffs, bias, center[batch_rows], radius[batch_rows])[:, 0]
        refined[rows, pick] = torch.maximum(refined[rows, pick], lin)


def crown_rows_bytes(model: nn.Sequential, shape: tuple[int, ...], dtype=torch.float64) -> dict:
    """Memory of CROWN's backward rows for one sample with every neuron unstable (worst case).

    Per ReLU that CROWN bounds: its rows (2 per neuron) times the widest layer on the way back,
    in bytes. ``peak`` is the largest of them: the memory one sample needs to run that ReLU's
    rows at once (``MEMORY_BUDGET`` runs them in chunks, trading memory for passes).
    """
    layers = list(model[:-1])
    x = torch.zeros(1, *shape, dtype=next(model.parameters()).dtype)
    shapes = layer_shapes(layers, x)
    net = Network(layers, shapes, {}, {})
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_relu = {}
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.ReLU) and not _single_affine_of_input(net, index):
            widest = max(math.prod(s) for s in shapes[: index + 1])
            per_relu[index] = 2 * math.prod(shapes[index]) * widest * itemsize
    return {"per_relu": per_relu, "peak": max(per_relu.values(), default=0)}
