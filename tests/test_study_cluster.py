"""A study on a real two-node Ray cluster on this machine, started the way users start one
(``ray start --head`` and ``ray start --address``), with token authentication on everywhere.

Its own module: the cluster is its own, apart from the session's local Ray. The nodes are torn
down by SIGTERM to the two ``ray start --block`` processes (never ``ray stop``, which would stop
every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_one_line_error

REPO = Path(__file__).parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 90
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
print(sum(n["Alive"] for n in ray.nodes()))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (``ray start --block`` then stops its node's processes), SIGKILL if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module", params=["token-env", "token-file"])
def two_nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """Head and worker node, one CPU each; yields the head address and the environment every
    process joining the cluster gets. ``token-env``: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN set,
    as docs/cluster.md says. ``token-file``: a token in ~/.ray/auth_token (a fresh HOME) and
    RAY_AUTH_MODE unset for the head, which turns auth on by itself, and for raycert, which must
    follow it; the joining node needs RAY_AUTH_MODE=token in any case (Ray's rule)."""
    port = free_port()
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    if request.param == "token-env":
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    else:
        home = tmp_path_factory.mktemp("home")
        (home / ".ray").mkdir()
        (home / ".ray" / "auth_token").write_text(token)
        env["HOME"] = str(home)
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus=1", "--num-gpus=0"]
    head_args = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
    # ``ray start --address`` and a plain ``ray.init(address)`` never look for a token file.
    joining = {**env, "RAY_AUTH_MODE": "token"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    head = subprocess.Popen(head_args, start_new_session=True, env=env, **quiet)
    nodes = [head]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert head.poll() is None, "ray start --head exited"
            time.sleep(0.2)
        worker_args = [RAY, "start", f"--address={address}", *common]
        nodes.append(subprocess.Popen(worker_args, start_new_session=True, env=joining, **quiet))
        count = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES, address],
            env=joining,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert count.stdout.strip() == "2", count.stderr
        yield address, env
    finally:
        for node in reversed(nodes):
            stop(node)


def test_a_study_through_address_runs_trials_on_both_nodes(two_nodes, tmp_path):
    address, env = two_nodes
    # Trials must outlast an actor's start-up on the other node: Tune hands a pending trial to
    # a finished trial's cached actor (reuse_actors) and drops the one still starting, so smoke
    # trials of a second each can all land on one node of a loaded machine. Quick trials take
    # about ten seconds on synthetic data; two at once put one on each node.
    args = ["synthetic", "--preset", "quick", "--trials", "2", "--concurrency", "2"]
    args += ["--address", address, "--storage", str(tmp_path), "--name", "cluster"]
    result = subprocess.run(
        [sys.executable, "-m", "raycert.cli", "study", *args, "--min-acc", "0.8"],
        cwd=tmp_path,  # its report (reports/cluster.html) stays out of the checkout
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    study_dir = tmp_path / "cluster"
    table = pd.read_parquet(study_dir / "trials.parquet")
    assert len(table) == 2 and set(table["status"]) == {"completed"}
    assert table["node"].nunique() == 2  # both nodes trained trials
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["address"] == address and meta["status"] == "finished"
    assert meta["hardware"] == {"nodes": 2, "cpus": 2.0, "gpus": 0.0}
    results = json.loads((study_dir / "results.json").read_text())["targets"]
    assert results[0]["met"] and (study_dir / results[0]["run_dir"] / "test_radii.csv").is_file()


def test_an_address_where_nothing_listens_is_one_line_at_once(tmp_path):
    port = free_port()
    tic = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "raycert.cli", "study", "synthetic", "--preset", "smoke"]
        + ["--address", f"127.0.0.1:{port}", "--storage", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and time.monotonic() - tic < 60
    line = assert_one_line_error(result.stderr)
    assert line.startswith(f"error: no Ray cluster at 127.0.0.1:{port}")
    assert not any(tmp_path.iterdir())
