"""Standard training: cross-entropy on clean inputs, the baseline every trade-off starts from."""

from __future__ import annotations

from torch import Tensor, nn

from raycert.training.config import TrainConfig
from raycert.training.methods.batch import Stats, StepInput, batch_stats, clean_batch


def standard_loss(model: nn.Sequential, step: StepInput, cfg: TrainConfig) -> tuple[Tensor, Stats]:
    """Cross-entropy on clean inputs; the step's radius, regularizer weight and seed are
    ignored."""
    batch = clean_batch(model, step.x, step.y)
    return batch.ce, batch_stats(batch, 0.0)
