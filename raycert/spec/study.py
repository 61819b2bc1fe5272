"""What a study of a spec file searches, and where it starts: ``StudySpec``.

A study searches one training method or several (``methods``). A trial of a method carries the
knobs that method reads (``knobs``: ``[search]``'s and its own ``[methods.<method>.search]``,
``raycert.spec.methods``), and when the study searches several, the ``method`` itself, a
categorical drawn first. ``search_space`` is that space as study.json records it: one entry per
parameter name, in the trials table's column order, each naming the ``methods`` whose trials
carry it where that is not all of them.

The study starts from known points (``known_points``): each method's recipe (the preset's
values of the knobs that method carries, then its ``recipe`` table), then the spec's starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raycert.errors import UserError
from raycert.spec.file import PRESETS, PresetStudy, preset_config, read_spec, spec_file
from raycert.spec.methods import reads
from raycert.spec.search import SearchParam
from raycert.training.config import TrainConfig
from raycert.training.methods import METHOD_SPECS


@dataclass(frozen=True)
class StudySpec:
    """What a study searches and how long: the preset's config, the search space, default
    accuracy targets and trial budget, and how it spends less on weak trials (ASHA, or the
    ``rungs`` of a multi-fidelity search with its ``eta``).

    ``params`` are the ``[search]`` tables, ``method_params`` each method's own knobs and
    ``recipes`` each method's recipe table. ``methods`` are the methods the study searches
    (``()``: the preset's alone; ``raycert.study.policy.plan`` sets them from ``--method``).
    """

    path: Path
    preset: str
    base: TrainConfig
    params: tuple[SearchParam, ...]
    targets: tuple[float, ...]
    trials: int | None
    budget_s: float | None = None
    asha: bool = False
    grace_period: int = 1
    rungs: tuple[float, ...] = (1.0,)
    eta: int = 3
    sampler: str = "tpe"
    recipe_first: bool = True
    starts: tuple[dict[str, Any], ...] = ()
    polish: dict[str, Any] | None = None
    method_params: dict[str, tuple[SearchParam, ...]] = field(default_factory=dict)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: tuple[str, ...] = ()

    @property
    def study_methods(self) -> tuple[str, ...]:
        """The methods searched, the recipe's first."""
        return self.methods or (self.base.method,)

    def knobs(self, method: str, adaptive: bool) -> tuple[SearchParam, ...]:
        """The searched parameters a trial of ``method`` carries at (``adaptive``) or off
        adaptive radii, in declaration order: ``[search]``'s that it reads, then its own."""
        own = self.method_params.get(method, ())
        return tuple(p for p in (*self.params, *own) if reads(method, p.name, adaptive))

    def _names(self, method: str) -> set[str]:
        """The names of every knob a trial of ``method`` may carry (at adaptive radii)."""
        return {param.name for param in self.knobs(method, True)}

    def adaptive_default(self, method: str) -> bool:
        """Whether a trial of ``method`` trains at adaptive radii when the search leaves it to
        the base config (the method's choice where the base config's ``adaptive`` is None)."""
        return METHOD_SPECS[method].is_adaptive(self.base.adaptive)

    @property
    def search_space(self) -> dict[str, Any]:
        """The search space as study.json records it: ``method`` (when searched), then each
        parameter some trial carries, with its bounds or choices and, where only some of the
        searched methods carry it, those ``methods``."""
        methods = self.study_methods
        space: dict[str, Any] = {}
        if len(methods) > 1:
            space["method"] = {"type": "categorical", "choices": list(methods)}
        for param in (*self.params, *(p for m in methods for p in self.method_params.get(m, ()))):
            carried = [m for m in methods if param.name in self._names(m)]
            if not carried:
                continue
            entry = param.model_dump(mode="json", exclude={"name"})
            if carried != list(methods):
                entry["methods"] = carried
            space[param.name] = entry
        return space

    def recipe_of(self, method: str) -> dict[str, Any]:
        """``method``'s known-good point: the method (when searched), the base config's value
        of each knob the method carries that the search space holds (a knob whose value lies
        outside is sampled; ``adaptive`` is the method's default), then its recipe table."""
        recipe = self.recipes.get(method, {})
        adaptive = recipe.get("adaptive", self.adaptive_default(method))
        point: dict[str, Any] = {"method": method} if len(self.study_methods) > 1 else {}
        for param in self.knobs(method, adaptive):
            value = adaptive if param.name == "adaptive" else getattr(self.base, param.name)
            if param.holds(value):
                point[param.name] = value
        return {**point, **recipe}

    @property
    def recipe(self) -> dict[str, Any]:
        """The first method's known-good point (``recipe_of``): the preset's own configuration
        where the study searches the preset's method."""
        return self.recipe_of(self.study_methods[0])

    @property
    def known_points(self) -> list[dict[str, Any]]:
        """What the study tries first, in order (Optuna's enqueued trials): each method's
        recipe, then each start (its method's recipe with the start's fields changed; a start
        of a method the study does not search is left out); none without ``recipe_first``.
        A knob in none of them is sampled, one a trial does not carry is ignored."""
        if not self.recipe_first:
            return []
        methods = self.study_methods
        points = [self.recipe_of(method) for method in methods]
        for start in self.starts:
            method = start.get("method", methods[0])
            if method in methods:
                changes = {k: v for k, v in start.items() if k != "method"}
                points.append({**self.recipe_of(method), **changes})
        return [point for point in points if point]


def load_study_spec(dataset: str, preset: str, spec_path: str | Path | None = None) -> StudySpec:
    """The preset, search space and study settings of ``presets/<dataset>.toml`` (or
    ``spec_path``) for a study of ``preset``; the file must search something."""
    path = spec_file(dataset, spec_path)
    spec = read_spec(dataset, path)
    base = preset_config(spec, path, preset)
    if not spec.search and not any(table.search for table in spec.methods.values()):
        raise UserError(f"{path} has no [search] table: a study needs hyperparameters to search")
    settings = getattr(spec.study, preset) if preset in PRESETS else PresetStudy()
    ramp_end = min(base.warmup_epochs + base.ramp_epochs, base.epochs)
    if settings.asha and settings.grace_period < ramp_end:
        raise UserError(
            f"{path}: study.{preset}.grace_period {settings.grace_period} lets ASHA rank trials "
            f"before their radius ramp ends at epoch {ramp_end}; set it to {ramp_end} or more"
        )
    return StudySpec(
        path=path,
        preset=preset,
        base=base,
        params=tuple(spec.search.values()),
        targets=spec.study.targets if settings.targets is None else settings.targets,
        trials=settings.trials,
        budget_s=settings.budget,
        asha=settings.asha,
        grace_period=settings.grace_period,
        rungs=settings.rungs,
        eta=settings.eta,
        sampler=settings.sampler,
        recipe_first=settings.recipe_first,
        starts=settings.starts,
        polish=settings.polish,
        method_params={m: tuple(t.search.values()) for m, t in spec.methods.items()},
        recipes={m: dict(t.recipe) for m, t in spec.methods.items()},
    )
