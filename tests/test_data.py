"""Data layer: real MNIST, CIFAR-10 and TinyImageNet readers on files in the official layouts,
corrupt files, the downloader against a local HTTP server, augmentation and synthetic data."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raycert import data
from raycert.errors import UserError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def row_hashes(images: torch.Tensor, labels: torch.Tensor) -> list[bytes]:
    """One digest per sample (image bytes and label), sorted: a multiset of samples."""
    flat = images.reshape(len(images), -1).numpy()
    return sorted(
        hashlib.md5(row.tobytes() + bytes([int(y)]), usedforsecurity=False).digest()
        for row, y in zip(flat, labels.tolist(), strict=True)
    )


def assert_one_line_mentioning(exc: pytest.ExceptionInfo[UserError], *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


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
    assert_one_line_mentioning(exc, "imagenet", "mnist", "cifar10", "tinyimagenet", "synthetic")


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


# ---------------------------------------------------------------------------------------------
# Corrupt MNIST (small IDX files written here)
# ---------------------------------------------------------------------------------------------


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


def test_small_mnist_files_read_and_split(tmp_path: Path) -> None:
    write_small_mnist(tmp_path)
    assert len(data.load("mnist", "test", tmp_path, download=False)) == 12
    train = data.load("mnist", "train", tmp_path, download=False)
    val = data.load("mnist", "val", tmp_path, download=False)
    assert (len(train), len(val)) == (22, 2)  # 5000/60000 of 24, rounded


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
    assert_one_line_mentioning(exc, str(path), expected, "raycert data download mnist")


def test_mnist_labels_out_of_range_and_count_mismatch(tmp_path: Path) -> None:
    raw = write_small_mnist(tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(2049, np.full(12, 10))))
    with pytest.raises(UserError) as exc:
        data.load("mnist", "test", tmp_path, download=False)
    assert_one_line_mentioning(exc, str(labels), "label 10 outside 0-9")
    labels.write_bytes(gzip.compress(idx_bytes(2049, np.zeros(11))))
    with pytest.raises(UserError) as exc:
        data.load("mnist", "test", tmp_path, download=False)
    assert_one_line_mentioning(exc, "11 labels for 12 images")


def test_missing_dataset_without_download_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        data.load("cifar10", "train", tmp_path, download=False)
    assert_one_line_mentioning(
        exc, str(tmp_path / "cifar-10-batches-py"), "RAYCERT_DATA", "raycert data download cifar10"
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-10 in the official pickle format
# ---------------------------------------------------------------------------------------------


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
    assert_one_line_mentioning(exc, str(folder / "data_batch_3"), expected)


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
    assert_one_line_mentioning(exc, str(bad), "expected 64x64")


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
# Downloads from a local HTTP server
# ---------------------------------------------------------------------------------------------


def test_fetch_keeps_a_file_with_the_right_md5(mirror, tmp_path: Path) -> None:
    content = bytes(range(256)) * 5000
    (mirror.folder / "blob.bin").write_bytes(content)
    dest = tmp_path / "out" / "blob.bin"
    data.fetch(mirror.url + "blob.bin", dest, hashlib.md5(content).hexdigest())
    assert dest.read_bytes() == content
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]


def test_fetch_rejects_a_wrong_md5_and_leaves_nothing(mirror, tmp_path: Path) -> None:
    (mirror.folder / "blob.bin").write_bytes(b"not what was promised")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(UserError) as exc:
        data.fetch(mirror.url + "blob.bin", dest, "0" * 32)
    assert_one_line_mentioning(exc, "md5", "0" * 32, "blob.bin")
    assert list(dest.parent.iterdir()) == []


def test_fetch_of_a_missing_url_is_a_user_error(mirror, tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        data.fetch(mirror.url + "nothing-here.gz", tmp_path / "x.gz", "0" * 32)
    assert_one_line_mentioning(exc, "nothing-here.gz", "RAYCERT_MIRROR")
    assert list(tmp_path.iterdir()) == []


def test_load_downloads_mnist_from_the_mirror(
    mirror, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for stem in MNIST_FILES:
        shutil.copy(shared_data / "MNIST/raw" / f"{stem}.gz", mirror.folder)
    monkeypatch.setenv("RAYCERT_MIRROR", mirror.url)
    test = data.load("mnist", "test", tmp_path, download=True)
    assert len(test) == 10000
    assert sorted(p.name for p in (tmp_path / "MNIST/raw").iterdir()) == sorted(
        f"{stem}.gz" for stem in MNIST_FILES
    )
    # Files that pass their md5 are not fetched again: a dead mirror does not matter now.
    monkeypatch.setenv("RAYCERT_MIRROR", "http://127.0.0.1:9/")
    assert data.download("mnist", tmp_path) == tmp_path / "MNIST"


def test_download_rejects_a_wrong_cifar_archive(
    mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_small_cifar(mirror.folder / "src")
    with tarfile.open(mirror.folder / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(mirror.folder / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setenv("RAYCERT_MIRROR", mirror.url)
    root = tmp_path / "root"
    with pytest.raises(UserError) as exc:
        data.download("cifar10", root)
    assert_one_line_mentioning(exc, "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    assert list(root.iterdir()) == []


def test_download_of_generated_or_unknown_dataset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="generated in memory"):
        data.download("synthetic", tmp_path)
    with pytest.raises(UserError, match="unknown dataset"):
        data.download("nosuch", tmp_path)


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
