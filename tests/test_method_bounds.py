"""The bounds and boxes the new training methods train on: SABR's small box stays inside the
eps-box, the training attack stays in its box and repeats with its seed, and CROWN-IBP's
training bound is the certified CROWN-IBP bound, sound for every beta, tighter than IBP on
average (not always) and differentiable."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from nets import exact_margins, frozen_copy, net_and_batch
from torch import nn
from torch.func import functional_call

from raycert.cert.attack import training_attack
from raycert.cert.bounds import clean_forward, margins_from_pass, propagate
from raycert.cert.linear import crown_ibp_training_bounds, linear_margin_bounds
from raycert.training.methods.sabr import small_box

# --- SABR's box and the training attack ---------------------------------------------------------


@pytest.mark.parametrize("box_ratio", [0.05, 0.4, 0.9])
def test_the_sabr_box_lies_inside_the_eps_box_and_the_unit_cube(box_ratio):
    _, x, _ = net_and_batch(batch=32)
    gen = torch.Generator().manual_seed(5)
    eps = torch.rand(32, generator=gen, dtype=torch.float64) * 0.6
    eps[0] = 0.0
    point = torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 0.5  # also outside
    lower, upper = small_box(x, point, eps, box_ratio)
    e = eps.view(-1, 1, 1, 1)
    big_lower, big_upper = (x - e).clamp(0, 1), (x + e).clamp(0, 1)
    assert (lower >= big_lower).all() and (upper <= big_upper).all()
    assert (lower >= 0).all() and (upper <= 1).all() and (lower <= upper).all()
    half = torch.minimum(box_ratio * e, (big_upper - big_lower) / 2)
    assert torch.allclose((upper - lower) / 2, half, rtol=0, atol=1e-12)
    # centered at the point wherever the point leaves room for it
    room = (point - half >= big_lower) & (point + half <= big_upper)
    assert room.sum() >= 10
    assert torch.allclose(((upper + lower) / 2)[room], point[room], rtol=0, atol=1e-12)
    # eps 0: the box is the sample itself
    assert torch.equal(lower[0], x[0]) and torch.equal(upper[0], x[0])


def test_the_sabr_box_becomes_the_eps_box_as_lambda_reaches_1():
    _, x, _ = net_and_batch()
    point = torch.rand(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lower, upper = small_box(x, point, 0.2, 1 - 1e-12)
    assert torch.allclose(lower, (x - 0.2).clamp(0, 1), atol=1e-11)
    assert torch.allclose(upper, (x + 0.2).clamp(0, 1), atol=1e-11)


def test_the_training_attack_stays_in_the_box_and_repeats_with_its_seed():
    net, x, y = net_and_batch()
    _, stats = clean_forward(copy.deepcopy(net), x)
    frozen = {i: (m.detach(), v.detach()) for i, (m, v) in stats.items()}

    def forward(z):
        return net[-1](propagate(net, z, None, bn_stats=frozen).center)

    eps = torch.full((16,), 0.1, dtype=torch.float64)
    eps[0] = 0.0
    one = training_attack(forward, x, y, eps, steps=1, step_size=10.0, seed=3)
    assert torch.equal(one, training_attack(forward, x, y, eps, steps=1, step_size=10.0, seed=3))
    assert not torch.equal(
        one, training_attack(forward, x, y, eps, steps=1, step_size=10.0, seed=4)
    )
    e = eps.view(-1, 1, 1, 1)
    lower, upper = (x - e).clamp(0, 1), (x + e).clamp(0, 1)
    assert (one >= lower).all() and (one <= upper).all() and torch.equal(one[0], x[0])
    # one step of 10 eps: a corner of the box (wherever the gradient moved the pixel)
    at_corner = (one == lower) | (one == upper)
    assert at_corner[1:].double().mean() > 0.99
    several = training_attack(forward, x, y, eps, steps=8, step_size=0.25, seed=3)
    assert (several >= lower).all() and (several <= upper).all()
    with torch.no_grad():
        ce = [F.cross_entropy(forward(p), y).item() for p in (x, one, several)]
    assert ce[1] > ce[0] and ce[2] > ce[0]


def test_the_training_attack_needs_a_step():
    net, x, y = net_and_batch()
    with pytest.raises(ValueError, match="at least one step"):
        training_attack(net.eval(), x, y, 0.1, steps=0, step_size=1.0, seed=0)


# --- CROWN-IBP's bound ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bn_train", [False, True])
def test_crown_ibp_training_bound_is_the_certified_crown_ibp_bound(seed, bn_train):
    # Certification keeps the larger of the linear and the interval bound of each margin;
    # training keeps the linear one: they agree wherever the linear one is the larger.
    net, x, y = net_and_batch(seed=seed, conv_layers=seed % 3)
    net.train(bn_train)
    stats = clean_forward(copy.deepcopy(net), x)[1] if bn_train else None
    for eps in (0.01, 0.05, 0.2):
        box, crown = crown_ibp_training_bounds(net, x, y, eps, bn_stats=stats)
        ibp = margins_from_pass(net[-1], box, y)
        certified = linear_margin_bounds(net, x, y, eps, intermediate="ibp", bn_stats=stats)
        assert torch.allclose(torch.maximum(crown, ibp), certified, rtol=0, atol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_crown_ibp_training_bounds_are_sound_for_every_beta(seed):
    net, x, y = net_and_batch(seed=seed, batch=6)
    _, stats = clean_forward(copy.deepcopy(net), x)
    frozen = frozen_copy(net, stats)  # the function train-mode bounds cover
    eps = 0.08
    box, crown = crown_ibp_training_bounds(net, x, y, eps, bn_stats=stats)
    ibp = margins_from_pass(net[-1], box, y)
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(200):
        u = torch.rand(x.shape, generator=gen, dtype=torch.float64)
        corner = torch.rand(x.shape, generator=gen, dtype=torch.float64) < 0.5
        u = torch.where(torch.rand((), generator=gen) < 0.5, corner.double(), u)  # vertices, inside
        with torch.no_grad():
            margins = exact_margins(frozen(lower + (upper - lower) * u), y)
        for beta in (0.0, 0.5, 1.0):
            assert (margins >= beta * crown + (1 - beta) * ibp - 1e-9).all()


@pytest.mark.parametrize("seed", range(5))
def test_crown_ibp_is_tighter_than_ibp_on_average_on_deeper_random_nets(seed):
    # The reason to train with it early in the ramp. Not margin by margin: see the next test.
    net, x, y = net_and_batch(seed=seed, conv_layers=2)
    _, stats = clean_forward(copy.deepcopy(net), x)
    for eps in (0.01, 0.05, 0.2):
        box, crown = crown_ibp_training_bounds(net, x, y, eps, bn_stats=stats)
        assert (crown - margins_from_pass(net[-1], box, y)).mean() > 0


def test_crown_ibp_can_be_looser_than_ibp_which_certification_therefore_maximizes():
    # One unstable neuron, z = x - 0.4 over x in [0, 1], margin relu(z): IBP's lower bound is
    # relu(-0.4) = 0; CROWN's adaptive lower line (slope 1, as u = 0.6 > -l = 0.4) gives -0.4.
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)).double().eval()
    with torch.no_grad():
        net[1].weight.fill_(1.0), net[1].bias.fill_(-0.4)
        net[3].weight.copy_(torch.tensor([[1.0], [0.0]])), net[3].bias.zero_()
    x, y = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64), torch.tensor([0])
    box, crown = crown_ibp_training_bounds(net, x, y, 0.5)
    ibp = margins_from_pass(net[-1], box, y)
    assert crown.item() == pytest.approx(-0.4) and ibp.item() == 0.0
    assert linear_margin_bounds(net, x, y, 0.5).item() == 0.0


def test_gradients_through_the_crown_ibp_bound_match_finite_differences():
    net, x, y = net_and_batch(seed=0, batch=4)

    class Bound(nn.Module):
        def __init__(self, net: nn.Sequential) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, stats = clean_forward(self.net, x)
            return crown_ibp_training_bounds(self.net, x, y, 0.03, bn_stats=stats)[1]

    bound = Bound(net)
    weight = net[1].weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w: functional_call(bound, {"net.1.weight": w}, (x,)), (weight,), eps=1e-7, atol=1e-5
    )
