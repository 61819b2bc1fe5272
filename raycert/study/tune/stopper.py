"""The budget's Tune stopper: it reads the running study's clock
(``raycert.study.tune.running``); every rule it applies is
``raycert.study.policy.budget.Clock``'s."""

from __future__ import annotations

from ray.tune.stopper import Stopper

from raycert.study.tune.running import current


class BudgetStopper(Stopper):
    """Stops the trials as the study's budget says (``Clock.stops_trial``, ``Clock.stops_all``);
    ``epochs`` is every trial's length."""

    def __init__(self, epochs: int | None = None) -> None:
        self.epochs = epochs

    def __call__(self, trial_id: str, result: dict) -> bool:
        clock = current().clock
        return clock is not None and clock.stops_trial(result, self.epochs)

    def stop_all(self) -> bool:
        clock = current().clock
        return clock is not None and clock.stops_all()
