"""Exact float32 arithmetic for certification.

On recent NVIDIA GPUs PyTorch runs float32 cuDNN convolutions in TF32 by default (10-bit
mantissa inner products), and a user may allow TF32 for float32 matrix products too. A bound
computed that way is not the float32 bound: it may sit on the wrong side of the margin, so a
float32 probe would claim radii that the float64 check then rejects and searches again.
``exact_float32`` holds float32 convolutions and matrix products in IEEE float32 while a
certification runs, and gives back the settings it found. Training may keep TF32.

It sets them through PyTorch's first API (``cudnn.flags``, the matmul precision), the one
PyTorch keeps consistent by default: the newer per-operator ``fp32_precision`` settings, once
mixed with it, make PyTorch refuse to read either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

HIGHEST = "highest"  # torch.set_float32_matmul_precision: float32 products in float32


@contextmanager
def cudnn_tf32(allowed: bool) -> Iterator[None]:
    """cuDNN's float32 convolutions with TF32 ``allowed`` or not inside, cuDNN's other flags
    as they were; the previous setting restored on the way out."""
    cudnn = torch.backends.cudnn
    with cudnn.flags(
        enabled=cudnn.enabled,
        benchmark=cudnn.benchmark,
        benchmark_limit=cudnn.benchmark_limit,
        deterministic=cudnn.deterministic,
        allow_tf32=allowed,
    ):
        yield


@contextmanager
def exact_float32() -> Iterator[None]:
    """Float32 cuDNN convolutions and matrix products in IEEE float32 (no TF32) inside; the
    previous settings restored on the way out, whatever happened inside."""
    matmul = torch.get_float32_matmul_precision()
    with cudnn_tf32(False):
        torch.set_float32_matmul_precision(HIGHEST)
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(matmul)
