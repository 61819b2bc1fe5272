"""What every loss computes about its batch before its bounds: the one clean forward, the
training radii (the scheduled eps, or ACERT's adaptive per-sample radii), the attack point of
the attack-based methods, and the batch stats the trainer adds up.

BatchNorm contract: each step runs exactly one clean forward (``clean_forward``), whose batch
statistics every bound of the step reuses, so running statistics move once per step and the
bounds hold for the function the clean loss sees. The attack of MTL-IBP and SABR runs against
that same function (the clean batch's statistics, detached), and MTL-IBP's cross-entropy at the
attack point is taken through it too. Both references attack the model in eval mode (running
statistics, by default in SABR's); SABR's bound then uses the clean batch's statistics, as
here, while MTL-IBP's evaluates the attack point in train mode, with the adversarial batch's own
statistics, which its bound reuses. Here the running statistics never stand in for the batch's
(they lag the weights during training), and no second set of batch statistics exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from raycert.cert.attack import training_attack
from raycert.cert.bounds import BatchStats, clean_forward, propagate
from raycert.cert.radius import certified_radius
from raycert.cert.sweep import sweep_radii
from raycert.training.config import TrainConfig
from raycert.training.methods.terms import regularizer

# Radius of the box the regularizers see while the scheduled eps is still 0 (and, for adaptive
# radii, the least radius of every sample while they run): a zero-width box has no tightness to
# measure. The value is the ``min_eps_for_regularizers`` of the ACERT code.
MIN_REG_EPS = 1e-6

Stats = dict[str, Tensor]


@dataclass(frozen=True)
class StepInput:
    """What one training step trains on: images ``x`` (pixels in [0, 1]) and labels ``y``, the
    scheduled radius ``eps_pixel``, the regularizers' weight now, and the ``seed`` of the
    step's random draws (an attack's random start), so a resumed run replays the same steps."""

    x: Tensor
    y: Tensor
    eps_pixel: float
    reg_weight: float
    seed: int


# ``loss(model, step, cfg) -> (loss, stats)``
LossFn = Callable[[nn.Sequential, StepInput, TrainConfig], tuple[Tensor, Stats]]


@dataclass
class CleanBatch:
    """A batch after its clean forward: the logits, their mean cross-entropy and the
    BatchNorm statistics every bound and attack of the step reuses."""

    x: Tensor
    y: Tensor
    logits: Tensor
    ce: Tensor
    bn_stats: BatchStats


def clean_batch(model: nn.Sequential, x: Tensor, y: Tensor) -> CleanBatch:
    """The step's one clean forward."""
    logits, bn_stats = clean_forward(model, x)
    return CleanBatch(x, y, logits, F.cross_entropy(logits, y), bn_stats)


def warmup_loss(
    model: nn.Sequential, batch: CleanBatch, cfg: TrainConfig, reg_weight: float
) -> Tensor:
    """The loss of every bound-based method at scheduled eps 0: clean cross-entropy, plus the
    regularizers on a ``MIN_REG_EPS`` box while they run (no bound is computed otherwise)."""
    if reg_weight <= 0:
        return batch.ce
    box = propagate(model, batch.x, MIN_REG_EPS, bn_stats=batch.bn_stats, collect_preacts=True)
    return batch.ce + regularizer(model, box, batch.x, MIN_REG_EPS, cfg, reg_weight)


def adaptive_radii(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps_pixel: float,
    cfg: TrainConfig,
    bn_stats: BatchStats,
    clean_logits: Tensor,
) -> Tensor:
    """ACERT's per-sample training radii: each sample's IBP-certified radius, capped by the
    scheduled ``eps_pixel`` and searched with ``cfg.search_steps`` steps to ``cfg.search_tol``
    (or, with ``cfg.search_probes``, swept in ``cfg.search_steps`` rounds of that many probes),
    without gradient; 0 for misclassified samples. ``bn_stats`` and ``clean_logits`` are the
    clean batch's, as in the loss."""
    if cfg.search_probes:
        return sweep_radii(
            model,
            x,
            y,
            eps_pixel,
            probes=cfg.search_probes,
            rounds=max(1, cfg.search_steps),
            bn_stats=bn_stats,
            clean_logits=clean_logits.detach(),
        )
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


@dataclass
class TrainingRadii:
    """The radius every bound and attack of a step uses (a float, or one per sample), and the
    sum of the batch's training radii that the trainer reports."""

    eps: Tensor | float
    total: Tensor | float


def training_radii(
    model: nn.Sequential,
    batch: CleanBatch,
    eps_pixel: float,
    cfg: TrainConfig,
    reg_weight: float,
    *,
    adaptive: bool,
    box_ratio: float = 1.0,
) -> TrainingRadii:
    """The scheduled ``eps_pixel`` for every sample, or (``adaptive``) each sample's certified
    radius capped by it (``adaptive_radii``); while the regularizers run, adaptive radii the
    bounds use are at least ``MIN_REG_EPS`` (ACERT's ``reg_clip_with_robust``), and the total
    sums the certified radii themselves.

    A method that bounds a box ``box_ratio`` times the radius (SABR's small box) trains each
    sample at the radius whose box is certified: its certified radius over ``box_ratio``."""
    if not adaptive:
        return TrainingRadii(eps_pixel, eps_pixel * len(batch.y))
    certified = adaptive_radii(
        model, batch.x, batch.y, eps_pixel * box_ratio, cfg, batch.bn_stats, batch.logits
    )
    radius = certified / box_ratio
    eps = radius.clamp(min=MIN_REG_EPS) if reg_weight > 0 else radius
    return TrainingRadii(eps, radius.sum())


def batch_function(model: nn.Sequential, bn_stats: BatchStats) -> Callable[[Tensor], Tensor]:
    """The logits of any input under the clean batch's BatchNorm statistics: the function the
    step's loss and bounds see (gradients flow through ``bn_stats`` as given)."""
    return lambda z: model[-1](propagate(model, z, None, bn_stats=bn_stats).center)


def attack_point(
    model: nn.Sequential, batch: CleanBatch, eps: Tensor | float, cfg: TrainConfig, seed: int
) -> Tensor:
    """The MTL-IBP and SABR attack point in the clipped eps-box around each sample:
    ``cfg.attack_steps`` PGD steps of ``cfg.attack_step_size * eps`` up the cross-entropy of the
    batch's function, from a random start drawn from ``seed`` (``raycert.cert.attack``)."""
    frozen = {index: (m.detach(), v.detach()) for index, (m, v) in batch.bn_stats.items()}
    return training_attack(
        batch_function(model, frozen),
        batch.x,
        batch.y,
        eps,
        steps=cfg.attack_steps,
        step_size=cfg.attack_step_size,
        seed=seed,
    )


def batch_stats(batch: CleanBatch, radius_total: Tensor | float) -> Stats:
    """Correct clean predictions and summed training radii, as detached tensors on the device
    (a fill, not a copy)."""
    logits = batch.logits.detach()
    correct = (logits.argmax(dim=1) == batch.y).sum()
    if not isinstance(radius_total, Tensor):
        radius_total = logits.new_full((), radius_total)
    return {"correct": correct, "radius": radius_total.detach()}
