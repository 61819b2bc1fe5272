"""The largest verified radius of each sample, for one verifier or a cascade.

Guarantee: every radius returned is an eps <= cap at which every margin bound of the named
verifier was *verified* > 0 (in float64, above ``REL_THRESHOLD`` times the sample's largest
|logit|), or 0. Because the input box only grows with eps, a bound verified at a radius covers
every smaller radius too. The radius is within ``tol`` below the crossing unless the search ran
out of rounds first: it is then still verified, just less tight.

Each stage of a cascade searches the ``Brackets`` between the radius the earlier stages
verified and the cap: by bracketing (``raycert.cert.bracket``: false position, the lower end
always verified), or, for a linear stage after another, by stepping up from that radius with
float32 probes whose pick is verified in float64 (``raycert.cert.stages``). A stage with
optimized slopes (``alpha-crown-ibp``) first optimizes each sample's ReLU slopes just above the
earlier radius (``raycert.cert.slopes.stage_slopes``), then steps up with those slopes fixed:
its radius is verified by the bound with them. Which stage is which kind is what the registry
of ``raycert.cert.verifiers`` declares. Radii searched in float32 (training) are checked again
in float64 by ``reverify``, each by the bounds that claimed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from raycert.cert.bounds import BATCHNORM, BatchStats, exact_margins, propagate
from raycert.cert.bracket import Brackets, Search, bracket_stage
from raycert.cert.slopes import stage_slopes
from raycert.cert.stages import (
    LINEAR_DTYPE,
    confirmed_stage,
    fast_margin_fn,
    free_start,
    stage_up,
)
from raycert.cert.verifiers import (
    REL_THRESHOLD,
    Margin,
    Verifier,
    claimed_bounds,
    margin_fn,
    parse_cascade,
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

    A linear stage after another steps up from the earlier radius (``stage_up``). In a float64
    search, its probes run in ``linear_dtype`` (float32 by default; None: in float64 too) and
    its radius is verified in float64 before it counts (``confirmed_stage``).
    """
    stages = parse_cascade(verifier)
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
    threshold = _threshold(clean_logits)
    radius = torch.zeros(n, dtype=dtype, device=x.device)
    verified_by = torch.full((n,), -1, dtype=torch.long, device=x.device)
    at_radius = exact_margins(clean_logits, y).min(dim=1).values  # the margin function there
    if threshold is not None:
        at_radius = at_radius - threshold
    todo = torch.nonzero((at_radius > 0) & (cap_t > 0)).flatten()
    stage_radii: dict[str, Tensor] = {}
    stage_verified_by: dict[str, Tensor] = {}
    # A float64 search probes its linear stages in ``linear_dtype`` (see ``confirmed_stage``).
    fast = linear_dtype if dtype == torch.float64 and linear_dtype not in (None, dtype) else None
    for index, stage in enumerate(stages):
        if len(todo):
            brackets = Brackets(todo, radius[todo], at_radius[todo], cap_t[todo], tol_t[todo])
            margin, search = _stage_search(
                model, x, y, stage, brackets, index > 0, threshold, bn_stats, clean_logits, fast
            )
            found, at_found = search(margin, brackets, max_iter, n)
            moved = found > brackets.lo
            rows = todo[moved]
            radius[rows], verified_by[rows], at_radius[rows] = found[moved], index, at_found[moved]
            todo = todo[radius[todo] < cap_t[todo]]
        stage_radii[stage.name], stage_verified_by[stage.name] = radius.clone(), verified_by.clone()
    names = tuple(stage.name for stage in stages)
    return RadiusSearch(radius, verified_by, stage_radii, stage_verified_by, names)


def _threshold(clean_logits: Tensor) -> Tensor | None:
    """What each sample's margin bound must exceed to verify: ``REL_THRESHOLD`` times its
    largest |logit| in float64, None (0) in float32."""
    rel = REL_THRESHOLD.get(clean_logits.dtype, 0.0)
    return rel * clean_logits.abs().amax(dim=1) if rel > 0 else None


def _stage_search(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    verifier: Verifier,
    brackets: Brackets,
    after_another: bool,
    threshold: Tensor | None,
    bn_stats: BatchStats | None,
    clean_logits: Tensor,
    fast: torch.dtype | None,
) -> tuple[Margin, Search]:
    """``verifier``'s margin function on the search's batch and the search that raises the radii
    of ``brackets`` with it. Optimized slopes are optimized here, once per sample just above its
    radius. A linear stage after another steps up (``stage_up``); with ``fast`` (a float64
    search), a linear stage probes in that dtype and checks its pick in float64."""
    slopes = optimized = None
    if verifier.optimized_slopes:
        rows = brackets.rows
        optimized = stage_slopes(
            model, x[rows], y[rows], brackets.lo, brackets.hi, brackets.tol, bn_stats=bn_stats
        )
        slopes = (rows, optimized.slopes)
    margin = margin_fn(model, x, y, verifier.name, threshold, bn_stats, slopes)
    # A linear stage after another mostly lifts its radius a little: it steps up.
    search: Search = stage_up if verifier.linear and after_another else bracket_stage
    if fast is None or not verifier.linear:
        return margin, search
    probe = fast_margin_fn(model, x, y, verifier.name, clean_logits, fast, bn_stats, slopes)
    if optimized is not None and optimized.bounds.dtype == fast:
        # The optimization's own bounds probe its eps: the search starts there.
        start = free_start(optimized.eps, optimized.bounds, clean_logits[brackets.rows])
        search = partial(stage_up, start=start)
    return margin, partial(confirmed_stage, probe=probe, probe_dtype=fast, search=search)


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


@torch.no_grad()
def reverify(
    net64: nn.Sequential, x64: Tensor, y: Tensor, found: RadiusSearch, cap: float, tol: float
) -> RadiusSearch:
    """A lower-precision search made sound: every radius of ``found`` (per stage) checked in
    float64 against ``REL_THRESHOLD``, by the verifier that claimed it, on the float64 copy
    ``net64`` of the model and ``x64`` of the inputs; samples that fail (or that ``net64``
    misclassifies) are searched again in float64 with the same ``cap`` and ``tol``."""
    logits = net64(x64)
    failed = _failed_claims(net64, x64, y, found, logits, cap, tol)
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


def _failed_claims(
    net64: nn.Sequential,
    x64: Tensor,
    y: Tensor,
    found: RadiusSearch,
    logits: Tensor,
    cap: float,
    tol: float,
) -> Tensor:
    """Per sample, whether a radius of ``found`` (after any stage) fails in float64, against
    ``REL_THRESHOLD`` of the largest |logit| of ``net64``'s ``logits``, by the bounds with which
    the verifier that ``found`` names for it claimed it (``claimed_bounds``)."""
    threshold = REL_THRESHOLD[torch.float64] * logits.abs().amax(dim=1)
    failed = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    for name in found.verifiers:  # the last stage's radius is the final one
        radius, by = found.stage_radii[name].double(), found.stage_verified_by[name]
        for stage, claimant in enumerate(found.verifiers):
            rows = torch.nonzero((by == stage) & (radius > 0)).flatten()
            if len(rows) == 0:
                continue
            earlier = found.stage_radii[found.verifiers[stage - 1]] if stage else radius
            below = earlier[rows].double()
            cap_t = torch.full_like(below, cap)
            bounds = claimed_bounds(
                net64, x64[rows], y[rows], radius[rows], claimant, below, cap_t, tol
            )
            failed[rows] |= bounds.min(dim=1).values <= threshold[rows]
    return failed
