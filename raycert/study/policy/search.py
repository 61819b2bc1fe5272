"""What the searcher does next: a known point, a promotion, a new configuration, a polish, a
wait, or the end of the search.

The rules, in order:
1. a known point is waiting (the recipe, a spec's start, a trial enqueued by a killed driver):
   it runs at the top rung, if it fits the budget;
2. else a promotion (``fidelity.next_promotion``) that fits: the run re-run at the next rung;
3. else a new configuration at the lowest rung, if it fits; in a study of several methods, of
   the method ``racing.next_method`` names (a method whose runs reach the front);
4. else, once nothing whole fits, a polish (``polish``) of the front's next run, while one fits;
   a wait while a running trial may still make room for one (or need one), else the end.

"Fits" is the budget clock's judgement (``budget.Clock.fits``): a study without a budget fits
everything. The policy reads trials as ``TrialRecord`` values, so it is tested with plain
function calls, without Ray or Optuna; ``raycert.study.tune.searcher`` turns Optuna's trials
into them and acts on the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from raycert.study.policy.budget import Clock
from raycert.study.policy.fidelity import RungRun, next_promotion, shortened_epochs
from raycert.study.policy.polish import WholeRun, next_parent
from raycert.study.policy.racing import MethodRun, next_method

TrialState = Literal["waiting", "complete", "other"]  # "other": running, pruned, failed


@dataclass(frozen=True)
class TrialRecord:
    """A trial of the search as the policy sees it: its state, its fidelity (``None``: not
    recorded), its parameters, its val metrics once complete, and the run it re-runs longer
    (``promoted_from``) or fine-tunes (``polished_from``)."""

    number: int
    state: TrialState
    params: dict[str, Any] = field(default_factory=dict)
    fidelity: float | None = None
    clean_acc: float | None = None
    acr: float | None = None
    promoted_from: int | None = None
    polished_from: int | None = None


@dataclass(frozen=True)
class SearchPlan:
    """The search's fixed settings: the ``rungs`` (increasing fidelities ending at 1) and
    ``eta`` of a multi-fidelity search, the whole run's ``epochs`` (``None``: unknown, judge by
    the longest trial), the lowest accuracy target and its noise margin on the val split, the
    epochs of a polish trial (``None``: no polishing), and the methods the study searches (in
    its order; empty or one: the method is not searched)."""

    rungs: tuple[float, ...] = (1.0,)
    eta: int = 3
    epochs: int | None = None
    min_target: float = 0.0
    margin: float = 0.0
    polish_epochs: int | None = None
    methods: tuple[str, ...] = ()

    @property
    def top(self) -> float:
        return self.rungs[-1]

    def epochs_at(self, fidelity: float) -> int | None:
        """A trial's length at ``fidelity``; ``None`` (the longest trial) with one rung."""
        if len(self.rungs) == 1 or self.epochs is None:
            return None
        return shortened_epochs(self.epochs, fidelity)


@dataclass(frozen=True)
class Sample:
    """Ask the sampler: it hands out a waiting known point first, else a new configuration, of
    ``method`` when one is named (``None``: the sampler draws the method too)."""

    fidelity: float
    method: str | None = None


@dataclass(frozen=True)
class Promote:
    """Re-run ``run`` at ``fidelity``."""

    run: RungRun
    fidelity: float


@dataclass(frozen=True)
class Polish:
    """Fine-tune ``run``'s model, saved at ``checkpoint``."""

    run: WholeRun
    checkpoint: str


@dataclass(frozen=True)
class Wait:
    """Nothing to start now; ask again when a running trial ends."""


@dataclass(frozen=True)
class Finish:
    """The search is over."""


Step = Sample | Promote | Polish | Wait | Finish


def next_step(
    trials: Sequence[TrialRecord],
    plan: SearchPlan,
    clock: Clock | None,
    *,
    running: bool,
    checkpoints: Callable[[], Mapping[int, str]],
) -> Step:
    """The searcher's next step (the module note). ``clock`` is the study's budget (``None``:
    none); ``running`` says whether a trial this search started still runs; ``checkpoints``
    reads each finished trial's saved run by number (called only when a polish parent is
    due)."""

    def fits(fidelity: float) -> bool:
        return clock is None or clock.fits(plan.epochs_at(fidelity))

    waiting = [t for t in trials if t.state == "waiting"]
    if not waiting:
        promotion = _promotion(trials, plan)
        if promotion is not None and fits(promotion.fidelity):
            return promotion
    fidelity = plan.top if waiting else plan.rungs[0]
    if fits(fidelity):
        return Sample(fidelity, None if waiting else _method(trials, plan))
    # Nothing whole fits: polish, unless the study does not or a known point is left (the
    # sampler would hand it out first).
    if plan.polish_epochs is None or clock is None or any(t.polished_from is None for t in waiting):
        return Finish()
    if not clock.fits(plan.polish_epochs):
        # A running trial may yet end as a cheaper winner and shrink the budget's reserve.
        return Wait() if running else Finish()
    if waiting:  # a polish enqueued by a driver killed before it asked
        return Sample(plan.top)
    parent = _next_parent(trials, plan, checkpoints)
    if parent is None:  # a running trial may yet join the front
        return Wait() if running else Finish()
    return parent


def _method(trials: Sequence[TrialRecord], plan: SearchPlan) -> str | None:
    """The method of a new configuration (``racing.next_method``): its runs are the completed
    trials, each at its fidelity (the top rung where none is recorded)."""
    runs = [
        MethodRun(
            t.params["method"], plan.top if t.fidelity is None else t.fidelity, t.clean_acc, t.acr
        )
        for t in trials
        if t.state == "complete" and "method" in t.params and None not in (t.clean_acc, t.acr)
    ]
    drawn = [t.params["method"] for t in trials if "method" in t.params]
    return next_method(plan.methods, runs, drawn)


def _promotion(trials: Sequence[TrialRecord], plan: SearchPlan) -> Promote | None:
    """The completed run to re-run at the next rung now (``fidelity.next_promotion``)."""
    if len(plan.rungs) == 1:
        return None
    promoted = {t.promoted_from for t in trials if t.promoted_from is not None}
    completed = [
        RungRun(t.number, t.fidelity, t.clean_acc, t.acr, t.params)
        for t in trials
        if t.state == "complete" and None not in (t.fidelity, t.clean_acc, t.acr)
    ]
    found = next_promotion(completed, promoted, plan.rungs, plan.eta, plan.min_target, plan.margin)
    return None if found is None else Promote(*found)


def _next_parent(
    trials: Sequence[TrialRecord], plan: SearchPlan, checkpoints: Callable[[], Mapping[int, str]]
) -> Polish | None:
    """The completed whole run to polish next (``polish.next_parent``) with its checkpoint; a
    run whose checkpoint is not known is passed over."""
    polished = {t.polished_from for t in trials if t.polished_from is not None}
    runs = [
        WholeRun(t.number, t.clean_acc, t.acr, t.params)
        for t in trials
        if t.state == "complete"
        and t.polished_from is None
        and None not in (t.clean_acc, t.acr)
        and math.isclose(plan.top if t.fidelity is None else t.fidelity, plan.top)
    ]
    saved: Mapping[int, str] | None = None  # read only when a run is due
    while (run := next_parent(runs, polished)) is not None:
        if saved is None:
            saved = checkpoints()
        if run.number in saved:
            return Polish(run, saved[run.number])
        polished.add(run.number)
    return None
