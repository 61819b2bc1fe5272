"""``raycert export``: the ONNX network computes what the PyTorch one does, each VNN-LIB
property parses back (with the VNN-COMP parser of the ``vnnlib`` package) to its sample's
clipped box and "some other class reaches the label", and onnxruntime finds no counterexample
inside a certified box where PGD looks for one. Real MNIST, real files, real libraries."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from vnnlib.compat import read_vnnlib_simple

from raycert.cert.attack import AttackSettings, pgd
from raycert.cert.models import build_model
from raycert.cli import app
from raycert.data import dataset_info, load
from raycert.export.network import export_onnx, onnx_logits
from raycert.export.vnnlib import RobustnessProperty
from raycert.training.evaluation import certify_run
from raycert.training.rundir import load_run

MNIST = dataset_info("mnist")


def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``raycert ARGS`` in this process, from the folder ``cwd``: exit code, stdout, stderr."""
    import os

    here = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    finally:
        os.chdir(here)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def mnist_test(shared_data) -> torch.Tensor:
    """100 real MNIST test images, float32 in [0, 1]."""
    return load("mnist", "test", shared_data, download=False, limit=100).images.float() / 255


def _with_batchnorm_statistics(model: torch.nn.Sequential, images: torch.Tensor) -> None:
    """Running statistics that are not the identity's, so eval mode matters."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(images * 0.8 + 0.1)
    model.eval()


@pytest.mark.parametrize("name", ["cnn_small", "cnn7", "mlp"])
def test_the_onnx_network_gives_the_pytorch_logits(tmp_path, mnist_test, name):
    torch.manual_seed(0)
    model = build_model(name, MNIST.shape, MNIST.num_classes, MNIST.mean, MNIST.std)
    _with_batchnorm_statistics(model, mnist_test)
    path = export_onnx(model, MNIST.shape, tmp_path / "model.onnx")

    with torch.no_grad():
        expected = model(mnist_test).numpy()
    got = onnx_logits(path, mnist_test.numpy())
    assert got.shape == expected.shape == (100, MNIST.num_classes)
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    assert not model.training  # the model handed in is left as it was


def test_a_property_parses_back_to_its_clipped_box_and_the_label_beaten(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.choice([0.0, 1.0, 0.5, 0.01], size=(1, 4, 3))  # pixels at both edges
    prop = RobustnessProperty(7, image, label=2, radius=0.05, num_classes=4)
    file = tmp_path / "property.vnnlib"
    file.write_text(prop.text())
    ((box, disjuncts),) = read_vnnlib_simple(str(file), 12, 4)
    lower, upper = np.array(box).T
    assert np.array_equal(lower, np.clip(image.reshape(-1) - 0.05, 0, 1))
    assert np.array_equal(upper, np.clip(image.reshape(-1) + 0.05, 0, 1))
    # One disjunct per other class j, each "Y_2 - Y_j <= 0".
    assert len(disjuncts) == 3
    for (matrix, rhs), j in zip(disjuncts, (0, 1, 3), strict=True):
        expected = np.zeros((1, 4))
        expected[0, 2], expected[0, j] = 1, -1
        assert np.array_equal(np.asarray(matrix), expected)
        assert np.array_equal(np.asarray(rhs).reshape(-1), [0])


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, shared_data) -> Path:
    """A real MNIST model, trained briefly with ACERT so that many radii are certified."""
    folder = tmp_path_factory.mktemp("run")
    code, out, err = run_cli(
        "train", "mnist", "--preset", "smoke", "--out", str(folder / "run"),
        "--data-dir", str(shared_data), cwd=folder,
    )  # fmt: skip
    assert code == 0, err
    return folder / "run"


@pytest.fixture(scope="module")
def exported(mnist_run, shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "out"
    code, printed, err = run_cli(
        "export", str(mnist_run), "--out", str(out), "--limit", "40",
        "--data-dir", str(shared_data), "--timeout", "120", cwd=out.parent,
    )  # fmt: skip
    assert code == 0, err
    assert f"{out}: model.onnx" in printed
    return out


def test_the_folder_is_laid_out_for_a_complete_verifier(exported, mnist_run, shared_data):
    with open(exported / "instances.csv") as stream:
        instances = list(csv.reader(stream))
    with open(exported / "properties.csv") as stream:
        table = list(csv.DictReader(stream))
    assert instances and len(instances) == len(table)
    for (onnx_file, vnnlib_file, timeout), row in zip(instances, table, strict=True):
        assert (onnx_file, timeout, vnnlib_file) == ("model.onnx", "120", row["vnnlib"])
        assert (exported / vnnlib_file).is_file()
    readme = (exported / "README.txt").read_text()
    assert "Unsatisfiable means robust" in readme and "the first 40 of the test split" in readme

    # The radii are the certified ones of the test split's first 40 samples.
    certified = {int(r["sample"]): float(r["radius"]) for r in table}
    certs, _ = certify_run(mnist_run, "test", data_dir=shared_data, rows=slice(0, 40))
    assert len(certs.radii) == 40
    for index, (radius, correct) in enumerate(zip(certs.radii, certs.correct, strict=True)):
        if correct and radius > 0:
            assert certified.pop(index) == pytest.approx(float(radius), rel=1e-12)
    assert certified == {}  # no property without a certified radius


def test_no_counterexample_inside_a_certified_box_under_onnxruntime(
    exported, mnist_run, shared_data
):
    model, _ = load_run(mnist_run)
    data = load("mnist", "test", shared_data, download=False)  # its first 40 were exported
    with open(exported / "properties.csv") as stream:
        table = list(csv.DictReader(stream))
    index = torch.tensor([int(r["sample"]) for r in table])
    radii = torch.tensor([float(r["radius"]) for r in table], dtype=torch.float64)
    x, y = data.images[index].double() / 255, data.labels[index]
    for r, center in zip(table, x, strict=True):
        ((box, _),) = read_vnnlib_simple(str(exported / r["vnnlib"]), 784, 10)
        lower, upper = np.array(box).T
        assert (lower <= center.numpy().reshape(-1)).all()
        assert (center.numpy().reshape(-1) <= upper).all()

    net = model.double()
    points, _ = pgd(net, x, y, radii, AttackSettings(steps=20, restarts=2))
    assert ((points - x).abs().amax(dim=(1, 2, 3)) <= radii + 1e-12).all()
    for candidates in (x, points):  # the centres, then PGD's strongest points in the boxes
        logits = onnx_logits(exported / "model.onnx", candidates.float().numpy())
        assert (logits.argmax(1) == y.numpy()).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothere", "--out", "o"], "is not a folder; give a run folder or a study folder"),
        ([".", "--out", "o"], "is neither a run folder (no config.json) nor a study folder"),
        (["run", "--out", "file"], "is a file, not a folder"),
        (["run", "--out", "o", "--eps", "0"], "--eps 0: give a radius > 0"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, mnist_run, args, message):
    (tmp_path / "file").write_text("")
    (tmp_path / "run").symlink_to(mnist_run)
    code, out, err = run_cli("export", *args, cwd=tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "o").exists()


def test_a_study_exports_each_chosen_model_at_the_radii_it_certified(ray_local, tmp_path):
    from studyruns import smoke_request

    from raycert.study.tune.run import run_study

    result = run_study(smoke_request(tmp_path / "st", "s"), progress=False)
    (chosen,) = result.targets
    assert chosen.met
    code, printed, err = run_cli("export", "st/s", "--out", "out", cwd=tmp_path)
    assert code == 0, err
    folder = tmp_path / "out" / "0.5"
    assert f"{folder}: model.onnx" in printed
    with open(tmp_path / "st" / "s" / chosen.run_dir / "test_radii.csv") as stream:
        radii = list(csv.DictReader(stream))
    with open(folder / "properties.csv") as stream:
        table = {int(r["sample"]): float(r["radius"]) for r in csv.DictReader(stream)}
    certified = {
        i: float(r["radius"])
        for i, r in enumerate(radii)
        if r["correct"] in ("True", "true", "1") and float(r["radius"]) > 0
    }
    assert table == certified and table
    assert "certified by the study on the test split" in (folder / "README.txt").read_text()


def test_a_study_without_results_says_so(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text("{}")
    code, _, err = run_cli("export", "s", "--out", "o", cwd=tmp_path)
    assert code == 2 and "has no results.json yet" in err, err


def test_without_the_export_extra_it_names_what_to_install(monkeypatch, tmp_path):
    import raycert.export

    monkeypatch.setattr(raycert.export, "PACKAGES", ("onnx", "raycert_no_such_package"))
    code, _, err = run_cli("export", ".", "--out", "o", cwd=tmp_path)
    assert code == 2
    expected = "raycert export needs raycert_no_such_package: pip install 'raycert[export]'"
    assert err == f"error: {expected}\n"
