"""PGD on real MNIST: it breaks a standard model, never breaks a certificate, and a certificate
that claims too much is caught as a bug."""

from __future__ import annotations

import pytest
import torch
from nets import random_net

from raycert.cert.attack import (
    AttackSettings,
    CertificateViolation,
    attack_split,
    empirical_radius,
    pgd,
)
from raycert.cert.certify import certify
from raycert.cert.verifiers import DEFAULT_VERIFIER
from raycert.data import load
from raycert.spec import load_preset
from raycert.training.loop import train

N_TEST = 60
FAST = AttackSettings(steps=10, restarts=2, bisections=6)


def _train(shared_data, **changes):
    """The quick MNIST preset, cut to a few thousand images and a few epochs."""
    cfg = load_preset("mnist", "quick").replace(
        train_limit=2000,
        val_limit=100,
        eval_limit=100,
        **changes,
    )
    return train(cfg, data_dir=shared_data, download=False, device="cpu").model


@pytest.fixture(scope="module")
def mnist_test(shared_data):
    return load("mnist", "test", shared_data, download=False, limit=N_TEST)


@pytest.fixture(scope="module")
def standard_model(shared_data):
    return _train(shared_data, method="standard", epochs=2, warmup_epochs=1, ramp_epochs=0)


@pytest.fixture(scope="module")
def certified_model(shared_data):
    return _train(shared_data, method="ibp", epochs=3, warmup_epochs=1, ramp_epochs=1)


def test_pgd_flips_a_standard_mnist_model_at_eps_0_1(standard_model, mnist_test):
    """Control: the attack is strong enough to matter."""
    result = attack_split(
        standard_model, mnist_test.images, mnist_test.labels, [0.1], settings=FAST
    )
    with torch.no_grad():
        clean = standard_model(mnist_test.images.float() / 255).argmax(1) == mnist_test.labels
    assert clean.double().mean() > 0.8
    assert result.pgd_acc["pgd_acc@0.1"] < clean.double().mean() - 0.3


def test_pgd_stays_in_the_clipped_box(standard_model, mnist_test):
    x = mnist_test.images[:16].float() / 255
    y = mnist_test.labels[:16]
    eps = torch.linspace(0.0, 0.2, 16)
    adv, margin = pgd(standard_model.eval(), x, y, eps, AttackSettings(steps=5, restarts=1))
    assert (adv >= 0).all() and (adv <= 1).all()
    assert ((adv - x).abs() <= eps.view(-1, 1, 1, 1) + 1e-7).all()
    assert torch.equal(adv[0], x[0])  # eps 0: nowhere to go


def test_pgd_never_flips_inside_a_certified_radius_of_a_trained_model(certified_model, mnist_test):
    """The tightest cascade's radii, optimized slopes included, hold against the attack."""
    images, labels = mnist_test.images, mnist_test.labels
    verifier = "ibp+crown-ibp+alpha-crown-ibp"
    certs = certify(certified_model, images, labels, cap=0.4, verifier=verifier)
    certified = torch.where(certs.correct, certs.radii, torch.zeros_like(certs.radii))
    assert (certified > 0.01).double().mean() > 0.3, "the model must certify something"
    lift = certs.stage_radii["alpha-crown-ibp"] - certs.stage_radii["crown-ibp"]
    # On this short IBP training the lift is small (a fraction of a percent) but real: beyond
    # the search's tolerance on most samples.
    assert (lift >= 0).all() and (lift > 1e-5).double().mean() > 0.5, "slopes must lift radii"
    # Raises CertificateViolation if any flip lies inside a certified radius.
    result = attack_split(
        certified_model, images, labels, [0.02, 0.1], cap=0.4, certified=certified, settings=FAST
    )
    radii = result.radii
    assert radii is not None and len(radii) == N_TEST
    correct = certs.correct
    assert (radii[correct] > certified[correct]).all()
    assert (radii[~correct] == 0).all()
    found = torch.isfinite(radii) & correct
    assert found.any(), "the attack must find flips below the cap on some samples"
    for eps in (0.02, 0.1):
        cert_acc = float((correct & (certs.radii >= eps)).double().mean())
        assert cert_acc <= result.pgd_acc[f"pgd_acc@{eps:g}"] <= float(correct.double().mean())


def test_a_certificate_that_claims_too_much_raises(standard_model, mnist_test):
    images, labels = mnist_test.images[:40], mnist_test.labels[:40]
    overclaim = torch.full((40,), 0.3, dtype=torch.float64)
    with pytest.raises(CertificateViolation, match="inside its certified radius"):
        attack_split(standard_model, images, labels, [0.1], certified=overclaim, settings=FAST)
    with pytest.raises(CertificateViolation, match="empirical radius"):
        empirical_radius(standard_model, images.double() / 255, labels, 0.4, overclaim, FAST)


def test_empirical_radii_lie_above_certified_ones_on_a_random_net():
    net = random_net(seed=0, channels=1, size=6, num_classes=3).eval()
    x = torch.rand(24, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    certified = certify(net, x, y, cap=0.5, verifier="ibp+crown").radii
    settings = AttackSettings(steps=10, restarts=2, bisections=10)
    radii = empirical_radius(net, x, y, 0.5, certified, settings=settings)
    found = torch.isfinite(radii)
    assert found.sum() > 10
    assert (radii[found] <= 0.5).all() and (radii > certified).all()


def test_certify_cli_carries_verifiers_and_the_attack(tmp_path):
    """``raycert certify --verifier ... --attack``: JSON summary and CSV agree per verifier; an
    unknown or misplaced verifier is refused in one line; no ``--verifier``: the default."""
    import csv
    import json

    from typer.testing import CliRunner

    from raycert.cli import app

    runner = CliRunner()
    run_dir = tmp_path / "run"
    trained = runner.invoke(app, ["train", "synthetic", "--preset", "smoke", "--out", str(run_dir)])
    assert trained.exit_code == 0, trained.output
    per_sample = tmp_path / "radii.csv"
    cascade = "ibp+crown-ibp+alpha-crown-ibp"
    args = ["certify", str(run_dir), "--json", "--limit", "60", "--verifier", cascade]
    result = runner.invoke(app, [*args, "--attack", "--per-sample", str(per_sample)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = list(csv.DictReader(per_sample.open()))
    assert summary["verifier"] == cascade and len(rows) == 60
    for name in cascade.split("+"):
        radii = [float(row[f"radius_{name}"]) for row in rows]
        assert summary["by_verifier"][name]["acr"] == pytest.approx(sum(radii) / 60)
    assert {row["verifier"] for row in rows} <= {"", *cascade.split("+")}
    refused = runner.invoke(app, ["certify", str(run_dir), "--verifier", "alpha-crown-ibp"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        "error: alpha-crown-ibp optimizes its slopes just above an earlier stage's radius: put a "
        "verifier before it (e.g. ibp+alpha-crown-ibp)"
    ]
    pgd_key = "pgd_acc@0.05"  # the synthetic dataset's standard radius
    assert summary["cert_acc@0.05"] <= summary[pgd_key] <= summary["clean_acc"]
    for row in rows:
        assert float(row["pgd_radius"]) > float(row["radius"]) or row["correct"] == "0"

    bad = runner.invoke(app, ["certify", str(run_dir), "--verifier", "alpha-crown"])
    assert bad.exit_code == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown verifier 'alpha-crown'")
    # Without --verifier, the library's default cascade certifies.
    default = runner.invoke(app, ["certify", str(run_dir), "--json", "--limit", "10"])
    assert default.exit_code == 0, default.output
    assert json.loads(default.stdout)["verifier"] == DEFAULT_VERIFIER
