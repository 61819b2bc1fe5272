"""The README's set-up and test commands are the ones CI runs, word for word."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- commands -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md needs its commands in a ```bash block after <!-- commands -->"
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    commands = _readme_commands()
    assert len(commands) == 4, "two set-up commands, the main job, the tests"
    setup, tests = commands[:2], commands[3]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in [*setup, tests]:
        assert command in ci, f".ci/run does not run the README's {command!r}"
    assert commands[2].startswith(".venv/bin/raycert "), "the main job runs the raycert CLI"
