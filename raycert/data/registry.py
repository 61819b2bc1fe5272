"""The dataset registry: one entry per dataset holds what raycert knows of it without reading it.

An entry has the dataset's shape and statistics, its ACR cap and the radii results are reported
at, and for an on-disk dataset its ``Source``: the folder under the data root, the official URL
and the md5 of every file fetched. The readers of each on-disk layout are
``raycert.data.formats``; fetching is ``raycert.data.downloads``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raycert.errors import UserError


@dataclass(frozen=True)
class Source:
    """Where an on-disk dataset lives and where it comes from.

    ``folder`` is relative to the data root (what a download creates, in torchvision's layout).
    ``url`` is the official base URL (env ``RAYCERT_MIRROR`` replaces it). ``archive`` is the
    ``(file name, md5)`` of an archive that unpacks into ``folder``, or ``None`` when ``files``
    are fetched one by one. ``files`` maps paths inside ``folder`` to their md5: the files fetched,
    or those an unpacked archive must hold.
    """

    folder: Path
    url: str
    files: dict[str, str] = field(default_factory=dict)
    archive: tuple[str, str] | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of raycert needs to know about a dataset, without reading it.

    ``mean``/``std`` are per-channel and applied inside the model (after the perturbation box is
    clipped to [0, 1]). ``acr_cap`` is the fixed radius cap for ACR, in [0, 1] pixel units.
    ``standard_radii`` (pixel units) are where certified accuracy is reported by default: the
    radii the literature tabulates (notes/acert.md section 3). ``train_size``/``test_size`` are
    the official counts; ``val_size`` of the training images are held out for validation (on a
    smaller copy, the same fraction is). ``source`` is ``None`` for a dataset made in memory.
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    acr_cap: float
    standard_radii: tuple[float, ...]
    train_size: int
    val_size: int
    test_size: int
    augment: bool
    crop_pad: int = 4
    source: Source | None = None


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        shape=(1, 28, 28),
        num_classes=10,
        mean=(0.0,),
        std=(1.0,),
        acr_cap=0.4,
        standard_radii=(0.1, 0.3),
        train_size=60000,
        val_size=5000,
        test_size=10000,
        augment=False,
        source=Source(
            folder=Path("MNIST"),
            url="https://ossci-datasets.s3.amazonaws.com/mnist/",
            files={
                "raw/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "raw/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "raw/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "raw/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
            },
        ),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        shape=(3, 32, 32),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        acr_cap=8.8 / 255,
        standard_radii=(2 / 255, 8 / 255),
        train_size=50000,
        val_size=5000,
        test_size=10000,
        augment=True,
        source=Source(
            folder=Path("cifar-10-batches-py"),
            url="https://www.cs.toronto.edu/~kriz/",
            archive=("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
            files={
                "data_batch_1": "c99cafc152244af753f735de768cd75f",
                "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                "test_batch": "40351d587109b95175f43aff81a1287e",
                "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
            },
        ),
    ),
    "tinyimagenet": DatasetInfo(
        name="tinyimagenet",
        shape=(3, 64, 64),
        num_classes=200,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2302, 0.2265, 0.2262),
        acr_cap=1 / 255,
        standard_radii=(1 / 255,),
        train_size=100000,
        val_size=10000,
        test_size=10000,
        augment=True,
        source=Source(
            folder=Path("tiny-imagenet-200"),
            url="http://cs231n.stanford.edu/",
            archive=("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),
        ),
    ),
    "synthetic": DatasetInfo(
        name="synthetic",
        shape=(1, 8, 8),
        num_classes=4,
        mean=(0.0,),
        std=(1.0,),
        acr_cap=0.1,
        standard_radii=(0.05,),
        train_size=2000,
        val_size=400,
        test_size=500,
        augment=False,
    ),
}

# The datasets read from files under the data root (the others are generated in memory).
ON_DISK = tuple(name for name, info in DATASETS.items() if info.source is not None)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name`` (case-insensitive); UserError listing the known names."""
    info = DATASETS.get(name.strip().lower())
    if info is None:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return info
