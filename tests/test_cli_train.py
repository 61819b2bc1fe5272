"""``raycert train`` and ``raycert certify``: a real run end to end, and every bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_cli_data import run_cli
from typer.testing import CliRunner

from raycert.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(
        app, ["train", "synthetic", "--preset", "smoke", "--out", str(out), "--seed", "3"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    assert "epoch   2/2" in result.stdout and "completed" in result.stdout
    return out


def test_train_writes_a_loadable_run(run_dir: Path) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    assert json.dumps(config).count('"seed": 3') == 1
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_certify_json_and_per_sample_csv_agree(run_dir: Path, tmp_path: Path) -> None:
    per_sample = tmp_path / "radii.csv"
    args = ["certify", str(run_dir), "--json", "--limit", "120", "--eps", "0.01,2/255"]
    result = runner.invoke(app, [*args, "--per-sample", str(per_sample)], env=WIDE)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = list(csv.DictReader(per_sample.open()))
    assert len(rows) == summary["n"] == 120
    radii = [float(row["radius"]) for row in rows]
    correct = [row["correct"] == "1" for row in rows]
    assert summary["acr"] == pytest.approx(sum(radii) / 120)
    assert summary["clean_acc"] == pytest.approx(sum(correct) / 120)
    certified = sum(c and r >= 2 / 255 for c, r in zip(correct, radii, strict=True))
    assert summary["cert_acc@2/255"] == pytest.approx(certified / 120)
    assert summary["acr_cap"] == 0.1 and summary["eval_split"] == "test"
    assert all(r == 0 for r, c in zip(radii, correct, strict=True) if not c)


def test_certify_prints_a_table(run_dir: Path) -> None:
    result = runner.invoke(app, ["certify", str(run_dir), "--split", "val", "--limit", "50"])
    assert result.exit_code == 0, result.output
    assert "ACR" in result.stdout and "% of cap 0.1" in result.stdout


def _one_error_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "nosuch"], ["unknown dataset 'nosuch'"]),
        (["train", "synthetic", "--method", "pgd"], ["method", "acert"]),
        (["train", "synthetic", "--max-eps", "1.5"], ["outside [0, 1]"]),
        (["train", "synthetic", "--max-eps", "two"], ["cannot read eps"]),
        (["train", "synthetic", "--preset", "huge"], ["huge"]),
        (["train", "synthetic", "--resume"], ["--out"]),
        (["certify", "/nonexistent/run"], ["/nonexistent/run"]),
    ],
)
def test_bad_inputs_exit_2_with_one_line(args: list[str], fragments: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    _one_error_line(result.stderr, *fragments)


def test_corrupt_checkpoint_is_one_line_and_exit_2(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in run_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    result = run_cli("certify", str(broken))
    assert result.returncode == 2
    _one_error_line(result.stderr, "model.pt")
    assert (run_dir / "model.pt").read_bytes() != b"not a checkpoint"
