"""The dataset registry: what raycert knows of each dataset without reading it."""

from __future__ import annotations

from dataclasses import dataclass

from raycert.errors import UserError


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
