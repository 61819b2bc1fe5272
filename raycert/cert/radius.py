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

Every bound pass of the search goes through ``min_margin`` (the benchmarks count its calls).
Radii searched in float32 (training) are checked again in float64 by ``reverify``.
"""

from __future__ import annotations

import math
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

    for stage, name in enumerate(names):
        if len(todo):

            def g(rows: Tensor, eps: Tensor, name: str = name) -> Tensor:
                """``min_t LB_t(eps) - threshold`` of samples ``rows``: verified where > 0."""
                below = 0.0 if threshold is None else threshold[rows]
                lowest = min_margin(model, x[rows], y[rows], eps, name, below, bn_stats=bn_stats)
                return lowest if threshold is None else lowest - threshold[rows]

            # A later stage also probes where the earlier ones stopped: false position needs
            # this stage's own value at the bracket's lower end (the earlier value there is ~0).
            resume = todo[radius[todo] > 0]
            both = g(torch.cat([todo, resume]), torch.cat([cap_t[todo], radius[resume]]))
            g_cap, g_resume = both[: len(todo)], both[len(todo) :]
            g_radius[resume] = torch.where(g_resume > 0, g_resume, g_radius[resume])
            at_cap = g_cap > 0
            done = todo[at_cap]
            radius[done], verified_by[done], g_radius[done] = cap_t[done], stage, g_cap[at_cap]
            todo = todo[~at_cap]
            lo, g_lo = _bracket(
                g,
                todo,
                radius[todo],
                g_radius[todo],
                cap_t[todo],
                g_cap[~at_cap],
                tol_t[todo],
                max_iter,
                n,
            )
            moved = lo > radius[todo]
            rows = todo[moved]
            radius[rows], verified_by[rows], g_radius[rows] = lo[moved], stage, g_lo[moved]
        stage_radii[name], stage_verified_by[name] = radius.clone(), verified_by.clone()
    return RadiusSearch(radius, verified_by, stage_radii, stage_verified_by, names)


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
        k = max(1, min(MAX_PROBES, n // len(idx)))
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
