"""Optuna searching through Ray Tune, with the accuracy target as a real Optuna constraint.

Ray Tune's ``OptunaSearch`` tells Optuna only the objective values; Optuna 5 reads constraints
from ``trial.set_constraint`` (feasible iff every value <= 0), and its samplers then keep
infeasible trials out of the good group. ``ConstrainedOptunaSearch`` sets that constraint from
each finished trial's ``clean_acc``, so an infeasible trial never wins and no penalty mixes
accuracy into the ACR objective. It also keeps to the study's wall-clock budget
(``raycert.study.budget``): it starts no trial that would not finish within it. It lives in its
own importable module because Tune pickles it into the experiment state that ``--resume``
restores.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raycert.study import budget
from raycert.study.spec import SearchParam
from raycert.study.tune_state import back_up_tune_state

CONSTRAINT_KEY = "min_acc"


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna ``clean_acc >= min_value`` as a constraint.

    A trial stopped early (``final`` false: scheduler stop or divergence) is PRUNED, one with a
    non-finite objective FAILs; every Optuna trial records its Tune ``trial_id``. Lives in an
    importable module because Tune pickles it into its experiment state for ``--resume``.
    """

    def __init__(
        self,
        *args: Any,
        min_value: float,
        constraint_metric: str = "clean_acc",
        final_key: str = "final",
        study_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._cmin, self._cmetric, self._final_key = min_value, constraint_metric, final_key
        self._study_uri = study_uri
        metric = self._metric if isinstance(self._metric, list) else [self._metric]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(metric)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._study_uri is not None and not budget.room_for_another_trial(self._study_uri):
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return config

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Save as Tune does, and back up Tune's just-written experiment state (see
        ``raycert.study.tune_state.back_up_tune_state``) so a driver killed mid-sync can resume."""
        super().save_to_dir(checkpoint_dir, session_str)
        if self._study_uri is not None:
            back_up_tune_state(self._study_uri, checkpoint_dir, session_str)

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's snapshot, then trust the journal for trials finished after it (a
        killed driver may have told Optuna more than its last snapshot of this searcher)."""
        super().restore(checkpoint_path)
        states = {t.number: t.state for t in self._ot_study.get_trials(deepcopy=False)}
        for trial_id, ot_trial in self._ot_trials.items():
            if states.get(ot_trial.number, TrialState.RUNNING).is_finished():
                self._completed_trials.add(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials and result and not error:
            metrics = self._metric if isinstance(self._metric, list) else [self._metric]
            values = [result.get(m) for m in (*metrics, self._cmetric)]
            if not result.get(self._final_key, True):
                result = None
            elif not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                result, error = None, True
            else:
                ot_trial.set_constraint(CONSTRAINT_KEY, self._cmin - float(values[-1]))
                if self._study_uri is not None:
                    budget.observe(self._study_uri, result)
        super().on_trial_complete(trial_id, result=result, error=error)


def distributions(params: tuple[SearchParam, ...]) -> dict[str, Any]:
    """Optuna distributions of the search space."""
    space: dict[str, Any] = {}
    for p in params:
        if p.type == "categorical":
            space[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
        elif p.type == "int":
            space[p.name] = optuna.distributions.IntDistribution(
                int(p.low), int(p.high), step=p.step
            )
        else:
            log = p.type == "log-float"
            space[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=log)
    return space
