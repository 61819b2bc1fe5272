"""A linear stage of a cascade, made cheap: step up from the earlier radius, probe in float32.

A linear stage after another (CROWN-IBP after IBP) mostly lifts the earlier radius ``r`` a
little, and each of its bound passes costs several IBP passes. So it does not bracket all of
``[r, cap]``: it probes ``r + tol`` (where that fails, it cannot help, and ``r`` stands), then
steps up (``stage_up``) and shrinks the bracket one probe per sample a round on a CPU, where a
pass costs per probe. In a float64 search these probes run on a float32 copy of the model
(``fast_margin_fn``), each required to clear ``FAST_GUARD`` times the largest |logit| rather
than ``REL_THRESHOLD``; they only steer the search. The radius they pick is then verified once
in float64 by the same verifier against ``REL_THRESHOLD``, and only then returned; where that
check fails, a float64 bracket between ``r`` (verified) and the failed radius takes over
(``confirmed_stage``). So no returned radius comes from a float32 bound.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from raycert.cert.bounds import BatchStats
from raycert.cert.bracket import MAX_PROBES, Brackets, Search, shrink
from raycert.cert.slopes import Slopes
from raycert.cert.verifiers import Margin, margin_fn

# Linear stages of a float64 search probe on a copy of the model in this dtype; a probe counts
# above this share of the sample's largest |logit|, well above float32 rounding, so the float64
# check of the radius they pick seldom fails (``confirmed_stage``).
LINEAR_DTYPE: torch.dtype | None = torch.float32
FAST_GUARD = 1e-5
STEP_UP = 1 / 64  # a linear stage's second probe: this share of the earlier radius higher
LINEAR_PROBES = 1  # probes per sample and round of a linear stage's bracket on a CPU


def fast_margin_fn(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    verifier: str,
    clean_logits: Tensor,
    dtype: torch.dtype,
    bn_stats: BatchStats | None,
    slopes: tuple[Tensor, Slopes] | None = None,
) -> Margin:
    """The margin function of ``verifier`` on a ``dtype`` copy of the model and inputs, less the
    ``FAST_GUARD`` share of each sample's largest |logit|: a guide for the search, never a
    certificate (``confirmed_stage`` checks its radii in the model's own dtype)."""
    fast = copy.deepcopy(model).to(dtype)
    stats = (
        None
        if bn_stats is None
        else {index: (mean.to(dtype), var.to(dtype)) for index, (mean, var) in bn_stats.items()}
    )
    guard = (FAST_GUARD * clean_logits.abs().amax(dim=1)).to(dtype)
    return margin_fn(fast, x.to(dtype), y, verifier, guard, stats, slopes)


def stage_up(
    margin: Margin,
    brackets: Brackets,
    max_rounds: int,
    pass_size: int,
    *,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """``bracket_stage`` for a verifier that mostly lifts an earlier radius a little (a linear one
    after IBP), by stepping up from ``lo`` rather than bracketing all of ``[lo, hi]``.

    The first probe is ``lo + tol``: where ``margin`` fails there, it cannot lift the radius by
    more than ``tol`` (bar a crossing further up, which linear bounds rarely have) and ``lo``
    stands. ``start`` (eps in ``(lo, hi]`` and a value of ``margin`` there known already)
    replaces that probe: where it fails, the bracket ``[lo, eps]`` is shrunk from its midpoint.
    Its value is not probed again, so a start that is a guide, not ``margin``'s own value, needs
    a caller that verifies the radius returned, as ``confirmed_stage`` does. Then each bracket
    climbs (``_climb``) until a step fails, and ``shrink`` shrinks the bracket between the last
    verified point and the failed one. Same contract as ``bracket_stage``: what it returns above
    ``lo`` was verified by ``margin``."""
    lo = brackets.lo
    if start is None:
        first = torch.minimum(lo + brackets.tol, brackets.hi)
        at_first = margin(brackets.rows, first)
    else:
        first, at_first = (t.to(lo.dtype) for t in start)
    found, at_found = lo.clone(), brackets.margin_lo.clone()
    up = torch.nonzero(at_first > 0).flatten()  # where ``lo + tol`` failed, ``lo`` is within tol
    failed: list[tuple[Tensor, ...]] = []  # (which, verified end, its value, failed end, value)
    if start is not None:  # the margin at ``lo`` is this verifier's, unknown: probe the middle
        down = torch.nonzero(at_first <= 0).flatten()
        failed.append((down, lo[down], -at_first[down], first[down], at_first[down]))
    failed += _climb(margin, brackets, up, first[up], at_first[up], max_rounds, found, at_found)
    if failed:
        which, b_lo, at_lo, b_hi, at_hi = (torch.cat(parts) for parts in zip(*failed, strict=True))
        rest = Brackets(brackets.rows[which], b_lo, at_lo, b_hi, brackets.tol[which], at_hi)
        per_round = probes_per_round(brackets.rows)
        found[which], at_found[which] = shrink(margin, rest, max_rounds, pass_size, per_round)
    return found, at_found


def _climb(
    margin: Margin,
    brackets: Brackets,
    up: Tensor,
    b: Tensor,
    at_b: Tensor,
    max_rounds: int,
    found: Tensor,
    at_found: Tensor,
) -> list[tuple[Tensor, ...]]:
    """Step the brackets ``up`` (indices into ``brackets``) up from their verified ``b``, where
    ``margin`` is ``at_b``, until a step fails or reaches ``hi``: each step goes to the root of
    the secant through the last two verified points (the bound loosens ever faster with eps, so
    this root usually lies just past the crossing), at least doubling the step and at most
    ``hi``. Writes each one's highest verified point and the value there into ``found`` and
    ``at_found``; returns the brackets where a step failed, as (which, verified end, its value,
    failed end, its value) per round."""
    lo, hi = brackets.lo, brackets.hi
    # ``a`` lies below ``b``. The second probe lies STEP_UP of ``lo`` above ``b`` (of ``hi`` where
    # ``lo`` is 0), as no secant through ``lo`` is to be trusted: at ``lo`` the earlier
    # verifier's value, at ``b`` this one's (``linear_decision`` jumps there).
    a, at_a = lo[up], torch.full_like(at_b, math.inf)  # no secant yet
    scale = STEP_UP * torch.where(lo > 0, lo, hi)[up]
    failed: list[tuple[Tensor, ...]] = []
    for _ in range(max_rounds):
        top = b >= hi[up]
        found[up[top]], at_found[up[top]] = b[top], at_b[top]
        up, a, at_a, b, at_b, scale = (t[~top] for t in (up, a, at_a, b, at_b, scale))
        if len(up) == 0:
            break
        probe = _step(a, at_a, b, at_b, scale, hi[up])
        value = margin(brackets.rows[up], probe)
        ok = value > 0
        found[up], at_found[up] = torch.where(ok, probe, b), torch.where(ok, value, at_b)
        failed.append((up[~ok], b[~ok], at_b[~ok], probe[~ok], value[~ok]))
        up, a, at_a, b, at_b, scale = up[ok], b[ok], at_b[ok], probe[ok], value[ok], scale[ok]
    return failed


def _step(a: Tensor, at_a: Tensor, b: Tensor, at_b: Tensor, scale: Tensor, hi: Tensor) -> Tensor:
    """The next probe above the verified ``b``: the root of the secant through ``(a, at_a)`` and
    ``(b, at_b)`` (``b + scale`` where ``at_a`` is inf: no secant yet), at least ``2 (b - a)``
    above ``b`` and at most ``hi``."""
    step = b - a
    secant = b + at_b * step / (at_a - at_b)
    secant = torch.where(torch.isfinite(secant) & (at_a > at_b), secant, b)
    secant = torch.where(torch.isinf(at_a), b + scale, secant)
    return torch.minimum(torch.maximum(secant, b + 2 * step), hi)


def free_start(eps: Tensor, bounds: Tensor, clean_logits: Tensor) -> tuple[Tensor, Tensor]:
    """A probe of ``fast_margin_fn`` already paid for: eps and the margin ``bounds`` there (from
    ``raycert.cert.slopes.optimize_slopes``, in the probes' dtype), as ``stage_up``'s ``start``:
    their lowest, less the same ``FAST_GUARD``."""
    guard = (FAST_GUARD * clean_logits.abs().amax(dim=1)).to(bounds.dtype)
    return eps, bounds.min(dim=1).values - guard


def probes_per_round(rows: Tensor) -> int:
    """Probes per sample and round of a linear stage's bracket: a linear pass on a CPU costs
    about per probe, so one a round there (no k-section grid); elsewhere ``MAX_PROBES``."""
    return LINEAR_PROBES if rows.device.type == "cpu" else MAX_PROBES


def confirmed_stage(
    margin: Margin,
    brackets: Brackets,
    max_rounds: int,
    pass_size: int,
    *,
    probe: Margin,
    probe_dtype: torch.dtype,
    search: Search,
) -> tuple[Tensor, Tensor]:
    """``search`` (``bracket_stage`` or ``stage_up``) run with the cheaper ``probe`` (``margin``
    in the lower precision ``probe_dtype``), then made sound: each radius it found above ``lo``
    is checked once by ``margin``; where ``margin`` fails there, the search falls back to
    bracketing with ``margin`` between ``lo`` (verified) and that radius. So every radius
    returned above ``lo`` was verified by ``margin``, as ``bracket_stage``'s are."""
    lo, hi = brackets.lo, brackets.hi
    fast = brackets.to(probe_dtype)
    found, _ = search(probe, fast, max_rounds, pass_size)
    # The probe's radius in ``margin``'s dtype, never above ``hi`` (rounding may move ``hi``).
    claim = torch.where(found >= fast.hi, hi, torch.minimum(found.to(lo.dtype), hi))
    out, at_out = lo.clone(), brackets.margin_lo.clone()
    check = torch.nonzero((found > fast.lo) & (claim > lo)).flatten()
    if len(check) == 0:
        return out, at_out
    values = margin(brackets.rows[check], claim[check])
    passed = values > 0
    good, bad = check[passed], check[~passed]
    out[good], at_out[good] = claim[good], values[passed]
    if len(bad):  # rounding fooled the probe: search [lo, claim] with ``margin`` itself
        fallback = replace(brackets.select(bad), hi=claim[bad], margin_hi=values[~passed])
        per_round = probes_per_round(brackets.rows)
        out[bad], at_out[bad] = shrink(margin, fallback, max_rounds, pass_size, per_round)
    return out, at_out
