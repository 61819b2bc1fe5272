"""Interval bounds are sound, exact at eps 0, monotone in eps, and refuse unknown layers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import exact_margins, frozen_copy, random_net
from torch import nn

from raycert.cert.bounds import (
    UnsupportedLayerError,
    clean_forward,
    input_box,
    margin_lower_bounds,
    propagate,
)

net_params = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 10_000),
        "channels": st.integers(1, 3),
        "size": st.sampled_from([4, 6, 8]),
        "num_classes": st.integers(2, 5),
        "conv_layers": st.integers(0, 2),
        "pool": st.booleans(),
        "bn_train": st.booleans(),
        "padding_mode": st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    }
)


def _make(params: dict) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    net = random_net(**params)
    gen = torch.Generator().manual_seed(params["seed"] + 1)
    shape = (8, params["channels"], params["size"], params["size"])
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    # Push some pixels onto the [0, 1] border so clipping is exercised.
    x = torch.where(x < 0.15, torch.zeros_like(x), torch.where(x > 0.85, torch.ones_like(x), x))
    y = torch.randint(0, params["num_classes"], (8,), generator=gen)
    return net, x, y


def _reference(net: nn.Sequential, x: torch.Tensor) -> nn.Sequential:
    """The function the bounds must cover: eval-mode net with the clean batch's stats."""
    if not net.training:
        return net
    with torch.no_grad():
        _, stats = clean_forward(net, x)
    return frozen_copy(net, stats)


@settings(max_examples=60, deadline=None)
@given(params=net_params, eps_scale=st.floats(0.001, 0.3))
def test_sampled_margins_never_fall_below_the_bound(params, eps_scale):
    net, x, y = _make(params)
    gen = torch.Generator().manual_seed(params["seed"] + 2)
    eps = eps_scale * torch.rand(len(x), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        bound = margin_lower_bounds(net, x, y, eps)
        reference = _reference(net, x)
        center, radius = input_box(x, eps)
        for _ in range(64):
            noise = 2 * torch.rand(x.shape, generator=gen, dtype=torch.float64) - 1
            corner = torch.sign(noise)  # box corners are where the extremes live
            for direction in (noise, corner):
                inside = center + radius * direction
                assert (inside >= 0).all() and (inside <= 1).all()
                assert ((inside - x).abs() <= eps.view(-1, 1, 1, 1) + 1e-12).all()
                margins = exact_margins(reference(inside), y)
                assert (margins >= bound - 1e-10).all(), (margins - bound).min()


@settings(max_examples=40, deadline=None)
@given(params=net_params)
def test_bounds_at_eps_zero_are_the_exact_margins(params):
    net, x, y = _make(params)
    with torch.no_grad():
        bound = margin_lower_bounds(net, x, y, 0.0)
        exact = exact_margins(_reference(net, x)(x), y)
    torch.testing.assert_close(bound, exact, rtol=0, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(params=net_params, small=st.floats(0.0, 0.1), extra=st.floats(1e-4, 0.2))
def test_bounds_shrink_as_eps_grows(params, small, extra):
    net, x, y = _make(params)
    with torch.no_grad():
        tight = margin_lower_bounds(net, x, y, small)
        loose = margin_lower_bounds(net, x, y, small + extra)
    assert (loose <= tight + 1e-12).all()


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_convolutions_pad_the_radius_as_they_pad_the_center(padding_mode):
    """Padding copies border pixels, radius included: a zero-padded radius would miss them."""
    net = random_net(seed=2, channels=1, size=6, conv_layers=2, padding_mode=padding_mode).eval()
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    eps = 0.05
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        preacts = propagate(net, x, eps, collect_preacts=True).preacts
        relus = [i for i, m in enumerate(net) if isinstance(m, nn.ReLU)]
        center, radius = input_box(x, eps)
        for _ in range(32):
            h = center + radius * torch.sign(torch.rand(x.shape, generator=gen) - 0.5).double()
            boxes = iter(preacts)
            for index, layer in enumerate(net):
                if index in relus:
                    mid, half = next(boxes)
                    assert ((h - mid).abs() <= half + 1e-12).all()
                h = layer(h)


def test_per_sample_eps_matches_scalar_eps_sample_by_sample():
    net = random_net(seed=3, conv_layers=2).eval()
    x = torch.rand(5, 2, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    eps = torch.tensor([0.0, 0.01, 0.05, 0.1, 0.3], dtype=torch.float64)
    with torch.no_grad():
        batched = margin_lower_bounds(net, x, y, eps)
        for i in range(5):
            alone = margin_lower_bounds(net, x[i : i + 1], y[i : i + 1], float(eps[i]))
            torch.testing.assert_close(batched[i : i + 1], alone)


def test_train_mode_bounds_use_the_whole_clean_batch_statistics():
    """Bounding a subset with the full batch's stats equals bounding it inside the full batch."""
    net = random_net(seed=5, conv_layers=1, bn_train=True)
    x = torch.rand(10, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    with torch.no_grad():
        _, stats = clean_forward(net, x)
        full = margin_lower_bounds(net, x, y, 0.02)
        part = margin_lower_bounds(net, x[:4], y[:4], 0.02, bn_stats=stats)
    torch.testing.assert_close(full[:4], part)


def test_gradients_flow_through_the_bounds():
    net = random_net(seed=7, bn_train=True)
    x = torch.rand(6, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    margin_lower_bounds(net, x, y, 0.05).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize(
    ("layer", "name"), [(nn.MaxPool2d(2), "MaxPool2d"), (nn.Sigmoid(), "Sigmoid")]
)
def test_unsupported_layers_are_named(layer, name):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), layer, nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(UnsupportedLayerError, match=f"layer 1 \\({name}\\)"):
        margin_lower_bounds(net, torch.rand(2, 1, 6, 6), torch.tensor([0, 1]), 0.1)


def test_last_layer_must_be_linear():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(UnsupportedLayerError, match="last layer must be Linear"):
        margin_lower_bounds(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), 0.1)
