"""benchmarks/method_search.py's pieces that need no hour of CPU: both strategies plan valid
MNIST quick studies at the same budget and targets, one of ACERT alone and one of every method
(its recipes first)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from raycert.spec import STUDY_METHODS
from raycert.study.policy.plan import plan

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports benchmarks/search.py beside it
_spec = importlib.util.spec_from_file_location("method_search", BENCHMARKS / "method_search.py")
method_search = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(method_search)


def test_both_strategies_plan_the_quick_study_at_one_budget(tmp_path):
    planned = {}
    for strategy in ("acert", "all"):
        request = method_search.request_for(strategy, 1, "20m", tmp_path, None)
        assert not request.resume
        planned[strategy] = plan(request)
    (acert, acert_meta), (every, every_meta) = planned["acert"], planned["all"]
    assert acert.study_methods == ("acert",) and every.study_methods == STUDY_METHODS
    assert acert_meta.budget_s == every_meta.budget_s == 20 * 60
    assert acert_meta.targets == every_meta.targets == [0.95, 0.98]
    assert (acert_meta.name, every_meta.name) == ("acert-seed1", "all-seed1")
    assert [p["method"] for p in every.known_points[:5]] == list(STUDY_METHODS)
    assert acert.known_points[0] == {
        k: v for k, v in every.known_points[0].items() if k != "method"
    }
