"""Data layer: the registry and roots, splits of real MNIST and of small files, check(),
augmentation and synthetic data. Format readers are in test_formats.py, downloads in
test_download.py."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import write_small_cifar, write_small_mnist
from helpers import assert_one_line_error

from raycert import data
from raycert.errors import UserError


def row_hashes(images: torch.Tensor, labels: torch.Tensor) -> list[bytes]:
    """One digest per sample (image bytes and label), sorted: a multiset of samples."""
    flat = images.reshape(len(images), -1).numpy()
    return sorted(
        hashlib.md5(row.tobytes() + bytes([int(y)]), usedforsecurity=False).digest()
        for row, y in zip(flat, labels.tolist(), strict=True)
    )


# ---------------------------------------------------------------------------------------------
# Registry and roots
# ---------------------------------------------------------------------------------------------


def test_registry_values_match_the_paper() -> None:
    assert data.dataset_info("mnist").acr_cap == 0.4
    assert data.dataset_info("CIFAR10").acr_cap == pytest.approx(8.8 / 255)
    assert data.dataset_info("tinyimagenet").acr_cap == pytest.approx(1 / 255)
    assert data.dataset_info("cifar10").std == (0.2023, 0.1994, 0.2010)
    assert data.dataset_info("mnist").mean == (0.0,) and data.dataset_info("mnist").std == (1.0,)
    assert [data.DATASETS[n].augment for n in data.DATASETS] == [False, True, True, False]
    for info in data.DATASETS.values():
        assert len(info.mean) == len(info.std) == info.shape[0]


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UserError) as exc:
        data.dataset_info("imagenet")
    assert_one_line_error(exc, "imagenet", "mnist", "cifar10", "tinyimagenet", "synthetic")


def test_unknown_split_and_bad_limit_are_user_errors() -> None:
    with pytest.raises(UserError, match="known splits"):
        data.load("synthetic", "validation")
    with pytest.raises(UserError, match="limit"):
        data.load("synthetic", "train", limit=0)


def test_resolve_root_prefers_argument_then_env_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYCERT_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("RAYCERT_DATA")
    assert data.resolve_root(None) == tmp_path / "xdg" / "raycert" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.resolve_root(None) == Path.home() / ".cache" / "raycert" / "data"


# ---------------------------------------------------------------------------------------------
# Real MNIST
# ---------------------------------------------------------------------------------------------


def raw_idx(path: Path, header_bytes: int) -> np.ndarray:
    """Independent IDX read for cross-checking: gunzip and skip the header."""
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=header_bytes)


def test_mnist_split_sizes_labels_and_pixels(shared_data: Path) -> None:
    splits = {s: data.load("mnist", s, shared_data, download=False) for s in data.SPLITS}
    assert {s: len(split) for s, split in splits.items()} == {
        "train": 55000,
        "val": 5000,
        "test": 10000,
    }
    for name, split in splits.items():
        assert split.name == "mnist" and split.split == name
        assert split.images.shape[1:] == (1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        assert sorted(split.labels.unique().tolist()) == list(range(10))
    pixels = splits["val"].to_float("cpu")
    assert pixels.dtype == torch.float32
    assert pixels.min() == 0.0 and pixels.max() == 1.0


def test_mnist_test_split_is_the_official_file_in_order(shared_data: Path) -> None:
    test = data.load("mnist", "test", shared_data, download=False)
    raw = shared_data / "MNIST" / "raw"
    images = raw_idx(raw / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = raw_idx(raw / "t10k-labels-idx1-ubyte.gz", 8)
    assert np.array_equal(test.images.numpy(), images)
    assert np.array_equal(test.labels.numpy(), labels)


def test_mnist_train_and_val_partition_the_training_file(shared_data: Path) -> None:
    train = data.load("mnist", "train", shared_data, download=False, seed=0)
    val = data.load("mnist", "val", shared_data, download=False, seed=0)
    raw = shared_data / "MNIST" / "raw"
    images = torch.from_numpy(raw_idx(raw / "train-images-idx3-ubyte.gz", 16).copy())
    labels = torch.from_numpy(raw_idx(raw / "train-labels-idx1-ubyte.gz", 8).copy())
    together = row_hashes(
        torch.cat([train.images, val.images]).reshape(-1, 784),
        torch.cat([train.labels, val.labels]),
    )
    assert together == row_hashes(images.reshape(-1, 784), labels)


def test_mnist_split_is_deterministic_by_seed(shared_data: Path) -> None:
    first = data.load("mnist", "val", shared_data, download=False, seed=0)
    again = data.load("mnist", "val", shared_data, download=False, seed=0)
    other = data.load("mnist", "val", shared_data, download=False, seed=1)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, other.labels)


def test_limit_takes_a_seeded_subset(shared_data: Path) -> None:
    train = data.load("mnist", "train", shared_data, download=False, seed=3)
    limited = data.load("mnist", "train", shared_data, download=False, seed=3, limit=100)
    assert torch.equal(limited.images, train.images[:100])
    assert torch.equal(limited.labels, train.subset(100).labels)

    test = data.load("mnist", "test", shared_data, download=False)
    picked = data.load("mnist", "test", shared_data, download=False, seed=3, limit=50)
    again = data.load("mnist", "test", shared_data, download=False, seed=3, limit=50)
    assert len(picked) == 50 and torch.equal(picked.images, again.images)
    assert not torch.equal(picked.images, test.images[:50])
    test_rows = set(row_hashes(test.images, test.labels))
    assert set(row_hashes(picked.images, picked.labels)) <= test_rows


# ---------------------------------------------------------------------------------------------
# Small files: split sizes and missing datasets
# ---------------------------------------------------------------------------------------------


def test_small_mnist_files_read_and_split(tmp_path: Path) -> None:
    write_small_mnist(tmp_path)
    assert len(data.load("mnist", "test", tmp_path, download=False)) == 12
    train = data.load("mnist", "train", tmp_path, download=False)
    val = data.load("mnist", "val", tmp_path, download=False)
    assert (len(train), len(val)) == (22, 2)  # 5000/60000 of 24, rounded


def test_missing_dataset_without_download_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        data.load("cifar10", "train", tmp_path, download=False)
    assert_one_line_error(
        exc, str(tmp_path / "cifar-10-batches-py"), "RAYCERT_DATA", "raycert data download cifar10"
    )


# ---------------------------------------------------------------------------------------------
# check()
# ---------------------------------------------------------------------------------------------


def test_check_reports_present_valid_and_problems(tmp_path: Path) -> None:
    write_small_cifar(tmp_path)
    write_small_mnist(tmp_path)
    (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    by_name = {status.name: status for status in data.check(tmp_path)}
    assert by_name["cifar10"].present and by_name["cifar10"].valid
    assert by_name["cifar10"].counts == {"train": 45, "val": 5, "test": 10}
    assert by_name["mnist"].present and not by_name["mnist"].valid
    assert "t10k-labels-idx1-ubyte.gz" in by_name["mnist"].message
    assert not by_name["tinyimagenet"].present and not by_name["tinyimagenet"].valid
    assert "wnids.txt" in by_name["tinyimagenet"].message


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def crops_of(image: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every crop of the edge-padded image, flipped and not (independent of the code under test)."""
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    _, h, w = image.shape
    crops = [
        padded[:, i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)
    ]
    return crops + [c[:, :, ::-1] for c in crops]


def test_augment_without_pad_or_flip_is_identity() -> None:
    images = torch.rand(8, 3, 6, 5)
    out = data.augment(images, 0, torch.Generator().manual_seed(0), flip=False)
    assert torch.equal(out, images)


def test_augment_flip_flips_some_samples_and_only_flips() -> None:
    images = torch.rand(64, 2, 4, 5)
    out = data.augment(images, 0, torch.Generator().manual_seed(0))
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 10 < int(flipped.sum()) < 54


def test_augment_outputs_are_crops_of_the_edge_padded_image() -> None:
    images = torch.rand(40, 3, 6, 7)
    pad = 2
    out = data.augment(images, pad, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    positions = set()
    for image, result in zip(images.numpy(), out.numpy(), strict=True):
        matches = [k for k, crop in enumerate(crops_of(image, pad)) if np.array_equal(crop, result)]
        assert matches, "output is not a crop of the edge-padded input"
        positions.add(matches[0])
    assert len(positions) > 10  # offsets and flips actually vary


def test_augment_is_deterministic_with_a_seeded_generator() -> None:
    images = torch.rand(16, 3, 8, 8)
    first = data.augment(images, 4, torch.Generator().manual_seed(7))
    again = data.augment(images, 4, torch.Generator().manual_seed(7))
    other = data.augment(images, 4, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_cuda_matches_cpu_with_a_cpu_generator() -> None:
    images = torch.rand(32, 3, 8, 8)
    on_cpu = data.augment(images, 4, torch.Generator().manual_seed(5))
    on_gpu = data.augment(images.cuda(), 4, torch.Generator().manual_seed(5))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_shaped_as_asked() -> None:
    first = data.synthetic_split(300, (3, 5, 7), 6, seed=4)
    again = data.synthetic_split(300, (3, 5, 7), 6, seed=4)
    other = data.synthetic_split(300, (3, 5, 7), 6, seed=5)
    assert first.images.shape == (300, 3, 5, 7) and first.images.dtype == torch.uint8
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
    assert first.labels.bincount().tolist() == [50] * 6


def test_synthetic_splits_share_classes_and_are_learnable() -> None:
    train = data.synthetic_split(800, (1, 8, 8), 4, seed=2, split="train")
    test = data.synthetic_split(400, (1, 8, 8), 4, seed=2, split="test")
    assert not torch.equal(train.images[:400], test.images)
    x_train, x_test = train.to_float().flatten(1), test.to_float().flatten(1)
    centroids = torch.stack([x_train[train.labels == k].mean(0) for k in range(4)])
    predicted = torch.cdist(x_test, centroids).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.9


def test_load_synthetic_uses_registry_defaults() -> None:
    info = data.dataset_info("synthetic")
    splits = {s: data.load("synthetic", s) for s in data.SPLITS}
    assert {s: len(v) for s, v in splits.items()} == {
        "train": info.train_size - info.val_size,
        "val": info.val_size,
        "test": info.test_size,
    }
    assert splits["train"].images.shape[1:] == info.shape
    assert int(splits["test"].labels.max()) == info.num_classes - 1
    together = row_hashes(
        torch.cat([splits["train"].images, splits["val"].images]),
        torch.cat([splits["train"].labels, splits["val"].labels]),
    )
    pool = data.synthetic_split(info.train_size, info.shape, info.num_classes, seed=0)
    assert together == row_hashes(pool.images, pool.labels)
