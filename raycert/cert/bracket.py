"""One verifier's radius search by bracketing: the largest eps in ``[lo, hi]`` it verifies.

``Brackets`` holds a batch of open brackets, one per sample; every stage of a search
(``raycert.cert.stages`` too) passes them on. The search brackets the crossing of the margin
function (``raycert.cert.verifiers.Margin``: the lowest margin bound at eps, verified where > 0)
between a verified ``lo`` and an unverified ``hi`` and returns ``lo``: a radius is a
certificate, never an interpolated root. The bracket shrinks by the Illinois variant of false
position (the margin function is piecewise linear in eps, so it usually lands next to the
crossing in one or two steps); after a step that moved the lower end, by the secant through the
two last verified points instead (the function steepens with eps, so the chord to a far upper
end lands short of the crossing, where the secant of nearby points does not). Two safeguards: a
probe is kept at least ``tol / 2`` inside the bracket, so a probe next to the crossing closes it
from the other side, and a step that fails to halve the bracket over two rounds, other than a
secant step, is a bisection.
Samples whose bracket is closed leave the batch; the room they free goes to the rest, each
probed at several radii in one pass (a k-section grid beside the false-position estimate), so
the few slow brackets that decide a search's length close in fewer rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from raycert.cert.verifiers import Margin

MAX_PROBES = 8  # radii probed at once per sample once few samples are left


@dataclass(frozen=True)
class Brackets:
    """Open brackets of a radius search, one per sample, each holding the crossing of a margin
    function: ``lo`` is verified (or 0) and ``margin_lo`` is a margin function's value there;
    ``hi`` is not verified (or is the cap), with ``margin_hi`` the value there where it was
    probed. A bracket is closed once ``hi - lo <= tol``. Every field is (k,); radii and ``tol``
    are in pixel units."""

    rows: Tensor  # int64: each bracket's sample, a row of the search's batch
    lo: Tensor
    margin_lo: Tensor
    hi: Tensor
    tol: Tensor
    margin_hi: Tensor | None = None  # None: not probed yet

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, which: Tensor) -> Brackets:
        """The brackets that ``which`` (a mask or indices) picks."""
        margin_hi = None if self.margin_hi is None else self.margin_hi[which]
        return Brackets(
            self.rows[which],
            self.lo[which],
            self.margin_lo[which],
            self.hi[which],
            self.tol[which],
            margin_hi,
        )

    def to(self, dtype: torch.dtype) -> Brackets:
        """The same brackets with radii, margins and ``tol`` in ``dtype``."""
        margin_hi = None if self.margin_hi is None else self.margin_hi.to(dtype)
        return Brackets(
            self.rows,
            self.lo.to(dtype),
            self.margin_lo.to(dtype),
            self.hi.to(dtype),
            self.tol.to(dtype),
            margin_hi,
        )


# A stage's search: (margin, brackets, max_rounds, pass_size) -> per bracket, the largest radius
# found verified by ``margin`` and its value there (``lo`` and ``margin_lo`` where none above).
Search = Callable[[Margin, Brackets, int, int], tuple[Tensor, Tensor]]


def bracket_stage(
    margin: Margin, brackets: Brackets, max_rounds: int, pass_size: int
) -> tuple[Tensor, Tensor]:
    """One verifier's search of ``brackets``, whose ``lo`` an earlier stage verified (or is 0),
    with ``margin_lo`` the earlier value there: per bracket the largest radius found verified by
    ``margin`` (``hi`` where ``margin`` verifies ``hi``) and ``margin`` there, or ``lo`` and
    ``margin_lo`` where it verified nothing above ``lo``. ``pass_size``: the probes one call of
    ``margin`` may hold; ``max_rounds``: the most calls that shrink a bracket."""
    rows, lo, hi = brackets.rows, brackets.lo, brackets.hi
    # False position needs this verifier's own value at the lower end (the earlier one is ~0).
    resume = lo > 0
    both = margin(torch.cat([rows, rows[resume]]), torch.cat([hi, lo[resume]]))
    at_hi, at_resume = both[: len(rows)], both[len(rows) :]
    at_lo = brackets.margin_lo.clone()
    at_lo[resume] = torch.where(at_resume > 0, at_resume, at_lo[resume])
    verified = at_hi > 0
    found, at_found = torch.where(verified, hi, lo), torch.where(verified, at_hi, at_lo)
    open_ = replace(brackets, margin_lo=at_lo, margin_hi=at_hi).select(~verified)
    found[~verified], at_found[~verified] = shrink(margin, open_, max_rounds, pass_size)
    return found, at_found


def shrink(
    margin: Margin,
    brackets: Brackets,
    max_rounds: int,
    pass_size: int,
    max_probes: int = MAX_PROBES,
) -> tuple[Tensor, Tensor]:
    """Shrink ``brackets`` (``margin_hi`` known) to their ``tol``, or for ``max_rounds`` rounds:
    each one's final ``lo`` and ``margin`` there. One round is one call of ``margin`` with at
    most ``pass_size`` probes (or one per open bracket), ``max_probes`` per bracket at most."""
    if brackets.margin_hi is None:
        raise ValueError("shrink needs the margin at each bracket's upper end")
    out_lo, out_margin = brackets.lo.clone(), brackets.margin_lo.clone()
    open_, past = brackets, _Past.start(brackets.lo)
    at = torch.arange(len(open_), device=open_.rows.device)  # where each one's result goes
    for _ in range(max_rounds):
        live = (open_.hi - open_.lo) > open_.tol
        if not live.any():
            break
        if not live.all():  # closed brackets leave the batch
            out_lo[at[~live]], out_margin[at[~live]] = open_.lo[~live], open_.margin_lo[~live]
            open_, past, at = open_.select(live), past.select(live), at[live]
        # Room left in the batch goes to the stragglers: k probes each, one pass, no more
        # samples than the first pass had, so a bracket can shrink (k + 1)-fold per round.
        k = max(1, min(max_probes, pass_size // len(open_)))
        probes = _probes(open_, past, k)
        values = margin(open_.rows.repeat_interleave(k), probes.flatten()).view(-1, k)
        open_, past = _narrow(open_, past, probes, values)
    out_lo[at], out_margin[at] = open_.lo, open_.margin_lo
    return out_lo, out_margin


class _Past(NamedTuple):
    """What ``shrink`` remembers of each bracket's earlier rounds."""

    side: Tensor  # int8: +1 only ``lo`` moved last round, -1 only ``hi``, else 0
    width_before: Tensor  # the bracket's width two rounds ago
    width_last: Tensor  # and one round ago
    # The margin function itself (never Illinois-halved) at ``lo`` and at the lower end before
    # it, where this search probed them (NaN where not): the secant through them.
    margin_own: Tensor
    lo_before: Tensor
    margin_before: Tensor

    @classmethod
    def start(cls, lo: Tensor) -> _Past:
        """Nothing remembered yet, for brackets with lower ends ``lo``."""
        side = torch.zeros(len(lo), dtype=torch.int8, device=lo.device)
        width = torch.full_like(lo, math.inf)
        nan = torch.full_like(lo, math.nan)
        return cls(side, width, width, nan, nan, nan)

    def select(self, which: Tensor) -> _Past:
        return _Past(*(t[which] for t in self))


def _probes(brackets: Brackets, past: _Past, k: int) -> Tensor:
    """The ``k`` radii to probe in each bracket, ascending, (len(brackets), k): the next estimate
    of the crossing and a (k-1)-point grid across the bracket."""
    lo, hi, tol = brackets.lo, brackets.hi, brackets.tol
    width = hi - lo
    estimate = lo + width * brackets.margin_lo / (brackets.margin_lo - brackets.margin_hi)
    # After the lower end moved, the secant through the last two verified points: near the
    # crossing the margin function is close to linear, and the chord to ``hi`` bends to a
    # steeper far end.
    own, before = past.margin_own, past.margin_before
    secant = lo + own * (lo - past.lo_before) / (before - own)
    extrapolate = (past.side == 1) & (before > own) & (secant > lo) & (secant < hi)
    estimate = torch.where(extrapolate, secant, estimate)
    stalled = (width > past.width_before / 2) & ~extrapolate
    estimate = torch.where(stalled | ~torch.isfinite(estimate), lo + width / 2, estimate)
    estimate = torch.minimum(torch.maximum(estimate, lo + tol / 2), hi - tol / 2)
    fractions = torch.arange(1, k, dtype=lo.dtype, device=lo.device) / k
    grid = lo[:, None] + width[:, None] * fractions
    return torch.cat([estimate[:, None], grid], dim=1).sort(dim=1).values


def _narrow(
    brackets: Brackets, past: _Past, probes: Tensor, values: Tensor
) -> tuple[Brackets, _Past]:
    """The brackets after probing ``probes`` (k per bracket) and finding ``values``: ``lo`` moves
    to the largest verified probe, ``hi`` to the first failed one above it."""
    lo, hi, side = brackets.lo, brackets.hi, past.side
    verified = values > 0
    best = torch.where(verified, probes, -math.inf).max(dim=1)  # largest verified probe
    moved_lo = best.values > lo
    new_lo = torch.where(moved_lo, best.values, lo)
    above = ~verified & (probes > new_lo[:, None])
    first = torch.where(above, probes, math.inf).min(dim=1)  # next unverified probe
    moved_hi = first.values < hi
    at_best = values.gather(1, best.indices[:, None]).squeeze(1)
    at_first = values.gather(1, first.indices[:, None]).squeeze(1)
    # Illinois: an end that survives two rounds in a row has its value halved.
    at_lo, at_hi = brackets.margin_lo, brackets.margin_hi
    at_lo = torch.where(moved_hi & ~moved_lo & (side == -1), at_lo / 2, at_lo)
    at_hi = torch.where(moved_lo & ~moved_hi & (side == 1), at_hi / 2, at_hi)
    narrowed = Brackets(
        brackets.rows,
        new_lo,
        torch.where(moved_lo, at_best, at_lo),
        torch.where(moved_hi, first.values, hi),
        brackets.tol,
        torch.where(moved_hi, at_first, at_hi),
    )
    remembered = _Past(
        (moved_lo & ~moved_hi).to(torch.int8) - (moved_hi & ~moved_lo).to(torch.int8),
        past.width_last,
        hi - lo,
        torch.where(moved_lo, at_best, past.margin_own),
        torch.where(moved_lo, lo, past.lo_before),
        torch.where(moved_lo, past.margin_own, past.margin_before),
    )
    return narrowed, remembered
