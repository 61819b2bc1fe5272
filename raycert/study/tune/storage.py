"""A study's storage, checked on the driver before Ray starts: a writable folder or a reachable URI.

``--storage`` is where every trial writes its checkpoints, so a problem there would otherwise
surface only after Ray's start-up, as a traceback from deep inside Ray Tune. A local path is
made absolute against the user's working folder (Ray's trials run elsewhere) and must be a
folder this process can create files in; a URI must name a filesystem ``pyarrow`` can reach.
On a cluster of several nodes a local path must be shared (the same mount on every node): that
cannot be checked from here, so ``cluster_warning`` says so once.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pyarrow.fs as pafs

from raycert.errors import UserError, one_line
from raycert.paths import absolute, is_uri, writable_dir

URI_TIMEOUT_S = 20.0  # for a storage URI to answer the write check


def check_storage(storage: str, timeout_s: float = URI_TIMEOUT_S) -> str:
    """The study storage as an absolute path or the URI unchanged, checked writable; a
    one-line ``UserError`` naming the problem otherwise.

    A URI is tried in a child process given ``timeout_s``: a filesystem client that cannot
    reach its service may retry for many minutes, deaf to Ctrl-C (Google Cloud Storage's does
    without network), where an unreachable storage should be one line in seconds."""
    if not is_uri(storage):
        return str(writable_dir(storage, "--storage"))
    uri = storage.rstrip("/")
    command = [sys.executable, "-c", f"from {__name__} import _probe; _probe({uri!r})"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"--storage {uri} did not answer within {timeout_s:g} s; check the network, the URI"
            " and its credentials"
        ) from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise UserError(lines[-1].removeprefix("error: "))
    return uri


def _probe(uri: str) -> None:
    """Create, write and remove a file under ``uri``; on failure, one ``error:`` line on stderr
    and exit code 2 (``check_storage`` runs this in a child process)."""
    probe = f".raycert-write-check-{uuid.uuid4().hex}"
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            raise UserError(f"--storage {uri} is a file, not a folder; choose a folder")
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root.rstrip('/')}/{probe}") as stream:
            stream.write(b"")
        fs.delete_file(f"{root.rstrip('/')}/{probe}")
    except (OSError, ValueError, UserError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        message = (
            str(exc)
            if isinstance(exc, UserError)
            else (
                f"--storage {uri} cannot be written ({one_line(exc)}); check the URI and its"
                " credentials"
            )
        )
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def cluster_warning(storage: str, nodes: int) -> str | None:
    """A one-line warning when a local storage path serves a cluster of several nodes."""
    if nodes <= 1 or is_uri(storage):
        return None
    return (
        f"warning: --storage {absolute(storage)} is a local path and the Ray cluster has {nodes}"
        " nodes: it must be the same shared folder (NFS) on every node, or trials on other nodes"
        " fail when they save a checkpoint; use a shared mount or a URI (s3://bucket/runs)"
    )
