"""A disk that fills up under a running study stops it cleanly (exit 2, one line, the lock
released), and once there is room again ``--resume`` finishes it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARGS = ["synthetic", "--preset", "smoke", "--trials", "6", "--concurrency", "2"]
ARGS += ["--min-acc", "0.5", "--storage", "st", "--name", "full"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 30 MB tmpfs mounted at ``tmp_path/disk`` (root only: skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_stops_the_study_in_one_line_and_resume_then_finishes_it(small_disk):
    command = [sys.executable, "-m", "raycert.cli", "study", *ARGS]
    study = subprocess.Popen(
        command, cwd=small_disk, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err = []
    for line in study.stderr:
        err.append(line)
        if "completed (1 finished)" in line:  # fill the disk under the running trials
            filler = small_disk / "filler"
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"], capture_output=True
            )
            break
    out, rest = study.communicate(timeout=180)
    err = "".join(err) + rest

    assert study.returncode == 2, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error: no space left") and last.endswith("with --resume"), last
    assert not (small_disk / "st" / ".full.lock").exists()

    (small_disk / "filler").unlink()
    resumed = subprocess.run(
        [*command, "--resume"], cwd=small_disk, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    meta = json.loads((small_disk / "st" / "full" / "study.json").read_text())
    assert meta["status"] == "finished" and meta["trial_counts"]["completed"] == 6, meta
