"""The fixed-shape radius search (``raycert.cert.sweep``): its radii are IBP-verified, within
its stated width of the bracketing search's, withstand attacks inside their box, cost exactly
``rounds`` bound passes whatever the data, and serve ACERT's training step."""

from __future__ import annotations

import pytest
import torch
from nets import net_and_batch, pgd_flips

import raycert.cert.verifiers as verifiers_module
from raycert.cert.bounds import clean_forward, margin_lower_bounds
from raycert.cert.radius import certified_radius
from raycert.cert.sweep import sweep_radii
from raycert.training.config import TrainConfig
from raycert.training.methods import METHOD_SPECS, StepInput, adaptive_radii

CAP = 0.3  # the cap at which ``random_case`` (tests/conftest.py) has radii inside (0, CAP)


@pytest.mark.parametrize(("probes", "rounds"), [(1, 12), (3, 6), (8, 4)])
def test_sweep_radii_are_verified_and_as_tight_as_stated(random_case, probes, rounds):
    net, x, y = random_case
    radius = sweep_radii(net, x, y, CAP, probes=probes, rounds=rounds)
    assert (radius[:4] == 0).all(), "misclassified samples get radius 0"
    assert ((radius >= 0) & (radius <= CAP)).all()
    positive = radius > 0
    with torch.no_grad():
        bounds = margin_lower_bounds(net, x[positive], y[positive], radius[positive])
    assert (bounds.min(dim=1).values > 0).all(), "every radius is one IBP verified"
    reference = certified_radius(net, x, y, CAP, tol=1e-9)
    width = CAP / probes / (probes + 1) ** (rounds - 1)
    assert (radius <= reference + 1e-9).all()
    assert (reference - radius <= width + 1e-9).all(), (reference - radius).max()
    assert ((radius > 0) & (radius < CAP)).sum() > 20, "the case has radii inside the cap"


def test_attacks_inside_the_swept_box_never_flip_a_prediction(random_case):
    net, x, y = random_case
    radius = sweep_radii(net, x, y, CAP, probes=4, rounds=5)
    positive = radius > 0
    assert not pgd_flips(net, x[positive], y[positive], radius[positive]).any()
    assert pgd_flips(net, x[positive], y[positive], 20 * radius[positive] + 0.05).any()


def test_a_sweep_costs_its_rounds_in_bound_passes_of_fixed_size(random_case, monkeypatch):
    """No sample leaves the batch and no round is skipped: the same passes for any data."""
    net, x, y = random_case
    sizes = []
    original = verifiers_module.min_margin

    def counting(model, xs, *args, **kwargs):
        sizes.append(len(xs))
        return original(model, xs, *args, **kwargs)

    monkeypatch.setattr(verifiers_module, "min_margin", counting)
    for cap in (CAP, 1e-6):  # radii inside the cap, and every sample verified at it
        sizes.clear()
        sweep_radii(net, x, y, cap, probes=3, rounds=5)
        assert sizes == [3 * len(x)] * 5


def test_acert_trains_on_swept_radii_in_train_mode():
    """ACERT's step with ``search_probes``: radii from the sweep on the clean batch's
    BatchNorm statistics, IBP-verified for the function the loss sees, capped by the eps."""
    net, x, y = net_and_batch()
    with torch.no_grad():
        y = net(x).argmax(dim=1)  # the batch's own statistics: correctly classified
    cfg = TrainConfig(dataset="mnist", search_probes=4, search_steps=4).resolve()
    logits, stats = clean_forward(net, x)
    eps = 0.05
    radius = adaptive_radii(net, x, y, eps, cfg, stats, logits)
    assert ((radius >= 0) & (radius <= eps)).all() and (radius > 0).any()
    positive = radius > 0
    with torch.no_grad():
        bounds = margin_lower_bounds(
            net, x[positive], y[positive], radius[positive], bn_stats=stats
        )
    assert (bounds.min(dim=1).values > 0).all()
    loss, batch = METHOD_SPECS["acert"].loss(net, StepInput(x, y, eps, 0.5, seed=0), cfg)
    loss.backward()
    assert torch.isfinite(loss) and float(batch["radius"]) == pytest.approx(float(radius.sum()))
