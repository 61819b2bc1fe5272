"""Local files written whole, a full disk told apart, and raycert's per-user cache folder.

Every file raycert writes (run checkpoints, study records, the report, downloads) goes through
``atomic_path``: a reader sees the old file or the new one, never half of one, whenever the
writer is killed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the caller to write the whole file to.

    When the block ends normally the temporary file is renamed over ``path`` (one atomic
    ``os.replace`` on the same file system); when it raises, the temporary file is removed and
    ``path`` is left as it was. The folder of ``path`` must exist.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/raycert/<parts>`` (``~/.cache`` when unset), absolute; not created."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.path.abspath(os.path.expanduser(cache))).joinpath("raycert", *parts)


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a write that found its disk or quota
    full; pyarrow's filesystems say so in the message only."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
