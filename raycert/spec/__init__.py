"""Spec files: the presets that ``raycert train`` and ``raycert study`` start from, a study's
search space and its settings, validated whole (Ray- and Optuna-free).

Modules, one line each:
- ``file``: ``presets/<dataset>.toml`` read and checked (``SpecFile``), ``load_preset``,
  ``load_study_spec`` (``StudySpec``: what a study searches and how long), ``parse_targets``;
- ``search``: the ``[search.<field>]`` tables (``SearchParam``: float, int or categorical).
"""

from raycert.spec.file import (
    PRESETS,
    PRESETS_DIR,
    StudySpec,
    load_preset,
    load_study_spec,
    parse_targets,
)
from raycert.spec.search import CategoricalParam, FloatParam, IntParam, SearchParam

__all__ = [
    "PRESETS",
    "PRESETS_DIR",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "SearchParam",
    "StudySpec",
    "load_preset",
    "load_study_spec",
    "parse_targets",
]
