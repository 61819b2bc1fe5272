"""Optuna searching through Ray Tune, with the accuracy target as a real Optuna constraint.

Ray Tune's ``OptunaSearch`` tells Optuna only the objective values; Optuna 5 reads constraints
from ``trial.set_constraint`` (feasible iff every value <= 0), and its samplers then keep
infeasible trials out of the good group. ``ConstrainedOptunaSearch`` sets that constraint from
each finished trial's ``clean_acc``, so an infeasible trial never wins and no penalty mixes
accuracy into the ACR objective.

What to start next (a known point, a promotion to a longer rung, a new configuration, a polish
of the front, a wait or the end) is ``raycert.study.policy.search.next_step``'s decision; this
shell turns Optuna's trials into the policy's records, reads the budget's clock and acts on
the step: it enqueues a promotion or a polish as an Optuna trial whose user attributes
(``fidelity``, ``promoted_from``, ``polished_from``, ``init_from``) the journal keeps across
``--resume``, and a new configuration of a named method (``raycert.study.policy.racing``) as an
Optuna trial with that method fixed, whose other parameters the sampler draws.

Its space is a define-by-run ``MethodSpace`` (``raycert.study.tune.space``): each trial draws its
method first, then that method's knobs. Tune pickles the searcher, that space included, into
the experiment state that ``--resume`` restores (so both live in importable modules). Its
pickle holds no path: the Optuna study and its journal are
left out and attached again, on first use, to the journal of the running study
(``raycert.study.tune.running``), so a copied or moved study folder resumes on its own journal.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raycert.errors import UserError
from raycert.study.policy.search import (
    Finish,
    Polish,
    Promote,
    SearchPlan,
    TrialRecord,
    Wait,
    next_step,
)
from raycert.study.tune.running import current
from raycert.study.tune.state import back_up_tune_state
from raycert.study.tune.trial import INIT_FROM
from raycert.studyfolder import FIDELITY, POLISHED_FROM, journal_storage, read_trials

CONSTRAINT_KEY = "min_acc"
PROMOTED_FROM = "promoted_from"  # user attribute: the number of the trial re-run longer
STATES = {TrialState.WAITING: "waiting", TrialState.COMPLETE: "complete"}


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna ``clean_acc >= min_value`` as a constraint.

    A trial stopped early (``final`` false: scheduler stop or divergence) is PRUNED, one with a
    non-finite objective FAILs; every Optuna trial records its Tune ``trial_id``, its
    ``fidelity`` and, when it completes, its ``clean_acc`` and ``acr``.

    ``plan`` holds the search's fixed settings (rungs, the whole run's epochs, the polish's
    length). A multi-fidelity trial's config carries its ``fidelity``; a polish trial's its
    ``polished_from`` and ``init_from`` (its parent's checkpoint, relative to the study folder).
    """

    def __init__(
        self,
        *args: Any,
        min_value: float,
        constraint_metric: str = "clean_acc",
        final_key: str = "final",
        plan: SearchPlan | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._cmin, self._cmetric, self._final_key = min_value, constraint_metric, final_key
        self._plan = plan or SearchPlan(min_target=min_value)
        self._ot_trial_ids: dict[str, int] = {}  # set while detached (unpickled, not attached)
        metric = self._metric if isinstance(self._metric, list) else [self._metric]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(metric)

    def __getstate__(self) -> dict[str, Any]:
        """The searcher without its Optuna study and journal (paths of wherever the folder
        was): each Optuna trial of a Tune trial is kept by its id."""
        state = self.__dict__.copy()
        ids = {tid: t._trial_id for tid, t in self._ot_trials.items()}
        state.update(_storage=None, _ot_study=None, _ot_trials={})
        state["_ot_trial_ids"] = {**self._ot_trial_ids, **ids}
        return state

    def _attach(self) -> None:
        """Open the running study's journal and Optuna's live trials on it, once unpickled."""
        if self._ot_study is not None:
            return
        self._storage = journal_storage(current().store)
        self._ot_study = optuna.load_study(
            study_name=self._study_name, storage=self._storage, sampler=self._sampler
        )
        # A trial missing from the journal went with a damaged tail cut on resume.
        known = {t._trial_id for t in self._ot_study.get_trials(deepcopy=False)}
        self._ot_trials = {
            tid: optuna.Trial(self._ot_study, ot_id)
            for tid, ot_id in self._ot_trial_ids.items()
            if ot_id in known
        }
        self._ot_trial_ids = {}

    def save(self, checkpoint_path: str) -> None:
        """Pickle the searcher as ``__getstate__`` leaves it (no path in it)."""
        with open(checkpoint_path, "wb") as stream:
            pickle.dump(self.__getstate__(), stream)

    def suggest(self, trial_id: str) -> dict | str | None:
        self._attach()
        if trial_id in self._ot_trials:  # asked again (Tune retries a suggestion it deferred)
            return self._config(trial_id, super().suggest(trial_id))
        trials = self._ot_study.get_trials(deepcopy=False)
        step = next_step(
            [_record(t) for t in trials],
            self._plan,
            current().clock,
            running=bool(set(self._ot_trials) - set(self._completed_trials)),
            checkpoints=lambda: _checkpoints(self._cmin),
        )
        if isinstance(step, Finish):
            return Searcher.FINISHED
        if isinstance(step, Wait):
            return None
        fidelity = self._plan.top
        if isinstance(step, Promote):
            fidelity = step.fidelity
            attrs = {PROMOTED_FROM: step.run.number, FIDELITY: fidelity}
            self._ot_study.enqueue_trial(step.run.params, user_attrs=attrs)
        elif isinstance(step, Polish):
            attrs = {POLISHED_FROM: step.run.number, INIT_FROM: step.checkpoint, FIDELITY: fidelity}
            self._ot_study.enqueue_trial(step.run.params, user_attrs=attrs)
        else:
            fidelity = step.fidelity
            if step.method is not None:  # the sampler draws that method's knobs
                self._ot_study.enqueue_trial(
                    {"method": step.method}, user_attrs={FIDELITY: fidelity}
                )
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("tune_trial_id", trial_id)
        # An enqueued trial (a promotion, a polish; one a killed driver enqueued) keeps its own.
        ot_trial.set_user_attr(FIDELITY, ot_trial.user_attrs.get(FIDELITY, fidelity))
        return self._config(trial_id, config)

    def _config(self, trial_id: str, config: dict) -> dict:
        """The trial's config: the sampled parameters, its fidelity when there are rungs, and
        its parent when it is a polish trial."""
        attrs = self._ot_trials[trial_id].user_attrs
        if POLISHED_FROM in attrs:
            config = {**config, POLISHED_FROM: attrs[POLISHED_FROM], INIT_FROM: attrs[INIT_FROM]}
        if len(self._plan.rungs) == 1:
            return config
        return {**config, FIDELITY: attrs.get(FIDELITY, self._plan.top)}

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Save as Tune does, and back up Tune's just-written experiment state (see
        ``raycert.study.tune.state.back_up_tune_state``) so a driver killed mid-sync can
        resume."""
        super().save_to_dir(checkpoint_dir, session_str)
        back_up_tune_state(current().store, checkpoint_dir, session_str)

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's snapshot on the running study's journal, then trust the journal for
        trials finished after it (a killed driver may have told Optuna more than its last
        snapshot of this searcher)."""
        with open(checkpoint_path, "rb") as stream:
            self.__dict__.update(pickle.load(stream))
        self._attach()
        states = {t.number: t.state for t in self._ot_study.get_trials(deepcopy=False)}
        for trial_id, ot_trial in self._ot_trials.items():
            if states.get(ot_trial.number, TrialState.RUNNING).is_finished():
                self._completed_trials.add(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self._attach()
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:  # its Optuna trial went with a damaged journal's tail
            self._completed_trials.add(trial_id)
            return
        if trial_id not in self._completed_trials and result and not error:
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
                clock = current().clock
                if clock is not None:
                    clock.observe(result)
        super().on_trial_complete(trial_id, result=result, error=error)


def _record(trial: FrozenTrial) -> TrialRecord:
    """An Optuna trial as the search policy reads it."""
    attrs = trial.user_attrs
    return TrialRecord(
        number=trial.number,
        state=STATES.get(trial.state, "other"),
        params=trial.params,
        fidelity=attrs.get(FIDELITY),
        clean_acc=attrs.get("clean_acc"),
        acr=attrs.get("acr"),
        promoted_from=attrs.get(PROMOTED_FROM),
        polished_from=attrs.get(POLISHED_FROM),
    )


def _checkpoints(min_target: float) -> dict[int, str]:
    """Each finished trial's checkpoint (by number) as the running study's trials table
    records it (relative to the study folder)."""
    try:
        table = read_trials(current().store, [min_target])
    except UserError:
        return {}
    return {
        int(number): str(run_dir)
        for number, run_dir in zip(table["number"], table["run_dir"], strict=True)
        if isinstance(run_dir, str) and run_dir
    }
