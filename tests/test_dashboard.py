"""``raycert dashboard``: optuna-dashboard on a real study's journal, live (a trial added while
it serves shows up), read-only (a write request is refused and the journal keeps its bytes),
seen in headless Chromium; a taken port or a folder that is no study is one error line."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, sync_playwright_or_fail
from studyruns import smoke_request

from raycert.study.tune.run import StudyRequest, run_study

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory) -> tuple[StudyRequest, Path]:
    """A small real study, finished: its request and its folder."""
    storage = tmp_path_factory.mktemp("dash") / "st"
    request = smoke_request(storage, "watched")
    assert run_study(request, progress=False).status == "finished"
    return request, storage / "watched"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture
def served(study) -> Iterator[str]:
    """The dashboard of the study, as ``raycert dashboard`` serves it: its base address."""
    _, folder = study
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "raycert.cli", "dashboard", str(folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        line = process.stdout.readline()
        assert f"{base}/dashboard (read-only" in line, line + process.stderr.read()
        yield base
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err  # SIGTERM stops it as Ctrl-C does
    assert "dashboard stopped" in out


def _trials(base: str) -> list[dict]:
    studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
    (summary,) = studies
    return json.loads(_get(f"{base}/api/studies/{summary['study_id']}"))["trials"]


def test_the_dashboard_serves_the_study_live_and_read_only(study, served):
    request, folder = study
    studies = json.loads(_get(f"{served}/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["watched"]
    assert len(_trials(served)) == 2

    journal = (folder / "optuna.journal").read_bytes()
    for method, path in (("POST", "/api/studies"), ("DELETE", "/api/studies/0")):
        attempt = urllib.request.Request(f"{served}{path}", data=b"{}", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(attempt, timeout=10)
        assert refused.value.code == 403
    assert (folder / "optuna.journal").read_bytes() == journal

    # While it serves, the study goes on: the new trial shows up.
    more = dataclasses.replace(request, trials=3, resume=True)
    assert run_study(more, progress=False).status == "finished"
    assert len(_trials(served)) == 3


def test_the_dashboard_shows_the_trials_in_chromium(served):
    sync_playwright = sync_playwright_or_fail()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.goto(f"{served}/dashboard", wait_until="networkidle")
            tab.wait_for_selector("text=watched", timeout=30_000)  # the study list
            tab.goto(f"{served}/dashboard/studies/0", wait_until="networkidle")
            tab.wait_for_selector("text=Best Trial", timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            tab.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            overview = tab.inner_text("body")
            tab.goto(f"{served}/dashboard/studies/0/trials", wait_until="networkidle")
            tab.wait_for_selector("text=Trial 1", timeout=30_000)
            trials = tab.inner_text("body")
        finally:
            browser.close()
    assert "watched" in overview and "Hyperparameter Importance" in overview
    assert "Trial 0" in trials and "Complete" in trials


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raycert.cli", "dashboard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )


def test_a_taken_port_or_a_folder_that_is_no_study_is_one_error_line(study, tmp_path):
    _, folder = study
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli(str(folder), "--port", str(port), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot serve on 127.0.0.1:") and "--port" in done.stderr
    assert done.stderr.count("\n") == 1

    done = _cli(str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "is not a study folder" in done.stderr
    assert done.stderr.count("\n") == 1
