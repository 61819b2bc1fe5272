"""Batched augmentation on the batch's device: random crop after edge padding, random flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def augment(
    images: Tensor,
    pad: int,
    generator: torch.Generator | None = None,
    *,
    flip: bool = True,
) -> Tensor:
    """Random crop after ``pad`` pixels of edge padding, then a random horizontal flip, per sample.

    ``images`` is a float batch ``(N, C, H, W)``; the work stays on its device, in one gather (no
    loop over samples). Random numbers come from ``generator`` (on its own device) or, if None,
    from the global generator of the batch's device. The output has the input's shape.
    """
    if images.dim() != 4:
        raise ValueError(f"augment expects (N, C, H, W), got shape {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0 pixels, got {pad}")
    n, c, h, w = images.shape
    device = images.device
    rand_device = generator.device if generator is not None else device
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=rand_device)
    offsets = offsets.to(device)
    if flip:
        flips = (torch.rand(n, generator=generator, device=rand_device) < 0.5).to(device)
    else:
        flips = torch.zeros(n, dtype=torch.bool, device=device)

    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate") if pad else images
    rows = offsets[0, :, None] + torch.arange(h, device=device)
    col_steps = torch.arange(w, device=device)
    cols = offsets[1, :, None] + torch.where(flips[:, None], w - 1 - col_steps, col_steps)
    sample_index = torch.arange(n, device=device)[:, None, None, None]
    channel_index = torch.arange(c, device=device)[None, :, None, None]
    return padded[sample_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
