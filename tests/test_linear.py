"""Linear-relaxation bounds (CROWN-IBP, CROWN, optimized slopes) are sound, exact at eps 0 and
at least as tight as interval bounds; each registered verifier bounds as it is declared; cascades
of verifiers report radii their named verifier verified."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import exact_margins, frozen_copy, named_bounds, random_net
from torch import nn

from raycert.cert.bounds import clean_forward, input_box, margin_lower_bounds
from raycert.cert.certify import certify, summarize
from raycert.cert.linear import (
    crown_rows_bytes,
    linear_decision,
    linear_margin_bounds,
    preactivation_bounds,
)
from raycert.cert.models import build_model
from raycert.cert.radius import search_radii
from raycert.cert.slopes import optimize_slopes
from raycert.cert.verifiers import (
    DEFAULT_VERIFIER,
    REL_THRESHOLD,
    VERIFIERS,
    lookup,
    margin_bounds,
    min_margin,
    parse_cascade,
    parse_verifier,
)
from raycert.errors import UserError

NAMES = tuple(verifier.name for verifier in VERIFIERS)
LINEAR = tuple(verifier.name for verifier in VERIFIERS if verifier.linear)

net_params = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 10_000),
        "channels": st.integers(1, 3),
        "size": st.sampled_from([4, 6]),
        "num_classes": st.integers(2, 5),
        "conv_layers": st.integers(0, 2),
        "pool": st.booleans(),
        "bn_train": st.booleans(),
        "padding_mode": st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    }
)


def _make(params: dict, batch: int = 6):
    net = random_net(**params)
    gen = torch.Generator().manual_seed(params["seed"] + 1)
    x = torch.rand(batch, params["channels"], params["size"], params["size"], generator=gen)
    x = x.double()
    x = torch.where(x < 0.15, torch.zeros_like(x), torch.where(x > 0.85, torch.ones_like(x), x))
    y = torch.randint(0, params["num_classes"], (batch,), generator=gen)
    with torch.no_grad():
        _, stats = clean_forward(net, x)
    reference = frozen_copy(net, stats) if net.training else net
    return net, x, y, reference


def _sampled_points(x: torch.Tensor, eps: torch.Tensor, gen: torch.Generator, count: int):
    """Box corners and interior points of the clipped eps-box around ``x``."""
    center, radius = input_box(x, eps)
    for index in range(count):
        noise = 2 * torch.rand(x.shape, generator=gen, dtype=x.dtype) - 1
        yield center + radius * (torch.sign(noise) if index % 2 else noise)


@settings(max_examples=30, deadline=None)
@given(params=net_params, eps_scale=st.floats(0.001, 0.3))
def test_every_verifier_is_sound_on_sampled_points(params, eps_scale):
    net, x, y, reference = _make(params)
    gen = torch.Generator().manual_seed(params["seed"] + 2)
    eps = eps_scale * torch.rand(len(x), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        bounds = {v: margin_bounds(net, x, y, eps, v) for v in NAMES}
        for point in _sampled_points(x, eps, gen, 48):
            margins = exact_margins(reference(point), y)
            for verifier, bound in bounds.items():
                assert (margins >= bound - 1e-9).all(), (verifier, (margins - bound).min())
    # Linear bounds keep the interval bound where theirs is looser: never below IBP (up to the
    # rounding of train-mode statistics computed in another order).
    for verifier in LINEAR:
        assert (bounds[verifier] >= bounds["ibp"] - 1e-12).all(), verifier


@settings(max_examples=25, deadline=None)
@given(params=net_params)
def test_linear_bounds_at_eps_zero_are_the_exact_margins(params):
    net, x, y, reference = _make(params)
    with torch.no_grad():
        exact = exact_margins(reference(x), y)
        for verifier in NAMES:
            torch.testing.assert_close(
                margin_bounds(net, x, y, 0.0, verifier), exact, atol=1e-9, rtol=0
            )


@settings(max_examples=20, deadline=None)
@given(params=net_params, eps=st.floats(0.001, 0.2))
def test_crown_preactivation_bounds_are_sound_and_within_the_interval_ones(params, eps):
    net, x, _, reference = _make(params)
    with torch.no_grad():
        ibp = preactivation_bounds(net, x, eps, intermediate="ibp")
        crown = preactivation_bounds(net, x, eps, intermediate="crown")
        relus = [i for i, m in enumerate(reference) if isinstance(m, nn.ReLU)]
        for (lo_i, up_i), (lo_c, up_c) in zip(ibp, crown, strict=True):
            assert (lo_c >= lo_i).all() and (up_c <= up_i).all()
        gen = torch.Generator().manual_seed(params["seed"])
        for point in _sampled_points(x, torch.full((len(x),), eps, dtype=torch.float64), gen, 32):
            h = point
            bounds = iter(crown)
            for index, layer in enumerate(reference):
                if index in relus:
                    lower, upper = next(bounds)
                    assert (h >= lower - 1e-9).all() and (h <= upper + 1e-9).all()
                h = layer(h)


def test_linear_verifiers_are_tighter_than_ibp_on_a_random_net():
    net, x, y, _ = _make({**dict(seed=11, channels=2, size=6, num_classes=4), "conv_layers": 2})
    with torch.no_grad():
        ibp = margin_lower_bounds(net, x, y, 0.02)
        crown_ibp = margin_bounds(net, x, y, 0.02, "crown-ibp")
        crown = margin_bounds(net, x, y, 0.02, "crown")
    assert (crown_ibp - ibp).mean() > 0.01
    assert (crown - crown_ibp).mean() > 0.01


def test_each_registered_verifier_bounds_as_it_is_declared():
    """Every bound of a verifier (its margin bounds, the search's decision) is the one its
    declaration names: intervals alone, or a linear pass over its intermediate bounds with
    CROWN's slopes or optimized ones."""
    declared = {v.name: (v.intermediate, v.optimized_slopes) for v in VERIFIERS}
    assert declared == {
        "ibp": (None, False),
        "crown-ibp": ("ibp", False),
        "crown": ("crown", False),
        "alpha-crown-ibp": ("ibp", True),
    }
    net, x, y, _ = _make({**dict(seed=11, channels=2, size=6, num_classes=4), "conv_layers": 2})
    eps = torch.tensor([0.02, 0.04, 0.06, 0.08, 0.12, 0.16], dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
        for verifier in VERIFIERS:
            if verifier.linear:
                slopes = (
                    optimize_slopes(net, x, y, eps).slopes if verifier.optimized_slopes else None
                )
                expected = linear_margin_bounds(
                    net, x, y, eps, intermediate=verifier.intermediate, slopes=slopes
                )
            else:
                expected = margin_lower_bounds(net, x, y, eps)
            assert torch.equal(margin_bounds(net, x, y, eps, verifier.name), expected), verifier
            verified = expected.min(dim=1).values > 0
            assert 0 < verified.sum() < len(x), "the test needs samples on both sides"
            decision = min_margin(net, x, y, eps, verifier.name)
            assert torch.equal(decision > 0, verified), verifier
            if not verifier.linear or verifier.optimized_slopes:  # no slopes given: every bound
                assert torch.equal(decision, expected.min(dim=1).values), verifier


@pytest.mark.parametrize("text", ["alpha-crown", "IBP+crown-ibp+", "ibp+mtl-ibp"])
def test_an_unknown_verifier_is_a_one_line_user_error(text):
    net, x, y, _ = _make({"seed": 4, "channels": 1, "size": 6, "num_classes": 3, "conv_layers": 1})
    calls = [lambda: parse_verifier(text), lambda: margin_bounds(net, x, y, 0.01, text)]
    for call in calls:
        with pytest.raises(UserError, match="unknown verifier") as refused:
            call()
        message = str(refused.value)
        assert "\n" not in message and all(name in message for name in NAMES), message


def test_the_default_is_a_registered_cascade_and_only_some_verifiers_start_one():
    stages = parse_cascade(DEFAULT_VERIFIER)
    assert len(stages) > 1 and all(stage in VERIFIERS for stage in stages)
    assert stages[0].needs_earlier is None and stages[-1].optimized_slopes, "the tightest"
    assert parse_verifier(DEFAULT_VERIFIER) == tuple(stage.name for stage in stages)
    for verifier in VERIFIERS:
        assert lookup(verifier.name) is verifier
        if verifier.needs_earlier is None:
            assert parse_cascade(verifier.name) == (verifier,)
            continue
        with pytest.raises(UserError, match=verifier.needs_earlier):
            parse_cascade(verifier.name)
        assert parse_cascade(f"{stages[0].name}+{verifier.name}")[1] is verifier


def test_verify_above_refines_what_the_decision_needs():
    net, x, y, _ = _make({"seed": 4, "channels": 1, "size": 6, "num_classes": 5, "conv_layers": 1})
    x = torch.cat([x, x])
    y = torch.cat([y, y])
    with torch.no_grad():
        ibp = margin_lower_bounds(net, x, y, 0.01)
        full = margin_bounds(net, x, y, 0.01, "crown-ibp")
        checked = 0
        for threshold in (0.0, -0.5, float(full.min(dim=1).values.median())):
            part = margin_bounds(net, x, y, 0.01, "crown-ibp", verify_above=threshold)
            assert (part >= ibp).all() and (part <= full + 1e-12).all()
            # The decision "every margin above the threshold" is the full refinement's.
            decided = part.min(dim=1).values > threshold
            assert torch.equal(decided, full.min(dim=1).values > threshold)
            # Verified samples got every margin the threshold needed refined.
            needed = decided[:, None] & (ibp <= threshold)
            torch.testing.assert_close(part[needed], full[needed])
            checked += int(needed.sum())
    assert checked > 0


@settings(max_examples=20, deadline=None)
@given(params=net_params, eps_scale=st.floats(0.001, 0.3))
def test_any_lower_slopes_in_0_1_give_sound_bounds(params, eps_scale):
    """The guarantee ``alpha-crown-ibp`` rests on: the slopes only pick which sound bound."""
    net, x, y, reference = _make(params)
    gen = torch.Generator().manual_seed(params["seed"] + 3)
    eps = eps_scale * torch.rand(len(x), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        shapes = optimize_slopes(net, x, y, eps, steps=0).slopes
        slopes = {i: torch.rand(s.shape, generator=gen, dtype=s.dtype) for i, s in shapes.items()}
        bounds = linear_margin_bounds(net, x, y, eps, slopes=slopes)
        for point in _sampled_points(x, eps, gen, 48):
            margins = exact_margins(reference(point), y)
            assert (margins >= bounds - 1e-9).all(), (margins - bounds).min()
        # Deciding ``min bound > threshold`` refines only what it needs, and decides the same.
        lowest = bounds.min(dim=1).values.sort().values
        threshold = float(lowest[len(lowest) // 2 - 1 : len(lowest) // 2 + 1].mean())
        part = linear_margin_bounds(net, x, y, eps, verify_above=threshold, slopes=slopes)
        decided = part.min(dim=1).values > threshold
        assert torch.equal(decided, bounds.min(dim=1).values > threshold)
        decision = linear_decision(net, x, y, eps, threshold, slopes=slopes)
        assert torch.equal(decision > threshold, decided)
        assert (part <= bounds + 1e-12).all()  # as sound as the full refinement


def test_optimized_slopes_beat_crown_ibp_where_optimized_and_leave_the_model_alone():
    net, x, y, _ = _make({"seed": 5, "channels": 2, "size": 6, "num_classes": 4, "conv_layers": 2})
    net = net.float().train()  # a float32 model in training, as ACERT's would be
    x = x.float()
    with torch.no_grad():
        y = net(x).argmax(dim=1)
        _, stats = clean_forward(net, x)
        crown_ibp = margin_bounds(net, x, y, 0.03, "crown-ibp", bn_stats=stats)
        slopes, _, guide = optimize_slopes(net, x, y, 0.03, bn_stats=stats, margins=1)
        tight = linear_margin_bounds(net, x, y, 0.03, bn_stats=stats, slopes=slopes)
        interval = margin_bounds(net, x, y, 0.03, "ibp", bn_stats=stats)
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert all(((s >= 0) & (s <= 1)).all() for s in slopes.values())
    lowest = crown_ibp.argmin(dim=1, keepdim=True)  # the one margin optimized per sample
    assert (tight.gather(1, lowest) >= crown_ibp.gather(1, lowest) - 1e-5).all()
    assert (tight.gather(1, lowest) - crown_ibp.gather(1, lowest)).mean() > 1e-3
    others = torch.ones_like(tight, dtype=torch.bool).scatter(1, lowest, False)
    torch.testing.assert_close(tight[others], crown_ibp[others], atol=1e-5, rtol=1e-5)
    # The bounds found beside the slopes are theirs, bar margins the interval bound verifies.
    refined = interval <= 0
    torch.testing.assert_close(guide[refined], tight[refined], atol=1e-5, rtol=1e-5)
    assert torch.equal(guide[~refined], interval[~refined])


def test_slopes_where_the_interval_bound_verifies_every_margin():
    """Nothing to optimize (a float32 copy can verify what float64 did not): no backward row
    runs, even into an image's one channel, and the bounds are the interval ones."""
    torch.manual_seed(0)
    net = build_model("cnn_small", (1, 28, 28), 10, (0.1307,), (0.3081,)).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
        optimized = optimize_slopes(net, x, y, 0.0)
        interval = margin_bounds(net, x, y, 0.0, "ibp")
    assert (interval > 0).all()
    assert torch.equal(optimized.bounds, interval)


@pytest.mark.parametrize("name", ["mlp", "cnn_small"])
def test_crown_runs_on_the_mnist_architectures(name):
    torch.manual_seed(0)
    net = build_model(name, (1, 28, 28), 10, (0.1307,), (0.3081,)).double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
        crown = margin_bounds(net, x, y, 0.005, "crown")
        crown_ibp = margin_bounds(net, x, y, 0.005, "crown-ibp")
        ibp = margin_lower_bounds(net, x, y, 0.005)
        gen = torch.Generator().manual_seed(1)
        for point in _sampled_points(x, torch.full((3,), 0.005, dtype=torch.float64), gen, 16):
            assert (exact_margins(net(point), y) >= crown - 1e-9).all()
    assert (crown >= ibp).all() and (crown_ibp >= ibp).all()
    if name == "mlp":  # one hidden ReLU, fed by one Linear: CROWN is CROWN-IBP
        torch.testing.assert_close(crown, crown_ibp)


def test_crown_memory_estimate_names_every_bounded_relu():
    mnist = build_model("cnn_small", (1, 28, 28), 10, (0.1,), (0.3,))
    report = crown_rows_bytes(mnist, (1, 28, 28))
    # Layer 6 (ReLU of conv2, 32x7x7) and 10 (fc100) read back through conv1's 16x14x14 output;
    # the ReLU of conv1 (layer 3) has exact interval bounds.
    assert report["per_relu"] == {6: 2 * 32 * 49 * 3136 * 8, 10: 2 * 100 * 3136 * 8}


@settings(max_examples=15, deadline=None)
@given(
    params=net_params,
    verifier=st.sampled_from(
        [
            "crown-ibp",
            "ibp+crown-ibp",
            "ibp+crown",
            "ibp+alpha-crown-ibp",
            "ibp+crown-ibp+alpha-crown-ibp",
        ]
    ),
)
def test_cascade_radius_is_at_least_ibp_and_verified_by_the_named_verifier(params, verifier):
    net, x, _, _ = _make({**params, "bn_train": False}, batch=16)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    ibp = search_radii(net, x, y, 0.3, 1e-5, verifier="ibp")
    found = search_radii(net, x, y, 0.3, 1e-5, verifier=verifier)
    stages = parse_verifier(verifier)
    if stages[0] == "ibp":
        assert (found.radius >= ibp.radius).all()
        torch.testing.assert_close(found.stage_radii["ibp"], ibp.radius, rtol=0, atol=0)
    with torch.no_grad():
        threshold = REL_THRESHOLD[torch.float64] * net(x).abs().amax(dim=1)
        for stage in range(len(stages)):
            rows = torch.nonzero(found.verified_by == stage).flatten()
            if len(rows):
                bound = named_bounds(net, x, y, found, stage, rows, 0.3, 1e-5)
                assert (bound > threshold[rows] / 2).all()
        gen = torch.Generator().manual_seed(params["seed"])
        for point in _sampled_points(x, found.radius, gen, 32):
            assert (exact_margins(net(point), y)[found.radius > 0] > 0).all()
    assert ((found.verified_by >= 0) == (found.radius > 0)).all()
    # stage radii never decrease along the cascade
    radii = list(found.stage_radii.values())
    assert all((a <= b).all() for a, b in zip(radii, radii[1:], strict=False))


def test_certificates_carry_the_verifier_and_a_radius_per_stage():
    net, x, _, _ = _make({"seed": 3, "channels": 1, "size": 6, "num_classes": 3, "conv_layers": 2})
    net.eval()
    images = (x * 255).round().to(torch.uint8)
    with torch.no_grad():
        y = net(images.double() / 255).argmax(dim=1)
    certs = certify(net, images, y, cap=0.3, verifier="ibp+crown-ibp")
    header, *rows = certs.to_csv().splitlines()
    assert header == "index,label,prediction,radius,correct,verifier,radius_ibp,radius_crown-ibp"
    assert len(rows) == len(y)
    by = {"ibp": 0, "crown-ibp": 0}
    for row in rows:
        _, _, _, radius, _, verifier, r_ibp, r_crown = row.split(",")
        assert float(r_crown) == float(radius) >= float(r_ibp)
        assert verifier == ("" if float(radius) == 0 else verifier)
        if verifier:
            by[verifier] += 1
    assert by["crown-ibp"] > 0, "the second stage must lift some radius on this net"
    summary = summarize(certs, [0.01])
    assert summary["verifier"] == "ibp+crown-ibp"
    assert set(summary["by_verifier"]) == {"ibp", "crown-ibp"}
    assert summary["by_verifier"]["crown-ibp"]["acr"] == pytest.approx(summary["acr"])
    assert summary["by_verifier"]["ibp"]["acr"] < summary["acr"]


@pytest.mark.parametrize("text", ["ibp+ibp", "alpha-crown", "ibp+", "crown ibp"])
def test_unknown_verifiers_are_refused(text):
    with pytest.raises(UserError, match="unknown verifier"):
        parse_verifier(text)
