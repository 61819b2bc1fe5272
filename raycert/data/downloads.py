"""Downloads: official sources (or a mirror), md5-checked, into the torchvision layouts.

Every file is checked against its official md5 before it is kept, and archives are unpacked and
verified in a scratch folder before they are moved into place, so a failed or interrupted download
never leaves a partial dataset. Env ``RAYCERT_MIRROR``, if set, replaces the base URL for every
dataset. Users call ``raycert.data.download(name)``, which resolves the name and data root and
then calls ``download_dataset`` here.

Every download says on stderr what it fetches, from where, to where, even when no progress bar
can be drawn (a log, a pipe). A server that sends nothing for ``stall_timeout_s()`` seconds
(env ``RAYCERT_DOWNLOAD_TIMEOUT``, default 30) ends the download with a message saying so.
"""

from __future__ import annotations

import contextlib
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

from raycert.data.formats import missing_files
from raycert.data.registry import DATASETS, Source
from raycert.errors import UserError
from raycert.files import atomic_path

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

    Its registry entry's ``Source`` says what to fetch: its files one by one, or an archive
    that is unpacked and checked (the md5 of every listed file, and the layout the readers need)
    before it is moved into place. Files already present with the right md5 are kept.
    """
    source = DATASETS[name].source
    assert source is not None, f"{name} is generated in memory"
    target = root / source.folder
    if source.archive is None:
        for rel, md5 in source.files.items():
            if not _md5_ok(target / rel, md5):
                fetch(_url(name, Path(rel).name), target / rel, md5)
        return target
    if not missing_files(name, root) and _bad_file(source, target) is None:
        return target
    archive = _fetch_archive(name, root, *source.archive)

    def verify(folder: Path) -> None:  # ``folder`` is ``source.folder`` in a scratch root
        missing = missing_files(name, folder.parent)
        bad = str(missing[0].relative_to(folder.parent)) if missing else _bad_file(source, folder)
        if bad is not None:
            raise UserError(
                f"{archive} unpacked without a valid {bad}; delete the archive "
                f"and run `raycert data download {name}` again"
            )

    _extract(archive, root, source.folder, verify)
    return target


def _bad_file(source: Source, folder: Path) -> str | None:
    """The first file listed in ``source`` that is missing from ``folder`` or has a wrong md5."""
    return next((rel for rel, md5 in source.files.items() if not _md5_ok(folder / rel, md5)), None)


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, keeping it only if its md5 matches.

    Bytes go to a temporary file beside ``dest`` that is renamed into place after the check, so
    ``dest`` is never a partial or wrong file.
    """
    stall_s = stall_timeout_s()
    with contextlib.ExitStack() as files:  # on leaving it: close the file, then rename or remove
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = files.enter_context(files.enter_context(atomic_path(dest)).open("wb"))
        except OSError as exc:
            raise UserError(
                f"cannot write to {dest.parent} ({exc.strerror}); choose a writable "
                f"--data-dir or RAYCERT_DATA"
            ) from exc
        digest = hashlib.md5(usedforsecurity=False)
        print(f"downloading {url} to {dest}", file=sys.stderr, flush=True)
        try:
            with (
                urllib.request.urlopen(url, timeout=stall_s) as response,
                _progress() as progress,
            ):
                size = int(response.headers.get("Content-Length") or 0) or None
                task = progress.add_task(dest.name, total=size)
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, TimeoutError):
                raise UserError(
                    f"download of {url} stalled: no data for {stall_s:g} s; nothing was saved; "
                    "retry, set RAYCERT_MIRROR to a faster mirror, or raise "
                    "RAYCERT_DOWNLOAD_TIMEOUT"
                ) from exc
            raise UserError(
                f"could not download {url} ({reason}); check the network, or set "
                f"RAYCERT_MIRROR to a mirror holding {dest.name}"
            ) from exc
        if digest.hexdigest() != md5:
            raise UserError(
                f"download of {url} has md5 {digest.hexdigest()}, expected {md5}; "
                f"nothing was saved; retry, or set RAYCERT_MIRROR to a good mirror"
            )
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
    source = DATASETS[name].source
    assert source is not None, f"{name} is generated in memory"
    base = os.environ.get("RAYCERT_MIRROR", "") or source.url
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
