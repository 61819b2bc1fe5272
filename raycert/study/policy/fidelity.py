"""Multi-fidelity search over the length of the whole run: successive halving that respects the
radius schedule.

A trial's *fidelity* is the share of the preset's run it trains (``shortened``): fewer
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
user attributes, kept by ``raycert.study.tune.searcher``), so it survives a killed driver and
``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raycert.studyfolder import pareto_ranks
from raycert.training.config import TrainConfig


def shortened_epochs(epochs: int, fidelity: float) -> int:
    """The epochs of a run ``fidelity`` times as long as one of ``epochs`` (at least one)."""
    return max(1, round(epochs * fidelity))


def shortened(cfg: TrainConfig, fidelity: float) -> TrainConfig:
    """``cfg`` as a whole run ``fidelity`` (0 < f <= 1) times as long: ``round(f * epochs)``
    epochs (at least one), with warm-up, ramp and step-LR milestones kept at the same fractions
    of the run. A multi-fidelity study's short trials are such runs: complete trainings whose
    ramp ends where the full run's does, relative to their length."""
    if not 0 < fidelity <= 1:
        raise ValueError(f"fidelity must be in (0, 1], got {fidelity}")
    if fidelity == 1:
        return cfg
    epochs = shortened_epochs(cfg.epochs, fidelity)
    scale = epochs / cfg.epochs
    milestones = sorted({max(1, round(m * scale)) for m in cfg.lr_milestones})
    return cfg.replace(
        epochs=epochs,
        warmup_epochs=cfg.warmup_epochs * scale,
        ramp_epochs=cfg.ramp_epochs * scale,
        lr_milestones=[m for m in milestones if m <= epochs],
    )


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
