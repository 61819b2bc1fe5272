"""Ctrl-C and SIGTERM, once or twice, at every phase of a study (driven by the line the study
prints as it enters the phase) and of a training: exit 130, one line naming the folder and the
command that continues it, no native crash, and no process of the command left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from studyruns import run_study_cli, stop_at

pytestmark = pytest.mark.slow

STUDY = ["synthetic", "--preset", "smoke", "--trials", "2", "--min-acc", "0.5"]
CRASHES = ("Traceback", "Fatal Python error", "Segmentation fault", "SIGABRT", "core dumped")

# (phase, the marker that starts it, the signals, to the whole process group or the driver,
# whether the stopped study is resumed). Every stop is resumed but a signal to the driver alone
# during Ray's start-up: no trial has started, so it leaves the folder the group's Ctrl-C does.
PHASES = [
    ("imports", None, [signal.SIGINT], True, True),
    ("ray start-up", "starting Ray", [signal.SIGTERM], False, False),
    ("ray start-up", "starting Ray", [signal.SIGINT, signal.SIGINT], True, True),
    ("trials", "trial(s) at a time", [signal.SIGINT, signal.SIGINT], True, True),
    ("trials", "trial(s) at a time", [signal.SIGTERM], False, True),
    ("certification", "certifying the chosen models", [signal.SIGTERM], False, True),
    ("certification", "certifying the chosen models", [signal.SIGINT, signal.SIGINT], True, True),
    ("report", "writing the report", [signal.SIGINT], True, True),
]


def _last_line(err: str) -> str:
    return [line for line in err.splitlines() if line.strip()][-1]


@pytest.mark.parametrize(("phase", "marker", "signals", "group", "resume"), PHASES)
def test_a_signal_at_any_phase_stops_the_study_in_one_line(
    tmp_path, phase, marker, signals, group, resume
):
    args = [*STUDY, "--storage", "st", "--name", "s"]
    stopped = stop_at(args, marker, signals, tmp_path, group=group)

    assert stopped.code == 130, stopped.err
    assert not any(crash in stopped.err for crash in CRASHES), stopped.err
    assert stopped.left == [], f"left behind: {stopped.left}"
    assert not (tmp_path / "st" / ".s.lock").exists()
    line = _last_line(stopped.err)
    study_json = tmp_path / "st" / "s" / "study.json"
    if phase == "imports":
        assert line == "study interrupted before it wrote anything"
        return
    if study_json.exists():  # Ray's start-up may end before the signal is taken
        status = json.loads(study_json.read_text())["status"]
        assert status == ("finished" if phase == "report" else "interrupted")
        assert line == (
            f"study interrupted: {tmp_path}/st/s keeps its state; continue it with raycert study"
            f" {' '.join(args)} --resume"
        )
    else:
        assert line == "study interrupted before it wrote anything"
    if not resume:
        return
    code, out, err = run_study_cli(*args, "--resume", cwd=tmp_path)
    if study_json.exists():
        assert code == 0, err
        assert "trials: 2 (2 completed)" in out
    else:
        assert code == 2 and "run it without --resume first" in err


def test_sigterm_stops_a_training_as_interrupted_with_its_resume_command(tmp_path):
    args = ["synthetic", "--preset", "smoke", "--epochs", "200", "--out", "run"]
    stopped = stop_at(args, "epoch", [signal.SIGTERM], tmp_path, command="train")

    assert stopped.code == 130, stopped.err
    assert not any(crash in stopped.err for crash in CRASHES), stopped.err
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "interrupted"
    assert _last_line(stopped.err) == (
        f"train interrupted: {tmp_path / 'run'} keeps its state; continue it with raycert train"
        f" {' '.join(args)} --resume"
    )
    assert Path(tmp_path / "run" / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder holding a smoke training's run folder, ``run``."""
    folder = tmp_path_factory.mktemp("trained")
    train = [sys.executable, "-m", "raycert.cli", "train", "synthetic", "--preset", "smoke"]
    subprocess.run([*train, "--out", "run"], cwd=folder, check=True, capture_output=True)
    return folder


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("after", [0.1, 0.15, 0.3, 0.6, 1.0])
def test_a_signal_while_a_command_loads_stops_it_in_one_line(trained, signum, after):
    """From the moment raycert's code runs (Typer, Rich, torch still loading, the arguments
    not yet parsed) a signal is the same one line and exit 130."""
    stopped = stop_at(["run", "--attack"], None, [signum], trained, command="certify", after=after)

    assert stopped.code == 130, stopped.err
    assert not any(crash in stopped.err for crash in CRASHES), stopped.err
    assert _last_line(stopped.err) == "certify interrupted before it wrote anything"


# ``python -m lands_in_exec certify``: raycert's own console script, but with the command
# replaced by code that ``exec`` builds (as dataclasses build their methods) and that a SIGTERM
# interrupts, every time.
LANDS_IN_EXEC = """
import os, signal
import raycert.cli.commands as commands

def app(prog_name):
    exec("os.kill(os.getpid(), signal.SIGTERM)\\nwhile True: pass", {"os": os, "signal": signal})

commands.app = app
from raycert.cli.__main__ import main

main()
"""


def test_a_signal_that_lands_in_code_run_by_exec_still_exits_130(tmp_path):
    """CPython marks an interrupt that leaves code run by ``exec`` as unhandled for good, and
    ``python -m`` then ends by SIGINT (code -2) whatever the program did: the loading cases above
    hit it now and then, when their signal landed in a dataclass being built."""
    (tmp_path / "lands_in_exec.py").write_text(LANDS_IN_EXEC)
    run = [sys.executable, "-m", "lands_in_exec", "certify", "run"]
    ended = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert ended.returncode == 130, ended.stderr
    assert _last_line(ended.stderr) == "certify interrupted before it wrote anything"
