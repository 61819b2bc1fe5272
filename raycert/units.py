"""Units people write: radii in pixel units (``0.0078``, ``2/255``, ``2px``) and wall-clock
durations (``90s``, ``10m``, ``2h``, ``1.5d``), parsed and named back consistently.

Every eps in raycert is an L-inf radius on images scaled to [0, 1], before normalization.
Every duration is in seconds.
"""

from __future__ import annotations

import math
import re

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


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration written as a number and a unit: ``90s``, ``10m``, ``2h``, ``1.5d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd])\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise UserError(
            f"cannot read duration {text!r}: write a positive number and a unit, "
            "like 90s, 10m, 2h or 1.5d"
        )
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """A duration the way people say it: ``45s``, ``12m 5s``, ``2h 30m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"
