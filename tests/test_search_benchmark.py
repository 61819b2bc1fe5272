"""benchmarks/search.py's pieces that need no hour of CPU: each strategy's spec file is a valid
MNIST spec with the settings the benchmark claims, and the hypervolume is the dominated area."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from raycert.spec import load_study_spec

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "search.py"
_spec = importlib.util.spec_from_file_location("search_benchmark", SCRIPT)
search = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search)


@pytest.mark.parametrize(
    ("strategy", "sampler", "recipe_first", "budget_s", "epochs", "searched"),
    [
        ("raycert", "tpe", True, 300.0, 12, {"max_eps", "kappa", "reg_weight", "lr"}),
        ("rungs", "tpe", True, 300.0, 12, {"max_eps", "kappa", "reg_weight", "lr"}),
        ("tpe", "tpe", False, 300.0, 12, {"max_eps", "kappa", "reg_weight", "lr"}),
        ("random", "random", False, 300.0, 12, {"max_eps", "kappa", "reg_weight", "lr"}),
        ("old", "tpe", False, None, 5, {"max_eps", "kappa", "lr"}),
    ],
)
def test_each_strategy_is_a_valid_spec_with_its_settings(
    tmp_path, strategy, sampler, recipe_first, budget_s, epochs, searched
):
    path = tmp_path / "mnist.toml"
    path.write_text(search.spec_text(strategy, "5m"))
    spec = load_study_spec("mnist", "quick", path)
    assert (spec.sampler, spec.recipe_first, spec.budget_s) == (sampler, recipe_first, budget_s)
    assert spec.base.epochs == epochs and set(spec.search_space) == searched  # ACERT's knobs
    assert spec.rungs == ((0.333, 1.0) if strategy == "rungs" else (1.0,))
    ours = strategy in ("raycert", "rungs")
    assert spec.polish == ({"kappa": 0.95, "lr": 2e-4} if ours else None)
    if strategy == "old":
        assert spec.trials == 12 and spec.base.train_limit == 15000
        assert spec.search_space["kappa"]["high"] == 0.5


def test_the_hypervolume_is_the_area_dominated_above_the_reference():
    points = [(0.95, 0.8), (0.92, 0.9), (0.89, 1.0), (0.93, 0.5)]  # the last two add nothing
    assert search.hypervolume(points) == pytest.approx(0.05 * 0.8 + 0.02 * 0.1)
    assert search.hypervolume([]) == 0.0
