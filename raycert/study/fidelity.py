"""Multi-fidelity search over the length of the whole run: successive halving that respects the
radius schedule.

A trial's *fidelity* is the share of the preset's run it trains (``schedule.shortened``): fewer
epochs, with warm-up and ramp kept at the same fractions of the run. So every trial, short or
long, is a complete training whose ramp has ended before it is ranked, and a short trial's model
is as real as a long one's: it can win a target and lies on the front like any other.
(Schedulers such as ASHA stop a trial *inside* one schedule instead, where models mid-ramp are
not comparable.)

The rungs are increasing fidelities ending at 1. New configurations start at the lowest rung.
Once a rung holds ``eta`` completed trials, its best ``1/eta`` (of those completed so far) are
each re-run at the next rung as a new trial with the same parameters: asynchronous successive
halving, with whole runs as its rungs. The preset's recipe runs at the top rung at once, so a
study never returns worse than the recipe at its budget.

Promotion respects the accuracy targets; it never mixes accuracy into ACR:
1. a trial that meets the lowest target, less ``margin`` (the noise of a small validation split,
   ``accuracy_margin``), ranks before every trial that does not;
2. among those that meet it, by Pareto rank on (clean accuracy, ACR), then by ACR;
3. among the others, by clean accuracy (the least shortfall first).

The rung state is the Optuna journal itself (each trial's ``fidelity`` and ``promoted_from``
user attributes), so it survives a killed driver and ``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROMOTED_FROM = "promoted_from"  # Optuna user attribute: the number of the trial re-run longer


@dataclass(frozen=True)
class RungRun:
    """A completed trial as the promotion rule sees it: its fidelity and val metrics."""

    number: int
    fidelity: float
    clean_acc: float
    acr: float
    params: dict[str, Any]


def accuracy_margin(target: float, val_size: int) -> float:
    """Two standard errors of a clean accuracy near ``target`` measured on ``val_size`` images:
    how far below the target a short trial may score and still count as meeting it."""
    return 2 * math.sqrt(target * (1 - target) / max(1, val_size))


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting rank of each (clean accuracy, ACR) point, both maximised: 0 for the
    front, 1 for the front of the rest, and so on."""
    ranks = [-1] * len(points)
    left = set(range(len(points)))
    rank = 0
    while left:
        front = {
            i
            for i in left
            if not any(
                points[j][0] >= points[i][0]
                and points[j][1] >= points[i][1]
                and points[j] != points[i]
                for j in left
            )
        }
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def promotion_order(runs: Sequence[RungRun], min_target: float, margin: float) -> list[RungRun]:
    """``runs`` best first by the promotion rule (see the module note)."""
    meets = [r for r in runs if r.clean_acc >= min_target - margin]
    others = [r for r in runs if r.clean_acc < min_target - margin]
    ranks = pareto_ranks([(r.clean_acc, r.acr) for r in meets])
    order = sorted(zip(ranks, meets, strict=True), key=lambda p: (p[0], -p[1].acr, p[1].number))
    return [r for _, r in order] + sorted(others, key=lambda r: (-r.clean_acc, r.number))


def next_promotion(
    completed: Sequence[RungRun],
    promoted: set[int],
    rungs: Sequence[float],
    eta: int,
    min_target: float,
    margin: float,
) -> tuple[RungRun, float] | None:
    """The run to re-run longer now and the fidelity to re-run it at, or None: the highest rung
    below the top whose best ``len(rung) // eta`` runs hold one not ``promoted`` yet."""
    for low, high in reversed(list(zip(rungs, rungs[1:], strict=False))):
        rung = [r for r in completed if math.isclose(r.fidelity, low)]
        best = promotion_order(rung, min_target, margin)[: len(rung) // eta]
        for run in best:
            if run.number not in promoted:
                return run, high
    return None
