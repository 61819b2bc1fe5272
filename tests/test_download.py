"""Downloads (raycert.data.downloads, and data.download/data.load on top) from a local HTTP server:
md5 checks, nothing partial left behind, mirrors, and one-line UserErrors."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import pytest
from datafiles import MNIST_FILES, write_small_cifar
from helpers import assert_one_line_error

from raycert import data
from raycert.data import downloads
from raycert.errors import UserError


def test_fetch_keeps_a_file_with_the_right_md5(mirror, tmp_path: Path) -> None:
    content = bytes(range(256)) * 5000
    (mirror.folder / "blob.bin").write_bytes(content)
    dest = tmp_path / "out" / "blob.bin"
    downloads.fetch(mirror.url + "blob.bin", dest, hashlib.md5(content).hexdigest())
    assert dest.read_bytes() == content
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]


def test_fetch_rejects_a_wrong_md5_and_leaves_nothing(mirror, tmp_path: Path) -> None:
    (mirror.folder / "blob.bin").write_bytes(b"not what was promised")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(UserError) as exc:
        downloads.fetch(mirror.url + "blob.bin", dest, "0" * 32)
    assert_one_line_error(exc, "md5", "0" * 32, "blob.bin")
    assert list(dest.parent.iterdir()) == []


def test_fetch_of_a_missing_url_is_a_user_error(mirror, tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        downloads.fetch(mirror.url + "nothing-here.gz", tmp_path / "x.gz", "0" * 32)
    assert_one_line_error(exc, "nothing-here.gz", "RAYCERT_MIRROR")
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
    assert_one_line_error(exc, "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    assert list(root.iterdir()) == []


def test_download_of_generated_or_unknown_dataset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="generated in memory"):
        data.download("synthetic", tmp_path)
    with pytest.raises(UserError, match="unknown dataset"):
        data.download("nosuch", tmp_path)
