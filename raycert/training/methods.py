"""Training losses: clean cross-entropy, IBP (Shi et al. 2021) and ACERT, plus their regularizers.

Every method has the signature ``loss(model, x, y, eps_pixel, cfg, reg_weight) -> (loss, stats)``
and does exactly one clean forward (``clean_forward``), whose BatchNorm batch statistics every
bound of the step reuses, so running statistics move once per step and the bounds hold for the
function the clean loss sees. ``stats`` holds detached per-batch sums (``correct``, ``radius``)
that the trainer adds up without a device sync.

This lives apart from ``loop.py`` so the loop reads top to bottom and the formulas, which follow
the reference code of Shi et al. (``compute_reg``) and ACERT (``EpsIBP.model_step``), can be
checked in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raycert.cert.bounds import BatchStats, clean_forward, input_box, margins_from_pass, propagate
from raycert.cert.models import Normalize
from raycert.cert.radius import certified_radius
from raycert.training.config import METHODS, TrainConfig

# Radius of the box the regularizers see while the scheduled eps is still 0 (and, for ACERT,
# the least radius of every sample while they run): a zero-width box has no tightness to measure.
# The value is the ``min_eps_for_regularizers`` of the ACERT code.
MIN_REG_EPS = 1e-6

Stats = dict[str, Tensor]
LossFn = Callable[[nn.Sequential, Tensor, Tensor, float, TrainConfig, float], tuple[Tensor, Stats]]


def robust_cross_entropy(margin_lower: Tensor) -> Tensor:
    """Mean of ``log(1 + sum_t exp(-LB_t))``: cross-entropy on the worst-case logits the margin
    bounds allow (logit 0 for the label, ``-LB_t`` for class t). At eps 0 it equals plain CE."""
    return torch.logsumexp(F.pad(-margin_lower, (1, 0)), dim=1).mean()


def _balance_penalty(a: Tensor, b: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """``relu(tol - min(a/b, b/a)) / tol`` for a, b >= 0, and whether it is defined (a or b > 0).

    Written as ``min / max`` so it stays finite, and so differentiable, when one side is 0.
    """
    high = torch.maximum(a, b)
    ratio = torch.minimum(a, b) / high.clamp(min=1e-12)
    return F.relu(tol - ratio) / tol, high > 0


def ibp_regularizers(
    preacts: list[tuple[Tensor, Tensor]], input_radius: Tensor, tol: float
) -> tuple[Tensor, Tensor]:
    """Shi et al. (2021) tightness and ReLU-balance losses over the pre-ReLU boxes.

    Tightness: per ReLU layer, ``relu(tol - r0 / r) / tol`` with ``r`` the mean pre-activation
    radius and ``r0`` the mean input radius (after normalization): it penalizes bounds that grow
    more than ``1 / tol`` times through the net. ReLU balance: per layer, the ratios of the mean
    centre, and of the summed squared deviation from the mean centre, over stably active versus
    stably inactive neurons, each pushed above ``tol``. Both are averaged over ReLU layers; a
    layer without stable neurons adds 0 to the balance loss, as the reference code skips the NaN.
    """
    zero = input_radius.new_zeros(())
    tightness, balance = zero, zero
    for center, radius in preacts:
        tightness = tightness + F.relu(tol - input_radius / radius.mean().clamp(min=1e-12)) / tol
        active, inactive = center - radius > 0, center + radius < 0
        deviation = (center - center.mean()) ** 2
        mean_term, mean_ok = _balance_penalty(
            (center * active).mean(), -(center * inactive).mean(), tol
        )
        var_term, var_ok = _balance_penalty(
            (deviation * active).sum(), (deviation * inactive).sum(), tol
        )
        balance = balance + torch.where(mean_ok & var_ok, mean_term + var_term, zero)
    layers = max(len(preacts), 1)
    return tightness / layers, balance / layers


def _input_radius(model: nn.Sequential, x: Tensor, eps: Tensor | float) -> Tensor:
    """Mean radius of the clipped input box in the model's normalized coordinates."""
    _, radius = input_box(x, eps)
    if isinstance(model[0], Normalize):
        radius = radius / model[0].std
    return radius.mean()


def _bounded_loss(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    ce: Tensor,
    robust: bool,
    cfg: TrainConfig,
    reg_weight: float,
    bn_stats: BatchStats,
) -> Tensor:
    """``(1 - kappa) robust CE + kappa CE`` (plain CE when not robust) plus the regularizers,
    from one interval pass at ``eps``."""
    box = propagate(model, x, eps, bn_stats=bn_stats, collect_preacts=reg_weight > 0)
    if robust:
        margins = margins_from_pass(model[-1], box, y)
        loss = (1 - cfg.kappa) * robust_cross_entropy(margins) + cfg.kappa * ce
    else:
        loss = ce
    if reg_weight > 0:
        tightness, balance = ibp_regularizers(
            box.preacts, _input_radius(model, x, eps), cfg.reg_tol
        )
        loss = loss + reg_weight * (tightness + balance)
    return loss


def _stats(logits: Tensor, y: Tensor, radius_sum: Tensor | float) -> Stats:
    """Correct predictions and summed radii, as tensors on the device (a fill, not a copy)."""
    correct = (logits.detach().argmax(dim=1) == y).sum()
    if not isinstance(radius_sum, Tensor):
        radius_sum = logits.new_full((), radius_sum)
    return {"correct": correct, "radius": radius_sum.detach()}


def standard_loss(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps_pixel: float,
    cfg: TrainConfig,
    reg_weight: float,
) -> tuple[Tensor, Stats]:
    """Cross-entropy on clean inputs; ``eps_pixel`` and ``reg_weight`` are ignored."""
    logits, _ = clean_forward(model, x)
    return F.cross_entropy(logits, y), _stats(logits, y, 0.0)


def adaptive_radii(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps_pixel: float,
    cfg: TrainConfig,
    bn_stats: BatchStats,
    clean_logits: Tensor,
) -> Tensor:
    """ACERT's per-sample training radii: each sample's certified radius, capped by the scheduled
    ``eps_pixel`` and searched with ``cfg.search_steps`` steps to ``cfg.search_tol``, without
    gradient; 0 for misclassified samples. ``bn_stats`` and ``clean_logits`` are the clean
    batch's, as in the loss."""
    return certified_radius(
        model,
        x,
        y,
        cap=eps_pixel,
        tol=cfg.search_tol,
        max_iter=cfg.search_steps,
        bn_stats=bn_stats,
        clean_logits=clean_logits.detach(),
    )


def _interval_loss(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps_pixel: float,
    cfg: TrainConfig,
    reg_weight: float,
    *,
    adaptive: bool,
) -> tuple[Tensor, Stats]:
    """The IBP loss at ``eps_pixel`` for every sample, or (``adaptive``) at each sample's
    certified radius capped by ``eps_pixel``."""
    logits, bn_stats = clean_forward(model, x)
    ce = F.cross_entropy(logits, y)
    if eps_pixel == 0:  # warm-up: clean CE, plus the regularizers on a tiny box while they run
        if reg_weight > 0:
            ce = _bounded_loss(model, x, y, MIN_REG_EPS, ce, False, cfg, reg_weight, bn_stats)
        return ce, _stats(logits, y, 0.0)
    if adaptive:
        radius = adaptive_radii(model, x, y, eps_pixel, cfg, bn_stats, logits)
        eps = radius.clamp(min=MIN_REG_EPS) if reg_weight > 0 else radius
        radius_sum = radius.sum()
    else:
        eps, radius_sum = eps_pixel, eps_pixel * len(y)
    loss = _bounded_loss(model, x, y, eps, ce, True, cfg, reg_weight, bn_stats)
    return loss, _stats(logits, y, radius_sum)


def ibp_loss(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps_pixel: float,
    cfg: TrainConfig,
    reg_weight: float,
) -> tuple[Tensor, Stats]:
    """IBP training at the scheduled radius (Shi et al. 2021; the FastIBP baseline of ACERT).

    ``(1 - kappa) robust CE + kappa CE`` at ``eps_pixel``, plus ``reg_weight`` times the
    regularizers. At eps 0 the loss is plain CE (plus the regularizers on a ``MIN_REG_EPS`` box
    while they run); with ``reg_weight`` 0 too, no bound is computed at all.
    """
    return _interval_loss(model, x, y, eps_pixel, cfg, reg_weight, adaptive=False)


def acert_loss(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps_pixel: float,
    cfg: TrainConfig,
    reg_weight: float,
) -> tuple[Tensor, Stats]:
    """ACERT: as ``ibp_loss``, but each sample's radius is its certified radius, capped by the
    scheduled ``eps_pixel``.

    The radii come from ``adaptive_radii`` (0 for misclassified samples, never above
    ``eps_pixel``); no gradient flows through them. While the regularizers run, every radius
    the loss uses is at least ``MIN_REG_EPS`` (ACERT's ``reg_clip_with_robust``);
    ``stats["radius"]`` sums the certified radii themselves.
    """
    return _interval_loss(model, x, y, eps_pixel, cfg, reg_weight, adaptive=True)


def l1_penalty(model: nn.Module) -> Tensor:
    """Sum of ``|W|`` over the weights of every Conv2d and Linear layer (biases excluded)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return torch.stack([w.abs().sum() for w in weights]).sum()


LOSSES: dict[str, LossFn] = {"standard": standard_loss, "ibp": ibp_loss, "acert": acert_loss}
assert tuple(LOSSES) == METHODS, "every method in raycert.training.config.METHODS needs a loss here"
