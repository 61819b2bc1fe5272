"""One split of a dataset in memory: uint8 images and int64 labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split in memory: uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``.

    ``train``/``val`` splits come in seeded random order, so their first ``n`` samples are a seeded
    random sample; ``test`` keeps the official order (a ``limit`` on it picks a seeded subset and
    keeps that order).
    """

    images: Tensor
    labels: Tensor
    name: str
    split: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int) -> Split:
        """The first ``n`` samples (all of them if there are fewer); see the class note on order."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        return Split(self.images[:n].clone(), self.labels[:n].clone(), self.name, self.split)

    def to_float(self, device: torch.device | str = "cpu") -> Tensor:
        """Images as float32 in [0, 1] on ``device`` (moved as uint8 first: 4x less to copy)."""
        return self.images.to(device).float().div_(255.0)
