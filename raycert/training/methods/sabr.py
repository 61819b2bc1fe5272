"""SABR (Mueller et al., "Certified Training: Small Boxes are All You Need", ICLR 2023): the
IBP loss over a small box of radius ``lambda * eps`` around an attack point, inside the eps-box.

Follows the reference code (eth-sri/SABR, ``train.py`` and ``adv_attack.py``): an attack in the
clipped eps-box finds the point, the small box's center is that point moved the least to fit
inside the clipped eps-box, and the loss is ``(1 - kappa) robust CE + kappa CE`` on the small
box's interval bounds, plus the Shi et al. regularizers on the small box's interval boxes (its
``compute_bound_reg``) while they run; plain cross-entropy while the scheduled eps is 0. Where
the clipped eps-box is narrower than ``2 lambda eps`` (pixels near 0 or 1), the small box takes
its width there (the reference's ``dimwise_scaling`` option; without it the reference's box
can leave the eps-box at such pixels), so it always lies inside the eps-box and [0, 1].

Differences: the attack (``raycert.cert.attack.training_attack``) uses the clean batch's
BatchNorm statistics, one step of 10 eps by default where the reference takes 8 decaying steps
(``attack_steps`` and ``attack_step_size`` set them); with ``adaptive`` each sample's eps is
the one whose small box is certified around it (its IBP-certified radius over lambda; the
IBP radius itself would train a SABR network, which is loose under IBP, at almost nothing),
capped by the scheduled eps. At lambda 1 the small box is the whole eps-box
wherever the attack lands, so no attack runs and the loss is ``ibp``'s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raycert.training.config import TrainConfig
from raycert.training.methods.batch import (
    Stats,
    StepInput,
    attack_point,
    batch_stats,
    clean_batch,
    training_radii,
    warmup_loss,
)
from raycert.training.methods.interval import interval_loss


def small_box(
    x: Tensor, point: Tensor, eps: Tensor | float, box_ratio: float
) -> tuple[Tensor, Tensor]:
    """SABR's box (lower, upper) around ``point``: per pixel, half-width ``box_ratio * eps``
    or half the width of the clipped eps-box around ``x`` where that is less, centered at
    ``point`` moved the least to fit inside the clipped eps-box. ``eps`` is a float or one
    radius per sample."""
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.dim() == 1:
        eps_t = eps_t.view(-1, *([1] * (x.dim() - 1)))
    lower, upper = (x - eps_t).clamp(0.0, 1.0), (x + eps_t).clamp(0.0, 1.0)
    half = torch.minimum(box_ratio * eps_t, (upper - lower) / 2)
    middle = torch.minimum(torch.maximum(point, lower + half), upper - half)
    return torch.maximum(middle - half, lower), torch.minimum(middle + half, upper)


def sabr_loss(model: nn.Sequential, step: StepInput, cfg: TrainConfig) -> tuple[Tensor, Stats]:
    """``(1 - kappa) robust CE + kappa CE`` over the ``sabr_lambda * eps`` box around the attack
    point, plus the regularizers on that box."""
    x, eps_pixel, reg_weight = step.x, step.eps_pixel, step.reg_weight
    batch = clean_batch(model, x, step.y)
    if eps_pixel == 0:
        return warmup_loss(model, batch, cfg, reg_weight), batch_stats(batch, 0.0)
    radii = training_radii(
        model,
        batch,
        eps_pixel,
        cfg,
        reg_weight,
        adaptive=bool(cfg.adaptive),
        box_ratio=cfg.sabr_lambda,
    )
    if cfg.sabr_lambda >= 1:  # the whole eps-box, wherever the attack would land
        loss = interval_loss(model, batch, x, radii.eps, cfg, reg_weight)
    else:
        point = attack_point(model, batch, radii.eps, cfg, step.seed)
        lower, upper = small_box(x, point, radii.eps, cfg.sabr_lambda)
        center, radius = (upper + lower) / 2, (upper - lower) / 2
        loss = interval_loss(model, batch, center, radius, cfg, reg_weight)
    return loss, batch_stats(batch, radii.total)
