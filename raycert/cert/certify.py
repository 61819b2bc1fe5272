"""Certified radii, ACR and certified accuracy from interval bounds.

The certified radius of a sample is the largest eps <= cap at which every margin bound was
*verified* > 0. The search brackets the crossing of ``g(eps) = min_t LB_t(eps)`` between a
verified ``lo`` and an unverified ``hi`` and returns ``lo``: a radius is a certificate, never
an interpolated root. Because the input box only grows with eps, a bound verified at ``lo``
covers every smaller radius too.

The bracket shrinks by the Illinois variant of false position (``g`` is piecewise linear in
eps, so it usually lands next to the crossing in one or two steps), with two safeguards: a probe
is kept at least ``tol / 2`` inside the bracket, so a probe next to the crossing closes it from
the other side, and a step that fails to halve the bracket over two rounds is a bisection.
Samples whose bracket is closed leave the batch; the room they free goes to the rest, each
probed at several radii in one pass (a k-section grid beside the false-position estimate), so
the few slow brackets that decide a search's length close in fewer rounds.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from raycert.cert.bounds import (
    BATCHNORM,
    BatchStats,
    exact_margins,
    margin_lower_bounds,
    margins_from_pass,
    propagate,
)
from raycert.units import cert_acc_key

MAX_PROBES = 8  # radii probed at once per sample once few samples are left


def _min_margin(
    model: nn.Sequential, x: Tensor, y: Tensor, eps: Tensor | None, bn_stats: BatchStats | None
) -> Tensor:
    """``min_t LB[f_y - f_t]`` at per-sample ``eps`` (None: the exact clean margin)."""
    if eps is None:
        box = propagate(model, x, None, bn_stats=bn_stats)
        return margins_from_pass(model[-1], box, y).min(dim=1).values
    return margin_lower_bounds(model, x, y, eps, bn_stats=bn_stats).min(dim=1).values


@torch.no_grad()
def certified_radius(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    cap: float | Tensor,
    tol: float = 1e-5,
    *,
    max_iter: int = 100,
    bn_stats: BatchStats | None = None,
    clean_logits: Tensor | None = None,
) -> Tensor:
    """The largest verified L-inf radius of each sample, searched in ``[0, cap]``.

    Returns a tensor of shape (batch,) in the dtype of the model: 0 for misclassified samples,
    ``cap`` for samples verified at the cap, otherwise a radius at which
    ``margin_lower_bounds`` was verified > 0, within ``tol`` of the crossing unless ``max_iter``
    rounds ran out first (the radius is then still verified, just less tight). ``cap`` may be
    one value or one per sample (ACERT caps training radii by the scheduled eps).
    Computation runs in the model's dtype: use a float64 model for final certificates.
    ``clean_logits`` (the model's output on ``x``, when the caller has it) saves one pass.
    """
    if model.training and bn_stats is None and any(isinstance(m, BATCHNORM) for m in model):
        raise ValueError("a train-mode model needs bn_stats from clean_forward(model, x)")
    dtype = next(model.parameters()).dtype
    x = x.to(dtype)
    n = len(x)
    cap_t = torch.as_tensor(cap, dtype=dtype, device=x.device).expand(n).clone()
    radius = torch.zeros(n, dtype=dtype, device=x.device)

    if clean_logits is None:
        g_clean = _min_margin(model, x, y, None, bn_stats)
    else:
        g_clean = exact_margins(clean_logits.to(dtype), y).min(dim=1).values
    idx = torch.nonzero((g_clean > 0) & (cap_t > 0)).flatten()
    if len(idx) == 0:
        return radius
    g_cap = _min_margin(model, x[idx], y[idx], cap_t[idx], bn_stats)
    at_cap = g_cap > 0
    radius[idx[at_cap]] = cap_t[idx[at_cap]]

    open_ = ~at_cap
    idx = idx[open_]
    lo = torch.zeros(len(idx), dtype=dtype, device=x.device)
    hi = cap_t[idx]
    g_lo, g_hi = g_clean[idx], g_cap[open_]
    side = torch.zeros(len(idx), dtype=torch.int8, device=x.device)  # +1 lo moved, -1 hi moved
    width_before = torch.full_like(lo, math.inf)  # bracket width two rounds ago
    width_last = torch.full_like(lo, math.inf)  # bracket width one round ago

    for _ in range(max_iter):
        live = (hi - lo) > tol
        if not live.any():
            break
        if not live.all():  # closed brackets leave the batch
            radius[idx[~live]] = lo[~live]
            idx, lo, hi, g_lo, g_hi, side = (t[live] for t in (idx, lo, hi, g_lo, g_hi, side))
            width_before, width_last = width_before[live], width_last[live]
        width = hi - lo
        estimate = lo + width * g_lo / (g_lo - g_hi)
        stalled = width > width_before / 2
        estimate = torch.where(stalled | ~torch.isfinite(estimate), lo + width / 2, estimate)
        estimate = torch.minimum(torch.maximum(estimate, lo + tol / 2), hi - tol / 2)
        # Room left in the batch goes to the stragglers: k probes each, one pass, no more
        # samples than the first pass had, so a bracket can shrink (k + 1)-fold per round.
        k = max(1, min(MAX_PROBES, n // len(idx)))
        fractions = torch.arange(1, k, dtype=dtype, device=x.device) / k
        grid = lo[:, None] + width[:, None] * fractions
        probes = torch.cat([estimate[:, None], grid], dim=1).sort(dim=1).values
        rows = idx.repeat_interleave(k)
        g = _min_margin(model, x[rows], y[rows], probes.flatten(), bn_stats).view(-1, k)
        verified = g > 0

        best = torch.where(verified, probes, -math.inf).max(dim=1)  # largest verified probe
        moved_lo = best.values > lo
        new_lo = torch.where(moved_lo, best.values, lo)
        above = ~verified & (probes > new_lo[:, None])
        first = torch.where(above, probes, math.inf).min(dim=1)  # next unverified probe
        moved_hi = first.values < hi
        # Illinois: an end that survives two rounds in a row has its value halved.
        g_hi = torch.where(moved_lo & ~moved_hi & (side == 1), g_hi / 2, g_hi)
        g_lo = torch.where(moved_hi & ~moved_lo & (side == -1), g_lo / 2, g_lo)
        g_lo = torch.where(moved_lo, g.gather(1, best.indices[:, None]).squeeze(1), g_lo)
        g_hi = torch.where(moved_hi, g.gather(1, first.indices[:, None]).squeeze(1), g_hi)
        lo, hi = new_lo, torch.where(moved_hi, first.values, hi)
        side = (moved_lo & ~moved_hi).to(torch.int8) - (moved_hi & ~moved_lo).to(torch.int8)
        width_before, width_last = width_last, width
    radius[idx] = lo
    return radius


@dataclass
class Certificates:
    """Per-sample results of certifying a split: the raw material of every summary."""

    labels: Tensor  # (n,) int64
    predictions: Tensor  # (n,) int64
    radii: Tensor  # (n,) float64, pixel units, 0 when misclassified, at most cap
    cap: float

    @property
    def correct(self) -> Tensor:
        return self.labels == self.predictions

    def to_csv(self) -> str:
        """One row per sample: ``index,label,prediction,radius,correct`` (radius in pixels)."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["index", "label", "prediction", "radius", "correct"])
        columns = (self.labels.tolist(), self.predictions.tolist(), self.radii.tolist())
        rows = zip(*columns, strict=True)
        for index, (label, prediction, radius) in enumerate(rows):
            writer.writerow([index, label, prediction, repr(radius), int(label == prediction)])
        return text.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        """``to_csv`` into the file ``path`` (its folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_csv())
        return path


def certify(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    cap: float,
    *,
    tol: float = 1e-5,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    progress: Iterable | None = None,
) -> Certificates:
    """Certify every sample of ``images`` (uint8 (N,C,H,W) or float in [0, 1]) in eval mode.

    Runs on a copy of ``model`` cast to ``dtype``: float64 by default, because float32 rounding
    can flip the sign of a bound that sits at the margin. ``progress`` wraps the batch starts.
    """
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    predictions, radii = [], []
    starts = range(0, len(images), batch_size)
    for start in progress(starts) if progress else starts:
        batch = images[start : start + batch_size].to(device)
        x = batch.to(dtype) / 255 if batch.dtype == torch.uint8 else batch.to(dtype)
        y = labels[start : start + batch_size].to(device)
        with torch.no_grad():
            logits = net(x)
        predictions.append(logits.argmax(dim=1).cpu())
        radii.append(certified_radius(net, x, y, cap, tol, clean_logits=logits).cpu())
    return Certificates(
        labels=labels.cpu().long(),
        predictions=torch.cat(predictions),
        radii=torch.cat(radii).double(),
        cap=cap,
    )


def summarize(certs: Certificates, eps_list: Sequence[float] = ()) -> dict[str, float]:
    """Clean accuracy, ACR (value, % of cap, cap) and certified accuracy at each eps."""
    n = len(certs.labels)
    acr = float(certs.radii.mean()) if n else 0.0
    metrics = {
        "clean_acc": float(certs.correct.double().mean()) if n else 0.0,
        "acr": acr,
        "acr_cap": certs.cap,
        "acr_pct": 100.0 * acr / certs.cap if certs.cap > 0 else 0.0,
        "n": n,
    }
    for eps in eps_list:
        certified = certs.correct & (certs.radii >= eps)
        metrics[cert_acc_key(eps)] = float(certified.double().mean()) if n else 0.0
    return metrics


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    cap: float,
    eps_list: Sequence[float] = (),
    **certify_kwargs,
) -> dict[str, float]:
    """Certify a split and summarize it: ``clean_acc``, ``acr``, ``acr_pct``, ``acr_cap``,
    ``cert_acc@<eps>``."""
    return summarize(certify(model, images, labels, cap, **certify_kwargs), eps_list)
