"""Helpers for the tests that run studies: a toy spec, trainable and request, the study CLI in
its own process group, and the study's Optuna journal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import ray.cloudpickle
from helpers import REPO
from ray import tune

from raycert.spec import PRESETS_DIR
from raycert.study.tune.run import StudyRequest

# Ray workers cannot import the test helpers: ship the trainables defined here by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def toy_spec(tmp_path: Path, study: str = "", search: str = "") -> str:
    """The synthetic smoke preset with a one-parameter search (``kappa`` stands for x in [0, 1])."""
    presets = (PRESETS_DIR / "synthetic.toml").read_text().split("[search.")[0]
    search = search or '[search.kappa]\ntype = "float"\nlow = 0.0\nhigh = 1.0\n'
    path = tmp_path / "toy.toml"
    path.write_text(f"{presets}\n{search}\n{study}\n")
    return str(path)


def toy(config: dict) -> None:
    """acc = 0.9 - 0.2 x, acr = x: the highest ACRs are the least accurate; none reaches 0.95."""
    x = config["kappa"]
    tune.report({"clean_acc": 0.9 - 0.2 * x, "acr": x, "final": True, "epoch": 1})


def slow_toy(config: dict, epochs: int = 60) -> None:
    """``toy`` an epoch every half second: 2 epochs at x = 0 (the smoke preset's recipe),
    ``epochs`` (60: 30 s) elsewhere; ``final`` at the last."""
    x = config["kappa"]
    epochs = 2 if x == 0 else epochs
    for epoch in range(1, epochs + 1):
        time.sleep(0.5)
        metrics = {"clean_acc": 0.9 - 0.2 * x, "acr": x, "final": epoch == epochs, "epoch": epoch}
        tune.report(metrics)


def toy_request(tmp_path: Path, name: str, targets: tuple[float, ...], **changes) -> StudyRequest:
    """A study of the toy spec: 10 trials, 2 at once, no GPU, under ``tmp_path/runs``."""
    values = dict(
        dataset="synthetic",
        targets=targets,
        preset="smoke",
        trials=10,
        concurrency=2,
        gpus_per_trial=0,
        storage=str(tmp_path / "runs"),
        name=name,
    )
    values.update(changes)
    if "spec" not in values:
        values["spec"] = toy_spec(tmp_path)
    return StudyRequest(**values)


def smoke_request(storage: Path, name: str, **changes) -> StudyRequest:
    """A real study of the synthetic set with the shipped smoke preset: 2 trials (``changes``
    set others, or a budget), 2 at once, no GPU, target 0.5, in ``storage/name``."""
    values = dict(
        dataset="synthetic",
        preset="smoke",
        targets=(0.5,),
        trials=2,
        concurrency=2,
        gpus_per_trial=0,
        storage=str(storage),
        name=name,
    )
    return StudyRequest(**{**values, **changes})


def journal_study(study_dir: Path, name: str) -> optuna.Study:
    """The Optuna study in ``study_dir``'s journal."""
    backend = optuna.storages.journal.JournalFileBackend(str(study_dir / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


def study_cli(*args: str, cwd: Path = REPO, **popen) -> subprocess.Popen:
    """``raycert study ...`` in a fresh interpreter and its own session (a process group that
    holds the local Ray cluster it starts)."""
    command = [sys.executable, "-m", "raycert.cli", "study", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, text=True, **popen)


def run_study_cli(*args: str, cwd: Path = REPO, timeout: float = 180) -> tuple[int, str, str]:
    """``study_cli`` to the end: exit code, stdout, stderr; its process group (the local Ray
    cluster it started) is killed afterwards whatever happened."""
    process = study_cli(*args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, out, err


def kill_study_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 180):
    """SIGKILL a ``study_cli`` driver once ``ready()`` holds (it must not end before), then its
    process group: the local Ray cluster it started."""
    try:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            assert process.poll() is None, "the study ended before it could be killed"
            time.sleep(0.05)
        process.kill()
        process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def finished_rows(study_dir: Path) -> int:
    """Rows of ``trials.csv`` so far (0 before the first trial finishes)."""
    try:
        return len(pd.read_csv(study_dir / "trials.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@dataclass(frozen=True)
class KilledStudy:
    """A CLI study whose driver was SIGKILLed once 2 of its 6 trials had finished, then run to
    the end with ``--resume``: what the kill left behind and what the resume said."""

    storage: Path  # also the drivers' working directory
    study_dir: Path
    pid: int  # the killed driver's
    lock_left: dict  # its lock file, as the kill left it
    status_left: str  # study.json's status, as the kill left it
    before: pd.DataFrame  # trials.csv as the kill left it, by trial id
    code: int  # the resume's exit code, stdout and stderr
    out: str
    err: str


def kill_then_resume(storage: Path) -> KilledStudy:
    """Start the synthetic smoke study ``killed`` (6 trials, 2 at once) in ``storage``, SIGKILL
    its driver right after 2 trials finish (Tune has no chance to save their end), then
    ``--resume`` it to the end."""
    args = ["synthetic", "--preset", "smoke", "--trials", "6", "--concurrency", "2"]
    args += ["--storage", str(storage), "--name", "killed", "--min-acc", "0.8"]
    study_dir = storage / "killed"
    process = study_cli(*args, cwd=storage, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_study_when(process, lambda: finished_rows(study_dir) >= 2)
    lock_left = json.loads((storage / ".killed.lock").read_text())
    status_left = json.loads((study_dir / "study.json").read_text())["status"]
    before = pd.read_csv(study_dir / "trials.csv").set_index("trial_id")
    code, out, err = run_study_cli(*args, "--resume", cwd=storage)
    return KilledStudy(
        storage, study_dir, process.pid, lock_left, status_left, before, code, out, err
    )


@dataclass(frozen=True)
class Stopped:
    """A study CLI stopped by signals once it printed a marker: its exit code, its output, and
    the processes of its session still alive a moment after it ended."""

    code: int
    out: str
    err: str
    left: list[str]


def session_processes(sid: int) -> list[str]:
    """The command lines of the processes of session ``sid``."""
    ps = subprocess.run(["ps", "-eo", "sid=,args="], capture_output=True, text=True, check=True)
    rows = (line.strip().split(None, 1) for line in ps.stdout.splitlines())
    return [row[1] for row in rows if len(row) == 2 and row[0] == str(sid)]


def processes_left(sid: int, grace: float) -> list[str]:
    """The processes of session ``sid`` still alive after ``grace`` seconds, the moment what
    its driver stopped has to go (asked every 0.1 s: an empty session ends the wait)."""
    deadline = time.monotonic() + grace
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def stop_at(
    args: list[str],
    marker: str | None,
    signals: list[int],
    cwd: Path,
    group: bool = False,
    command: str = "study",
    timeout: float = 180,
    after: float = 1.0,
) -> Stopped:
    """Run ``raycert <command> <args>`` in its own session, send ``signals`` (0.3 s apart) as
    soon as a line of its output holds ``marker`` (None: ``after`` seconds after the start), to
    the driver alone, or to its whole process group as a terminal's Ctrl-C does (``group``),
    and wait for its end."""
    cli = [sys.executable, "-m", "raycert.cli", command, *args]
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(cli, cwd=cwd, env=env, start_new_session=True, text=True, **pipes)
    lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
    seen = threading.Event()

    def read(name: str) -> None:
        for line in getattr(process, name):
            lines[name].append(line)
            if marker is not None and marker in line:
                seen.set()

    # Threads, not communicate(): a process left behind would hold the pipes open.
    readers = [threading.Thread(target=read, args=(n,), daemon=True) for n in lines]
    for reader in readers:
        reader.start()
    try:
        if marker is None:
            time.sleep(after)
        else:
            assert seen.wait(timeout), f"no {marker!r} in: {''.join(lines['stderr'])}"
        for number, signum in enumerate(signals):
            time.sleep(0.3 if number else 0.0)
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        process.wait(timeout)
        for reader in readers:
            reader.join(10)
        left = processes_left(process.pid, grace=2.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    out, err = ("".join(lines[name]) for name in ("stdout", "stderr"))
    return Stopped(process.returncode, out, err, left)
