"""The largest verified radius of each sample, for one verifier or a cascade.

Guarantee: every radius returned is an eps <= cap at which every margin bound of the named
verifier was *verified* > 0 (in float64, above ``REL_THRESHOLD`` times the sample's largest
|logit|), or 0. Because the input box only grows with eps, a bound verified at a radius covers
every smaller radius too. The radius is within ``tol`` below the crossing unless the search ran
out of rounds first: it is then still verified, just less tight.

The search brackets the crossing of ``g(eps) = min_t LB_t(eps)`` between a verified ``lo`` and
an unverified ``hi`` and returns ``lo``: a radius is a certificate, never an interpolated root.
The bracket shrinks by the Illinois variant of false position (``g`` is piecewise linear in
eps, so it usually lands next to the crossing in one or two steps), with two safeguards: a probe
is kept at least ``tol / 2`` inside the bracket, so a probe next to the crossing closes it from
the other side, and a step that fails to halve the bracket over two rounds is a bisection.
Samples whose bracket is closed leave the batch; the room they free goes to the rest, each
probed at several radii in one pass (a k-section grid beside the false-position estimate), so
the few slow brackets that decide a search's length close in fewer rounds.

A linear stage after another (CROWN-IBP after IBP) mostly lifts the earlier radius ``r`` by a
few percent, and its bound passes cost several IBP passes each. So it does not bracket all of
``[r, cap]``: it probes ``r + tol`` (where that fails, it cannot help, and ``r`` stands), then
steps up (``_stage_up``) and shrinks the bracket one probe per sample a round on a CPU, where a
pass costs per probe. In a float64 search these probes run on a float32 copy of the model, each
required to clear ``FAST_GUARD`` times the largest |logit| rather than ``REL_THRESHOLD``; they only
steer the search. The radius they pick is then verified once in float64 by the same verifier
against ``REL_THRESHOLD``, and only then returned; where that check fails, a float64 bracket
between ``r`` (verified) and the failed radius takes over (``_confirmed_stage``). So the
guarantee above holds for every radius of the faster path as well: none comes from a float32
bound.

Every bound pass of the search goes through ``min_margin`` (the benchmarks count its calls).
Radii searched in float32 (training) are checked again in float64 by ``reverify``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raycert.cert.bounds import (
    BATCHNORM,
    BatchStats,
    exact_margins,
    margin_lower_bounds,
    propagate,
)
from raycert.cert.linear import linear_decision, linear_margin_bounds
from raycert.errors import UserError

MAX_PROBES = 8  # radii probed at once per sample once few samples are left

VERIFIERS = ("ibp", "crown-ibp", "crown")
DEFAULT_VERIFIER = "ibp+crown-ibp"  # final certification: see benchmarks/bounds.py
LINEAR = {"crown-ibp": "ibp", "crown": "crown"}  # linear verifiers: their intermediate bounds
# A certificate counts when its margin bound exceeds this share of the sample's largest |logit|
# (float64 rounding through a network stays orders of magnitude below it). Float32 searches
# (training) verify at > 0; ``reverify`` checks their radii in float64.
REL_THRESHOLD: dict[torch.dtype, float] = {torch.float64: 1e-9}
# Linear stages of a float64 search probe on a copy of the model in this dtype; a probe counts
# above this share of the sample's largest |logit|, well above float32 rounding, so the float64
# check of the radius they pick seldom fails (``_confirmed_stage``).
LINEAR_DTYPE: torch.dtype | None = torch.float32
FAST_GUARD = 1e-5
STEP_UP = 1 / 64  # a linear stage's second probe: this share of the earlier radius higher
LINEAR_PROBES = 1  # probes per sample and round of a linear stage's bracket on a CPU


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
    ``raycert.cert.linear.linear_decision`` (it refines only what the decision needs)."""
    if verifier == "ibp":
        return margin_lower_bounds(model, x, y, eps, bn_stats=bn_stats).min(dim=1).values
    return linear_decision(
        model, x, y, eps, verify_above, intermediate=LINEAR[verifier], bn_stats=bn_stats
    )


@dataclass
class RadiusSearch:
    """A cascade's verified radii: the final one, who verified it, and the radius after each
    stage (``stage_radii[name]``: verified by that stage's verifier or an earlier one)."""

    radius: Tensor  # (batch,) in the model's dtype
    verified_by: Tensor  # (batch,) int64 stage index of the verifier of ``radius``; -1 at 0
    stage_radii: dict[str, Tensor]
    stage_verified_by: dict[str, Tensor]  # ``verified_by`` of each stage's radius
    verifiers: tuple[str, ...]


@torch.no_grad()
def search_radii(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    cap: float | Tensor,
    tol: float = 1e-5,
    *,
    verifier: str = "ibp",
    max_iter: int = 100,
    bn_stats: BatchStats | None = None,
    clean_logits: Tensor | None = None,
    linear_dtype: torch.dtype | None = LINEAR_DTYPE,
) -> RadiusSearch:
    """The largest verified L-inf radius of each sample in ``[0, cap]``, with who verified it.

    Radii are (batch,) in the model's dtype: 0 for misclassified samples, ``cap`` for samples
    verified at the cap, otherwise a radius at which ``verifier`` verified every margin bound,
    within ``tol`` of the crossing unless ``max_iter`` rounds ran out first (the radius is then
    still verified, just less tight). ``cap`` may be one value or one per sample (ACERT caps
    training radii by the scheduled eps); ``tol`` is clamped to half of each sample's cap, so
    that a sample not verified at its cap is still searched below it. Computation runs in the
    model's dtype: use a float64 model for final certificates. ``clean_logits`` (the model's
    output on ``x``, when the caller has it) saves one pass. In float64 a bound verifies only
    above ``REL_THRESHOLD`` times the sample's largest |logit|.

    ``verifier`` is one name or a cascade (``ibp+crown-ibp``), whose stages run in order: each
    searches ``[r, cap]`` above the radius ``r`` the earlier stages verified, so a sample's
    radius never drops below an earlier stage's. Linear bounds need not shrink as eps grows, so
    a stage may verify eps where it fails below: that is sound (the box at a verified eps holds
    every smaller box), and the bracket's lower end is always an eps some verifier verified (or
    0), never a guess.

    A linear stage after another steps up from the earlier radius (``_stage_up``). In a float64
    search, its probes run in ``linear_dtype`` (float32 by default; None: in float64 too) and
    its radius is verified in float64 before it counts (``_confirmed_stage``).
    """
    names = parse_verifier(verifier)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number of pixel units, got {tol}")
    if model.training and bn_stats is None and any(isinstance(m, BATCHNORM) for m in model):
        raise ValueError("a train-mode model needs bn_stats from clean_forward(model, x)")
    dtype = next(model.parameters()).dtype
    x = x.to(dtype)
    n = len(x)
    cap_t = torch.as_tensor(cap, dtype=dtype, device=x.device).expand(n).clone()
    tol_t = torch.clamp(cap_t / 2, max=tol)
    if clean_logits is None:
        clean_logits = model[-1](propagate(model, x, None, bn_stats=bn_stats).center)
    clean_logits = clean_logits.to(dtype)
    rel = REL_THRESHOLD.get(dtype, 0.0)
    threshold = rel * clean_logits.abs().amax(dim=1) if rel > 0 else None
    radius = torch.zeros(n, dtype=dtype, device=x.device)
    verified_by = torch.full((n,), -1, dtype=torch.long, device=x.device)
    g_radius = exact_margins(clean_logits, y).min(dim=1).values  # g at ``radius``, per sample
    if threshold is not None:
        g_radius = g_radius - threshold
    todo = torch.nonzero((g_radius > 0) & (cap_t > 0)).flatten()
    stage_radii: dict[str, Tensor] = {}
    stage_verified_by: dict[str, Tensor] = {}

    # A float64 search probes its linear stages in ``linear_dtype`` (see ``_confirmed_stage``).
    fast = linear_dtype if dtype == torch.float64 and linear_dtype not in (None, dtype) else None
    for stage, name in enumerate(names):
        if len(todo):
            g = _margin_fn(model, x, y, name, threshold, bn_stats)
            lo, g_lo, hi, tol_todo = radius[todo], g_radius[todo], cap_t[todo], tol_t[todo]
            # A linear stage after another mostly lifts its radius a little: it steps up.
            search = _stage_up if name in LINEAR and stage > 0 else _stage
            if fast is not None and name in LINEAR:
                probe = _fast_margin_fn(model, x, y, name, clean_logits, fast, bn_stats)
                found, g_found = _confirmed_stage(
                    g, probe, fast, search, todo, lo, g_lo, hi, tol_todo, max_iter, n
                )
            else:
                found, g_found = search(g, todo, lo, g_lo, hi, tol_todo, max_iter, n)
            moved = found > lo
            rows = todo[moved]
            radius[rows], verified_by[rows], g_radius[rows] = found[moved], stage, g_found[moved]
            todo = todo[radius[todo] < cap_t[todo]]
        stage_radii[name], stage_verified_by[name] = radius.clone(), verified_by.clone()
    return RadiusSearch(radius, verified_by, stage_radii, stage_verified_by, names)


Margin = Callable[[Tensor, Tensor], Tensor]  # g(rows, eps): verified where > 0


def _margin_fn(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    name: str,
    threshold: Tensor | None,
    bn_stats: BatchStats | None,
) -> Margin:
    """``g(rows, eps) = min_t LB_t(eps) - threshold`` of verifier ``name`` on samples ``rows``:
    verified where > 0 (``threshold`` None: 0)."""

    def g(rows: Tensor, eps: Tensor) -> Tensor:
        below = 0.0 if threshold is None else threshold[rows]
        lowest = min_margin(model, x[rows], y[rows], eps, name, below, bn_stats=bn_stats)
        return lowest if threshold is None else lowest - threshold[rows]

    return g


def _fast_margin_fn(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    name: str,
    clean_logits: Tensor,
    dtype: torch.dtype,
    bn_stats: BatchStats | None,
) -> Margin:
    """``g`` of verifier ``name`` on a ``dtype`` copy of the model and inputs, less the
    ``FAST_GUARD`` share of each sample's largest |logit|: a guide for the search, never a
    certificate (``_confirmed_stage`` checks its radii in the model's own dtype)."""
    fast = copy.deepcopy(model).to(dtype)
    stats = (
        None
        if bn_stats is None
        else {index: (mean.to(dtype), var.to(dtype)) for index, (mean, var) in bn_stats.items()}
    )
    guard = (FAST_GUARD * clean_logits.abs().amax(dim=1)).to(dtype)
    return _margin_fn(fast, x.to(dtype), y, name, guard, stats)


def _stage(
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
    found[open_], g_found[open_] = _bracket(
        g, rows[open_], lo[open_], g_lo[open_], hi[open_], g_hi[open_], tol[open_], max_iter, n
    )
    return found, g_found


def _stage_up(
    g: Margin,
    rows: Tensor,
    lo: Tensor,
    g_lo: Tensor,
    hi: Tensor,
    tol: Tensor,
    max_iter: int,
    n: int,
) -> tuple[Tensor, Tensor]:
    """``_stage`` for a verifier that mostly lifts an earlier radius a little (a linear one
    after IBP), by stepping up from ``lo`` rather than bracketing all of ``[lo, hi]``.

    The first probe is ``lo + tol``: where ``g`` fails there, it cannot lift the radius by more
    than ``tol`` (bar a crossing further up, which linear bounds rarely have) and ``lo`` stands.
    Then each step goes to the root of the secant through the last two verified points (the
    bound loosens ever faster with eps, so this root usually lies just past the crossing), at
    least doubling the step and at most ``hi``, until a step fails; ``_bracket`` then shrinks
    the bracket between the last verified point and the failed one. Same contract as
    ``_stage``: what it returns above ``lo`` was verified by ``g``."""
    first = torch.minimum(lo + tol, hi)
    g_first = g(rows, first)
    found, g_found = lo.clone(), g_lo.clone()
    up = torch.nonzero(g_first > 0).flatten()  # where ``first`` failed, ``lo`` is within tol
    # ``b`` is verified and ``a`` below it; the second probe lies STEP_UP of ``lo`` above ``b``
    # (of ``hi`` where ``lo`` is 0), as no secant through ``lo`` is to be trusted: at ``lo`` the
    # earlier verifier's value, at ``first`` this one's (``linear_decision`` jumps there).
    a, b, g_b = lo[up], first[up], g_first[up]
    g_a = torch.full_like(g_b, math.inf)  # no secant yet
    scale = STEP_UP * torch.where(lo > 0, lo, hi)[up]
    open_: list[tuple[Tensor, ...]] = []  # brackets: (which, verified end, g, failed end, g)
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
        found[which], g_found[which] = _bracket(
            g, rows[which], b_lo, b_g, b_hi, b_ghi, tol[which], max_iter, n, _probes(rows)
        )
    return found, g_found


def _probes(rows: Tensor) -> int:
    """Probes per sample and round of a linear stage's bracket: a linear pass on a CPU costs
    about per probe, so one a round there (no k-section grid); elsewhere ``MAX_PROBES``."""
    return LINEAR_PROBES if rows.device.type == "cpu" else MAX_PROBES


def _confirmed_stage(
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
    """``_stage`` searched with the cheaper ``probe`` (a lower-precision ``g``), then made sound:
    each radius it found above ``lo`` is checked once by ``g``; where ``g`` fails there, the
    search falls back to bracketing with ``g`` between ``lo`` (verified) and that radius. So
    every radius returned above ``lo`` was verified by ``g``, as ``_stage``'s are."""
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
        out[bad], g_out[bad] = _bracket(
            g,
            rows[bad],
            lo[bad],
            g_lo[bad],
            claim[bad],
            values[~passed],
            tol[bad],
            max_iter,
            n,
            _probes(rows),
        )
    return out, g_out


@torch.no_grad()
def certified_radius(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    cap: float | Tensor,
    tol: float = 1e-5,
    *,
    verifier: str = "ibp",
    max_iter: int = 100,
    bn_stats: BatchStats | None = None,
    clean_logits: Tensor | None = None,
) -> Tensor:
    """``search_radii(...).radius``: the verified radii alone, (batch,) in the model's dtype
    (what training's ACERT step and the tests of the search's contract need)."""
    return search_radii(
        model,
        x,
        y,
        cap,
        tol,
        verifier=verifier,
        max_iter=max_iter,
        bn_stats=bn_stats,
        clean_logits=clean_logits,
    ).radius


def _bracket(
    g,
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
        width = hi - lo
        estimate = lo + width * g_lo / (g_lo - g_hi)
        stalled = width > width_before / 2
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
        g_lo = torch.where(moved_lo, values.gather(1, best.indices[:, None]).squeeze(1), g_lo)
        g_hi = torch.where(moved_hi, values.gather(1, first.indices[:, None]).squeeze(1), g_hi)
        lo, hi = new_lo, torch.where(moved_hi, first.values, hi)
        side = (moved_lo & ~moved_hi).to(torch.int8) - (moved_hi & ~moved_lo).to(torch.int8)
        width_before, width_last = width_last, width
    out_lo[pos], out_g[pos] = lo, g_lo
    return out_lo, out_g


@torch.no_grad()
def reverify(
    net64: nn.Sequential, x64: Tensor, y: Tensor, found: RadiusSearch, cap: float, tol: float
) -> RadiusSearch:
    """A lower-precision search made sound: every radius of ``found`` (per stage) checked in
    float64 against ``REL_THRESHOLD``, by the verifier that claimed it, on the float64 copy
    ``net64`` of the model and ``x64`` of the inputs; samples that fail (or that ``net64``
    misclassifies) are searched again in float64 with the same ``cap`` and ``tol``."""
    logits = net64(x64)
    threshold = REL_THRESHOLD[torch.float64] * logits.abs().amax(dim=1)
    failed = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    for name in found.verifiers:  # the last stage's radius is the final one
        radius, by = found.stage_radii[name].double(), found.stage_verified_by[name]
        for stage, claimant in enumerate(found.verifiers):
            rows = torch.nonzero((by == stage) & (radius > 0)).flatten()
            if len(rows) == 0:
                continue
            bounds = margin_bounds(net64, x64[rows], y[rows], radius[rows], claimant)
            failed[rows] |= bounds.min(dim=1).values <= threshold[rows]
    failed |= (exact_margins(logits, y).min(dim=1).values <= 0) & (found.radius > 0)
    rows = torch.nonzero(failed).flatten()
    out = RadiusSearch(
        found.radius.double(),
        found.verified_by.clone(),
        {k: v.double() for k, v in found.stage_radii.items()},
        {k: v.clone() for k, v in found.stage_verified_by.items()},
        found.verifiers,
    )
    if len(rows):
        again = search_radii(
            net64,
            x64[rows],
            y[rows],
            cap,
            tol,
            verifier="+".join(found.verifiers),
            clean_logits=logits[rows],
        )
        out.radius[rows], out.verified_by[rows] = again.radius, again.verified_by
        for name in out.stage_radii:
            out.stage_radii[name][rows] = again.stage_radii[name]
            out.stage_verified_by[name][rows] = again.stage_verified_by[name]
    return out
