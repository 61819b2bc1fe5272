"""Radii in pixel units: parse ``0.0078``, ``2/255`` or ``2px`` and name them back consistently.

Every eps in raycert is an L-inf radius on images scaled to [0, 1], before normalization.
"""

from __future__ import annotations

import math

from raycert.errors import UserError


def parse_eps(text: str | float) -> float:
    """Parse an eps written as a decimal (``0.3``), a fraction (``2/255``) or pixels (``2px``)."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        raw = text.strip().lower()
        try:
            if raw.endswith("px"):
                value = float(raw[:-2]) / 255
            elif "/" in raw:
                num, den = raw.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(raw)
        except (ValueError, ZeroDivisionError):
            raise UserError(
                f"cannot read eps {text!r}: write it as a decimal (0.0078), k/255 (2/255) or 2px"
            ) from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise UserError(
            f"eps {text!r} is outside [0, 1]: radii are in pixel units of [0, 1] images"
        )
    return value


def format_eps(eps: float) -> str:
    """Name an eps the way people write it: ``0.3`` when short as a decimal, else ``8.8/255``."""
    for digits in range(1, 4):
        if abs(round(eps, digits) - eps) < 1e-12:
            return f"{round(eps, digits):g}"
    pixels = eps * 255
    for digits in range(0, 3):
        if abs(round(pixels, digits) - pixels) < 1e-9:
            return f"{round(pixels, digits):g}/255"
    return f"{eps:.6g}"


def cert_acc_key(eps: float) -> str:
    """Metric name of certified accuracy at ``eps``, e.g. ``cert_acc@2/255`` or ``cert_acc@0.3``."""
    return f"cert_acc@{format_eps(eps)}"


def pgd_acc_key(eps: float) -> str:
    """Metric name of PGD accuracy at ``eps``, e.g. ``pgd_acc@0.1`` or ``pgd_acc@2/255``."""
    return f"pgd_acc@{format_eps(eps)}"
