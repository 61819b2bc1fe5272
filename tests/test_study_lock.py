"""One driver per study folder: the lock beside it is atomic, released on exit, taken over when
stale, and a second driver (a fresh start or ``--resume``) is refused with one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from studyruns import finished_rows, run_study_cli, study_cli

from raycert.errors import UserError
from raycert.study.tune.lock import StudyLock

# A driver's first step in a child process: say it is ready, wait for the start signal, then
# take the lock.
TAKE = """
import os, sys, time
from pathlib import Path
from raycert.errors import UserError
from raycert.study.tune.lock import StudyLock
storage, go = sys.argv[1], Path(sys.argv[2])
lock = StudyLock(storage, "race")
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.001)
try:
    lock.acquire()
except UserError as exc:
    print("refused", exc)
    sys.exit(0)
print("took", os.getpid())
time.sleep(1.0)
lock.release()
"""


def test_of_drivers_starting_at_the_same_moment_exactly_one_takes_the_lock(tmp_path):
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TAKE, str(tmp_path), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # all four are importing, then waiting
    go.write_text("")
    outcomes = [child.communicate(timeout=60)[0].split(" ", 1) for child in children]
    assert sorted(kind for kind, _ in outcomes) == ["refused", "refused", "refused", "took"]
    refusals = [text for kind, text in outcomes if kind == "refused"]
    assert all("is in use by another raycert driver" in text for text in refusals)
    assert not (tmp_path / ".race.lock").exists()  # released by the one that took it


def test_a_held_lock_refuses_and_is_released_on_exit(tmp_path):
    with StudyLock(str(tmp_path), "s1"):
        holder = json.loads((tmp_path / ".s1.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(UserError, match=f"pid {os.getpid()} on host"):
            StudyLock(str(tmp_path), "s1").acquire()
    assert not (tmp_path / ".s1.lock").exists()
    with StudyLock(str(tmp_path), "s1"):  # free again
        pass


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"host": socket.gethostname(), "pid": dead.pid, "token": "old", "started": "then"}
    (tmp_path / ".s2.lock").write_text(json.dumps(stale))
    with StudyLock(str(tmp_path), "s2"):
        assert json.loads((tmp_path / ".s2.lock").read_text())["pid"] == os.getpid()
    # A live pid reused by another process (another start time) is stale too.
    reused = {**stale, "pid": os.getpid(), "pid_started": 1}
    (tmp_path / ".s2.lock").write_text(json.dumps(reused))
    with StudyLock(str(tmp_path), "s2"):
        assert json.loads((tmp_path / ".s2.lock").read_text())["token"] != "old"


def test_a_lock_from_another_host_is_refused_with_the_file_to_delete(tmp_path):
    other = {"host": "elsewhere", "pid": 1, "token": "x", "started": "2025-01-01T00:00:00+00:00"}
    (tmp_path / ".s3.lock").write_text(json.dumps(other))
    with pytest.raises(UserError) as refused:
        StudyLock(str(tmp_path), "s3").acquire()
    assert "pid 1 on host elsewhere" in str(refused.value)
    assert f"delete {tmp_path}/.s3.lock" in str(refused.value)
    assert json.loads((tmp_path / ".s3.lock").read_text()) == other  # left alone


@pytest.mark.slow
def test_a_second_driver_on_a_running_study_is_refused_in_one_line(tmp_path):
    """Two identical starts at once: one runs, one is refused before Ray starts. While the
    winner runs, a ``--resume`` is refused too, and the winner finishes untouched."""
    args = ["synthetic", "--preset", "smoke", "--trials", "6", "--concurrency", "1"]
    args += ["--storage", str(tmp_path), "--name", "busy", "--min-acc", "0.8"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    first, second = (study_cli(*args, cwd=tmp_path, **pipes) for _ in range(2))
    try:
        deadline = time.monotonic() + 60
        while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        refused, winner = (first, second) if first.poll() is not None else (second, first)
        assert refused.returncode == 2 and winner.poll() is None
        lines = refused.stderr.read().splitlines()
        assert len(lines) == 1 and "study busy is in use by another raycert driver" in lines[0]
        assert f"pid {winner.pid}" in lines[0]

        while not (tmp_path / "busy" / "study.json").exists() and winner.poll() is None:
            time.sleep(0.1)
        code, _, err = run_study_cli(*args, "--resume", cwd=tmp_path, timeout=60)
        assert finished_rows(tmp_path / "busy") < 6, "the winner ended too soon for this test"
        assert code == 2 and err.count("\n") == 1 and "is in use by another raycert" in err

        out, err = winner.communicate(timeout=240)
        assert winner.returncode == 0, err
        assert "trials: 6 (6 completed)" in out
    finally:
        for process in (first, second):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert not (tmp_path / ".busy.lock").exists()
    meta = json.loads((tmp_path / "busy" / "study.json").read_text())
    assert meta["status"] == "finished" and meta["trial_counts"]["completed"] == 6


def test_the_lock_of_a_killed_driver_does_not_block_its_resume(killed_study):
    """SIGKILL leaves the lock behind; its pid is gone, so ``--resume`` takes it over (the
    killed run is ``conftest.killed_study``, shared with test_study_resume.py)."""
    assert killed_study.lock_left["pid"] == killed_study.pid
    assert killed_study.code == 0, killed_study.err
    assert not (killed_study.storage / ".killed.lock").exists()
