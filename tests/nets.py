"""Random small networks that cover every layer type the bounds support, and a PGD attack
that tries to flip their predictions inside a box."""

from __future__ import annotations

import copy

import torch
from torch import nn

from raycert.cert.bounds import BatchStats
from raycert.cert.models import Normalize
from raycert.cert.verifiers import claimed_bounds


def random_net(
    seed: int,
    channels: int = 2,
    size: int = 6,
    num_classes: int = 3,
    conv_layers: int = 1,
    pool: bool = True,
    bn_train: bool = False,
    padding_mode: str = "zeros",
) -> nn.Sequential:
    """A float64 Sequential with Normalize, Conv2d, BatchNorm2d/1d, AvgPool2d, ReLU, Linear.

    ``padding_mode`` is the Conv2d layers' (zeros, reflect, replicate or circular).
    """
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = [
        Normalize(
            (torch.rand(channels, generator=gen) * 0.5).tolist(),
            (0.2 + torch.rand(channels, generator=gen)).tolist(),
        )
    ]
    c_in = channels
    for _ in range(conv_layers):
        layers += [
            nn.Conv2d(c_in, 4, 3, padding=1, padding_mode=padding_mode),
            nn.BatchNorm2d(4),
            nn.ReLU(),
        ]
        c_in = 4
    if pool:
        layers.append(nn.AvgPool2d(2))
        size //= 2
    layers += [nn.Flatten(), nn.Linear(c_in * size * size, 8), nn.BatchNorm1d(8), nn.ReLU()]
    layers.append(nn.Linear(8, num_classes))
    torch.manual_seed(seed)
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.normal_(0, 1.0 / m.weight[0].numel() ** 0.5, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3, generator=gen)
                m.running_var.uniform_(0.3, 2.0, generator=gen)
                m.weight.normal_(0, 1.0, generator=gen)  # negative scales too
                m.bias.normal_(0, 0.3, generator=gen)
    return net.train(bn_train)


def frozen_copy(net: nn.Sequential, stats: BatchStats) -> nn.Sequential:
    """An eval-mode copy whose BatchNorms use ``stats``: the function train-mode bounds cover."""
    frozen = copy.deepcopy(net).eval()
    for index, (mean, var) in stats.items():
        frozen[index].running_mean.copy_(mean.detach())
        frozen[index].running_var.copy_(var.detach())
    return frozen


def exact_margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``f_y - f_t`` for every ``t != y``, in class order: (batch, C-1)."""
    classes = logits.shape[1]
    mask = torch.arange(classes)[None, :] != y[:, None]
    return (logits.gather(1, y[:, None]) - logits)[mask].view(len(y), classes - 1)


def named_bounds(net, x, y, found, stage: int, rows, cap: float, tol: float) -> torch.Tensor:
    """The lowest margin bound, at each of ``rows``' radius in ``found`` (a ``RadiusSearch`` or
    ``Certificates`` of a search with ``cap`` and ``tol``), by which the verifier ``found``
    names for ``stage`` claimed it (``raycert.cert.verifiers.claimed_bounds``)."""
    verifiers = found.verifier.split("+") if hasattr(found, "verifier") else found.verifiers
    radius = found.radii if hasattr(found, "radii") else found.radius
    below = found.stage_radii[verifiers[stage - 1]] if stage else radius
    with torch.no_grad():
        bounds = claimed_bounds(
            net,
            x[rows],
            y[rows],
            radius[rows],
            verifiers[stage],
            below[rows],
            torch.full_like(below[rows], cap),
            tol,
        )
    return bounds.min(dim=1).values


CLASSES = 4  # of net_and_batch's nets


def net_and_batch(seed: int = 1, conv_layers: int = 2, batch: int = 16):
    """A float64 train-mode net (Normalize, Conv2d, BatchNorm, AvgPool, ReLU, Linear) and a
    batch with pixels at 0 and 1 too."""
    net = random_net(seed, channels=2, size=6, num_classes=CLASSES, conv_layers=conv_layers)
    net.train()
    gen = torch.Generator().manual_seed(seed + 100)
    x = torch.rand(batch, 2, 6, 6, generator=gen, dtype=torch.float64)
    x = torch.where(x < 0.15, 0.0, torch.where(x > 0.85, 1.0, x))
    y = torch.randint(0, CLASSES, (batch,), generator=gen)
    return net, x, y


def pgd_flips(net, x, y, eps, steps=40, restarts=4, seed=0):
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
