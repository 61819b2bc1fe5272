"""The training radius over time: warm-up, auto_LiRPA's smoothed ramp, and the regularizer weight.

All radii are in pixel units of [0, 1] images; steps are global batch indices (0-based).
"""

from __future__ import annotations

from raycert.training.config import TrainConfig


def scheduled_eps(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The training radius (pixel units) at global batch ``step`` (0-based).

    auto_LiRPA's SmoothedScheduler: 0 through ``warmup_epochs`` (and at the first step after
    it), then ``alpha * t ** ramp_power`` up to ``ramp_mid`` of the ramp, then linear to
    ``max_eps``, reached at the first step after ``warmup_epochs + ramp_epochs``; ``alpha`` makes
    the slope continuous where the two pieces meet. A slow start keeps early IBP bounds tame.
    """
    max_eps = cfg.max_eps or 0.0
    start, end = ramp_steps(steps_per_epoch, cfg)
    if max_eps == 0 or step <= start:
        return 0.0
    if step >= end:
        return max_eps
    mid = start + int((end - start) * cfg.ramp_mid)
    beta = cfg.ramp_power
    # With slope continuity at ``mid``, the value there is a fixed share of max_eps.
    mid_eps = max_eps * (mid - start) / (beta * (end - mid) + (mid - start))
    if step < mid:
        return mid_eps * ((step - start) / (mid - start)) ** beta
    return mid_eps + (max_eps - mid_eps) * (step - mid) / (end - mid)


def ramp_steps(steps_per_epoch: int, cfg: TrainConfig) -> tuple[int, int]:
    """The global steps where the warm-up ends and where the ramp ends (fractional epochs
    round to the nearest step)."""
    start = round(cfg.warmup_epochs * steps_per_epoch)
    return start, start + round(cfg.ramp_epochs * steps_per_epoch)


def batches_per_epoch(n_train: int, batch_size: int) -> int:
    """Batches per epoch; a last batch of one sample is skipped (train-mode BatchNorm needs two)."""
    return n_train // batch_size + (n_train % batch_size > 1)


def regularizer_weight(
    step: int, steps_per_epoch: int, eps_pixel: float, cfg: TrainConfig
) -> float:
    """``reg_weight * (1 - eps / max_eps)`` during warm-up and ramp, else 0 (also if max_eps 0)."""
    _, end = ramp_steps(steps_per_epoch, cfg)
    if not cfg.max_eps or step >= end:
        return 0.0
    return cfg.reg_weight * (1.0 - eps_pixel / cfg.max_eps)
