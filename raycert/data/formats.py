"""On-disk datasets: the torchvision folder layouts and readers of the files in them.

Files are read from the layouts torchvision writes under a data root (so an existing torchvision
root works as is, without importing torchvision): ``MNIST/raw`` (IDX files, gzipped or not),
``cifar-10-batches-py`` (pickled batches, read with a restricted unpickler) and
``tiny-imagenet-200`` (JPEG folders). Parsed arrays are cached in the process.

A missing or corrupt file raises a one-line ``UserError`` naming the path and the fix; those
messages are built here (``missing_error``, ``corrupt``), below both ``raycert.data`` and
``raycert.data.downloads`` in the import graph.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from raycert.data.registry import DATASETS
from raycert.errors import UserError

ROOT_HINT = "data root from --data-dir or RAYCERT_DATA"


def _folder(name: str) -> Path:
    source = DATASETS[name].source
    assert source is not None, f"{name} has no folder on disk"
    return source.folder


# Folders under the data root, from each dataset's registry entry (``Source.folder``).
MNIST_DIR = _folder("mnist") / "raw"
MNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_DIR = _folder("cifar10")
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
TINYIMAGENET_DIR = _folder("tinyimagenet")
TINYIMAGENET_SIZE_PX = 64


# ---------------------------------------------------------------------------------------------
# Layout: which files a dataset needs, and the errors when they are missing or bad
# ---------------------------------------------------------------------------------------------


def _mnist_file(root: Path, stem: str) -> Path:
    """The gzipped file if present (what the downloader checks), else the gunzipped copy."""
    packed = root / MNIST_DIR / f"{stem}.gz"
    return packed if packed.exists() else root / MNIST_DIR / stem


def required_files(name: str, root: Path) -> list[Path]:
    """The files a dataset cannot be read without."""
    if name == "mnist":
        return [_mnist_file(root, stem) for stems in MNIST_STEMS.values() for stem in stems]
    if name == "cifar10":
        return [root / CIFAR10_DIR / b for batches in CIFAR10_BATCHES.values() for b in batches]
    base = root / TINYIMAGENET_DIR
    return [
        base / "wnids.txt",
        base / "train",
        base / "val" / "val_annotations.txt",
        base / "val" / "images",
    ]


def missing_files(name: str, root: Path) -> list[Path]:
    """The required files of a dataset that are not under ``root``, in a fixed order."""
    return [path for path in required_files(name, root) if not path.exists()]


def missing_error(name: str, root: Path) -> UserError:
    """The error for a dataset that is not (completely) on disk: first missing path, the fix."""
    missing = missing_files(name, root)
    where = missing[0] if missing else root
    return UserError(
        f"{name} not found: {where} is missing ({ROOT_HINT}: {root}); "
        f"fetch it with `raycert data download {name}`"
    )


def corrupt(name: str, path: Path, problem: str) -> UserError:
    """The error for a file that is there but unreadable: the path, the problem, the fix."""
    return UserError(
        f"{name} data at {path} is corrupt ({problem}); delete it and run "
        f"`raycert data download {name}` ({ROOT_HINT})"
    )


# ---------------------------------------------------------------------------------------------
# Reading, with an in-process cache
# ---------------------------------------------------------------------------------------------


def read_cached(name: str, root: Path, part: str) -> tuple[Tensor, Tensor]:
    """One part (``train`` or ``test``) of an on-disk dataset as uint8 images and int64 labels.

    Read once per process; the cache key includes file sizes and times, so a replaced file is
    read again.
    """
    stamp = tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in required_files(name, root)
    )
    return _read_part(name, str(root), part, stamp)


@functools.lru_cache(maxsize=4)
def _read_part(name: str, root: str, part: str, stamp: tuple[Any, ...]) -> tuple[Tensor, Tensor]:
    readers: dict[str, Callable[[Path, str], tuple[np.ndarray, np.ndarray]]] = {
        "mnist": _read_mnist,
        "cifar10": _read_cifar10,
        "tinyimagenet": _read_tinyimagenet,
    }
    images, labels = readers[name](Path(root), part)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# MNIST: IDX files
# ---------------------------------------------------------------------------------------------


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """One IDX file (big-endian header: magic, count, dims; then raw uint8), gzipped or not."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt("mnist", path, f"cannot read: {exc}") from exc
    header = struct.Struct(f">{2 + len(item_shape)}I")
    if len(raw) < header.size:
        raise corrupt("mnist", path, f"{len(raw)} bytes is shorter than the IDX header")
    found_magic, count, *dims = header.unpack_from(raw)
    if found_magic != magic:
        raise corrupt("mnist", path, f"magic number {found_magic}, expected {magic}")
    if tuple(dims) != item_shape:
        raise corrupt("mnist", path, f"item shape {tuple(dims)}, expected {item_shape}")
    payload = len(raw) - header.size
    if payload != count * math.prod(item_shape):
        raise corrupt("mnist", path, f"header says {count} items but {payload} data bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header.size).reshape(count, *item_shape).copy()


def _read_mnist(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = MNIST_STEMS[part]
    image_path, label_path = _mnist_file(root, image_stem), _mnist_file(root, label_stem)
    images = _read_idx(image_path, 2051, (28, 28))
    labels = _read_idx(label_path, 2049, ())
    if len(images) != len(labels):
        raise corrupt("mnist", label_path, f"{len(labels)} labels for {len(images)} images")
    if labels.size and labels.max() > 9:
        raise corrupt("mnist", label_path, f"label {labels.max()} outside 0-9")
    return images[:, None], labels


# ---------------------------------------------------------------------------------------------
# CIFAR-10: pickled batches
# ---------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a CIFAR batch needs nothing more, and an
    unrestricted pickle can run arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # any failure to unpickle means the file is not a CIFAR batch
        raise corrupt("cifar10", path, f"unreadable pickle: {exc}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise corrupt("cifar10", path, "expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        raise corrupt("cifar10", path, "b'data' is not a uint8 N x 3072 array")
    if (
        labels.shape != (len(data),)
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels.size and (labels.min() < 0 or labels.max() > 9))
    ):
        raise corrupt("cifar10", path, f"b'labels' is not {len(data)} labels in 0-9")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar10(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Pickled batches, rows channel-major (1024 R, then G, then B, each row by row)."""
    batches = [_read_cifar10_batch(root / CIFAR10_DIR / b) for b in CIFAR10_BATCHES[part]]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# ---------------------------------------------------------------------------------------------
# TinyImageNet: JPEG folders
# ---------------------------------------------------------------------------------------------


def _read_tinyimagenet(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """JPEG folders; classes are numbered by sorted wnid (torchvision ImageFolder's order).

    ``train`` is ``train/<wnid>/images/*.JPEG``; ``test`` is the official val set, labelled by
    ``val/val_annotations.txt`` (file, wnid, box).
    """
    base = root / TINYIMAGENET_DIR
    wnids = sorted(set((base / "wnids.txt").read_text().split()))
    class_of = {wnid: i for i, wnid in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    if part == "train":
        for wnid in wnids:
            class_files = sorted((base / "train" / wnid / "images").glob("*.JPEG"))
            if not class_files:
                raise corrupt("tinyimagenet", base / "train" / wnid / "images", "no JPEG files")
            files += class_files
            labels += [class_of[wnid]] * len(class_files)
    else:
        annotations = base / "val" / "val_annotations.txt"
        for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in class_of:
                raise corrupt("tinyimagenet", annotations, f"line {line_no} has no known wnid")
            files.append(base / "val" / "images" / fields[0])
            labels.append(class_of[fields[1]])
    return _decode_images(files), np.asarray(labels, dtype=np.int64)


def _decode_images(files: list[Path]) -> np.ndarray:
    """Decode 64x64 JPEGs to ``(N, 3, 64, 64)`` uint8, grayscale ones as RGB, in threads
    (Pillow releases the GIL while decoding)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise UserError("reading TinyImageNet needs Pillow: pip install pillow") from exc
    size = TINYIMAGENET_SIZE_PX
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        try:
            with Image.open(files[i]) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise corrupt("tinyimagenet", files[i], f"cannot decode image: {exc}") from exc
        if rgb.size != (size, size):
            raise corrupt("tinyimagenet", files[i], f"image is {rgb.size}, expected 64x64")
        out[i] = np.asarray(rgb)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(len(files))))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
