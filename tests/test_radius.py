"""The radius search: radii are verified, tight to ``tol``, bounded by their caps, and
withstand attacks inside their box."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from nets import frozen_copy, named_bounds, pgd_flips, random_net
from torch import nn

import raycert.cert.radius as radius_module
import raycert.cert.verifiers as verifiers_module
from raycert.cert.bounds import clean_forward, margin_lower_bounds
from raycert.cert.radius import certified_radius, search_radii
from raycert.cert.verifiers import REL_THRESHOLD

CAP = 0.3  # the cap at which ``random_case`` (tests/conftest.py) has radii inside (0, CAP)


def _min_bound(net, x, y, eps):
    with torch.no_grad():
        return margin_lower_bounds(net, x, y, eps).min(dim=1).values


def test_every_reported_radius_was_verified(random_case):
    net, x, y = random_case
    radius = certified_radius(net, x, y, CAP, tol=1e-5)
    assert (radius[:4] == 0).all(), "misclassified samples must get radius 0"
    positive = radius > 0
    assert positive.sum() > 20
    assert (_min_bound(net, x[positive], y[positive], radius[positive]) > 0).all()
    assert (radius <= CAP).all()


def test_radius_is_within_tol_of_the_crossing_found_by_a_dense_scan(random_case):
    net, x, y = random_case
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


def test_samples_verified_at_the_cap_get_exactly_the_cap(random_case):
    net, x, y = random_case
    small_cap = 1e-4
    radius = certified_radius(net, x, y, small_cap, tol=1e-6)
    at_cap = _min_bound(net, x, y, small_cap) > 0
    assert at_cap.any()
    assert (radius[at_cap] == small_cap).all()
    assert (radius[~at_cap] < small_cap).all()


def test_per_sample_caps_are_respected(random_case):
    net, x, y = random_case
    caps = torch.linspace(0, 0.05, len(x), dtype=torch.float64)
    radius = certified_radius(net, x, y, caps, tol=1e-5)
    assert (radius <= caps).all()
    assert radius[0] == 0


def test_few_steps_still_give_verified_radii(random_case):
    """Training uses a handful of steps: radii get looser, never unsound."""
    net, x, y = random_case
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


def test_attacks_inside_the_certified_box_never_flip_a_prediction(random_case):
    net, x, y = random_case
    radius = certified_radius(net, x, y, CAP, tol=1e-5)
    positive = radius > 0
    assert not pgd_flips(net, x[positive], y[positive], radius[positive]).any()
    # Control: the same attack does flip predictions once it may leave the certified box.
    assert pgd_flips(net, x[positive], y[positive], 20 * radius[positive] + 0.05).any()


def test_the_search_still_searches_below_a_cap_smaller_than_tol(random_case):
    """Training caps radii by a scheduled eps that starts far below ``search_tol``."""
    net, x, y = random_case
    full = certified_radius(net, x, y, CAP, tol=1e-5)
    cap = float(full[full > 0].median())  # about half the samples are not verified at the cap
    radius = certified_radius(net, x, y, cap, tol=10 * cap)
    inside = (radius > 0) & (radius < cap)
    assert inside.any(), "samples not verified at the cap must not all get radius 0"
    assert (_min_bound(net, x[inside], y[inside], radius[inside]) > 0).all()
    with pytest.raises(ValueError, match="tol"):
        certified_radius(net, x, y, cap, tol=0.0)


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


def _verified_by_named(net, x, y, found) -> torch.Tensor:
    """Per sample: whether the verifier that ``found`` names verified its radius in float64
    above half the float64 threshold (half: another batch order may round a bound that sits at
    the threshold differently); True at radius 0."""
    ok = torch.ones(len(y), dtype=torch.bool)
    with torch.no_grad():
        threshold = REL_THRESHOLD[torch.float64] * net(x).abs().amax(dim=1) / 2
        for stage in range(len(found.verifiers)):
            rows = torch.nonzero(found.verified_by == stage).flatten()
            if len(rows):
                bound = named_bounds(net, x, y, found, stage, rows, CAP, 1e-5)
                ok[rows] = bound > threshold[rows]
    return ok


@contextmanager
def _counting_float32_probes() -> Iterator[list[int]]:
    """Count the samples bounded in float32 while the block runs: by ``min_margin`` on float32
    models, and by an alpha stage's slope optimization (on a float32 copy), whose bounds are
    that stage's first probe."""
    counts: list[int] = []
    original = verifiers_module.min_margin
    original_slopes = radius_module.stage_slopes

    def counting(model, x, *args, **kwargs):
        if next(model.parameters()).dtype == torch.float32:
            counts.append(len(x))
        return original(model, x, *args, **kwargs)

    def counting_slopes(model, x, *args, **kwargs):
        optimized = original_slopes(model, x, *args, **kwargs)
        if optimized.bounds.dtype == torch.float32:
            counts.append(len(x))
        return optimized

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verifiers_module, "min_margin", counting)
        patch.setattr(radius_module, "stage_slopes", counting_slopes)
        yield counts


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    conv_layers=st.integers(1, 2),
    num_classes=st.integers(2, 5),
    bn_train=st.booleans(),
    verifier=st.sampled_from(["ibp+crown-ibp", "ibp+crown", "ibp+alpha-crown-ibp"]),
)
# The alpha stage's optimization, its only float32 bound, verifies each sample at the cap.
@example(seed=239, conv_layers=1, num_classes=2, bn_train=False, verifier="ibp+alpha-crown-ibp")
def test_float32_probed_linear_stages_return_radii_verified_in_float64(
    seed, conv_layers, num_classes, bn_train, verifier
):
    net = random_net(seed, channels=1, size=6, num_classes=num_classes, conv_layers=conv_layers)
    net.train(bn_train)
    x = torch.rand(24, 1, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        logits, stats = clean_forward(net, x)
    y = logits.argmax(dim=1)
    stats = stats if bn_train else None
    ibp = search_radii(net, x, y, CAP, 1e-5, verifier="ibp", bn_stats=stats)
    with _counting_float32_probes() as probes:
        found = search_radii(net, x, y, CAP, 1e-5, verifier=verifier, bn_stats=stats)
    if (ibp.radius < CAP).any():  # else no sample is left for the linear stage
        assert sum(probes) > 0, "the linear stage must bound in float32"
    assert (found.radius >= ibp.radius).all()
    assert ((found.radius > 0) == (found.verified_by >= 0)).all()
    reference = frozen_copy(net, stats) if bn_train else net
    assert _verified_by_named(reference, x, y, found).all()


def test_a_float32_radius_that_fails_in_float64_falls_back_to_a_float64_search(random_case):
    """Force the case rounding rarely makes: float32 probes that verify every eps. Each radius
    they pick is checked in float64, and where the check fails a float64 search takes over."""
    net, x, y = random_case
    ibp = search_radii(net, x, y, CAP, 1e-5, verifier="ibp")
    honest = search_radii(net, x, y, CAP, 1e-5, verifier="ibp+crown-ibp", linear_dtype=None)

    def lying(*args, **kwargs):
        return lambda rows, eps: torch.ones(len(rows), dtype=torch.float32)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(radius_module, "fast_margin_fn", lying)
        found = search_radii(net, x, y, CAP, 1e-5, verifier="ibp+crown-ibp")
    assert _verified_by_named(net, x, y, found).all()
    assert (found.radius >= ibp.radius).all()
    lifted = found.verified_by == 1
    assert (found.radius < CAP).any(), "the float64 check must refuse the cap"
    assert lifted.sum() >= (honest.verified_by == 1).sum() // 2 > 0, "the fallback must search"


def test_float32_probes_lose_no_tightness_against_float64_probes(random_case):
    net, x, y = random_case
    fast = search_radii(net, x, y, CAP, 1e-5, verifier="ibp+crown-ibp")
    slow = search_radii(net, x, y, CAP, 1e-5, verifier="ibp+crown-ibp", linear_dtype=None)
    assert (fast.verified_by == 1).sum() > 0, "the linear stage must lift some radius"
    assert float(fast.radius.mean()) >= float(slow.radius.mean()) - 1e-5
