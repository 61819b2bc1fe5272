"""The ``raycert data`` commands and the CLI's shared error handling."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli
from typer.testing import CliRunner

from raycert.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "data" in result.stdout
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("raycert ")


def test_data_check_reports_real_mnist(shared_data: Path) -> None:
    result = runner.invoke(
        app, ["data", "check", "--data-dir", str(shared_data)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    mnist_row = next(line for line in result.stdout.splitlines() if "mnist" in line)
    cells = [cell.strip() for cell in mnist_row.split("│")[1:7]]
    assert cells == ["mnist", "yes", "yes", "55000", "5000", "10000"]
    cifar_row = next(line for line in result.stdout.splitlines() if "cifar10" in line)
    assert [cell.strip() for cell in cifar_row.split("│")[2:4]] == ["no", "no"]


def test_data_check_on_an_empty_root_exits_0(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", "--data-dir", str(tmp_path)], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.stdout.splitlines() if line.startswith("│ ")]
    present = {row[1].strip(): (row[2].strip(), row[-2].strip()) for row in rows if row[1].strip()}
    assert present == {
        "mnist": ("no", "missing MNIST/raw/train-images-idx3-ubyte"),
        "cifar10": ("no", "missing cifar-10-batches-py/data_batch_1"),
        "tinyimagenet": ("no", "missing tiny-imagenet-200/wnids.txt"),
    }


def test_user_error_is_one_stderr_line_and_exit_2_in_a_real_process() -> None:
    result = run_cli("data", "download", "nosuch")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "error: unknown dataset 'nosuch'")
    assert "Traceback" not in result.stdout


def test_user_error_through_cli_runner_exits_2() -> None:
    result = runner.invoke(app, ["data", "download", "synthetic"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: synthetic is generated in memory; downloadable: mnist, cifar10, tinyimagenet"
    ]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["data", "check", "--no-such-option"]).exit_code == 2
    assert runner.invoke(app, ["data", "download"]).exit_code == 2


def test_data_download_from_a_mirror(mirror, shared_data: Path, tmp_path: Path) -> None:
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        shutil.copy(shared_data / "MNIST" / "raw" / name, mirror.folder)
    result = runner.invoke(
        app,
        ["data", "download", "mnist", "--data-dir", str(tmp_path)],
        env={"RAYCERT_MIRROR": mirror.url},
    )
    assert result.exit_code == 0, result.output
    assert "mnist ready" in result.stdout
    assert len(list((tmp_path / "MNIST" / "raw").glob("*.gz"))) == 4


def test_data_download_with_a_bad_mirror_is_one_error_line(mirror, tmp_path: Path) -> None:
    (mirror.folder / "train-images-idx3-ubyte.gz").write_bytes(b"not mnist")
    result = run_cli(
        "data",
        "download",
        "mnist",
        "--data-dir",
        str(tmp_path / "root"),
        env={"RAYCERT_MIRROR": mirror.url},
    )
    assert result.returncode == 2
    # What is being fetched is said first (a log shows no progress bar), then one error line.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("downloading ")]
    line = assert_one_line_error("\n".join(lines), "f68b3c2dcbeaaa9fbdd348bbdeb94873")
    assert line.startswith("error: download of ")
    assert list((tmp_path / "root" / "MNIST" / "raw").iterdir()) == []


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["data", "check", "--help"]])
def test_help_pages_render(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == 0
