"""Where datasets live and how a split is read: the data root, ``load``, ``check``, ``download``.

The ``train`` and ``val`` splits partition the official training set with a seeded permutation
(same seed, same split); ``test`` is the official test set (for TinyImageNet the official
validation set, since its test set has no labels). The search optimises on ``val``; ``test`` is
for final reports only. Whole datasets are read into memory as uint8 ``(N, C, H, W)`` tensors;
the trainer scales them to [0, 1] on its device and normalization happens inside the model, so
perturbation radii stay in pixel units.

Every problem a user can fix (missing or corrupt files, unknown names, failed downloads) raises a
one-line ``UserError`` that names the path and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from raycert.data.downloads import download_dataset
from raycert.data.formats import missing_error, missing_files, read_cached
from raycert.data.registry import DATASETS, ON_DISK, DatasetInfo, dataset_info
from raycert.data.split import SPLITS, Split
from raycert.data.synthetic import synthetic_split
from raycert.errors import UserError
from raycert.files import cache_dir


def resolve_root(data_dir: str | Path | None = None) -> Path:
    """The data root: ``data_dir``, else env ``RAYCERT_DATA``, else a per-user cache folder."""
    if data_dir is not None and str(data_dir) != "":
        chosen = str(data_dir)
    elif os.environ.get("RAYCERT_DATA"):
        chosen = os.environ["RAYCERT_DATA"]
    else:
        return cache_dir("data")
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


@dataclass(frozen=True)
class DatasetStatus:
    """One row of ``raycert data check``: counts when readable, else the problem in ``message``."""

    name: str
    present: bool
    valid: bool
    counts: dict[str, int] = field(default_factory=dict)
    message: str = ""


def check(root: str | Path | None = None) -> list[DatasetStatus]:
    """Read every on-disk dataset under the root and report its split sizes or its problem; a
    ``UserError`` if the root is not a folder."""
    data_root = resolve_root(root)
    if not data_root.is_dir():
        what = "is not a folder" if data_root.exists() else "does not exist"
        raise UserError(
            f"data root {data_root} {what}; pass --data-dir (or set RAYCERT_DATA) to the folder "
            "holding MNIST/raw, cifar-10-batches-py or tiny-imagenet-200, or fetch one with "
            "`raycert data download mnist --data-dir DIR`"
        )
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


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """Where a dataset lives under the data root (the folder ``download`` creates)."""
    info = dataset_info(name)
    if info.source is None:
        raise UserError(f"{info.name} is generated in memory and has no folder on disk")
    return resolve_root(root) / info.source.folder


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch a dataset from its official source (or RAYCERT_MIRROR) into the torchvision layout.

    Files already present with the right md5 are kept. Returns the dataset's folder. The fetching
    itself is ``raycert.data.downloads``.
    """
    info = dataset_info(name)
    if info.name not in ON_DISK:
        raise UserError(f"{info.name} is generated in memory; downloadable: {', '.join(ON_DISK)}")
    return download_dataset(info.name, resolve_root(root))
