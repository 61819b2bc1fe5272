"""Datasets: MNIST, CIFAR-10, TinyImageNet and a learnable synthetic set, as uint8 in memory.

This is what the rest of raycert calls: the registry (``dataset_info``), ``load``, ``check``,
``download`` and ``augment``. The on-disk formats are read by ``raycert.formats`` (torchvision
layouts: ``MNIST/raw``, ``cifar-10-batches-py``, ``tiny-imagenet-200``) and fetched by
``raycert.download``. Whole datasets are read into memory as uint8 ``(N, C, H, W)`` tensors; the
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

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from raycert.download import download_dataset
from raycert.errors import UserError
from raycert.formats import DATASET_DIRS, missing_error, missing_files, read_cached

SPLITS = ("train", "val", "test")


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
        if missing_files(info.name, data_root):
            if not download:
                raise missing_error(info.name, data_root)
            download_dataset(info.name, data_root)
        images, labels = read_cached(info.name, data_root, part)

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
        missing = missing_files(name, data_root)
        if missing:
            where = missing[0].relative_to(data_root)
            statuses.append(DatasetStatus(name, False, False, message=f"missing {where}"))
            continue
        try:
            n_train = len(read_cached(name, data_root, "train")[1])
            n_test = len(read_cached(name, data_root, "test")[1])
            n_val = _val_count(DATASETS[name], n_train)
        except UserError as exc:
            statuses.append(DatasetStatus(name, True, False, message=str(exc)))
            continue
        counts = {"train": n_train - n_val, "val": n_val, "test": n_test}
        folder = dataset_dir(name, data_root).relative_to(data_root)
        statuses.append(DatasetStatus(name, True, True, counts, f"in {folder}"))
    return statuses


# ---------------------------------------------------------------------------------------------
# Folders and downloads
# ---------------------------------------------------------------------------------------------


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """Where a dataset lives under the data root (the folder ``download`` creates)."""
    info = dataset_info(name)
    if info.name not in DATASET_DIRS:
        raise UserError(f"{info.name} is generated in memory and has no folder on disk")
    return resolve_root(root) / DATASET_DIRS[info.name]


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch a dataset from its official source (or RAYCERT_MIRROR) into the torchvision layout.

    Files already present with the right md5 are kept. Returns the dataset's folder. The fetching
    itself is ``raycert.download``.
    """
    info = dataset_info(name)
    if info.name not in ON_DISK:
        raise UserError(f"{info.name} is generated in memory; downloadable: {', '.join(ON_DISK)}")
    return download_dataset(info.name, resolve_root(root))
