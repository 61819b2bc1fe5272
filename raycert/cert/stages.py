"""A linear stage of a cascade, made cheap: step up from the earlier radius, probe in float32.

A linear stage after another (CROWN-IBP after IBP) mostly lifts the earlier radius ``r`` by a
few percent, and its bound passes cost several IBP passes each. So it does not bracket all of
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
from collections.abc import Callable

import torch
from torch import Tensor, nn

from raycert.cert.bounds import BatchStats
from raycert.cert.bracket import MAX_PROBES, shrink
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
    name: str,
    clean_logits: Tensor,
    dtype: torch.dtype,
    bn_stats: BatchStats | None,
    slopes: tuple[Tensor, Slopes] | None = None,
) -> Margin:
    """``g`` of verifier ``name`` on a ``dtype`` copy of the model and inputs, less the
    ``FAST_GUARD`` share of each sample's largest |logit|: a guide for the search, never a
    certificate (``confirmed_stage`` checks its radii in the model's own dtype)."""
    fast = copy.deepcopy(model).to(dtype)
    stats = (
        None
        if bn_stats is None
        else {index: (mean.to(dtype), var.to(dtype)) for index, (mean, var) in bn_stats.items()}
    )
    guard = (FAST_GUARD * clean_logits.abs().amax(dim=1)).to(dtype)
    return margin_fn(fast, x.to(dtype), y, name, guard, stats, slopes)


def stage_up(
    g: Margin,
    rows: Tensor,
    lo: Tensor,
    g_lo: Tensor,
    hi: Tensor,
    tol: Tensor,
    max_iter: int,
    n: int,
    *,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """``bracket_stage`` for a verifier that mostly lifts an earlier radius a little (a linear one
    after IBP), by stepping up from ``lo`` rather than bracketing all of ``[lo, hi]``.

    The first probe is ``lo + tol``: where ``g`` fails there, it cannot lift the radius by more
    than ``tol`` (bar a crossing further up, which linear bounds rarely have) and ``lo`` stands.
    ``start`` (eps in ``(lo, hi]`` and a value of ``g`` there known already) replaces that
    probe: where it fails, the bracket ``[lo, eps]`` is shrunk from its midpoint. Its value is
    not probed again, so a start that is a guide, not ``g``'s own value, needs a caller that
    verifies the radius returned, as ``confirmed_stage`` does.
    Then each step goes to the root of the secant through the last two verified points (the
    bound loosens ever faster with eps, so this root usually lies just past the crossing), at
    least doubling the step and at most ``hi``, until a step fails; ``shrink`` then shrinks
    the bracket between the last verified point and the failed one. Same contract as
    ``bracket_stage``: what it returns above ``lo`` was verified by ``g``."""
    if start is None:
        first = torch.minimum(lo + tol, hi)
        g_first = g(rows, first)
    else:
        first, g_first = (t.to(lo.dtype) for t in start)
    found, g_found = lo.clone(), g_lo.clone()
    up = torch.nonzero(g_first > 0).flatten()  # where ``lo + tol`` failed, ``lo`` is within tol
    # ``b`` is verified and ``a`` below it; the second probe lies STEP_UP of ``lo`` above ``b``
    # (of ``hi`` where ``lo`` is 0), as no secant through ``lo`` is to be trusted: at ``lo`` the
    # earlier verifier's value, at ``first`` this one's (``linear_decision`` jumps there).
    a, b, g_b = lo[up], first[up], g_first[up]
    g_a = torch.full_like(g_b, math.inf)  # no secant yet
    scale = STEP_UP * torch.where(lo > 0, lo, hi)[up]
    open_: list[tuple[Tensor, ...]] = []  # brackets: (which, verified end, g, failed end, g)
    if start is not None:  # ``g`` at ``lo`` is this verifier's, unknown: the first probe halves
        down = torch.nonzero(g_first <= 0).flatten()
        open_.append((down, lo[down], -g_first[down], first[down], g_first[down]))
    for _ in range(max_iter):
        top = b >= hi[up]
        found[up[top]], g_found[up[top]] = b[top], g_b[top]
        up, a, g_a, b, g_b, scale = (t[~top] for t in (up, a, g_a, b, g_b, scale))
        if len(up) == 0:
            break
        step = b - a
        secant = b + g_b * step / (g_a - g_b)
        secant = torch.where(torch.isfinite(secant) & (g_a > g_b), secant, b)
        secant = torch.where(torch.isinf(g_a), b + scale, secant)
        probe = torch.minimum(torch.maximum(secant, b + 2 * step), hi[up])
        value = g(rows[up], probe)
        ok = value > 0
        found[up], g_found[up] = torch.where(ok, probe, b), torch.where(ok, value, g_b)
        fail = ~ok
        open_.append((up[fail], b[fail], g_b[fail], probe[fail], value[fail]))
        up, a, g_a, b, g_b, scale = up[ok], b[ok], g_b[ok], probe[ok], value[ok], scale[ok]
    if open_:
        which, b_lo, b_g, b_hi, b_ghi = (torch.cat(parts) for parts in zip(*open_, strict=True))
        found[which], g_found[which] = shrink(
            g, rows[which], b_lo, b_g, b_hi, b_ghi, tol[which], max_iter, n, probes_per_round(rows)
        )
    return found, g_found


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
    g: Margin,
    probe: Margin,
    probe_dtype: torch.dtype,
    search: Callable[..., tuple[Tensor, Tensor]],
    rows: Tensor,
    lo: Tensor,
    g_lo: Tensor,
    hi: Tensor,
    tol: Tensor,
    max_iter: int,
    n: int,
) -> tuple[Tensor, Tensor]:
    """``search`` (``bracket_stage`` or ``stage_up``) run with the cheaper ``probe`` (a
    lower-precision ``g``), then made sound: each radius it found above ``lo`` is checked once
    by ``g``; where ``g`` fails there, the search falls back to bracketing with ``g`` between
    ``lo`` (verified) and that radius. So
    every radius returned above ``lo`` was verified by ``g``, as ``bracket_stage``'s are."""
    dtype = lo.dtype
    probe_lo, probe_hi = lo.to(probe_dtype), hi.to(probe_dtype)
    found, _ = search(
        probe, rows, probe_lo, g_lo.to(probe_dtype), probe_hi, tol.to(probe_dtype), max_iter, n
    )
    # The probe's radius in ``g``'s dtype, never above ``hi`` (rounding may move ``hi``).
    claim = torch.where(found >= probe_hi, hi, torch.minimum(found.to(dtype), hi))
    out, g_out = lo.clone(), g_lo.clone()
    check = torch.nonzero((found > probe_lo) & (claim > lo)).flatten()
    if len(check) == 0:
        return out, g_out
    values = g(rows[check], claim[check])
    passed = values > 0
    good, bad = check[passed], check[~passed]
    out[good], g_out[good] = claim[good], values[passed]
    if len(bad):  # rounding fooled the probe: search [lo, claim] with ``g`` itself
        out[bad], g_out[bad] = shrink(
            g,
            rows[bad],
            lo[bad],
            g_lo[bad],
            claim[bad],
            values[~passed],
            tol[bad],
            max_iter,
            n,
            probes_per_round(rows),
        )
    return out, g_out
