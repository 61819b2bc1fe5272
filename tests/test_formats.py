"""Readers of the on-disk formats (raycert.data.formats), through data.load: MNIST IDX files gzipped
or not, CIFAR-10 pickles, TinyImageNet folders, and corrupt files as one-line UserErrors."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import (
    MNIST_FILES,
    idx_bytes,
    write_cifar_batch,
    write_small_cifar,
    write_small_mnist,
)
from helpers import assert_one_line_error
from PIL import Image

from raycert import data
from raycert.errors import UserError

# ---------------------------------------------------------------------------------------------
# MNIST: IDX files, gzipped or not
# ---------------------------------------------------------------------------------------------


def test_gunzipped_mnist_reads_the_same(shared_data: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in MNIST_FILES:
        (raw / stem).write_bytes(
            gzip.decompress((shared_data / "MNIST/raw" / f"{stem}.gz").read_bytes())
        )
    for split in ("test", "val"):
        unpacked = data.load("mnist", split, tmp_path, download=False)
        packed = data.load("mnist", split, shared_data, download=False)
        assert torch.equal(unpacked.images, packed.images)
        assert torch.equal(unpacked.labels, packed.labels)


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("bad_magic", "magic number 2049, expected 2051"),
        ("truncated_gzip", "cannot read"),
        ("truncated_payload", "header says 24 items"),
        ("wrong_item_shape", "item shape"),
    ],
)
def test_corrupt_mnist_images_are_one_line_user_errors(
    tmp_path: Path, problem: str, expected: str
) -> None:
    raw = write_small_mnist(tmp_path)
    path = raw / "train-images-idx3-ubyte.gz"
    images = np.zeros((24, 28, 28), np.uint8)
    if problem == "bad_magic":
        path.write_bytes(gzip.compress(idx_bytes(2049, images)))
    elif problem == "truncated_gzip":
        packed = path.read_bytes()
        path.write_bytes(packed[: len(packed) // 2])
    elif problem == "truncated_payload":
        path.write_bytes(gzip.compress(idx_bytes(2051, images)[:-100]))
    else:
        path.write_bytes(gzip.compress(idx_bytes(2051, np.zeros((24, 27, 28), np.uint8))))
    with pytest.raises(UserError) as exc:
        data.load("mnist", "train", tmp_path, download=False)
    assert_one_line_error(exc, str(path), expected, "raycert data download mnist")


def test_mnist_labels_out_of_range_and_count_mismatch(tmp_path: Path) -> None:
    raw = write_small_mnist(tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(2049, np.full(12, 10))))
    with pytest.raises(UserError) as exc:
        data.load("mnist", "test", tmp_path, download=False)
    assert_one_line_error(exc, str(labels), "label 10 outside 0-9")
    labels.write_bytes(gzip.compress(idx_bytes(2049, np.zeros(11))))
    with pytest.raises(UserError) as exc:
        data.load("mnist", "test", tmp_path, download=False)
    assert_one_line_error(exc, "11 labels for 12 images")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 in the official pickle format
# ---------------------------------------------------------------------------------------------


def test_cifar10_reads_official_format(tmp_path: Path) -> None:
    write_small_cifar(tmp_path, per_batch=10)
    train = data.load("cifar10", "train", tmp_path, download=False)
    val = data.load("cifar10", "val", tmp_path, download=False)
    test = data.load("cifar10", "test", tmp_path, download=False)
    assert (len(train), len(val), len(test)) == (45, 5, 10)
    assert train.images.shape[1:] == (3, 32, 32)


def test_cifar10_rows_are_channel_major(tmp_path: Path) -> None:
    write_small_cifar(tmp_path)
    rows = np.zeros((2, 3072), np.uint8)
    rows[0, 0 * 1024 + 5 * 32 + 7] = 200  # red plane, row 5, column 7
    rows[1, 1 * 1024 + 31 * 32 + 0] = 100  # green plane, row 31, column 0
    rows[1, 2 * 1024 + 0 * 32 + 31] = 50  # blue plane, row 0, column 31
    write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", rows, [3, 9])
    test = data.load("cifar10", "test", tmp_path, download=False)
    assert test.labels.tolist() == [3, 9]
    expected = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    expected[0, 0, 5, 7] = 200
    expected[1, 1, 31, 0] = 100
    expected[1, 2, 0, 31] = 50
    assert torch.equal(test.images, expected)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"not a pickle", "unreadable pickle"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2), "b'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, 2), "3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, 2), "0-9"),
        (pickle.dumps(shutil.rmtree, protocol=2), "unexpected object"),
    ],
)
def test_corrupt_cifar10_batch_is_a_user_error(
    tmp_path: Path, payload: bytes, expected: str
) -> None:
    folder = write_small_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(UserError) as exc:
        data.load("cifar10", "train", tmp_path, download=False)
    assert_one_line_error(exc, str(folder / "data_batch_3"), expected)


# ---------------------------------------------------------------------------------------------
# TinyImageNet folder layout
# ---------------------------------------------------------------------------------------------


TIN_COLORS = {"n03000000": (250, 10, 10), "n01000000": (10, 250, 10), "n02000000": (10, 10, 250)}


def write_small_tinyimagenet(root: Path, per_class: int = 4) -> Path:
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in TIN_COLORS))  # not sorted
    annotations = []
    for wnid, color in TIN_COLORS.items():
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in range(per_class):
            Image.new("RGB", (64, 64), color).save(images / f"{wnid}_{k}.JPEG", "JPEG")
    for k, wnid in enumerate(["n02000000", "n03000000", "n01000000"]):
        Image.new("RGB", (64, 64), TIN_COLORS[wnid]).save(base / "val/images" / f"val_{k}.JPEG")
        annotations.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    Image.new("L", (64, 64), 128).save(base / "val/images/val_3.JPEG", "JPEG")  # grayscale
    annotations.append("val_3.JPEG\tn01000000\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(annotations))
    return base


def test_tinyimagenet_reads_folder_layout(tmp_path: Path) -> None:
    write_small_tinyimagenet(tmp_path)
    test = data.load("tinyimagenet", "test", tmp_path, download=False)
    assert test.images.shape == (4, 3, 64, 64)
    assert test.labels.tolist() == [1, 2, 0, 0]  # classes numbered by sorted wnid
    mean_color = test.images.float().mean(dim=(2, 3))
    sorted_colors = [TIN_COLORS[w] for w in sorted(TIN_COLORS)]
    for color, label in zip(mean_color[:3], test.labels[:3].tolist(), strict=True):
        assert torch.allclose(color, torch.tensor(sorted_colors[label], dtype=torch.float), atol=6)
    assert torch.allclose(mean_color[3], torch.full((3,), 128.0), atol=2)  # gray became RGB

    train = data.load("tinyimagenet", "train", tmp_path, download=False)
    val = data.load("tinyimagenet", "val", tmp_path, download=False)
    assert (len(train), len(val)) == (11, 1)
    labels = torch.cat([train.labels, val.labels]).sort().values
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_tinyimagenet_wrong_image_size_is_a_user_error(tmp_path: Path) -> None:
    base = write_small_tinyimagenet(tmp_path)
    bad = base / "val" / "images" / "val_1.JPEG"
    Image.new("RGB", (32, 32), (0, 0, 0)).save(bad, "JPEG")
    with pytest.raises(UserError) as exc:
        data.load("tinyimagenet", "test", tmp_path, download=False)
    assert_one_line_error(exc, str(bad), "expected 64x64")
