"""Datasets: MNIST, CIFAR-10, TinyImageNet and a learnable synthetic set, as uint8 in memory.

Files are read from the layouts torchvision writes under a data root (so an existing torchvision
root works as is, without importing torchvision): ``MNIST/raw``, ``cifar-10-batches-py`` and
``tiny-imagenet-200``. Whole datasets are read into memory as uint8 ``(N, C, H, W)`` tensors; the
trainer scales them to [0, 1] on its device (``Split.to_float``) and normalization happens inside
the model, so perturbation radii stay in pixel units.

The ``train`` and ``val`` splits partition the official training set with a seeded permutation
(same seed, same split); ``test`` is the official test set (for TinyImageNet the official
validation set, since its test set has no labels). The search optimises on ``val``; ``test`` is
for final reports only.

Every problem a user can fix (missing or corrupt files, unknown names, failed downloads) raises a
one-line ``UserError`` that names the path and the fix.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from torch import Tensor

from raycert.errors import UserError

SPLITS = ("train", "val", "test")
ROOT_HINT = "data root from --data-dir or RAYCERT_DATA"


# ---------------------------------------------------------------------------------------------
# Dataset registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of raycert needs to know about a dataset, without reading it.

    ``mean``/``std`` are per-channel and applied inside the model (after the perturbation box is
    clipped to [0, 1]). ``acr_cap`` is the fixed radius cap for ACR, in [0, 1] pixel units.
    ``train_size``/``test_size`` are the official counts; ``val_size`` of the training images are
    held out for validation (on a smaller copy, the same fraction is).
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    acr_cap: float
    train_size: int
    val_size: int
    test_size: int
    augment: bool
    crop_pad: int = 4


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        shape=(1, 28, 28),
        num_classes=10,
        mean=(0.0,),
        std=(1.0,),
        acr_cap=0.4,
        train_size=60000,
        val_size=5000,
        test_size=10000,
        augment=False,
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        shape=(3, 32, 32),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        acr_cap=8.8 / 255,
        train_size=50000,
        val_size=5000,
        test_size=10000,
        augment=True,
    ),
    "tinyimagenet": DatasetInfo(
        name="tinyimagenet",
        shape=(3, 64, 64),
        num_classes=200,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2302, 0.2265, 0.2262),
        acr_cap=1 / 255,
        train_size=100000,
        val_size=10000,
        test_size=10000,
        augment=True,
    ),
    "synthetic": DatasetInfo(
        name="synthetic",
        shape=(1, 8, 8),
        num_classes=4,
        mean=(0.0,),
        std=(1.0,),
        acr_cap=0.1,
        train_size=2000,
        val_size=400,
        test_size=500,
        augment=False,
    ),
}

ON_DISK = ("mnist", "cifar10", "tinyimagenet")


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name`` (case-insensitive); UserError listing the known names."""
    info = DATASETS.get(name.strip().lower())
    if info is None:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return info


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


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


def resolve_root(data_dir: str | Path | None = None) -> Path:
    """The data root: ``data_dir``, else env ``RAYCERT_DATA``, else a per-user cache folder."""
    if data_dir is not None and str(data_dir) != "":
        chosen = str(data_dir)
    elif os.environ.get("RAYCERT_DATA"):
        chosen = os.environ["RAYCERT_DATA"]
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        chosen = os.path.join(cache, "raycert", "data")
    return Path(os.path.abspath(os.path.expanduser(chosen)))


def load(
    name: str,
    split: str,
    root: str | Path | None = None,
    *,
    download: bool = True,
    seed: int = 0,
    limit: int | None = None,
) -> Split:
    """Read one split of a dataset into memory, downloading it first if missing and allowed.

    ``seed`` picks the validation split held out of the training set (and the subset that
    ``limit`` takes from the test set); the synthetic dataset itself is fixed. ``limit`` keeps at
    most that many samples, a seeded subset, for quick runs.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of samples, got {limit}")
    part = "test" if split == "test" else "train"
    if info.name == "synthetic":
        size = info.test_size if part == "test" else info.train_size
        pool = synthetic_split(size, info.shape, info.num_classes, seed=0, split=part)
        images, labels = pool.images, pool.labels
    else:
        data_root = resolve_root(root)
        if _missing_files(info.name, data_root):
            if not download:
                raise _missing_error(info.name, data_root)
            _download(info.name, data_root)
        images, labels = _read_cached(info.name, data_root, part)

    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    if part == "train":
        n_val = _val_count(info, len(labels))
        index = perm[:n_val] if split == "val" else perm[n_val:]
        if limit is not None:
            index = index[:limit]
    elif limit is not None:
        index = perm[:limit].sort().values
    else:
        index = torch.arange(len(labels))
    return Split(images[index], labels[index], info.name, split)


def _val_count(info: DatasetInfo, n_train: int) -> int:
    """Images held out for val: ``val_size`` of the official set, the same share of others."""
    if n_train < 2:
        raise UserError(
            f"{info.name}: {n_train} training image(s) is too few to hold out a val split"
        )
    share = round(n_train * info.val_size / info.train_size)
    return min(max(share, 1), n_train - 1)


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Reading files (torchvision layouts)
# ---------------------------------------------------------------------------------------------

MNIST_DIR = Path("MNIST") / "raw"
MNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_DIR = Path("cifar-10-batches-py")
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
TINYIMAGENET_DIR = Path("tiny-imagenet-200")
TINYIMAGENET_SIZE_PX = 64


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """Where a dataset lives under the data root (the folder ``download`` creates)."""
    info = dataset_info(name)
    base = {"mnist": Path("MNIST"), "cifar10": CIFAR10_DIR, "tinyimagenet": TINYIMAGENET_DIR}
    if info.name not in base:
        raise UserError(f"{info.name} is generated in memory and has no folder on disk")
    return resolve_root(root) / base[info.name]


def _mnist_file(root: Path, stem: str) -> Path:
    """The gzipped file if present (what the downloader checks), else the gunzipped copy."""
    packed = root / MNIST_DIR / f"{stem}.gz"
    return packed if packed.exists() else root / MNIST_DIR / stem


def _required_files(name: str, root: Path) -> list[Path]:
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


def _missing_files(name: str, root: Path) -> list[Path]:
    return [path for path in _required_files(name, root) if not path.exists()]


def _missing_error(name: str, root: Path) -> UserError:
    missing = _missing_files(name, root)
    where = missing[0] if missing else root
    return UserError(
        f"{name} not found: {where} is missing ({ROOT_HINT}: {root}); "
        f"fetch it with `raycert data download {name}`"
    )


def _corrupt(name: str, path: Path, problem: str) -> UserError:
    return UserError(
        f"{name} data at {path} is corrupt ({problem}); delete it and run "
        f"`raycert data download {name}` ({ROOT_HINT})"
    )


def _read_cached(name: str, root: Path, part: str) -> tuple[Tensor, Tensor]:
    """Read a dataset part once per process; the key includes file sizes and times, so a
    replaced file is read again."""
    stamp = tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in _required_files(name, root)
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


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """One IDX file (big-endian header: magic, count, dims; then raw uint8), gzipped or not."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt("mnist", path, f"cannot read: {exc}") from exc
    header = struct.Struct(f">{2 + len(item_shape)}I")
    if len(raw) < header.size:
        raise _corrupt("mnist", path, f"{len(raw)} bytes is shorter than the IDX header")
    found_magic, count, *dims = header.unpack_from(raw)
    if found_magic != magic:
        raise _corrupt("mnist", path, f"magic number {found_magic}, expected {magic}")
    if tuple(dims) != item_shape:
        raise _corrupt("mnist", path, f"item shape {tuple(dims)}, expected {item_shape}")
    payload = len(raw) - header.size
    if payload != count * math.prod(item_shape):
        raise _corrupt("mnist", path, f"header says {count} items but {payload} data bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header.size).reshape(count, *item_shape).copy()


def _read_mnist(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = MNIST_STEMS[part]
    image_path, label_path = _mnist_file(root, image_stem), _mnist_file(root, label_stem)
    images = _read_idx(image_path, 2051, (28, 28))
    labels = _read_idx(label_path, 2049, ())
    if len(images) != len(labels):
        raise _corrupt("mnist", label_path, f"{len(labels)} labels for {len(images)} images")
    if labels.size and labels.max() > 9:
        raise _corrupt("mnist", label_path, f"label {labels.max()} outside 0-9")
    return images[:, None], labels


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
        raise _corrupt("cifar10", path, f"unreadable pickle: {exc}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise _corrupt("cifar10", path, "expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        raise _corrupt("cifar10", path, "b'data' is not a uint8 N x 3072 array")
    if (
        labels.shape != (len(data),)
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels.size and (labels.min() < 0 or labels.max() > 9))
    ):
        raise _corrupt("cifar10", path, f"b'labels' is not {len(data)} labels in 0-9")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar10(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Pickled batches, rows channel-major (1024 R, then G, then B, each row by row)."""
    batches = [_read_cifar10_batch(root / CIFAR10_DIR / b) for b in CIFAR10_BATCHES[part]]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


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
                raise _corrupt("tinyimagenet", base / "train" / wnid / "images", "no JPEG files")
            files += class_files
            labels += [class_of[wnid]] * len(class_files)
    else:
        annotations = base / "val" / "val_annotations.txt"
        for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in class_of:
                raise _corrupt("tinyimagenet", annotations, f"line {line_no} has no known wnid")
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
            raise _corrupt("tinyimagenet", files[i], f"cannot decode image: {exc}") from exc
        if rgb.size != (size, size):
            raise _corrupt("tinyimagenet", files[i], f"image is {rgb.size}, expected 64x64")
        out[i] = np.asarray(rgb)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(len(files))))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------
# Checking what is on disk
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetStatus:
    """One row of ``raycert data check``: counts when readable, else the problem in ``message``."""

    name: str
    present: bool
    valid: bool
    counts: dict[str, int] = field(default_factory=dict)
    message: str = ""


def check(root: str | Path | None = None) -> list[DatasetStatus]:
    """Read every on-disk dataset under the root and report its split sizes or its problem."""
    data_root = resolve_root(root)
    statuses = []
    for name in ON_DISK:
        missing = _missing_files(name, data_root)
        if missing:
            where = missing[0].relative_to(data_root)
            statuses.append(DatasetStatus(name, False, False, message=f"missing {where}"))
            continue
        try:
            n_train = len(_read_cached(name, data_root, "train")[1])
            n_test = len(_read_cached(name, data_root, "test")[1])
            n_val = _val_count(DATASETS[name], n_train)
        except UserError as exc:
            statuses.append(DatasetStatus(name, True, False, message=str(exc)))
            continue
        counts = {"train": n_train - n_val, "val": n_val, "test": n_test}
        folder = dataset_dir(name, data_root).relative_to(data_root)
        statuses.append(DatasetStatus(name, True, True, counts, f"in {folder}"))
    return statuses


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------

# Base URLs per dataset; env RAYCERT_MIRROR, if set, replaces the base for every dataset.
MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "tinyimagenet": "http://cs231n.stanford.edu/",
}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_ARCHIVE = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
TINYIMAGENET_ARCHIVE = ("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")
DOWNLOAD_TIMEOUT_S = 60.0


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch a dataset from its official source (or RAYCERT_MIRROR) into the torchvision layout.

    Files already present with the right md5 are kept. Returns the dataset's folder.
    """
    info = dataset_info(name)
    if info.name not in ON_DISK:
        raise UserError(f"{info.name} is generated in memory; downloadable: {', '.join(ON_DISK)}")
    return _download(info.name, resolve_root(root))


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, keeping it only if its md5 matches.

    Bytes go to a temporary file beside ``dest`` that is renamed into place after the check, so
    ``dest`` is never a partial or wrong file.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
        )
    except OSError as exc:
        raise UserError(
            f"cannot write to {dest.parent} ({exc.strerror}); choose a writable "
            f"--data-dir or RAYCERT_DATA"
        ) from exc
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            _progress() as progress,
        ):
            size = int(response.headers.get("Content-Length") or 0) or None
            task = progress.add_task(dest.name, total=size)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(task, len(chunk))
        if digest.hexdigest() != md5:
            raise UserError(
                f"download of {url} has md5 {digest.hexdigest()}, expected {md5}; "
                f"nothing was saved; retry, or set RAYCERT_MIRROR to a good mirror"
            )
        os.replace(tmp, dest)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"could not download {url} ({reason}); check the network, or set "
            f"RAYCERT_MIRROR to a mirror holding {dest.name}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _progress() -> Progress:
    """A download bar on stderr, shown only on a terminal (logs and pipes stay clean)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def _url(name: str, filename: str) -> str:
    base = os.environ.get("RAYCERT_MIRROR", "") or MIRRORS[name]
    return f"{base.rstrip('/')}/{filename}"


def _md5_ok(path: Path, md5: str) -> bool:
    if not path.is_file():
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest() == md5


def _download(name: str, root: Path) -> Path:
    if name == "mnist":
        for filename, md5 in MNIST_MD5.items():
            dest = root / MNIST_DIR / filename
            if not _md5_ok(dest, md5):
                fetch(_url(name, filename), dest, md5)
        return root / "MNIST"
    if name == "cifar10":
        target = root / CIFAR10_DIR
        if all(_md5_ok(target / f, md5) for f, md5 in CIFAR10_MD5.items()):
            return target
        archive = _fetch_archive(name, root, *CIFAR10_ARCHIVE)

        def verify(folder: Path) -> None:
            bad = [f for f, md5 in CIFAR10_MD5.items() if not _md5_ok(folder / f, md5)]
            if bad:
                raise UserError(
                    f"{archive} unpacked without a valid {bad[0]}; delete the archive "
                    f"and run `raycert data download cifar10` again"
                )

        _extract(archive, root, CIFAR10_DIR, verify)
        return target
    target = root / TINYIMAGENET_DIR
    if not _missing_files(name, root):
        return target
    archive = _fetch_archive(name, root, *TINYIMAGENET_ARCHIVE)

    def verify_tin(folder: Path) -> None:
        if _missing_files(name, folder.parent):
            raise UserError(f"{archive} unpacked without the expected tiny-imagenet-200 layout")

    _extract(archive, root, TINYIMAGENET_DIR, verify_tin)
    return target


def _fetch_archive(name: str, root: Path, filename: str, md5: str) -> Path:
    archive = root / filename
    if not _md5_ok(archive, md5):
        fetch(_url(name, filename), archive, md5)
    return archive


def _extract(archive: Path, root: Path, folder: Path, verify: Callable[[Path], None]) -> None:
    """Unpack ``archive`` into a scratch folder, check ``folder`` in it, then move it into place,
    so a failed or interrupted unpack never leaves a half-written dataset."""
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(scratch)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(scratch, filter="data")
        verify(scratch / folder)
        target = root / folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch / folder, target)
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise UserError(
            f"cannot unpack {archive} ({exc}); delete it and run `raycert data download` again"
        ) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
