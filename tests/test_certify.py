"""Certificates of a split: every metric of the summary, the tolerance check, and float32
certificates re-verified in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import named_bounds, random_net

from raycert.cert.bounds import margin_lower_bounds
from raycert.cert.certify import certify, evaluate, summarize
from raycert.cert.radius import certified_radius
from raycert.cert.verifiers import REL_THRESHOLD
from raycert.errors import UserError

CAP = 0.3  # the cap at which ``random_case`` (tests/conftest.py) has radii inside (0, CAP)


def test_certify_and_summarize_report_every_metric(random_case):
    net, x, y = random_case
    images = (x * 255).round().to(torch.uint8)
    certs = certify(net, images, y, cap=CAP, batch_size=10)
    assert len(certs.radii) == len(x) and certs.radii.dtype == torch.float64
    metrics = summarize(certs, [2 / 255, 0.1])
    assert metrics["acr"] == pytest.approx(float(certs.radii.mean()))
    assert metrics["acr_pct"] == pytest.approx(100 * metrics["acr"] / CAP)
    assert metrics["acr_cap"] == CAP
    assert metrics["clean_acc"] == pytest.approx(float(certs.correct.double().mean()))
    expected = float((certs.correct & (certs.radii >= 2 / 255)).double().mean())
    assert metrics["cert_acc@2/255"] == pytest.approx(expected)
    assert metrics["cert_acc@0.1"] <= metrics["cert_acc@2/255"] <= metrics["clean_acc"]
    # float32 certification agrees on predictions and closely on radii
    certs32 = certify(net, images, y, cap=CAP, dtype=torch.float32)
    assert torch.equal(certs32.predictions, certs.predictions)
    torch.testing.assert_close(certs32.radii, certs.radii, atol=1e-3, rtol=0)
    # another batch size probes differently; radii agree to the search tolerance
    assert evaluate(net, images, y, CAP, [0.1])["acr"] == pytest.approx(metrics["acr"], abs=1e-5)


def test_a_tolerance_at_or_above_the_cap_is_refused_by_certify(random_case):
    net, x, y = random_case
    images = (x * 255).round().to(torch.uint8)
    for tol in (CAP, 2 * CAP, 0.0):
        with pytest.raises(UserError, match="tolerance"):
            certify(net, images, y, cap=CAP, tol=tol)


def _float64_check(net, images, y, radii):
    """Float64 bounds at ``radii`` and half the float64 threshold (rounding of another batch
    order may move a bound that sits at the threshold by ~1e-25)."""
    x64 = images.double() / 255
    with torch.no_grad():
        bound = margin_lower_bounds(net, x64, y, radii).min(dim=1).values
        threshold = REL_THRESHOLD[torch.float64] * net(x64).abs().amax(dim=1)
    return bound, threshold / 2


def _bn_case(seed: int, channels: int = 1, num_classes: int = 3):
    """A random eval-mode net with BatchNorm, 32 uint8 images and its own predictions."""
    net = random_net(seed, channels=channels, size=6, num_classes=num_classes).eval()
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(32, channels, 6, 6, generator=gen) * 255).round().to(torch.uint8)
    with torch.no_grad():
        y = net(images.double() / 255).argmax(dim=1)
    return net, images, y


def test_raw_float32_radii_can_fail_in_float64():
    """Why float32 radii are re-verified: searched in float32, some radii fail in float64."""
    failures = 0
    for seed in range(8):
        net, images, y = _bn_case(seed)
        radii = certified_radius(net.float(), images.float() / 255, y, 0.2, 1e-5).double()
        net.double()
        positive = radii > 0
        bound, _ = _float64_check(net, images[positive], y[positive], radii[positive])
        failures += int((bound <= 0).sum())
    assert failures > 0


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    channels=st.integers(1, 2),
    num_classes=st.integers(2, 5),
    verifier=st.sampled_from(["ibp", "ibp+crown-ibp", "ibp+crown-ibp+alpha-crown-ibp"]),
)
def test_float32_certificates_are_verified_in_float64(seed, channels, num_classes, verifier):
    net, images, y = _bn_case(seed, channels=channels, num_classes=num_classes)
    certs = certify(net, images, y, 0.2, tol=1e-5, verifier=verifier, dtype=torch.float32)
    x64 = images.double() / 255
    with torch.no_grad():
        threshold = REL_THRESHOLD[torch.float64] * net(x64).abs().amax(dim=1) / 2
        for stage in range(len(verifier.split("+"))):
            rows = torch.nonzero(certs.verified_by == stage).flatten()
            if len(rows):
                bound = named_bounds(net, x64, y, certs, stage, rows, 0.2, 1e-5)
                assert (bound > threshold[rows]).all()
    assert ((certs.radii > 0) == (certs.verified_by >= 0)).all()


def test_certification_bounds_in_ieee_float32_whatever_tf32_the_user_allowed(random_case):
    """cuDNN convolutions (TF32 by default on recent GPUs) and float32 matrix products run in
    IEEE float32 while ``certify`` bounds, and the caller's settings come back afterwards."""
    net, x, y = random_case
    seen = []

    def record(module, args, output):
        seen.append((torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()))

    hook = net[-1].register_forward_hook(record)  # certify's copies of the net keep it
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # a user allowing TF32 products
    try:
        certify(net, x, y, cap=CAP, dtype=torch.float32)
        after = (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    finally:
        torch.set_float32_matmul_precision(before)
        hook.remove()
    assert seen and set(seen) == {(False, "highest")}
    assert after == (True, "high")
