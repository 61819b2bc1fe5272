"""PGD on the margin: what an attack finds, set against what the bounds certify.

L-inf projected gradient descent (Madry et al. 2018) lowers the margin
``f_y(x') - max_{t != y} f_t(x')`` over the box ``[x - eps, x + eps]`` clipped to [0, 1], by
signed gradient steps of ``2.5 eps / steps`` from ``restarts`` uniform random starts, keeping
the lowest margin seen per sample. Radii are in pixel units of [0, 1] images.

A flip (margin <= 0 at a point of the box) is confirmed by a float64 copy of the model at the
point projected into the float64 box of the true image, so a float32 rounding artefact is never
counted. A confirmed flip inside a certified radius contradicts a certificate: it raises
``CertificateViolation`` (a bug in the bounds or the search) and is never reported.

- ``pgd``: the attack at one eps per sample.
- ``training_attack``: the attack point of certified training (MTL-IBP, SABR): the same signed
  steps, on the cross-entropy, from one random start, against any function of the input (the
  train-mode model with the clean batch's BatchNorm statistics).
- ``empirical_radius``: per sample, the smallest eps at which the attack flips the prediction,
  by bisection between the certified radius (where no flip may exist) and the cap; ``inf``
  where no flip is found up to the cap. It is an upper bound on the true robust radius, as the
  certified radius is a lower bound.
- ``attack_split``: ``pgd_acc@<eps>`` at the given radii and the empirical radii of a split.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raycert.units import pgd_acc_key


class CertificateViolation(RuntimeError):
    """An attack flipped a prediction inside a certified radius: the certificate is wrong."""


@dataclass(frozen=True)
class AttackSettings:
    """PGD's budget: ``steps`` signed-gradient steps from each of ``restarts`` random starts;
    ``bisections`` halvings of the empirical-radius bracket."""

    steps: int = 20
    restarts: int = 3
    bisections: int = 8
    seed: int = 0


def _margins(logits: Tensor, y: Tensor) -> Tensor:
    """``f_y - max_{t != y} f_t`` per sample: > 0 where the prediction is right (no tie)."""
    others = logits.scatter(1, y[:, None], -math.inf)
    return logits.gather(1, y[:, None]).squeeze(1) - others.amax(dim=1)


def _box(x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    eps = eps.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    settings: AttackSettings = AttackSettings(),
) -> tuple[Tensor, Tensor]:
    """Attack ``model`` (eval mode) in the clipped eps-box around ``x``: returns the point with
    the lowest margin found per sample and that margin, in the model's dtype."""
    lower, upper, eps_t = _clipped_box(x, eps)
    step = 2.5 * eps_t / settings.steps
    gen = torch.Generator(device=x.device).manual_seed(settings.seed)
    with torch.no_grad():
        best, best_loss = x.clone(), -_margins(model(x), y)
    for _ in range(settings.restarts):
        start = _uniform(lower, upper, gen)
        _ascend(
            model, _negative_margin, y, start, lower, upper, step, settings.steps, best, best_loss
        )
    return best.detach(), -best_loss


def training_attack(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    *,
    steps: int,
    step_size: float,
    seed: int,
) -> Tensor:
    """The attack point of certified training (MTL-IBP, SABR) in the clipped eps-box around
    ``x`` (no gradient flows out of it).

    As both references do: signed steps of ``step_size * eps`` up the cross-entropy of
    ``forward`` (a function of the input: the train-mode model with the clean batch's BatchNorm
    statistics), from one uniform random start drawn from ``seed``, keeping per sample the point
    of highest loss among those evaluated. With one step the stepped point is returned without
    evaluating it (the MTL-IBP reference's one-step attack, a step of 10 eps landing on a corner
    of the box); with more, the last point is evaluated too (one forward, no gradient).
    """
    if steps < 1:
        raise ValueError(f"a training attack takes at least one step, got {steps}")
    lower, upper, eps_t = _clipped_box(x, eps)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    start = _uniform(lower, upper, gen)
    best = start.clone()
    best_loss = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
    step = step_size * eps_t
    _ascend(
        forward, _cross_entropy, y, start, lower, upper, step, steps, best, best_loss, steps > 1
    )
    return best


def _negative_margin(logits: Tensor, y: Tensor) -> Tensor:
    return -_margins(logits, y)


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _clipped_box(x: Tensor, eps: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    """The eps-box around ``x`` clipped to [0, 1], and eps as one value per sample shaped to
    broadcast over ``x``."""
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(len(x))
    lower, upper = _box(x, eps_t)
    return lower, upper, eps_t.view(-1, *([1] * (x.dim() - 1)))


def _uniform(lower: Tensor, upper: Tensor, gen: torch.Generator) -> Tensor:
    noise = torch.rand(lower.shape, generator=gen, dtype=lower.dtype, device=lower.device)
    return lower + (upper - lower) * noise


def _ascend(
    forward: Callable[[Tensor], Tensor],
    objective: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    adv: Tensor,
    lower: Tensor,
    upper: Tensor,
    step: Tensor,
    steps: int,
    best: Tensor,
    best_loss: Tensor,
    evaluate_last: bool = True,
) -> None:
    """One PGD run from ``adv``: ``steps`` signed-gradient steps of size ``step`` up
    ``objective`` (per sample), each projected onto ``[lower, upper]``. ``best`` and
    ``best_loss`` are updated in place with every evaluated point that raises a sample's loss;
    the last point is evaluated without a gradient, or (``evaluate_last=False``) taken as is."""
    for index in range(steps + 1):
        last = index == steps
        if last and not evaluate_last:
            best.copy_(adv)
            return
        with torch.enable_grad() if not last else torch.no_grad():
            adv.requires_grad_(not last)
            loss = objective(forward(adv), y)
        with torch.no_grad():  # selects, not masks: no host sync on a GPU
            better = loss.detach() > best_loss
            kept = better.view(-1, *[1] * (adv.dim() - 1))
            best.copy_(torch.where(kept, adv.detach(), best))
            best_loss.copy_(torch.where(better, loss.detach(), best_loss))
        if last:
            return
        (grad,) = torch.autograd.grad(loss.sum(), adv)
        with torch.no_grad():
            adv = torch.minimum(torch.maximum(adv + step * grad.sign(), lower), upper)


class _Attacker:
    """PGD in the model's dtype, flips confirmed in float64 against the true images."""

    def __init__(self, model: nn.Module, settings: AttackSettings) -> None:
        self.model = model.eval()
        self.check = copy.deepcopy(model).double().eval()
        self.dtype = next(model.parameters()).dtype
        self.settings = settings

    def flips(self, x64: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        """Whether a float64-confirmed flip was found within eps of each sample of ``x64``."""
        adv, _ = pgd(self.model, x64.to(self.dtype), y, eps.to(self.dtype), self.settings)
        lower, upper = _box(x64, eps.double())
        adv64 = torch.minimum(torch.maximum(adv.double(), lower), upper)
        with torch.no_grad():
            return _margins(self.check(adv64), y) <= 0


def _violation(eps: Tensor, certified: Tensor, where: str) -> None:
    if certified.any():
        worst = int(torch.nonzero(certified).flatten()[0])
        raise CertificateViolation(
            f"PGD flipped a prediction inside its certified radius ({where}, sample {worst}, "
            f"eps {float(eps[worst]):.6g}): the bounds or the radius search are unsound"
        )


def empirical_radius(
    model: nn.Module,
    x64: Tensor,
    y: Tensor,
    cap: float,
    certified: Tensor | None = None,
    settings: AttackSettings = AttackSettings(),
    attacker: _Attacker | None = None,
) -> Tensor:
    """Per sample, the smallest eps <= ``cap`` at which PGD flips the prediction (bisection),
    0 where it is wrong already, ``inf`` where no flip is found up to the cap (float64).

    ``certified`` radii (of correctly classified samples) start the bracket: no flip may exist
    within them. The attack first runs at each certified radius itself, and a flip found there
    raises ``CertificateViolation``.
    """
    attacker = attacker or _Attacker(model, settings)
    x64 = x64.double()
    with torch.no_grad():
        correct = _margins(attacker.check(x64), y) > 0
    lo = torch.zeros(len(y), dtype=torch.float64, device=y.device)
    if certified is not None:
        lo = torch.where(correct, certified.double().to(y.device), lo)
    hi = torch.full_like(lo, cap)
    radius = torch.where(correct, math.inf, 0.0).to(lo)
    claimed = torch.nonzero(correct & (lo > 0)).flatten()
    if len(claimed):
        inside = attacker.flips(x64[claimed], y[claimed], lo[claimed])
        _violation(lo[claimed], inside, "empirical radius")
    rows = torch.nonzero(correct & (lo < cap)).flatten()
    flipped = attacker.flips(x64[rows], y[rows], hi[rows])
    rows = rows[flipped]
    radius[rows] = cap
    for _ in range(settings.bisections):
        if len(rows) == 0:
            break
        mid = (lo[rows] + hi[rows]) / 2
        flipped = attacker.flips(x64[rows], y[rows], mid)
        hi[rows] = torch.where(flipped, mid, hi[rows])
        lo[rows] = torch.where(flipped, lo[rows], mid)
    radius[rows] = hi[rows]
    return radius


@dataclass
class AttackResult:
    """PGD accuracy at each eps (``pgd_acc@<eps>`` keys) and the per-sample empirical radii."""

    pgd_acc: dict[str, float]
    radii: Tensor | None  # (n,) float64, inf where no flip was found up to the cap


def attack_split(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps_list: Sequence[float],
    *,
    cap: float | None = None,
    certified: Tensor | None = None,
    settings: AttackSettings = AttackSettings(),
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
) -> AttackResult:
    """Attack every sample of ``images`` (uint8 (N,C,H,W) or float in [0, 1]): PGD accuracy at
    each eps of ``eps_list`` and, with a ``cap``, the empirical radii. ``certified`` radii (one
    per sample, 0 where misclassified) are checked: a flip inside one raises
    ``CertificateViolation``."""
    net = copy.deepcopy(model).to(dtype).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    attacker = _Attacker(net, settings)
    robust = {eps: 0 for eps in eps_list}
    radii = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        x64 = batch.double() / 255 if batch.dtype == torch.uint8 else batch.double()
        y = labels[start : start + batch_size]
        cert = None if certified is None else certified[start : start + batch_size].double()
        with torch.no_grad():
            correct = _margins(attacker.check(x64), y) > 0
        for eps in eps_list:
            rows = torch.nonzero(correct).flatten()
            eps_t = torch.full((len(rows),), eps, dtype=torch.float64)
            flipped = attacker.flips(x64[rows], y[rows], eps_t)
            if cert is not None:
                _violation(eps_t, flipped & (cert[rows] >= eps) & (cert[rows] > 0), "pgd_acc")
            robust[eps] += int((~flipped).sum())
        if cap is not None:
            radii.append(empirical_radius(net, x64, y, cap, cert, settings, attacker))
    n = len(images)
    pgd_acc = {pgd_acc_key(eps): robust[eps] / n if n else 0.0 for eps in eps_list}
    return AttackResult(pgd_acc, torch.cat(radii) if radii else None)
