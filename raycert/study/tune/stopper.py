"""The budget's Tune shells: the clock lookup, and the stopper that reads it.

Tune pickles its searcher and stopper into its experiment state, and a resumed run uses the
unpickled copies, not the ones ``run_study`` made: they cannot hold the driver's clock (a
``time.monotonic`` of another process means nothing). So ``run_study`` lends the clock for the
length of the Tune run (``lend_clock``), and these two shells alone look it up by the study's
URI (``clock_of``); every rule they apply is ``raycert.study.policy.budget.Clock``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ray.tune.stopper import Stopper

from raycert.study.policy.budget import Clock

_LENT: dict[str, Clock] = {}  # study URI -> the clock of the Tune run now in progress


@contextlib.contextmanager
def lend_clock(study_uri: str, clock: Clock | None) -> Iterator[None]:
    """Within: the searcher and stopper of study ``study_uri`` read ``clock`` (``None``: the
    study has no budget)."""
    if clock is None:
        yield
        return
    _LENT[study_uri] = clock
    try:
        yield
    finally:
        _LENT.pop(study_uri, None)


def clock_of(study_uri: str | None) -> Clock | None:
    """The clock lent for study ``study_uri``; ``None`` without a budget."""
    return None if study_uri is None else _LENT.get(study_uri)


class BudgetStopper(Stopper):
    """Stops the trials as the study's budget says (``Clock.stops_trial``, ``Clock.stops_all``);
    ``epochs`` is every trial's length."""

    def __init__(self, study_uri: str, epochs: int | None = None) -> None:
        self.study_uri, self.epochs = study_uri, epochs

    def __call__(self, trial_id: str, result: dict) -> bool:
        clock = clock_of(self.study_uri)
        return clock is not None and clock.stops_trial(result, self.epochs)

    def stop_all(self) -> bool:
        clock = clock_of(self.study_uri)
        return clock is not None and clock.stops_all()
