"""Spec files: the presets that ``raycert train`` and ``raycert study`` start from, a study's
search space and its settings, validated whole (Ray- and Optuna-free).

Modules, one line each:
- ``file``: ``presets/<dataset>.toml`` read and checked (``SpecFile``), ``load_preset``,
  ``parse_targets``;
- ``search``: the search tables' parameters (``SearchParam``: float, int or categorical);
- ``methods``: the training methods' tables (``[methods.<method>]``: own knobs and recipe) and
  which knobs a trial of each method carries (``reads``);
- ``study``: what a study searches and where it starts (``StudySpec``, ``load_study_spec``).
"""

from raycert.spec.file import PRESETS, PRESETS_DIR, load_preset, parse_targets
from raycert.spec.methods import STUDY_METHODS
from raycert.spec.search import CategoricalParam, FloatParam, IntParam, SearchParam
from raycert.spec.study import StudySpec, load_study_spec

__all__ = [
    "PRESETS",
    "PRESETS_DIR",
    "STUDY_METHODS",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "SearchParam",
    "StudySpec",
    "load_study_spec",
    "load_preset",
    "parse_targets",
]
