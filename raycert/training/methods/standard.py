"""Standard training: cross-entropy on clean inputs, the baseline every trade-off starts from."""

from __future__ import annotations

from torch import Tensor, nn

from raycert.training.config import TrainConfig
from raycert.training.methods.batch import Stats, batch_stats, clean_batch


def standard_loss(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps_pixel: float,
    cfg: TrainConfig,
    reg_weight: float,
    seed: int,
) -> tuple[Tensor, Stats]:
    """Cross-entropy on clean inputs; ``eps_pixel``, ``reg_weight`` and ``seed`` are ignored."""
    batch = clean_batch(model, x, y)
    return batch.ce, batch_stats(batch, 0.0)
