"""Datasets in torchvision's on-disk layouts, read into memory as uint8, with seeded val splits.

The public face of the data layer: the registry (``dataset_info``), ``load``, ``check``,
``download``, ``augment`` and the synthetic set. Modules, one line each:
- ``registry``: what raycert knows of each dataset without reading it;
- ``split``: one split in memory (uint8 images, int64 labels);
- ``loading``: the data root, ``load``, ``check`` and ``download``;
- ``formats``: the torchvision folder layouts and their readers;
- ``downloads``: official sources, md5-checked;
- ``augment``: random crop and flip on the batch's device;
- ``synthetic``: a learnable synthetic dataset made in memory.
"""

from raycert.data.augment import augment
from raycert.data.loading import (
    DatasetStatus,
    check,
    dataset_dir,
    download,
    load,
    resolve_root,
)
from raycert.data.registry import DATASETS, ON_DISK, DatasetInfo, dataset_info
from raycert.data.split import SPLITS, Split
from raycert.data.synthetic import synthetic_split

__all__ = [
    "DATASETS",
    "ON_DISK",
    "SPLITS",
    "DatasetInfo",
    "DatasetStatus",
    "Split",
    "augment",
    "check",
    "dataset_dir",
    "dataset_info",
    "download",
    "load",
    "resolve_root",
    "synthetic_split",
]
