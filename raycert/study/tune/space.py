"""A study's search space as an Optuna define-by-run function: the method first, then the knobs
that method reads, so no trial carries a dimension its method ignores.

Ray Tune's ``OptunaSearch`` takes a callable ``space``: it runs it on each new Optuna trial and
passes the values it drew (through the trial's ``suggest_*`` calls) as the trial's config. A
study of several methods draws ``method`` from its categorical; a trial whose method may train
at adaptive radii draws ``adaptive`` next where it is searched, and the radius search's knobs
only when the answer is yes (``raycert.spec.study.StudySpec.knobs`` decides what a trial
carries). A known point (a recipe, a start, a promotion, a polish) is an enqueued trial: the
same calls return its values, and a value for a knob its method does not carry is ignored.

``MethodSpace`` is plain data (names and Optuna distributions, no spec and no closure), so it
pickles with the searcher into Tune's state and ``--resume`` draws from the same space. Each
name has one distribution, whichever method carries it, as Optuna requires of a study.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from raycert.spec import SearchParam, StudySpec


def distribution(param: SearchParam) -> BaseDistribution:
    """The Optuna distribution of one search parameter."""
    if param.type == "categorical":
        return CategoricalDistribution(list(param.choices))
    if param.type == "int":
        return IntDistribution(int(param.low), int(param.high), step=param.step)
    return FloatDistribution(param.low, param.high, log=param.type == "log-float")


class MethodSpace:
    """The define-by-run space of a study (``StudySpec``): called with an Optuna trial, it draws
    the trial's method (when the study searches several), its ``adaptive`` (where searched for
    that method), then every knob the method carries at that choice; it returns None (the
    drawn values are the config)."""

    def __init__(self, spec: StudySpec) -> None:
        self.methods = spec.study_methods
        self.distributions: dict[str, BaseDistribution] = {}
        if len(self.methods) > 1:
            self.distributions["method"] = CategoricalDistribution(list(self.methods))
        # Per method: the names drawn off and at adaptive radii, and its radii when not drawn.
        self.carried: dict[str, dict[bool, tuple[str, ...]]] = {}
        self.adaptive: dict[str, bool] = {}
        for method in self.methods:
            self.adaptive[method] = spec.adaptive_default(method)
            self.carried[method] = {}
            for adaptive in (False, True):
                knobs = spec.knobs(method, adaptive)
                self.carried[method][adaptive] = tuple(p.name for p in knobs)
                self.distributions.update((p.name, distribution(p)) for p in knobs)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any] | None:
        several = len(self.methods) > 1
        method = self._draw(trial, "method") if several else self.methods[0]
        carried = self.carried[method]
        adaptive = self.adaptive[method]
        if "adaptive" in carried[False]:
            adaptive = self._draw(trial, "adaptive")
        for name in carried[adaptive]:
            if name != "adaptive":
                self._draw(trial, name)
        return None

    def _draw(self, trial: optuna.Trial, name: str) -> Any:
        """``name``'s value for ``trial`` through the trial's ``suggest_*`` method of its
        distribution (Tune records what those calls return)."""
        dist = self.distributions[name]
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(name, list(dist.choices))
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        assert isinstance(dist, FloatDistribution)
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)

    def __repr__(self) -> str:
        return f"MethodSpace({', '.join(self.methods)}: {', '.join(self.distributions)})"
