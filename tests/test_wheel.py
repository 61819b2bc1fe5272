"""A non-editable install: the wheel carries the presets, and ``raycert study`` runs from it.

The wheel is built from a copy of the sources and installed without dependencies into a fresh
virtual environment, whose ``.pth`` file borrows torch, Ray and the rest from the environment
running the tests (nothing is downloaded). The study then runs from an unrelated folder, so only
the installed package can be what it finds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

PRESET_FILES = sorted(p.name for p in (REPO / "raycert" / "spec" / "presets").glob("*.toml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv holding the wheel of this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(
        REPO / "raycert", source / "raycert", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = root.glob("raycert-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mnist.toml" in PRESET_FILES
    assert sorted(n.rsplit("/", 1)[-1] for n in names if "/presets/" in n) == PRESET_FILES

    env_dir = root / "env"
    venv.create(env_dir, with_pip=False)
    env_python = env_dir / "bin" / "python"
    site = subprocess.run(
        [env_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies from the test environment, after the venv's own site-packages on sys.path.
    (Path(site) / "borrowed-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [*pip, "--python", str(env_python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env_dir / "bin"


def run_installed(bin_dir: Path, args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """The installed ``raycert`` in its own process group (killed afterwards, with any Ray
    processes it started), without this checkout on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COLUMNS="200", PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    process = subprocess.Popen(
        [bin_dir / "raycert", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, out


def test_the_installed_package_is_the_wheel_not_this_checkout(installed: Path, tmp_path: Path):
    code = "import raycert.spec.file as s; print(s.__file__); print(s.PRESETS_DIR)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [installed / "python", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    module, presets = out.stdout.split()
    assert Path(module).is_relative_to(installed.parent), out.stdout + out.stderr
    assert sorted(p.name for p in Path(presets).glob("*.toml")) == PRESET_FILES


def test_an_installed_raycert_runs_a_smoke_study(installed: Path, tmp_path: Path):
    code, out = run_installed(installed, ["study", "--help"], tmp_path, timeout=60)
    assert code == 0 and "--preset" in out, out
    args = ["study", "synthetic", "--preset", "smoke", "--trials", "1", "--concurrency", "1"]
    args += ["--gpus-per-trial", "0", "--min-acc", "0.5", "--storage", "runs", "--name", "w"]
    code, out = run_installed(installed, args, tmp_path, timeout=300)
    assert code == 0, out
    study = tmp_path / "runs" / "w"
    assert (study / "results.json").is_file() and (study / "trials.csv").is_file()
    spec_file = Path(json.loads((study / "study.json").read_text())["spec_file"])
    assert spec_file.is_relative_to(installed.parent) and spec_file.name == "synthetic.toml"
