"""A radius search of fixed shape: every sample probed at ``k`` radii per round, for a fixed
number of rounds, with no sample leaving the batch.

Guarantee: each radius returned is 0 or a probe at which every interval (IBP) margin bound
was verified > 0, at most the cap; 0 for misclassified samples. Where the bound fails at the
cap, the crossing lies within ``(cap / k) / (k + 1)^(rounds - 1)`` above the radius (IBP bounds
only widen with eps, so each round keeps the crossing between a verified and a failed probe).

Why: ``raycert.cert.bracket`` closes each bracket in few bound passes, but its shapes depend on
the data (closed brackets leave the batch), so on a GPU every round waits for the host. Here a
round is one pass of ``k`` times the batch, built from the same tensors each time: nothing in
the loop reads a value back, and a GPU that a training batch leaves idle may run ``k`` probes
for little more than one (benchmarks/gpu.py measures it). On a CPU a pass costs ``k`` times
as much; training uses it where ``TrainConfig.search_probes`` asks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from raycert.cert import verifiers
from raycert.cert.bounds import BatchStats, exact_margins, propagate


@torch.no_grad()
def sweep_radii(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    cap: float,
    *,
    probes: int,
    rounds: int,
    bn_stats: BatchStats | None = None,
    clean_logits: Tensor | None = None,
) -> Tensor:
    """The largest IBP-verified radius of each sample in ``[0, cap]`` that ``rounds`` rounds of
    ``probes`` probes find, (batch,) in the model's dtype.

    Round one probes ``cap * j / k`` (``j = 1..k``, the cap included); each later round probes
    ``k`` evenly spaced radii strictly inside the bracket between the largest verified probe and
    the smallest failed one above it. ``bn_stats`` and ``clean_logits``: as in
    ``raycert.cert.radius.search_radii`` (a train-mode model needs the clean batch's stats)."""
    if probes < 1 or rounds < 1:
        raise ValueError(f"a sweep needs probes >= 1 and rounds >= 1, got {probes}, {rounds}")
    dtype = next(model.parameters()).dtype
    x = x.to(dtype)
    if clean_logits is None:
        clean_logits = model[-1](propagate(model, x, None, bn_stats=bn_stats).center)
    correct = exact_margins(clean_logits.to(dtype), y).min(dim=1).values > 0
    n = len(x)
    rows = torch.arange(n, device=x.device).repeat_interleave(probes)
    xs, ys = x[rows], y[rows]  # the one batch every round bounds
    steps = torch.arange(1, probes + 1, dtype=dtype, device=x.device)
    lo = torch.zeros(n, dtype=dtype, device=x.device)
    hi = torch.full_like(lo, cap)
    for round_ in range(rounds):
        fractions = steps / probes if round_ == 0 else steps / (probes + 1)
        eps = lo[:, None] + (hi - lo)[:, None] * fractions
        # ``verifiers.min_margin`` looked up at each call: the benchmarks count the passes.
        values = verifiers.min_margin(model, xs, ys, eps.flatten(), "ibp", bn_stats=bn_stats)
        verified = values.view(n, probes) > 0
        best = torch.where(verified, eps, -math.inf).amax(dim=1)
        lo = torch.maximum(lo, best)
        failed_above = ~verified & (eps > lo[:, None])
        hi = torch.minimum(hi, torch.where(failed_above, eps, math.inf).amin(dim=1))
    return torch.where(correct, lo, torch.zeros_like(lo))
