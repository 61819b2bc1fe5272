"""A raycert network as an ONNX graph: input ``input`` of shape ``[1, C, H, W]`` in raw [0, 1]
pixels (the normalization is the network's first layer), output ``logits`` of shape
``[1, classes]``, float32, BatchNorm in eval mode. Written by PyTorch's exporter, checked with
``onnx.checker``, and run back with onnxruntime."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT, OUTPUT = "input", "logits"


def export_onnx(model: nn.Sequential, input_shape: Sequence[int], path: Path) -> Path:
    """Write ``model`` (left unchanged) to ``path`` as ONNX and check the file."""
    import onnx

    net = copy.deepcopy(model).float().eval().cpu()
    example = torch.zeros(1, *input_shape)
    # The exporter's progress lines, and its notes on operators raycert never uses.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _quiet("torch"):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamo=True,
            external_data=False,  # one file, weights inside
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Within: the logger's records below ERROR are dropped."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """The ONNX network's logits for ``images`` (N, C, H, W), one image at a time (the graph's
    batch is 1), with onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.asarray(images, dtype=np.float32)
    return np.concatenate([session.run([OUTPUT], {INPUT: image[None]})[0] for image in batch])
