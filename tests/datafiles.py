"""Small dataset files in the official on-disk formats, written by the data tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = struct.pack(f">{2 + array.ndim - 1}I", magic, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_small_mnist(root: Path, n_train: int = 24, n_test: int = 12) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = np.arange(n) % 10
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(2051, images)))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(2049, labels)))
    return raw


def write_cifar_batch(
    path: Path, rows: np.ndarray, labels: list[int], *, numpy1_globals: bool = False
) -> None:
    """A batch as the official files hold it: pickle protocol 2, bytes keys, N x 3072 uint8.

    ``numpy1_globals`` rewrites the array reconstructor to the ``numpy.core`` name that the
    official files (pickled with numpy 1.x) reference.
    """
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": labels,
        b"data": rows,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    payload = pickle.dumps(batch, protocol=2)
    if numpy1_globals:
        payload = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n_reconstruct" in payload
    path.write_bytes(payload)


def write_small_cifar(root: Path, per_batch: int = 10) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        write_cifar_batch(folder / name, rows, labels, numpy1_globals=i % 2 == 0)
    meta = {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder
