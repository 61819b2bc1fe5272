"""``raycert train`` and ``raycert certify``: a real run end to end, and every bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli
from typer.testing import CliRunner

from raycert.cli import app
from raycert.spec import load_preset
from raycert.training.evaluation import certify_run
from raycert.training.rundir import load_run

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


def test_train_writes_a_run_that_loads_and_certifies_as_trained(run_dir: Path) -> None:
    model, cfg = load_run(run_dir)
    assert cfg == load_preset("synthetic", "smoke").replace(seed=3).resolve()
    assert not model.training
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [row["epoch"] for row in metrics] == [1, 2] and metrics[-1]["final"]
    # The last epoch certified the whole val split in float64 with IBP: the saved model
    # certifies the same, and the default cascade of tighter verifiers certifies at least that.
    _, summary = certify_run(run_dir, "val", limit=cfg.val_limit, device="cpu", verifier="ibp")
    assert summary["n"] == metrics[-1]["eval_n"] == cfg.val_limit
    for key in ("clean_acc", "acr", "cert_acc@0.05"):
        assert summary[key] == pytest.approx(metrics[-1][key], rel=1e-12), key
    _, tight = certify_run(run_dir, "val", limit=cfg.val_limit, device="cpu")
    assert tight["clean_acc"] == summary["clean_acc"] and tight["acr"] >= summary["acr"]


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


def test_certify_prints_the_numbers_of_its_json_in_a_table(run_dir: Path) -> None:
    args = ["certify", str(run_dir), "--split", "val", "--limit", "50"]
    summary = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells[1]
        for line in result.stdout.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 2
    }
    assert rows["clean accuracy"] == f"{summary['clean_acc']:.2%}"
    assert rows["ACR"] == f"{summary['acr']:.5f} ({summary['acr_pct']:.1f}% of cap 0.1)"
    assert rows["certified accuracy at 0.05"] == f"{summary['cert_acc@0.05']:.2%}"
    assert summary["acr"] > 0 and summary["n"] == 50


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
    assert_one_line_error(result.stderr, *fragments)


def test_corrupt_checkpoint_is_one_line_and_exit_2(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in run_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    result = run_cli("certify", str(broken))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, f"{broken / 'model.pt'} is corrupt", "retrain or resume")
