"""IBP training (Shi et al. 2021; the FastIBP baseline of ACERT) and ACERT, which is IBP at each
sample's certified radius; the interval loss they share with SABR and CROWN-IBP's IBP end.

The formulas follow the reference code of Shi et al. (``compute_reg``) and ACERT
(``EpsIBP.model_step``).
"""

from __future__ import annotations

from torch import Tensor, nn

from raycert.cert.bounds import margins_from_pass, propagate
from raycert.training.config import TrainConfig
from raycert.training.methods.batch import (
    CleanBatch,
    Stats,
    StepInput,
    batch_stats,
    clean_batch,
    training_radii,
    warmup_loss,
)
from raycert.training.methods.terms import clean_weighted, regularizer, robust_cross_entropy


def interval_loss(
    model: nn.Sequential,
    batch: CleanBatch,
    center: Tensor,
    eps: Tensor | float,
    cfg: TrainConfig,
    reg_weight: float,
) -> Tensor:
    """``(1 - kappa) robust CE + kappa CE`` plus the regularizers, from one interval pass over
    the clipped eps-box around ``center`` (the batch itself, or SABR's small boxes; ``eps`` a
    float, one radius per sample or one per pixel)."""
    box = propagate(model, center, eps, bn_stats=batch.bn_stats, collect_preacts=reg_weight > 0)
    robust = robust_cross_entropy(margins_from_pass(model[-1], box, batch.y))
    loss = clean_weighted(robust, batch.ce, cfg)
    return loss + regularizer(model, box, center, eps, cfg, reg_weight)


def _interval_method(
    model: nn.Sequential, step: StepInput, cfg: TrainConfig, *, adaptive: bool
) -> tuple[Tensor, Stats]:
    """The IBP loss at the scheduled radius for every sample, or (``adaptive``) at each
    sample's certified radius capped by it."""
    x, eps_pixel, reg_weight = step.x, step.eps_pixel, step.reg_weight
    batch = clean_batch(model, x, step.y)
    if eps_pixel == 0:
        return warmup_loss(model, batch, cfg, reg_weight), batch_stats(batch, 0.0)
    radii = training_radii(model, batch, eps_pixel, cfg, reg_weight, adaptive=adaptive)
    loss = interval_loss(model, batch, x, radii.eps, cfg, reg_weight)
    return loss, batch_stats(batch, radii.total)


def ibp_loss(model: nn.Sequential, step: StepInput, cfg: TrainConfig) -> tuple[Tensor, Stats]:
    """IBP training at the scheduled radius (Shi et al. 2021; the FastIBP baseline of ACERT).

    ``(1 - kappa) robust CE + kappa CE`` at ``eps_pixel``, plus ``reg_weight`` times the
    regularizers. At eps 0 the loss is plain CE (plus the regularizers on a ``MIN_REG_EPS`` box
    while they run); with ``reg_weight`` 0 too, no bound is computed at all. ``seed`` is unused.
    """
    return _interval_method(model, step, cfg, adaptive=False)


def acert_loss(model: nn.Sequential, step: StepInput, cfg: TrainConfig) -> tuple[Tensor, Stats]:
    """ACERT: as ``ibp_loss``, but each sample's radius is its certified radius, capped by the
    scheduled ``eps_pixel``.

    The radii come from ``adaptive_radii`` (0 for misclassified samples, never above
    ``eps_pixel``); no gradient flows through them. While the regularizers run, every radius
    the loss uses is at least ``MIN_REG_EPS`` (ACERT's ``reg_clip_with_robust``);
    ``stats["radius"]`` sums the certified radii themselves.
    """
    return _interval_method(model, step, cfg, adaptive=True)
