"""Optuna searching through Ray Tune, with the accuracy target as a real Optuna constraint.

Ray Tune's ``OptunaSearch`` tells Optuna only the objective values; Optuna 5 reads constraints
from ``trial.set_constraint`` (feasible iff every value <= 0), and its samplers then keep
infeasible trials out of the good group. ``ConstrainedOptunaSearch`` sets that constraint from
each finished trial's ``clean_acc``, so an infeasible trial never wins and no penalty mixes
accuracy into the ACR objective. It also keeps to the study's wall-clock budget
(``raycert.study.budget``): it starts no trial that would not finish within it. With several
rungs it runs a multi-fidelity search over the length of the whole run
(``raycert.study.fidelity``): it decides each new trial's fidelity, and re-runs the best short
trials longer. Once no whole trial fits the budget, it polishes the front's models
(``raycert.study.polish``) for as long as such short fine-tunings fit. It lives in its own
importable module because Tune pickles it into the experiment state that ``--resume``
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

from raycert.errors import UserError
from raycert.study import budget
from raycert.study.fidelity import (
    PROMOTED_FROM,
    RungRun,
    accuracy_margin,
    next_promotion,
)
from raycert.study.polish import INIT_FROM, WholeRun, next_parent
from raycert.study.spec import SearchParam
from raycert.study.tune_state import back_up_tune_state
from raycert.studyfolder import FIDELITY, POLISHED_FROM, StudyDir, read_trials
from raycert.training.schedule import shortened_epochs

CONSTRAINT_KEY = "min_acc"


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna ``clean_acc >= min_value`` as a constraint.

    A trial stopped early (``final`` false: scheduler stop or divergence) is PRUNED, one with a
    non-finite objective FAILs; every Optuna trial records its Tune ``trial_id``, its
    ``fidelity`` and, when it completes, its ``clean_acc`` and ``acr``.

    ``rungs`` (increasing fidelities ending at 1) and ``eta`` set the multi-fidelity search;
    a trial's config then carries its ``fidelity``. ``epochs`` is the full run's length (to
    judge what fits the budget) and ``val_size`` the validation images behind a trial's
    accuracy (its noise margin when promoting). The trials of ``points_to_evaluate`` (the
    recipe and the spec's starts) run at the top rung. ``polish_epochs`` (with a budget): once
    no whole trial fits, polish trials of that many epochs fine-tune the front's runs; their
    config carries ``polished_from`` and ``init_from``.
    """

    def __init__(
        self,
        *args: Any,
        min_value: float,
        constraint_metric: str = "clean_acc",
        final_key: str = "final",
        study_uri: str | None = None,
        rungs: tuple[float, ...] = (1.0,),
        eta: int = 3,
        epochs: int | None = None,
        val_size: int = 0,
        polish_epochs: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._cmin, self._cmetric, self._final_key = min_value, constraint_metric, final_key
        self._study_uri = study_uri
        self._rungs, self._eta, self._epochs = tuple(rungs), eta, epochs
        self._polish_epochs = polish_epochs
        self._margin = accuracy_margin(min_value, val_size) if val_size else 0.0
        metric = self._metric if isinstance(self._metric, list) else [self._metric]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(metric)

    def suggest(self, trial_id: str) -> dict | str | None:
        if trial_id in self._ot_trials:  # asked again (Tune retries a suggestion it deferred)
            return self._config(trial_id, super().suggest(trial_id))
        waiting = self._ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        promotion = None if waiting else self._promotion()
        if promotion is not None and not self._fits(promotion[1]):
            promotion = None  # too long for what is left: explore at the lowest rung instead
        fidelity = self._rungs[-1] if waiting else self._rungs[0]  # waiting: a known point
        if promotion is not None:
            run, fidelity = promotion
            attrs = {PROMOTED_FROM: run.number, FIDELITY: fidelity}
            self._ot_study.enqueue_trial(run.params, user_attrs=attrs)
        elif not self._fits(fidelity):
            return self._polish(trial_id)
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("tune_trial_id", trial_id)
        # A promotion enqueued by a driver killed before it asked keeps its own fidelity.
        ot_trial.set_user_attr(FIDELITY, ot_trial.user_attrs.get(FIDELITY, fidelity))
        return self._config(trial_id, config)

    def _config(self, trial_id: str, config: dict) -> dict:
        """The trial's config: the sampled parameters, its fidelity when there are rungs, and
        its parent when it is a polish trial."""
        attrs = self._ot_trials[trial_id].user_attrs
        if POLISHED_FROM in attrs:
            config = {**config, POLISHED_FROM: attrs[POLISHED_FROM], INIT_FROM: attrs[INIT_FROM]}
        if len(self._rungs) == 1:
            return config
        return {**config, FIDELITY: attrs.get(FIDELITY, self._rungs[-1])}

    def _polish(self, trial_id: str) -> dict | str | None:
        """A polish trial of the front's next run if one fits in the budget; else ``None`` (ask
        again) while a trial runs whose end may make room for one or need one; else
        ``FINISHED``."""
        if self._polish_epochs is None or self._study_uri is None:
            return Searcher.FINISHED
        trials = self._ot_study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if any(POLISHED_FROM not in t.user_attrs for t in waiting):
            return Searcher.FINISHED  # a known point left: Optuna would hand it out first
        running = set(self._ot_trials) - set(self._completed_trials)
        if not budget.room_for_another_trial(self._study_uri, self._polish_epochs):
            # A running trial may yet end as a cheaper winner and shrink the budget's reserve.
            return None if running else Searcher.FINISHED
        if not waiting:  # else a driver killed after enqueueing one: ask that
            parent = self._next_parent(trials)
            if parent is None:
                return None if running else Searcher.FINISHED
            run, location = parent
            attrs = {POLISHED_FROM: run.number, INIT_FROM: location, FIDELITY: self._rungs[-1]}
            self._ot_study.enqueue_trial(run.params, user_attrs=attrs)
        config = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return self._config(trial_id, config)

    def _next_parent(self, trials: list) -> tuple[WholeRun, str] | None:
        """The completed whole run to polish next (``polish.next_parent``) and its checkpoint
        from the trials table; a run whose checkpoint the table lacks is passed over."""
        polished = {t.user_attrs[POLISHED_FROM] for t in trials if POLISHED_FROM in t.user_attrs}
        runs = [
            WholeRun(t.number, t.user_attrs["clean_acc"], t.user_attrs["acr"], t.params)
            for t in trials
            if t.state == TrialState.COMPLETE
            and POLISHED_FROM not in t.user_attrs
            and {"clean_acc", "acr"} <= t.user_attrs.keys()
            and math.isclose(t.user_attrs.get(FIDELITY, self._rungs[-1]), self._rungs[-1])
        ]
        locations: dict[int, str] | None = None  # read only when a run is due
        while (run := next_parent(runs, polished)) is not None:
            if locations is None:
                locations = _checkpoints(self._study_uri, self._cmin)
            if run.number in locations:
                return run, locations[run.number]
            polished.add(run.number)
        return None

    def _fits(self, fidelity: float) -> bool:
        """Whether a trial at ``fidelity`` started now ends before the budget's search does."""
        if self._study_uri is None:
            return True
        if len(self._rungs) == 1 or self._epochs is None:  # one length: the longest trial's
            return budget.room_for_another_trial(self._study_uri)
        epochs = shortened_epochs(self._epochs, fidelity)
        return budget.room_for_another_trial(self._study_uri, epochs)

    def _promotion(self) -> tuple[RungRun, float] | None:
        """The completed run to re-run at the next rung now, and that rung (see ``fidelity``)."""
        if len(self._rungs) == 1:
            return None
        completed, promoted = [], set()
        for t in self._ot_study.get_trials(deepcopy=False):
            attrs = t.user_attrs
            if PROMOTED_FROM in attrs:
                promoted.add(attrs[PROMOTED_FROM])
            if t.state == TrialState.COMPLETE and {FIDELITY, "clean_acc", "acr"} <= attrs.keys():
                run = RungRun(t.number, attrs[FIDELITY], attrs["clean_acc"], attrs["acr"], t.params)
                completed.append(run)
        return next_promotion(completed, promoted, self._rungs, self._eta, self._cmin, self._margin)

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
                ot_trial.set_user_attr("clean_acc", float(values[-1]))
                ot_trial.set_user_attr("acr", float(result["acr"]))
                if self._study_uri is not None:
                    budget.observe(self._study_uri, result)
        super().on_trial_complete(trial_id, result=result, error=error)


def _checkpoints(study_uri: str, min_target: float) -> dict[int, str]:
    """Each finished trial's checkpoint (by number) as the trials table records it."""
    try:
        table = read_trials(StudyDir.at(study_uri), [min_target])
    except UserError:
        return {}
    return {
        int(number): str(run_dir)
        for number, run_dir in zip(table["number"], table["run_dir"], strict=True)
        if isinstance(run_dir, str) and run_dir
    }


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
