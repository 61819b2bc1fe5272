"""A learnable synthetic dataset: class prototypes plus Gaussian noise, generated in memory."""

from __future__ import annotations

import numpy as np
import torch

from raycert.data.split import SPLITS, Split


def synthetic_split(
    n: int,
    shape: tuple[int, int, int] = (1, 8, 8),
    num_classes: int = 4,
    seed: int = 0,
    split: str = "train",
    *,
    noise_std: float = 0.15,
) -> Split:
    """A learnable toy split: each class has a random prototype image, samples add Gaussian noise.

    Prototypes depend on ``seed`` only, so splits drawn with the same seed share classes; the
    samples come from a separate stream per ``split``. Pixels are clipped to [0, 1] and quantized
    to uint8 like real images. Classes are balanced (within one sample).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_classes < 2 or n < 0:
        raise ValueError(f"need n >= 0 and num_classes >= 2, got n={n}, num_classes={num_classes}")
    prototypes = np.random.default_rng([seed, 0]).random((num_classes, *shape))
    rng = np.random.default_rng([seed, 1 + SPLITS.index(split)])
    labels = rng.permutation(np.arange(n) % num_classes)
    pixels = prototypes[labels] + rng.normal(0.0, noise_std, size=(n, *shape))
    images = np.rint(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    return Split(
        torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), "synthetic", split
    )
