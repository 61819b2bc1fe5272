"""The newcomer's first run: a fresh clone, the README's main job as written, relative paths.

The clone gets the layout the README assumes (the shared data in ``../shared/data``, beside the
clone) and runs ``./run.sh study`` from its root, shortened to the smoke preset and 2 trials but
otherwise as written. Only the environment is not built here (CI builds it: ``.ci/run`` runs the
README's test command on a fresh checkout): the clone's ``.venv`` borrows the packages of the
interpreter running the tests, imports raycert from the clone, and carries the stamp that tells
``run.sh`` it is up to date.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import site
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import readme_commands

ROOT = Path(__file__).parents[1]
SHORTER = ["--preset", "smoke", "--trials", "2"]


def _clone(dest: Path) -> Path:
    clone = dest / "raycert"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    return clone


def _borrowed_venv(clone: Path) -> None:
    """``clone/.venv``: this interpreter's packages, raycert from the clone, stamped built."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lines = [str(clone)] + [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    Path(purelib, "raycert-borrowed.pth").write_text("\n".join(lines) + "\n")
    script = venv / "bin" / "raycert"
    entry = "from raycert.cli.__main__ import main\nsys.exit(main())"
    script.write_text(f"#!{python}\nimport sys\n{entry}\n")
    script.chmod(0o755)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".raycert-installed").write_text(digest + "\n")


@pytest.mark.slow
def test_a_fresh_clone_runs_the_readme_main_job_with_its_relative_paths(tmp_path, shared_data):
    if not (ROOT / ".git").exists():
        pytest.fail(f"{ROOT} is not a git checkout: the newcomer test clones it", pytrace=False)
    clone = _clone(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data.resolve())
    _borrowed_venv(clone)
    imported = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", "import raycert; print(raycert.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert imported.stdout.startswith(str(clone)), imported

    main_job = readme_commands()[0].split()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAYCERT_DATA")}
    env["COLUMNS"] = "200"
    process = subprocess.Popen(
        [*main_job, *SHORTER],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in err
    assert "trials: 2 (2 completed)" in out, out

    study_dir = clone / "runs" / "mnist-acert-smoke"
    table = pd.read_csv(study_dir / "trials.csv")
    assert len(table) == 2 and set(table["status"]) == {"completed"}
    results = json.loads((study_dir / "results.json").read_text())
    assert [entry["target"] for entry in results["targets"]] == [0.95]  # the main job's target
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["status"] == "finished" and meta["trial_counts"]["completed"] == 2
    report = clone / "reports" / "mnist-acert-smoke.html"
    assert report.stat().st_size > 100_000
    assert f"report: {report.relative_to(clone)}" in out
