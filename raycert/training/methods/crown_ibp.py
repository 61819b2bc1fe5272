"""CROWN-IBP training (Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust
Neural Networks", ICLR 2020): margin bounds mixed from CROWN-IBP and IBP by a weight beta that
falls as the radius ramps up, ending at pure IBP.

Follows the reference code (huanzhang12/CROWN-IBP, ``train.py``, bound type
``crown-interval``): ``beta = 1 - (1 - final_beta) eps / max_eps`` moves with the scheduled eps,
from 1 (all CROWN-IBP) at the start of the ramp to ``final_beta`` at its end (the paper's
``1 -> 0``: 0 is pure IBP, the IBP end); below 1e-5 the CROWN-IBP pass is skipped as there. The
lower bounds ``beta * CROWN-IBP + (1 - beta) * IBP`` (no maximum of the two, as there) go into
``(1 - kappa) robust CE + kappa CE``, with the CROWN-IBP bound from
``raycert.cert.linear.crown_ibp_training_bounds`` (back-substitution through ReLUs relaxed on the
IBP pre-activation boxes, gradients through it all).

Differences: ``kappa`` is constant, where the reference ramps it from 1 to a final value with
eps; the Shi et al. regularizers run on the IBP pre-activation boxes while they run, as in
CTRAIN's CROWN-IBP (the reference has none); with ``adaptive`` each sample's bound has its
certified radius capped by the scheduled eps (beta still follows the scheduled eps).
"""

from __future__ import annotations

from torch import Tensor, nn

from raycert.cert.bounds import margins_from_pass
from raycert.cert.linear import crown_ibp_training_bounds
from raycert.training.config import TrainConfig
from raycert.training.methods.batch import (
    Stats,
    StepInput,
    batch_stats,
    clean_batch,
    training_radii,
    warmup_loss,
)
from raycert.training.methods.interval import interval_loss
from raycert.training.methods.terms import clean_weighted, regularizer, robust_cross_entropy

# The least CROWN-IBP weight worth its backward pass: below it the bound is pure IBP.
MIN_CROWN_IBP_BETA = 1e-5


def crown_ibp_beta(eps_pixel: float, cfg: TrainConfig) -> float:
    """The weight of the CROWN-IBP bound at scheduled radius ``eps_pixel``: 1 at eps 0, falling
    linearly in eps to ``cfg.crown_ibp_final_beta`` at ``max_eps`` (0 there: pure IBP)."""
    progress = min(eps_pixel / cfg.max_eps, 1.0) if cfg.max_eps else 1.0
    return 1.0 - (1.0 - cfg.crown_ibp_final_beta) * progress


def crown_ibp_loss(model: nn.Sequential, step: StepInput, cfg: TrainConfig) -> tuple[Tensor, Stats]:
    """``(1 - kappa) robust CE + kappa CE`` on ``beta * CROWN-IBP + (1 - beta) * IBP`` margin
    bounds, plus the regularizers; at beta 0 exactly ``ibp``'s loss. ``seed`` is unused."""
    x, y, eps_pixel, reg_weight = step.x, step.y, step.eps_pixel, step.reg_weight
    batch = clean_batch(model, x, y)
    if eps_pixel == 0:
        return warmup_loss(model, batch, cfg, reg_weight), batch_stats(batch, 0.0)
    radii = training_radii(model, batch, eps_pixel, cfg, reg_weight, adaptive=bool(cfg.adaptive))
    beta = crown_ibp_beta(eps_pixel, cfg)
    if beta < MIN_CROWN_IBP_BETA:  # the IBP end
        loss = interval_loss(model, batch, x, radii.eps, cfg, reg_weight)
        return loss, batch_stats(batch, radii.total)
    box, crown = crown_ibp_training_bounds(model, x, y, radii.eps, bn_stats=batch.bn_stats)
    margins = beta * crown + (1 - beta) * margins_from_pass(model[-1], box, y)
    loss = clean_weighted(robust_cross_entropy(margins), batch.ce, cfg)
    loss = loss + regularizer(model, box, x, radii.eps, cfg, reg_weight)
    return loss, batch_stats(batch, radii.total)
