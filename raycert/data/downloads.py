"""Downloads: official sources (or a mirror), md5-checked, into the torchvision layouts.

Every file is checked against its official md5 before it is kept, and archives are unpacked and
verified in a scratch folder before they are moved into place, so a failed or interrupted download
never leaves a partial dataset. Env ``RAYCERT_MIRROR``, if set, replaces the base URL for every
dataset. Users call ``raycert.data.downloads(name)``, which resolves the name and data root and
then calls ``download_dataset`` here.

Every download says on stderr what it fetches, from where, to where, even when no progress bar
can be drawn (a log, a pipe). A server that sends nothing for ``stall_timeout_s()`` seconds
(env ``RAYCERT_DOWNLOAD_TIMEOUT``, default 30) ends the download with a message saying so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from raycert.data.formats import CIFAR10_DIR, MNIST_DIR, TINYIMAGENET_DIR, missing_files
from raycert.errors import UserError

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
DOWNLOAD_STALL_S = 30.0


def stall_timeout_s() -> float:
    """Seconds a download may wait for the next bytes: env ``RAYCERT_DOWNLOAD_TIMEOUT``, else
    ``DOWNLOAD_STALL_S``."""
    text = os.environ.get("RAYCERT_DOWNLOAD_TIMEOUT", "")
    try:
        value = float(text) if text else DOWNLOAD_STALL_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"RAYCERT_DOWNLOAD_TIMEOUT must be a number of seconds > 0, got {text!r}")
    return value


def download_dataset(name: str, root: Path) -> Path:
    """Fetch the on-disk dataset ``name`` (a registry name) under ``root``; its folder.

    Files already present with the right md5 are kept.
    """
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
    if not missing_files(name, root):
        return target
    archive = _fetch_archive(name, root, *TINYIMAGENET_ARCHIVE)

    def verify_tin(folder: Path) -> None:
        if missing_files(name, folder.parent):
            raise UserError(f"{archive} unpacked without the expected tiny-imagenet-200 layout")

    _extract(archive, root, TINYIMAGENET_DIR, verify_tin)
    return target


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, keeping it only if its md5 matches.

    Bytes go to a temporary file beside ``dest`` that is renamed into place after the check, so
    ``dest`` is never a partial or wrong file.
    """
    stall_s = stall_timeout_s()
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
    print(f"downloading {url} to {dest}", file=sys.stderr, flush=True)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=stall_s) as response,
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
        if isinstance(reason, TimeoutError):
            raise UserError(
                f"download of {url} stalled: no data for {stall_s:g} s; nothing was saved; "
                f"retry, set RAYCERT_MIRROR to a faster mirror, or raise RAYCERT_DOWNLOAD_TIMEOUT"
            ) from exc
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
