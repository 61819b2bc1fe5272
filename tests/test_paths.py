"""Paths mean what they say, and bad paths, outputs and values fail before any work: relative
paths resolve against the user's folder on the driver; unwritable outputs and unusable storage
are one ``error:`` line before Ray starts; ``data check`` is a gate; a stalled download says
so; a failed ``train`` records it; ``report`` falls back to the csv."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time

import pytest
from datafiles import write_small_mnist
from helpers import run_cli
from studyfiles import write_study
from typer.testing import CliRunner

import raycert.study.tune.cluster
from raycert.cli import app
from raycert.errors import UserError
from raycert.study.policy.plan import StudyRequest, resolve_paths
from raycert.study.tune.storage import check_storage, cluster_warning

WIDE = {"COLUMNS": "200"}


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


def one_error_line(result, *needles: str) -> str:
    """The one stderr line of a failed command (exit 2), which must name ``needles``."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_ray(monkeypatch):
    """Ray must not start: these problems are caught before."""

    def refuse(*args, **kwargs):
        raise AssertionError("Ray started before the problem was reported")

    monkeypatch.setattr(raycert.study.tune.cluster, "connect", refuse)


# Relative paths resolve against the working folder, on the driver


def test_study_paths_and_raycert_data_resolve_against_the_working_folder(tmp_path, monkeypatch):
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("RAYCERT_DATA", "../data")
    request = resolve_paths(StudyRequest("mnist", storage="runs", spec="specs/my.toml"))
    assert request.data_dir == str(tmp_path / "data")  # RAYCERT_DATA, from here
    assert request.storage == str(here / "runs") and request.spec == str(here / "specs/my.toml")
    request = resolve_paths(StudyRequest("mnist", data_dir="../shared/data", storage="s3://b/r"))
    assert request.data_dir == str(tmp_path / "shared" / "data")
    assert request.storage == "s3://b/r"  # URIs pass through


def test_a_relative_raycert_data_is_reported_as_the_folder_it_means(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("study", "mnist", "--no-download", env={"RAYCERT_DATA": "nodata"})
    one_error_line(result, "mnist not found", str(tmp_path / "nodata" / "MNIST"))


def test_study_no_download_refuses_to_download(tmp_path, mirror, no_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository, whose runs/ may hold the main job's study
    (mirror.folder / "train-images-idx3-ubyte.gz").write_bytes(b"would be fetched")
    env = {"RAYCERT_MIRROR": mirror.url}
    root = tmp_path / "empty"
    result = invoke("study", "mnist", "--no-download", "--data-dir", str(root), env=env)
    one_error_line(result, "mnist not found")
    assert not root.exists() or not any(root.rglob("*.gz"))


# Outputs and storage checked before any work


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "synthetic", "--preset", "smoke", "--out", "/proc/x"], "--out /proc/x"),
        (["report", "runs/whatever", "--out", "/proc/x.html"], "--out /proc/x.html"),
        (["certify", "runs/whatever", "--per-sample", "/proc/x.csv"], "--per-sample /proc/x.csv"),
    ],
)
def test_unwritable_outputs_are_one_line(args, option):
    one_error_line(invoke(*args), option)


def test_outputs_that_are_folders_or_under_files_are_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    one_error_line(invoke("report", "x", "--out", str(tmp_path)), "is a folder")
    one_error_line(
        invoke("certify", "x", "--per-sample", str(a_file / "r.csv")), "is a file, not a folder"
    )


@pytest.mark.parametrize(
    ("storage", "needle"),
    [
        ("{file}", "is a file, not a folder"),
        ("/proc/x", "cannot be created or written"),
        ("s3://nonexistent-bucket/runs", "--storage s3://nonexistent-bucket/runs cannot be"),
    ],
)
def test_unusable_storage_is_one_line_before_ray_starts(tmp_path, no_ray, storage, needle):
    a_file = tmp_path / "file"
    a_file.write_text("")
    args = ["study", "synthetic", "--preset", "smoke", "--storage", storage.format(file=a_file)]
    one_error_line(invoke(*args), needle)


def test_a_storage_uri_that_hangs_is_one_line_within_its_timeout():
    """Google Cloud Storage's client retries for many minutes without network: the check gives
    up in its timeout (with network, the bucket's absence answers sooner)."""
    started = time.monotonic()
    with pytest.raises(UserError, match="--storage gs://raycert-no-such-bucket/runs") as error:
        check_storage("gs://raycert-no-such-bucket/runs", timeout_s=3)
    assert time.monotonic() - started < 15 and "\n" not in str(error.value)


def test_bad_numbers_are_one_line_before_ray_starts(no_ray):
    one_error_line(invoke("study", "synthetic", "--min-acc", "abc"), "--min-acc", "'abc'")
    one_error_line(invoke("study", "synthetic", "--gpus-per-trial", "-1"), "--gpus-per-trial")
    one_error_line(invoke("study", "synthetic", "--cpus-per-trial", "0"), "--cpus-per-trial")
    line = one_error_line(invoke("study", "synthetic", "--trials", "many"), "--trials")
    assert line.endswith(" study --help")  # any usage error: one line too


# Data: check is a gate; downloads that stall say so


def test_data_check_on_a_missing_root_exits_2(tmp_path):
    one_error_line(invoke("data", "check", "--data-dir", str(tmp_path / "no")), "does not exist")


def test_data_check_on_a_truncated_archive_exits_2(tmp_path):
    raw = write_small_mnist(tmp_path)
    packed = (raw / "train-images-idx3-ubyte.gz").read_bytes()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(EOFError):
        gzip.decompress((raw / "train-images-idx3-ubyte.gz").read_bytes())
    result = invoke("data", "check", "--data-dir", str(tmp_path))
    assert "mnist" in result.stdout  # the table is still shown
    one_error_line(result, "invalid data", "mnist")


@pytest.fixture
def stalled_server():
    """An HTTP 'server' that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_stalled_download_says_so(tmp_path, stalled_server, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    env = {"RAYCERT_MIRROR": stalled_server, "RAYCERT_DOWNLOAD_TIMEOUT": "1"}
    result = run_cli("data", "download", "mnist", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"downloading {stalled_server}train-images-idx3-ubyte.gz to ")
    assert len(lines) == 2 and lines[1].startswith("error: download of ")
    assert "stalled: no data for 1 s" in lines[1] and "RAYCERT_DOWNLOAD_TIMEOUT" in lines[1]


# A failed train records it; report reads the csv when the parquet is damaged


def test_a_train_that_fails_on_missing_data_records_it_and_can_be_rerun(tmp_path):
    out = tmp_path / "run"
    args = ["train", "mnist", "--preset", "smoke", "--out", str(out), "--no-download"]
    args += ["--data-dir", str(tmp_path / "nodata")]
    one_error_line(invoke(*args), "mnist not found")
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and "mnist not found" in status["message"]
    one_error_line(invoke(*args), "mnist not found")  # not "already holds a run"


def test_report_reads_the_csv_when_the_parquet_is_damaged(tmp_path):
    study_dir = write_study(tmp_path / "runs")
    (study_dir / "trials.parquet").write_bytes(b"PAR1 damaged")
    out = tmp_path / "page.html"
    result = invoke("report", str(study_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 100_000 and "t003" in out.read_text()


def test_a_local_storage_on_a_cluster_of_several_nodes_is_warned_about():
    assert cluster_warning("/data/runs", 1) is None
    assert cluster_warning("s3://bucket/runs", 3) is None
    warning = cluster_warning("runs", 3)
    assert (
        warning.startswith("warning: --storage ") and "shared folder (NFS) on every node" in warning
    )
