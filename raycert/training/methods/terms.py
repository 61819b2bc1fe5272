"""The terms certified-training losses are made of: robust cross-entropy on margin bounds, the
clean-weighted mix of it, the Shi et al. (2021) regularizers and the L1 penalty.

The regularizers follow the reference code of Shi et al. (``compute_reg``), which ACERT, SABR
(``compute_bound_reg``), MTL-IBP (``compute_reg``) and CTRAIN's CROWN-IBP all reuse: each of
those methods computes them on the interval boxes of the input box its bound propagates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raycert.cert.bounds import IntervalPass, input_box
from raycert.cert.models import Normalize
from raycert.training.config import TrainConfig


def robust_cross_entropy(margin_lower: Tensor) -> Tensor:
    """Mean of ``log(1 + sum_t exp(-LB_t))``: cross-entropy on the worst-case logits the margin
    bounds allow (logit 0 for the label, ``-LB_t`` for class t). At eps 0 it equals plain CE."""
    return torch.logsumexp(F.pad(-margin_lower, (1, 0)), dim=1).mean()


def clean_weighted(robust: Tensor, clean_ce: Tensor, cfg: TrainConfig) -> Tensor:
    """``(1 - kappa) robust + kappa clean CE``: IBP's, ACERT's, SABR's and CROWN-IBP's mix."""
    return (1 - cfg.kappa) * robust + cfg.kappa * clean_ce


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


def regularizer(
    model: nn.Sequential,
    box: IntervalPass,
    center: Tensor,
    eps: Tensor | float,
    cfg: TrainConfig,
    reg_weight: float,
) -> Tensor | float:
    """``reg_weight`` times the Shi et al. losses of ``box``, the interval pass of the clipped
    eps-box around ``center`` (its pre-ReLU boxes collected); 0 while they do not run."""
    if reg_weight <= 0:
        return 0.0
    _, radius = input_box(center, eps)
    if isinstance(model[0], Normalize):
        radius = radius / model[0].std
    tightness, balance = ibp_regularizers(box.preacts, radius.mean(), cfg.reg_tol)
    return reg_weight * (tightness + balance)


def l1_penalty(model: nn.Module) -> Tensor:
    """Sum of ``|W|`` over the weights of every Conv2d and Linear layer (biases excluded)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return torch.stack([w.abs().sum() for w in weights]).sum()
