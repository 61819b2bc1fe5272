"""One driver per study folder: a lock file beside it, taken before Ray starts.

Two drivers on one study share Optuna's journal and Ray Tune's state and corrupt both, so
``run_study`` takes ``<storage>/.<name>.lock`` before anything else happens and removes it when
it ends, however it ends (a ``UserError``, Ctrl-C, SIGTERM). The lock file holds its driver's
host, pid, boot id and process start time, written whole and then linked into place with
``os.link``, which fails if the name exists: of two drivers started at the same moment exactly
one gets the lock, and nobody ever reads half a lock.

A lock left by a killed driver (SIGKILL, a crash, a reboot) is stale when its host is this
host and its process is gone (no such pid, or a pid reused by another process, or another
boot); a stale lock is taken over. A lock from another host cannot be checked from here: the
error names that host and pid, and the file to delete once that driver is surely gone.

On a URI storage (``s3://``) there is no atomic create: the lock is written, read back and kept
only if it is still ours, which narrows but cannot close the window between two drivers that
start within the same second.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raycert.errors import UserError
from raycert.paths import is_uri


class StudyLock:
    """The lock of study ``name`` under ``storage`` (an absolute path or a URI); use ``with``."""

    def __init__(self, storage: str, name: str) -> None:
        self.name = name
        self.location = f"{storage.rstrip('/')}/.{name}.lock"
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; a ``UserError`` if a live driver holds it."""
        mine = json.dumps({**_this_process(), "token": self.token}).encode()
        for _ in range(3):
            if self._create(mine):
                self.held = True
                return
            holder = self._read()
            if holder is not None and not _stale(holder):
                raise UserError(self._in_use(holder))
            self._remove_stale(holder)
        raise UserError(f"cannot take the lock {self.location}: other drivers keep taking it")

    def release(self) -> None:
        """Remove the lock if it is still this driver's."""
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder is not None and holder.get("token") == self.token:
            self._delete(self.location)

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _in_use(self, holder: dict[str, Any]) -> str:
        where = f"pid {holder.get('pid')} on host {holder.get('host')}"
        since = holder.get("started", "?")
        message = f"study {self.name} is in use by another raycert driver ({where}, since {since})"
        if holder.get("host") == socket.gethostname():
            return f"{message}; wait for it to end, or stop it (Ctrl-C), then --resume"
        return (
            f"{message}; wait for it to end; if no driver runs there any more, delete "
            f"{self.location} and --resume"
        )

    # Local paths: atomic through os.link; URIs: written and read back.

    def _create(self, content: bytes) -> bool:
        """Create the lock file holding ``content``; False if it exists."""
        if is_uri(self.location):
            fs, path = pafs.FileSystem.from_uri(self.location)
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                return False
            with fs.open_output_stream(path) as stream:
                stream.write(content)
            time.sleep(0.5)  # let a concurrent writer land, then see whose lock stayed
            holder = self._read()
            return holder is not None and holder.get("token") == self.token
        path = Path(self.location)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{self.token}.tmp")
        tmp.write_bytes(content)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any] | None:
        """The lock's holder, or None if there is no lock or it is unreadable."""
        try:
            if is_uri(self.location):
                fs, path = pafs.FileSystem.from_uri(self.location)
                with fs.open_input_stream(path) as stream:
                    data = stream.read()
            else:
                data = Path(self.location).read_bytes()
            holder = json.loads(data)
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _remove_stale(self, holder: dict[str, Any] | None) -> None:
        """Remove a stale (or unreadable) lock; moved aside first on a local path, so that of
        two drivers taking over the same stale lock, only one removes it."""
        if is_uri(self.location):
            self._delete(self.location)
            return
        aside = f"{self.location}.{self.token}.stale"
        try:
            os.rename(self.location, aside)
        except FileNotFoundError:
            return  # another driver moved it first
        moved = _read_json(aside)
        if holder is not None and moved.get("token") != holder.get("token"):
            # A live driver's lock replaced the stale one in between: put it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.location)
        os.unlink(aside)

    def _delete(self, location: str) -> None:
        with contextlib.suppress(OSError):
            if is_uri(location):
                fs, path = pafs.FileSystem.from_uri(location)
                fs.delete_file(path)
            else:
                os.unlink(location)


def _this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "boot_id": _boot_id(),
        "pid_started": _process_start(pid),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _stale(holder: dict[str, Any]) -> bool:
    """Whether the driver that wrote ``holder`` is surely gone (it ran on this host)."""
    if holder.get("host") != socket.gethostname():
        return False
    if holder.get("boot_id") and holder.get("boot_id") != _boot_id():
        return True  # written before a reboot
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    started = holder.get("pid_started")
    return started is not None and _process_start(pid) not in (None, started)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
