"""Racing the methods of a study that searches several: a new configuration's method is one
whose runs reach the front.

A study of several methods first runs each method's recipe (its known points). From then on,
each new configuration is drawn for a *live* method: one with a completed run on the val front
(clean accuracy, ACR) of the runs of its fidelity; a method none of whose runs is on a front
gets no new draw. Among live methods, the one with the fewest trials so far goes next (ties:
the study's order, the preset's method first), so each contender is explored evenly; the
sampler then draws that method's knobs.

Why: a budget on a laptop fits a handful of trials, fewer than TPE's start-up draws (which are
random), so TPE never learns the method from its own draws, and every draw spent on a method
whose runs are dominated is one the front's methods do not get. Until every method
has a completed run, and in a study of one method, the sampler draws the method as it likes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from raycert.studyfolder import pareto_ranks


class MethodRun(NamedTuple):
    """A completed run as racing reads it: its method, its fidelity (1: the whole run) and its
    val metrics."""

    method: str
    fidelity: float
    clean_acc: float
    acr: float


def live_methods(methods: Sequence[str], runs: Sequence[MethodRun]) -> tuple[str, ...] | None:
    """The methods in ``methods`` with a run on the front of the runs of its fidelity, in
    ``methods``' order; None while some method has no completed run."""
    if not set(methods) <= {run.method for run in runs}:
        return None
    on_front: set[str] = set()
    for fidelity in {run.fidelity for run in runs}:
        same = [run for run in runs if run.fidelity == fidelity]
        ranks = pareto_ranks([(run.clean_acc, run.acr) for run in same])
        on_front.update(run.method for run, rank in zip(same, ranks, strict=True) if rank == 0)
    return tuple(method for method in methods if method in on_front)


def next_method(
    methods: Sequence[str], runs: Sequence[MethodRun], drawn: Sequence[str]
) -> str | None:
    """The method of the next new configuration: of the live methods (``live_methods``), the
    one in ``drawn`` (every trial's method so far, running ones included) the fewest times.
    None (the sampler's choice) for a study of one method or while some method has no run."""
    if len(methods) < 2:
        return None
    live = live_methods(methods, runs)
    if not live:
        return None
    return min(live, key=lambda method: (drawn.count(method), live.index(method)))
