"""The README's two commands are the ones the repository runs: ``.ci/run`` runs its test command
word for word, and ``run.sh`` runs the main job the README shows."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import readme_commands, readme_main_job

ROOT = Path(__file__).parents[1]


def test_the_readme_has_two_commands_and_ci_runs_its_test_command_verbatim():
    commands = readme_commands()
    assert commands == ["./run.sh study", "./run.sh test"], "the main job, then the tests"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[1] in ci, f".ci/run does not run the README's {commands[1]!r}"


def test_run_sh_runs_the_main_job_the_readme_shows():
    job = readme_main_job()
    assert job.startswith(".venv/bin/raycert study ")
    script = (ROOT / "run.sh").read_text()
    launched = re.search(r'exec "\$VENV/bin/raycert" (study .*?) "\$@"', script)
    assert launched, "run.sh study must exec the venv's raycert with the main job"
    assert job == f".venv/bin/raycert {launched.group(1)}"
