"""Who certifies: the registry of verifiers a radius search may name, and their margin bounds.

Each verifier is declared once, in ``VERIFIERS``: its name, the ReLU input bounds of its linear
pass, whether it optimizes that pass's slopes, whether a cascade may start with it. The bound
functions here, the radius search and its re-verification read those declarations, never a
name. ``ibp`` propagates intervals (``raycert.cert.bounds``); ``crown-ibp`` and ``crown`` run one
backward linear pass of the margin specification over IBP or CROWN intermediate bounds
(``raycert.cert.linear``); ``alpha-crown-ibp`` optimizes that pass's ReLU lower slopes over IBP
intermediate bounds (``raycert.cert.slopes``). A cascade (``ibp+crown-ibp``) names several,
tried in order. A bound certifies a sample at eps when every margin ``f_y - f_t`` is verified
above a threshold: 0 in a float32 search, ``REL_THRESHOLD`` times the sample's largest |logit|
in float64. Every bound pass of a radius search goes through ``min_margin``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raycert.cert.backward import Slopes
from raycert.cert.bounds import BatchStats, margin_lower_bounds
from raycert.cert.linear import linear_decision, linear_margin_bounds
from raycert.cert.slopes import optimize_slopes, stage_slopes
from raycert.errors import UserError


@dataclass(frozen=True)
class Verifier:
    """How one verifier bounds the margins over an eps-box."""

    name: str
    # The ReLUs' input bounds of its backward linear pass: "ibp" or "crown"; None: no linear
    # pass, interval bounds alone.
    intermediate: str | None
    optimized_slopes: bool = False  # ReLU lower slopes optimized per sample, not CROWN's
    needs_earlier: str | None = None  # why a cascade may not start with it (None: it may)

    @property
    def linear(self) -> bool:
        """Whether it runs a backward linear pass: a cascade's later stage steps up with it and,
        in float64, probes it in float32 (``raycert.cert.stages``)."""
        return self.intermediate is not None


VERIFIERS = (
    Verifier("ibp", intermediate=None),
    Verifier("crown-ibp", intermediate="ibp"),
    Verifier("crown", intermediate="crown"),
    Verifier(
        "alpha-crown-ibp",
        intermediate="ibp",
        optimized_slopes=True,
        needs_earlier="optimizes its slopes just above an earlier stage's radius",
    ),
)
# Final certification's cascade, the one that certifies most (its cost over IBP's: the README
# and benchmarks/bounds.py (e)).
DEFAULT_VERIFIER = "ibp+alpha-crown-ibp"
# A certificate counts when its margin bound exceeds this share of the sample's largest |logit|
# (float64 rounding through a network stays orders of magnitude below it). Float32 searches
# (training) verify at > 0; ``raycert.cert.radius.reverify`` checks their radii in float64.
REL_THRESHOLD: dict[torch.dtype, float] = {torch.float64: 1e-9}

Margin = Callable[[Tensor, Tensor], Tensor]  # margin(rows, eps): verified where > 0


def lookup(name: str) -> Verifier:
    """The registered verifier ``name``; an unknown name is a one-line ``UserError``."""
    for verifier in VERIFIERS:
        if verifier.name == name:
            return verifier
    raise UserError(f"unknown verifier {name!r}: choose {_choices()}")


def parse_cascade(text: str) -> tuple[Verifier, ...]:
    """A verifier's name or a cascade of distinct ones joined by ``+`` (``ibp+crown-ibp``), as
    its stages in order. The first must be one a cascade may start with."""
    names = tuple(part.strip().lower() for part in str(text).split("+"))
    known = {verifier.name for verifier in VERIFIERS}
    if any(name not in known for name in names) or len(set(names)) != len(names):
        raise UserError(
            f"unknown verifier {text!r}: choose {_choices()}, or a cascade of distinct ones "
            f"joined by + (e.g. {DEFAULT_VERIFIER})"
        )
    stages = tuple(lookup(name) for name in names)
    first = stages[0]
    if first.needs_earlier is not None:
        raise UserError(
            f"{first.name} {first.needs_earlier}: put a verifier before it "
            f"(e.g. {VERIFIERS[0].name}+{first.name})"
        )
    return stages


def parse_verifier(text: str) -> tuple[str, ...]:
    """The names of ``parse_cascade(text)``'s stages."""
    return tuple(verifier.name for verifier in parse_cascade(text))


def _choices() -> str:
    return ", ".join(verifier.name for verifier in VERIFIERS)


def margin_bounds(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: Tensor | float,
    verifier: str,
    *,
    bn_stats: BatchStats | None = None,
    verify_above: Tensor | float | None = None,
    slopes: Slopes | None = None,
) -> Tensor:
    """Lower bounds of the margins ``f_y - f_t`` over the eps-box from one verifier:
    (batch, C-1). With ``verify_above``, linear verifiers refine only what deciding
    ``min bound > verify_above`` needs (see ``raycert.cert.linear``). A verifier with optimized
    slopes bounds with ``slopes`` where given, else with slopes optimized at ``eps`` itself."""
    declared = lookup(verifier)
    if not declared.linear:
        return margin_lower_bounds(model, x, y, eps, bn_stats=bn_stats)
    if declared.optimized_slopes and slopes is None:
        slopes = optimize_slopes(model, x, y, eps, bn_stats=bn_stats).slopes
    return linear_margin_bounds(
        model,
        x,
        y,
        eps,
        intermediate=declared.intermediate,
        bn_stats=bn_stats,
        verify_above=verify_above,
        slopes=slopes,
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
    ``cap`` and ``tol``, claimed it: (batch, C-1). A verifier with optimized slopes bounds with
    those its stage optimized above ``below``, the radius of the stages before it
    (``raycert.cert.slopes.stage_slopes``); the others' bounds are their own."""
    slopes = None
    if lookup(verifier).optimized_slopes:
        slopes = stage_slopes(model, x, y, below, cap, tol).slopes
    return margin_bounds(model, x, y, radius, verifier, slopes=slopes)


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
    bound of ``verifier`` is. Without a linear pass, or with optimized slopes but no ``slopes``
    given (optimized at ``eps`` itself), it is the lowest margin bound; else
    ``raycert.cert.linear.linear_decision`` (it refines only what the decision needs), with
    ``slopes`` where given (sample ``i``'s at row ``slope_rows[i]``). Every bound pass of a
    radius search goes through here (the benchmarks count its calls)."""
    declared = lookup(verifier)
    if not declared.linear or (declared.optimized_slopes and slopes is None):
        return margin_bounds(model, x, y, eps, verifier, bn_stats=bn_stats).min(dim=1).values
    return linear_decision(
        model,
        x,
        y,
        eps,
        verify_above,
        intermediate=declared.intermediate,
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
    """The margin function ``margin(rows, eps) = min_t LB_t(eps) - threshold`` of ``verifier``
    on samples ``rows``: verified where > 0 (``threshold`` None: 0). ``slopes`` (a verifier with
    optimized slopes): the samples they were optimized for and the slopes, used on those rows."""
    position = None
    if slopes is not None:
        owners, per_layer = slopes
        position = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        position[owners] = torch.arange(len(owners), device=x.device)

    def margin(rows: Tensor, eps: Tensor) -> Tensor:
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

    return margin
