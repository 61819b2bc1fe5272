"""Who certifies: the verifiers a radius search may name, and their margin bounds.

``ibp`` propagates intervals (``raycert.cert.bounds``); ``crown-ibp`` and ``crown`` run one
backward linear pass of the margin specification over IBP or CROWN intermediate bounds
(``raycert.cert.linear``); ``alpha-crown-ibp`` optimizes that pass's ReLU lower slopes over IBP
intermediate bounds (``raycert.cert.slopes``). A cascade (``ibp+crown-ibp``) names several,
tried in order. A bound certifies a sample at eps when every margin ``f_y - f_t`` is verified
above a threshold: 0 in a float32 search, ``REL_THRESHOLD`` times the sample's largest |logit|
in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from raycert.cert.backward import Slopes
from raycert.cert.bounds import BatchStats, margin_lower_bounds
from raycert.cert.linear import linear_decision, linear_margin_bounds
from raycert.cert.slopes import alpha_margin_bounds, stage_slopes
from raycert.errors import UserError

ALPHA = "alpha-crown-ibp"
VERIFIERS = ("ibp", "crown-ibp", "crown", ALPHA)
# The most certified, at 1.8-2.8x IBP's time on MNIST quick models (benchmarks/bounds.py (e)):
# final certification's default.
TIGHTEST_VERIFIER = f"ibp+{ALPHA}"
DEFAULT_VERIFIER = TIGHTEST_VERIFIER
# Linear verifiers: their intermediate bounds.
LINEAR = {"crown-ibp": "ibp", "crown": "crown", ALPHA: "ibp"}
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
    if names[0] == ALPHA:
        raise UserError(
            f"{ALPHA} optimizes its slopes just above an earlier stage's radius: put a verifier "
            f"before it (e.g. ibp+{ALPHA})"
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
    if verifier == ALPHA:
        return alpha_margin_bounds(model, x, y, eps, bn_stats=bn_stats)
    return linear_margin_bounds(
        model,
        x,
        y,
        eps,
        intermediate=LINEAR[verifier],
        bn_stats=bn_stats,
        verify_above=verify_above,
    )


def claimed_bounds(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    radius: Tensor,
    verifier: str,
    below: Tensor,
    cap: Tensor,
    tol: float,
) -> Tensor:
    """The margin bounds at ``radius`` by which ``verifier``, a stage of a cascade search with
    ``cap`` and ``tol``, claimed it: (batch, C-1). ``alpha-crown-ibp``'s are those with the
    slopes its stage optimized above ``below``, the radius of the stages before it
    (``raycert.cert.slopes.stage_slopes``); the other verifiers' are their own bounds."""
    if verifier != ALPHA:
        return margin_bounds(model, x, y, radius, verifier)
    slopes = stage_slopes(model, x, y, below, cap, tol).slopes
    return linear_margin_bounds(model, x, y, radius, slopes=slopes)


def min_margin(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    verifier: str,
    verify_above: Tensor | float = 0.0,
    *,
    bn_stats: BatchStats | None = None,
    slopes: Slopes | None = None,
    slope_rows: Tensor | None = None,
) -> Tensor:
    """The radius search's value per sample: above ``verify_above`` exactly when every margin
    bound of ``verifier`` is. IBP's (and ``alpha-crown-ibp``'s without ``slopes``: optimized at
    ``eps`` itself) is the lowest margin bound; the linear verifiers' is
    ``raycert.cert.linear.linear_decision`` (it refines only what the decision needs), with
    ``alpha-crown-ibp``'s given ``slopes`` (sample ``i``'s at row ``slope_rows[i]``). Every
    bound pass of a radius search goes through here (the benchmarks count its calls)."""
    if verifier == "ibp":
        return margin_lower_bounds(model, x, y, eps, bn_stats=bn_stats).min(dim=1).values
    if verifier == ALPHA and slopes is None:
        return alpha_margin_bounds(model, x, y, eps, bn_stats=bn_stats).min(dim=1).values
    return linear_decision(
        model,
        x,
        y,
        eps,
        verify_above,
        intermediate=LINEAR[verifier],
        bn_stats=bn_stats,
        slopes=slopes,
        slope_rows=slope_rows,
    )


def margin_fn(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    verifier: str,
    threshold: Tensor | None,
    bn_stats: BatchStats | None,
    slopes: tuple[Tensor, Slopes] | None = None,
) -> Margin:
    """``g(rows, eps) = min_t LB_t(eps) - threshold`` of ``verifier`` on samples ``rows``:
    verified where > 0 (``threshold`` None: 0). ``slopes`` (``alpha-crown-ibp``): the samples
    they were optimized for and the slopes, which ``g`` then uses on those rows."""
    position = None
    if slopes is not None:
        owners, per_layer = slopes
        position = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        position[owners] = torch.arange(len(owners), device=x.device)

    def g(rows: Tensor, eps: Tensor) -> Tensor:
        below = 0.0 if threshold is None else threshold[rows]
        lowest = min_margin(
            model,
            x[rows],
            y[rows],
            eps,
            verifier,
            below,
            bn_stats=bn_stats,
            slopes=None if position is None else per_layer,
            slope_rows=None if position is None else position[rows],
        )
        return lowest if threshold is None else lowest - threshold[rows]

    return g
