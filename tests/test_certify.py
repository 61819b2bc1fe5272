"""Certified radii are verified, tight to ``tol``, and withstand attacks inside their box."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import random_net
from torch import nn

from raycert.cert.bounds import clean_forward, margin_lower_bounds
from raycert.cert.certify import (
    REL_THRESHOLD,
    certified_radius,
    certify,
    evaluate,
    margin_bounds,
    summarize,
)
from raycert.errors import UserError

CAP = 0.3


@pytest.fixture(scope="module", params=[0, 1, 6])
def case(request):
    """A random float64 net, inputs, and labels = its own predictions (so most are correct)."""
    seed = request.param
    net = random_net(seed=seed, channels=1, size=6, num_classes=3, conv_layers=1).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(48, 1, 6, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    y[:4] = (y[:4] + 1) % 3  # four misclassified samples
    radius = certified_radius(net, x, y, CAP, tol=1e-5)
    assert ((radius > 0) & (radius < CAP)).sum() > 20, "the net must give radii inside (0, cap)"
    return net, x, y


def _min_bound(net, x, y, eps):
    with torch.no_grad():
        return margin_lower_bounds(net, x, y, eps).min(dim=1).values


def test_every_reported_radius_was_verified(case):
    net, x, y = case
    radius = certified_radius(net, x, y, CAP, tol=1e-5)
    assert (radius[:4] == 0).all(), "misclassified samples must get radius 0"
    positive = radius > 0
    assert positive.sum() > 20
    assert (_min_bound(net, x[positive], y[positive], radius[positive]) > 0).all()
    assert (radius <= CAP).all()


def test_radius_is_within_tol_of_the_crossing_found_by_a_dense_scan(case):
    net, x, y = case
    tol = 1e-4
    radius = certified_radius(net, x, y, CAP, tol=tol)
    open_ = (radius > 0) & (radius < CAP)
    assert open_.sum() > 10
    xs, ys, rs = x[open_], y[open_], radius[open_]
    coarse = torch.linspace(0, CAP, 601, dtype=torch.float64)
    fails = torch.stack([_min_bound(net, xs, ys, float(e)) <= 0 for e in coarse], dim=1)
    first = fails.float().argmax(dim=1)  # first coarse grid point where the bound fails
    lo, hi = coarse[first - 1], coarse[first]
    fractions = torch.linspace(0, 1, 401, dtype=torch.float64)
    fine_fails = torch.stack([_min_bound(net, xs, ys, lo + f * (hi - lo)) <= 0 for f in fractions])
    crossing = lo + fractions[fine_fails.float().argmax(dim=0)] * (hi - lo)
    step = (hi - lo) / 400
    assert (rs < crossing).all(), "a verified radius lies before the crossing"
    assert (crossing - rs <= tol + step).all()
    assert (step < tol / 4).all()


def test_samples_verified_at_the_cap_get_exactly_the_cap(case):
    net, x, y = case
    small_cap = 1e-4
    radius = certified_radius(net, x, y, small_cap, tol=1e-6)
    at_cap = _min_bound(net, x, y, small_cap) > 0
    assert at_cap.any()
    assert (radius[at_cap] == small_cap).all()
    assert (radius[~at_cap] < small_cap).all()


def test_per_sample_caps_are_respected(case):
    net, x, y = case
    caps = torch.linspace(0, 0.05, len(x), dtype=torch.float64)
    radius = certified_radius(net, x, y, caps, tol=1e-5)
    assert (radius <= caps).all()
    assert radius[0] == 0


def test_few_steps_still_give_verified_radii(case):
    """Training uses a handful of steps: radii get looser, never unsound."""
    net, x, y = case
    coarse = certified_radius(net, x, y, CAP, tol=1e-6, max_iter=2)
    fine = certified_radius(net, x, y, CAP, tol=1e-6)
    positive = coarse > 0
    assert (_min_bound(net, x[positive], y[positive], coarse[positive]) > 0).all()
    assert (coarse <= fine + 1e-12).all()


def test_train_mode_search_uses_the_whole_batch_statistics():
    net = random_net(seed=4, channels=1, size=6, num_classes=3, bn_train=True)
    x = torch.rand(32, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        logits, stats = clean_forward(net, x)
    y = logits.argmax(dim=1)
    radius = certified_radius(net, x, y, CAP, tol=1e-5, bn_stats=stats)
    positive = radius > 0
    assert positive.sum() > 10
    with torch.no_grad():
        bound = margin_lower_bounds(net, x, y, radius, bn_stats=stats).min(dim=1).values
    assert (bound[positive] > 0).all()


def _pgd_flips(net, x, y, eps, steps=40, restarts=4, seed=0):
    """Projected gradient attack on the largest wrong logit, inside the clipped eps-box."""
    gen = torch.Generator().manual_seed(seed)
    eps = eps.view(-1, 1, 1, 1)
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    flipped = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        adv = lower + (upper - lower) * torch.rand(x.shape, generator=gen, dtype=x.dtype)
        for _ in range(steps):
            adv.requires_grad_(True)
            logits = net(adv)
            wrong = logits.clone()
            wrong[torch.arange(len(y)), y] = -torch.inf
            objective = (wrong.max(dim=1).values - logits.gather(1, y[:, None]).squeeze(1)).sum()
            (grad,) = torch.autograd.grad(objective, adv)
            with torch.no_grad():
                adv = torch.minimum(torch.maximum(adv + eps / 4 * grad.sign(), lower), upper)
        with torch.no_grad():
            flipped |= net(adv).argmax(dim=1) != y
    return flipped


def test_attacks_inside_the_certified_box_never_flip_a_prediction(case):
    net, x, y = case
    radius = certified_radius(net, x, y, CAP, tol=1e-5)
    positive = radius > 0
    assert not _pgd_flips(net, x[positive], y[positive], radius[positive]).any()
    # Control: the same attack does flip predictions once it may leave the certified box.
    assert _pgd_flips(net, x[positive], y[positive], 20 * radius[positive] + 0.05).any()


def test_certify_and_summarize_report_every_metric(case):
    net, x, y = case
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


def test_a_tolerance_at_or_above_the_cap_is_refused_by_certify(case):
    net, x, y = case
    images = (x * 255).round().to(torch.uint8)
    for tol in (CAP, 2 * CAP, 0.0):
        with pytest.raises(UserError, match="tolerance"):
            certify(net, images, y, cap=CAP, tol=tol)


def test_the_search_still_searches_below_a_cap_smaller_than_tol(case):
    """Training caps radii by a scheduled eps that starts far below ``search_tol``."""
    net, x, y = case
    full = certified_radius(net, x, y, CAP, tol=1e-5)
    cap = float(full[full > 0].median())  # about half the samples are not verified at the cap
    radius = certified_radius(net, x, y, cap, tol=10 * cap)
    inside = (radius > 0) & (radius < cap)
    assert inside.any(), "samples not verified at the cap must not all get radius 0"
    assert (_min_bound(net, x[inside], y[inside], radius[inside]) > 0).all()
    with pytest.raises(ValueError, match="tol"):
        certified_radius(net, x, y, cap, tol=0.0)


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
    verifier=st.sampled_from(["ibp", "ibp+crown-ibp"]),
)
def test_float32_certificates_are_verified_in_float64(seed, channels, num_classes, verifier):
    net, images, y = _bn_case(seed, channels=channels, num_classes=num_classes)
    certs = certify(net, images, y, 0.2, tol=1e-5, verifier=verifier, dtype=torch.float32)
    stages = verifier.split("+")
    x64 = images.double() / 255
    with torch.no_grad():
        threshold = REL_THRESHOLD[torch.float64] * net(x64).abs().amax(dim=1) / 2
        for stage, name in enumerate(stages):
            rows = certs.verified_by == stage
            if rows.any():
                bound = margin_bounds(net, x64[rows], y[rows], certs.radii[rows], name)
                assert (bound.min(dim=1).values > threshold[rows]).all()
    assert ((certs.radii > 0) == (certs.verified_by >= 0)).all()


def test_float64_certificates_clear_a_threshold_relative_to_the_logits():
    """Margins of 1e-4 on logits of 1e6 are rounding noise, not a certificate; margins of 1 are."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[1].weight.zero_()  # constant logits: the bound equals the margin at every eps
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    for margin, expected in ((1e-4, 0.0), (1.0, CAP)):
        with torch.no_grad():
            net[1].bias.copy_(torch.tensor([1e6 + margin, 1e6], dtype=torch.float64))
        radius = certified_radius(net, x, y, CAP, tol=1e-5)
        assert (radius == expected).all(), (margin, radius)
