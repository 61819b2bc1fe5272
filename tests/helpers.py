"""Helpers shared by the test modules (test modules import from here, never from each other)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "raycert.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


def assert_one_line_error(
    error: str | BaseException | pytest.ExceptionInfo[BaseException], *fragments: str
) -> str:
    """Assert that ``error`` is one line holding every fragment, and return that line.

    ``error`` is a CLI's stderr (then its one line must start with ``error: `` and no traceback
    may show), or a raised exception (``pytest.raises``' info or the exception itself).
    """
    if isinstance(error, str):
        lines = [line for line in error.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in error, error
        assert lines[0].startswith("error: "), lines[0]
        line = lines[0]
    else:
        exc = error.value if isinstance(error, pytest.ExceptionInfo) else error
        line = str(exc)
        assert line and "\n" not in line, repr(line)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def _readme() -> str:
    return (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    block = re.search(r"<!-- commands -->\s*```bash\n(.*?)```", _readme(), re.S)
    assert block, "README.md needs its commands in a ```bash block after <!-- commands -->"
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def readme_main_job() -> str:
    """The raycert command line the README says the main job runs."""
    job = re.search(r"<!-- main job -->\s*\n\s+(\S.*)\n", _readme())
    assert job, "README.md needs the main job's command, indented, after <!-- main job -->"
    return job.group(1).strip()


def copy_study(study: Path, tmp_path: Path) -> Path:
    """A copy of the study folder ``study`` under ``tmp_path``, free to damage or edit."""
    return Path(shutil.copytree(study, tmp_path / study.name))


def metadata_cell(page_text: str, label: str) -> str:
    """The value cell of the report page's metadata row ``label``."""
    return re.search(rf"<tr><th>{label}</th><td>(.*?)</td>", page_text).group(1)
