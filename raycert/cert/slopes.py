"""Optimized ReLU lower slopes over interval intermediate bounds: the ``alpha-crown-ibp`` verifier.

CROWN-IBP (``raycert.cert.linear``) bounds an unstable ReLU from below by ``alpha z`` with
``alpha`` 0 or 1. Every ``alpha`` in [0, 1] gives a sound lower line, so the margin bound is
sound for *any* slopes; alpha-CROWN (Xu et al., 2021) picks them per sample, margin and neuron by
gradient ascent on the bound. Here the ReLUs' input bounds stay interval bounds, as in
CROWN-IBP (CROWN's tighter ones bought nothing measurable on trained MNIST models at many times
the cost), and only the margins' backward pass is optimized: ``STEPS`` Adam steps from CROWN's
adaptive slopes on each sample's ``MARGINS`` lowest margins among those its interval bound
fails (the ones its radius hinges on), keeping for each the slopes of its best bound; the other
margins keep the adaptive slopes.

Guarantee: the slopes only choose *which* sound bound is computed. A float64 model's slopes are
optimized on a float32 copy, and the bound that certifies is computed with them in the model's
own dtype, so a float64 certificate never rests on a float32 bound.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from raycert.cert.backward import (
    MEMORY_BUDGET,
    Network,
    Slopes,
    backward,
    concretize,
    interval_pass,
    subset,
)
from raycert.cert.bounds import BatchStats, margin_spec, margins_from_pass
from raycert.cert.linear import refine_margins

STEPS = 4  # Adam steps per optimization (benchmarks/bounds.py measures gain and cost)
MARGINS = 3  # per sample, the lowest margins whose slopes are optimized
LR = 0.3  # Adam's step size on slopes in [0, 1]
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults
OPTIMIZE_DTYPE = torch.float32  # float64 models optimize on a copy in this dtype
# A cascade's alpha stage optimizes each sample's slopes once, at this multiple of the radius
# the earlier stages verified, and steps up from that radius with them (``raycert.cert.radius``).
OPTIMIZE_AT = 1.1


class Optimized(NamedTuple):
    """Slopes found at ``eps`` (batch,) and the margin bounds they give there: (batch, C-1) in
    ``OPTIMIZE_DTYPE``, each the larger of the linear and the interval bound, except margins
    whose interval bound is above 0, which keep it. A guide for a search, never a certificate."""

    slopes: Slopes
    eps: Tensor
    bounds: Tensor


def _margin_pass(
    net: Network,
    center: Tensor,
    radius: Tensor,
    weight_diff: Tensor,
    bias_diff: Tensor | float,
    slopes: Slopes,
) -> Tensor:
    """Linear lower bounds of every margin with the given slopes: (batch, C-1)."""
    bias = (
        bias_diff.clone()
        if isinstance(bias_diff, Tensor)
        else weight_diff.new_zeros(weight_diff.shape[:2])
    )
    coeffs, bias = backward(net, len(net.layers), weight_diff, bias, slopes)
    return concretize(coeffs, bias, center, radius)


def _sample_bytes(net: Network, rows: int, itemsize: int) -> int:
    """Memory of ``rows`` backward rows of one sample through every layer."""
    return rows * sum(math.prod(s) for s in net.shapes) * itemsize


def optimize_slopes(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    *,
    bn_stats: BatchStats | None = None,
    steps: int = STEPS,
    lr: float = LR,
    margins: int = MARGINS,
) -> Optimized:
    """Lower slopes that raise the margin bounds of ``alpha-crown-ibp`` at ``eps`` (a float or
    one radius per sample, pixel units), found on a ``OPTIMIZE_DTYPE`` copy of a float64 model.
    Per sample, its ``margins`` lowest margins among those the interval bound fails at ``eps``
    get the slopes of their best bound over the steps (the first: CROWN's adaptive ones), the
    others the adaptive ones; all in ``OPTIMIZE_DTYPE``, (batch, C-1, *neurons) per ReLU. They
    are a guide for ``linear_margin_bounds``, never a bound; so are the bounds beside them."""
    dtype = next(model.parameters()).dtype
    if dtype == torch.float64:
        model = copy.deepcopy(model).to(OPTIMIZE_DTYPE)
        x = x.to(OPTIMIZE_DTYPE)
        eps = eps.to(OPTIMIZE_DTYPE) if isinstance(eps, Tensor) else eps
        if bn_stats is not None:
            bn_stats = {
                i: (m.to(OPTIMIZE_DTYPE), v.to(OPTIMIZE_DTYPE)) for i, (m, v) in bn_stats.items()
            }
    net, center, radius, box = interval_pass(model, x, eps, bn_stats)
    interval = margins_from_pass(model[-1], box, y).detach()
    weight_diff, bias_diff = margin_spec(model[-1], y)
    weight_diff = weight_diff.detach()
    bias_diff = bias_diff.detach() if isinstance(bias_diff, Tensor) else bias_diff
    # Per sample: the adaptive slopes of every margin, then the optimized rows' coefficients
    # kept for the gradient, their slopes and Adam's two moments.
    rows_held = weight_diff.shape[1] + 4 * margins
    step = max(1, MEMORY_BUDGET // _sample_bytes(net, rows_held, center.element_size()))
    count = weight_diff.shape[1]
    slopes: Slopes = {
        index: center.new_empty(len(x), count, *lower.shape[1:])
        for index, (lower, _) in net.relu_bounds.items()
    }
    bounds: list[Tensor] = []
    for start in range(0, max(len(x), 1), step):
        rows = slice(start, start + step)  # views: each chunk writes its rows of ``slopes``
        part_bias = bias_diff[rows] if isinstance(bias_diff, Tensor) else bias_diff
        bounds.append(
            _ascend(
                subset(net, rows),
                center[rows],
                radius[rows],
                weight_diff[rows],
                part_bias,
                interval[rows],
                {index: s[rows] for index, s in slopes.items()},
                steps,
                lr,
                margins,
            )
        )
    eps = torch.as_tensor(eps, dtype=center.dtype, device=x.device).expand(len(x))
    return Optimized(slopes, eps, torch.cat(bounds))


def _ascend(
    net: Network,
    center: Tensor,
    radius: Tensor,
    weight_diff: Tensor,
    bias_diff: Tensor | float,
    interval: Tensor,
    out: Slopes,
    steps: int,
    lr: float,
    margins: int,
) -> Tensor:
    """Adam on the slopes of one chunk of samples. Each sample's ``margins`` lowest margins
    under CROWN's adaptive slopes are optimized, each to the slopes of its best bound; the
    other margins keep the adaptive slopes (they are the margins a radius seldom hinges on).
    Margins whose ``interval`` bound is above 0 hold no radius back: they get no backward row
    and are not optimized. Writes the slopes into ``out`` (views of the batch's) and returns
    the margin bounds with them (``Optimized.bounds``)."""
    count = weight_diff.shape[1]
    for index, s in out.items():
        s.copy_(net.relaxation(index).adaptive[:, None].expand_as(s))
    failing = interval <= 0
    bounds = interval.clone()
    refine_margins(net, center, radius, weight_diff, bias_diff, failing, bounds)
    # One row per optimized (sample, margin): each sample's lowest failing margins.
    lowest = torch.where(failing, bounds, math.inf).argsort(dim=1)[:, : min(margins, count)]
    keep = failing.gather(1, lowest)
    sample = torch.arange(len(bounds), device=bounds.device)[:, None].expand_as(lowest)[keep]
    margin = lowest[keep]
    part = subset(net, sample)
    center, radius = center[sample], radius[sample]
    weight_diff = weight_diff[sample, margin][:, None]
    bias_diff = bias_diff[sample, margin][:, None] if isinstance(bias_diff, Tensor) else bias_diff
    slopes = {index: s[sample, margin][:, None].requires_grad_() for index, s in out.items()}
    best_slopes = {index: s.detach().clone() for index, s in slopes.items()}
    best = torch.full((len(sample), 1), -math.inf, dtype=center.dtype, device=center.device)
    # Adam by hand, as torch.optim.Adam computes it: constructing that optimizer imports
    # torch._dynamo, a slow import for a fresh ``raycert certify`` process.
    moments = {index: (torch.zeros_like(s), torch.zeros_like(s)) for index, s in slopes.items()}
    for step in range(steps + 1):
        with torch.enable_grad():
            bound = _margin_pass(part, center, radius, weight_diff, bias_diff, slopes)
            loss = -bound.sum()
        with torch.no_grad():
            better = bound > best
            best = torch.where(better, bound, best)
            for index, s in slopes.items():  # a select, not a mask: no host sync on a GPU
                kept = better.view(*better.shape, *[1] * (s.dim() - better.dim()))
                best_slopes[index] = torch.where(kept, s, best_slopes[index])
        if step == steps:
            break
        # Gradients of the slopes alone: the model's parameters are left untouched.
        grads = torch.autograd.grad(loss, list(slopes.values()))
        with torch.no_grad():
            for (index, s), grad in zip(slopes.items(), grads, strict=True):
                _adam_step(s, grad, *moments[index], step + 1, lr)
    for index, s in out.items():
        s[sample, margin] = best_slopes[index][:, 0]
    bounds[sample, margin] = torch.maximum(bounds[sample, margin], best[:, 0].detach())
    return bounds


def _adam_step(
    param: Tensor, grad: Tensor, mean: Tensor, square: Tensor, count: int, lr: float
) -> None:
    """One Adam step (betas 0.9, 0.999; eps 1e-8) on ``param`` in place, then the clamp to
    [0, 1] that keeps every slope a sound lower line; ``count`` is the step's number from 1."""
    beta1, beta2 = ADAM_BETAS
    mean.mul_(beta1).add_(grad, alpha=1 - beta1)
    square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (square / (1 - beta2**count)).sqrt_().add_(ADAM_EPS)
    param.addcdiv_(mean, denom, value=-lr / (1 - beta1**count)).clamp_(0.0, 1.0)


def stage_slopes(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    below: Tensor,
    cap: Tensor,
    tol: Tensor | float,
    *,
    bn_stats: BatchStats | None = None,
) -> Optimized:
    """The slopes a cascade's ``alpha-crown-ibp`` stage bounds with, for samples whose earlier
    stages verified radius ``below`` (each with its ``cap``; ``tol`` at most half of it, as in
    the search): optimized once, at ``OPTIMIZE_AT`` times ``below`` (at least ``tol`` above it,
    at most ``cap``), where the stage's crossing is expected. Its radius is verified by
    ``linear_margin_bounds`` with them; the bounds beside them are at that radius."""
    tol = torch.minimum(torch.as_tensor(tol, dtype=cap.dtype, device=cap.device), cap / 2)
    at = torch.minimum(torch.maximum(below * OPTIMIZE_AT, below + tol), cap)
    return optimize_slopes(model, x, y, at, bn_stats=bn_stats)
