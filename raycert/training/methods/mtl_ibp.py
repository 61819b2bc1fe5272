"""MTL-IBP (De Palma et al., "Expressive Losses for Verified Robustness via Convex
Combinations", ICLR 2024): a convex combination of the adversarial loss and the IBP loss.

Follows the reference code (alessandrodepalma/expressive-losses, ``train.py`` with ``--mtlibp``):
``alpha * IBP robust CE + (1 - alpha) * CE at a PGD point`` of the eps-box, plus the Shi et al.
regularizers on the interval boxes of the eps-box (its ``compute_reg``) while they run, and
plain cross-entropy while the scheduled eps is 0. There is no clean cross-entropy term, so
``kappa`` is not read: ``1 - alpha`` is the weight of the accuracy side. The attack is
``raycert.cert.attack.training_attack`` with the reference's one-step setting by default (a
step of 10 eps from a random start); the reference's extra factors on the training and attack
radii are left to the scheduled ``max_eps``.

Differences: the attack and the cross-entropy at its point use the clean batch's BatchNorm
statistics (``raycert.training.methods.batch``), and with ``adaptive`` each sample's attack box
and bound have its certified radius capped by the scheduled eps.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from raycert.cert.bounds import margins_from_pass, propagate
from raycert.training.config import TrainConfig
from raycert.training.methods.batch import (
    Stats,
    StepInput,
    attack_point,
    batch_function,
    batch_stats,
    clean_batch,
    training_radii,
    warmup_loss,
)
from raycert.training.methods.terms import regularizer, robust_cross_entropy


def mtl_ibp_loss(model: nn.Sequential, step: StepInput, cfg: TrainConfig) -> tuple[Tensor, Stats]:
    """``mtl_alpha * IBP robust CE + (1 - mtl_alpha) * CE(attack point)`` plus the regularizers.

    At alpha 1 no attack runs and the loss is ``ibp``'s (at kappa 0); at alpha 0 with the
    regularizers off no bound is computed and the loss is PGD training's.
    """
    x, y, eps_pixel, reg_weight = step.x, step.y, step.eps_pixel, step.reg_weight
    batch = clean_batch(model, x, y)
    if eps_pixel == 0:
        return warmup_loss(model, batch, cfg, reg_weight), batch_stats(batch, 0.0)
    radii = training_radii(model, batch, eps_pixel, cfg, reg_weight, adaptive=bool(cfg.adaptive))
    alpha = cfg.mtl_alpha
    loss = batch.ce.new_zeros(())
    if alpha > 0 or reg_weight > 0:
        box = propagate(
            model, x, radii.eps, bn_stats=batch.bn_stats, collect_preacts=reg_weight > 0
        )
        if alpha > 0:
            loss = alpha * robust_cross_entropy(margins_from_pass(model[-1], box, y))
        loss = loss + regularizer(model, box, x, radii.eps, cfg, reg_weight)
    if alpha < 1:
        adv = attack_point(model, batch, radii.eps, cfg, step.seed)
        adv_ce = F.cross_entropy(batch_function(model, batch.bn_stats)(adv), y)
        loss = loss + (1 - alpha) * adv_ce
    return loss, batch_stats(batch, radii.total)
