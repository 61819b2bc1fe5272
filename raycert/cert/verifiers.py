"""Who certifies: the verifiers a radius search may name, and their margin bounds.

``ibp`` propagates intervals (``raycert.cert.bounds``); ``crown-ibp`` and ``crown`` run one
backward linear pass of the margin specification over IBP or CROWN intermediate bounds
(``raycert.cert.linear``). A cascade (``ibp+crown-ibp``) names several, tried in order. A bound
certifies a sample at eps when every margin ``f_y - f_t`` is verified above a threshold: 0 in a
float32 search, ``REL_THRESHOLD`` times the sample's largest |logit| in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from raycert.cert.bounds import BatchStats, margin_lower_bounds
from raycert.cert.linear import linear_decision, linear_margin_bounds
from raycert.errors import UserError

VERIFIERS = ("ibp", "crown-ibp", "crown")
DEFAULT_VERIFIER = "ibp+crown-ibp"  # final certification: see benchmarks/bounds.py
LINEAR = {"crown-ibp": "ibp", "crown": "crown"}  # linear verifiers: their intermediate bounds
# A certificate counts when its margin bound exceeds this share of the sample's largest |logit|
# (float64 rounding through a network stays orders of magnitude below it). Float32 searches
# (training) verify at > 0; ``raycert.cert.radius.reverify`` checks their radii in float64.
REL_THRESHOLD: dict[torch.dtype, float] = {torch.float64: 1e-9}

Margin = Callable[[Tensor, Tensor], Tensor]  # g(rows, eps): verified where > 0


def parse_verifier(text: str) -> tuple[str, ...]:
    """``ibp``, ``crown-ibp``, ``crown`` or a cascade of them joined by ``+`` (``ibp+crown-ibp``),
    as the tuple of its stages."""
    names = tuple(part.strip().lower() for part in str(text).split("+"))
    unknown = [name for name in names if name not in VERIFIERS]
    if unknown or len(set(names)) != len(names):
        raise UserError(
            f"unknown verifier {text!r}: choose {', '.join(VERIFIERS)}, or a cascade of distinct "
            f"ones joined by + (e.g. {DEFAULT_VERIFIER})"
        )
    return names


def margin_bounds(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    verifier: str,
    *,
    bn_stats: BatchStats | None = None,
    verify_above: Tensor | float | None = None,
) -> Tensor:
    """Lower bounds of the margins ``f_y - f_t`` over the eps-box from one verifier:
    (batch, C-1). With ``verify_above``, linear verifiers refine only what deciding
    ``min bound > verify_above`` needs (see ``raycert.cert.linear``)."""
    if verifier == "ibp":
        return margin_lower_bounds(model, x, y, eps, bn_stats=bn_stats)
    return linear_margin_bounds(
        model,
        x,
        y,
        eps,
        intermediate=LINEAR[verifier],
        bn_stats=bn_stats,
        verify_above=verify_above,
    )


def min_margin(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    verifier: str,
    verify_above: Tensor | float = 0.0,
    *,
    bn_stats: BatchStats | None = None,
) -> Tensor:
    """The radius search's value per sample: above ``verify_above`` exactly when every margin
    bound of ``verifier`` is. IBP's is the lowest margin bound; a linear verifier's is
    ``raycert.cert.linear.linear_decision`` (it refines only what the decision needs). Every
    bound pass of a radius search goes through here (the benchmarks count its calls)."""
    if verifier == "ibp":
        return margin_lower_bounds(model, x, y, eps, bn_stats=bn_stats).min(dim=1).values
    return linear_decision(
        model, x, y, eps, verify_above, intermediate=LINEAR[verifier], bn_stats=bn_stats
    )


def margin_fn(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    verifier: str,
    threshold: Tensor | None,
    bn_stats: BatchStats | None,
) -> Margin:
    """``g(rows, eps) = min_t LB_t(eps) - threshold`` of ``verifier`` on samples ``rows``:
    verified where > 0 (``threshold`` None: 0)."""

    def g(rows: Tensor, eps: Tensor) -> Tensor:
        below = 0.0 if threshold is None else threshold[rows]
        lowest = min_margin(model, x[rows], y[rows], eps, verifier, below, bn_stats=bn_stats)
        return lowest if threshold is None else lowest - threshold[rows]

    return g
