"""Paths as the user wrote them: resolved against the working folder of the process that read
them, and outputs checked for writability before any work starts.

A relative path means the folder the user typed the command in. Ray runs trials in folders of
its own, so every path handed to Ray (or written into a study's settings) is made absolute here,
on the driver. URIs (``s3://bucket/runs``, ``file:///x``) pass through unchanged. Nothing here
imports torch or Ray.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from raycert.errors import UserError


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in str(path)


def absolute(path: str | Path) -> str:
    """``path`` made absolute against the current working folder (``~`` expanded); a URI is
    returned unchanged."""
    text = str(path)
    return text if is_uri(text) else os.path.abspath(os.path.expanduser(text))


def writable_dir(path: str | Path, option: str) -> Path:
    """The absolute folder ``path``, created if missing and checked writable by creating and
    removing a file in it; a ``UserError`` naming ``option`` otherwise."""
    folder = Path(absolute(path))
    problem = _unwritable(folder)
    if problem:
        raise UserError(f"{option} {folder}: {problem}; choose another folder")
    return folder


def writable_file(path: str | Path, option: str) -> Path:
    """The absolute file ``path``, not a folder, in a folder that exists (created if missing)
    and is writable; a ``UserError`` naming ``option`` otherwise."""
    file = Path(absolute(path))
    if file.is_dir():
        raise UserError(f"{option} {file} is a folder; name a file")
    problem = _unwritable(file.parent)
    if problem:
        raise UserError(f"{option} {file}: its folder {problem}; choose another path")
    return file


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (after creating it if missing), or None."""
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".raycert-write-check-"):
            pass
    except OSError as exc:
        return f"cannot be created or written ({exc.strerror or type(exc).__name__})"
    return None
