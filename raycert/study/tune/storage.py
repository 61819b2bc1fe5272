"""A study's storage, checked on the driver before Ray starts: a writable folder or a reachable URI.

``--storage`` is where every trial writes its checkpoints, so a problem there would otherwise
surface only after Ray's start-up, as a traceback from deep inside Ray Tune. A local path is
made absolute against the user's working folder (Ray's trials run elsewhere) and must be a
folder this process can create files in; a URI must name a filesystem ``pyarrow`` can reach.
On a cluster of several nodes a local path must be shared (the same mount on every node): that
cannot be checked from here, so ``cluster_warning`` says so once.
"""

from __future__ import annotations

import uuid

import pyarrow.fs as pafs

from raycert.errors import UserError, one_line
from raycert.paths import absolute, is_uri, writable_dir


def check_storage(storage: str) -> str:
    """The study storage as an absolute path or the URI unchanged, checked writable; a
    one-line ``UserError`` naming the problem otherwise."""
    if not is_uri(storage):
        return str(writable_dir(storage, "--storage"))
    uri = storage.rstrip("/")
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
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(
            f"--storage {uri} cannot be written ({one_line(exc)}); check the URI and its"
            " credentials"
        ) from None
    return uri


def cluster_warning(storage: str, nodes: int) -> str | None:
    """A one-line warning when a local storage path serves a cluster of several nodes."""
    if nodes <= 1 or is_uri(storage):
        return None
    return (
        f"warning: --storage {absolute(storage)} is a local path and the Ray cluster has {nodes}"
        " nodes: it must be the same shared folder (NFS) on every node, or trials on other nodes"
        " fail when they save a checkpoint; use a shared mount or a URI (s3://bucket/runs)"
    )
