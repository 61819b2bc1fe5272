"""One verifier's radius search by bracketing: the largest eps in ``[lo, hi]`` it verifies.

The search brackets the crossing of ``g(eps) = min_t LB_t(eps)`` between a verified ``lo`` and
an unverified ``hi`` and returns ``lo``: a radius is a certificate, never an interpolated root.
The bracket shrinks by the Illinois variant of false position (``g`` is piecewise linear in
eps, so it usually lands next to the crossing in one or two steps); after a step that moved the
lower end, by the secant through the two last verified points instead (``g`` steepens with
eps, so the chord to a far upper end lands short of the crossing, where the secant of nearby
points does not). Two safeguards: a probe is kept at least ``tol / 2`` inside the bracket, so a
probe next to the crossing closes it from the other side, and a step that fails to halve the
bracket over two rounds, other than a secant step, is a bisection.
Samples whose bracket is closed leave the batch; the room they free goes to the rest, each
probed at several radii in one pass (a k-section grid beside the false-position estimate), so
the few slow brackets that decide a search's length close in fewer rounds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from raycert.cert.verifiers import Margin

MAX_PROBES = 8  # radii probed at once per sample once few samples are left


def bracket_stage(
    g: Margin,
    rows: Tensor,
    lo: Tensor,
    g_lo: Tensor,
    hi: Tensor,
    tol: Tensor,
    max_iter: int,
    n: int,
) -> tuple[Tensor, Tensor]:
    """One verifier's search of samples ``rows`` in ``[lo, hi]``, where ``lo`` is verified by an
    earlier stage (or 0) and ``g_lo`` is the earlier value there: the largest radius found
    verified by ``g`` (``hi`` where ``g`` verifies ``hi``) and ``g`` there, or ``lo`` and
    ``g_lo`` where ``g`` verified nothing above ``lo``."""
    # False position needs this verifier's own value at the lower end (the earlier one is ~0).
    resume = lo > 0
    both = g(torch.cat([rows, rows[resume]]), torch.cat([hi, lo[resume]]))
    g_hi, g_resume = both[: len(rows)], both[len(rows) :]
    g_lo = g_lo.clone()
    g_lo[resume] = torch.where(g_resume > 0, g_resume, g_lo[resume])
    at_hi = g_hi > 0
    found, g_found = torch.where(at_hi, hi, lo), torch.where(at_hi, g_hi, g_lo)
    open_ = ~at_hi
    found[open_], g_found[open_] = shrink(
        g, rows[open_], lo[open_], g_lo[open_], hi[open_], g_hi[open_], tol[open_], max_iter, n
    )
    return found, g_found


def shrink(
    g: Margin,
    idx: Tensor,
    lo: Tensor,
    g_lo: Tensor,
    hi: Tensor,
    g_hi: Tensor,
    tol: Tensor,
    max_iter: int,
    n: int,
    max_probes: int = MAX_PROBES,
) -> tuple[Tensor, Tensor]:
    """Shrink the brackets ``[lo, hi]`` of samples ``idx`` (``lo`` verified or 0, ``hi`` not
    verified) to ``tol``; return the final ``lo`` and ``g`` there. ``n`` probes fit a pass."""
    out_lo, out_g = lo.clone(), g_lo.clone()
    pos = torch.arange(len(idx), device=idx.device)  # where each open bracket's result goes
    side = torch.zeros(len(idx), dtype=torch.int8, device=idx.device)  # +1 lo moved, -1 hi
    width_before = torch.full_like(lo, math.inf)  # bracket width two rounds ago
    width_last = torch.full_like(lo, math.inf)  # bracket width one round ago
    # ``g`` itself (never Illinois-halved) at ``lo`` and at the lower end before it, where
    # this search probed them (NaN where not): the secant through them.
    g_own = torch.full_like(lo, math.nan)
    lo_before, g_before = torch.full_like(lo, math.nan), torch.full_like(lo, math.nan)

    for _ in range(max_iter):
        live = (hi - lo) > tol
        if not live.any():
            break
        if not live.all():  # closed brackets leave the batch
            out_lo[pos[~live]], out_g[pos[~live]] = lo[~live], g_lo[~live]
            idx, pos, lo, hi, g_lo, g_hi, side, tol = (
                t[live] for t in (idx, pos, lo, hi, g_lo, g_hi, side, tol)
            )
            width_before, width_last = width_before[live], width_last[live]
            g_own, lo_before, g_before = g_own[live], lo_before[live], g_before[live]
        width = hi - lo
        estimate = lo + width * g_lo / (g_lo - g_hi)
        # After the lower end moved, the secant through the last two verified points: near the
        # crossing ``g`` is close to linear, and the chord to ``hi`` bends to a steeper far end.
        secant = lo + g_own * (lo - lo_before) / (g_before - g_own)
        extrapolate = (side == 1) & (g_before > g_own) & (secant > lo) & (secant < hi)
        estimate = torch.where(extrapolate, secant, estimate)
        stalled = (width > width_before / 2) & ~extrapolate
        estimate = torch.where(stalled | ~torch.isfinite(estimate), lo + width / 2, estimate)
        estimate = torch.minimum(torch.maximum(estimate, lo + tol / 2), hi - tol / 2)
        # Room left in the batch goes to the stragglers: k probes each, one pass, no more
        # samples than the first pass had, so a bracket can shrink (k + 1)-fold per round.
        k = max(1, min(max_probes, n // len(idx)))
        fractions = torch.arange(1, k, dtype=lo.dtype, device=lo.device) / k
        grid = lo[:, None] + width[:, None] * fractions
        probes = torch.cat([estimate[:, None], grid], dim=1).sort(dim=1).values
        rows = idx.repeat_interleave(k)
        values = g(rows, probes.flatten()).view(-1, k)
        verified = values > 0

        best = torch.where(verified, probes, -math.inf).max(dim=1)  # largest verified probe
        moved_lo = best.values > lo
        new_lo = torch.where(moved_lo, best.values, lo)
        above = ~verified & (probes > new_lo[:, None])
        first = torch.where(above, probes, math.inf).min(dim=1)  # next unverified probe
        moved_hi = first.values < hi
        # Illinois: an end that survives two rounds in a row has its value halved.
        g_hi = torch.where(moved_lo & ~moved_hi & (side == 1), g_hi / 2, g_hi)
        g_lo = torch.where(moved_hi & ~moved_lo & (side == -1), g_lo / 2, g_lo)
        g_new = values.gather(1, best.indices[:, None]).squeeze(1)
        lo_before = torch.where(moved_lo, lo, lo_before)
        g_before = torch.where(moved_lo, g_own, g_before)
        g_own = torch.where(moved_lo, g_new, g_own)
        g_lo = torch.where(moved_lo, g_new, g_lo)
        g_hi = torch.where(moved_hi, values.gather(1, first.indices[:, None]).squeeze(1), g_hi)
        lo, hi = new_lo, torch.where(moved_hi, first.values, hi)
        side = (moved_lo & ~moved_hi).to(torch.int8) - (moved_hi & ~moved_lo).to(torch.int8)
        width_before, width_last = width_last, width
    out_lo[pos], out_g[pos] = lo, g_lo
    return out_lo, out_g
