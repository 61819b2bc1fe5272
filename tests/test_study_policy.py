"""The study's policy core, with plain function calls: the budget clock, the multi-fidelity
rungs, the polish order and the searcher's next step. No Ray, no Optuna: a subprocess that
blocks both imports every policy module."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raycert.study.policy import budget
from raycert.study.policy.budget import Clock
from raycert.study.policy.fidelity import (
    RungRun,
    accuracy_margin,
    next_promotion,
    promotion_order,
    shortened,
)
from raycert.study.policy.polish import WholeRun, next_parent
from raycert.study.policy.racing import MethodRun, live_methods, next_method
from raycert.study.policy.search import (
    Finish,
    Polish,
    Promote,
    Sample,
    SearchPlan,
    TrialRecord,
    Wait,
    next_step,
)
from raycert.studyfolder import pareto_mask, pareto_ranks
from raycert.training.config import TrainConfig
from raycert.training.schedule import ramp_steps, scheduled_eps

POLICY = Path(__file__).parents[1] / "raycert" / "study" / "policy"


def clock(total_s: float = 100.0, elapsed_s: float = 0.0, **settings) -> Clock:
    """A budget clock ``elapsed_s`` into a study of ``total_s`` (one target, a 1-image test)."""
    settings = {"targets": (0.5,), "test_size": 1, **settings}
    return Clock(total_s, time.monotonic() - elapsed_s, **settings)


def test_the_policy_imports_neither_ray_nor_optuna():
    modules = sorted(f"raycert.study.policy.{p.stem}" for p in POLICY.glob("*.py"))
    script = f"""
import importlib, importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "optuna") or name.startswith("raycert.study.tune"):
            raise ImportError(f"the study policy imported {{name}}")

sys.meta_path.insert(0, Block())
for module in {modules!r}:
    importlib.import_module(module)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "optuna"))
print(json.dumps(loaded))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
    assert "raycert.study.policy.search" in modules and "raycert.study.policy.budget" in modules


# The budget clock.


def test_past_the_deadline_only_a_trial_that_ends_within_the_slack_runs_on():
    budget_clock = clock(elapsed_s=101.0)  # with no reserve, the search ended a second ago
    budget_clock.reserve_s = 0.0
    nearly_done = {"epoch": 11, "time_total_s": 55.0}  # 5 s to go: within 8 s of slack
    slow = {"epoch": 11, "time_total_s": 110.0}  # 10 s to go
    assert not budget_clock.stops_trial(nearly_done, 12)  # no trial completed: nothing stops
    budget_clock.runs.append((12, 60.0))
    assert not budget_clock.stops_trial(nearly_done, 12) and budget_clock.stops_trial(slow, 12)
    assert budget_clock.stops_trial({"epoch": 12, "time_total_s": 60.0}, 12)  # no pace left
    assert budget_clock.stops_trial({"epoch": 3, "time_total_s": 30.0, "epochs": 4}, 12)
    assert not budget_clock.stops_all()
    budget_clock.started -= 8.0  # now 9 s past the search's end: every trial stops
    assert budget_clock.stops_all()


def test_a_first_completion_past_the_deadline_moves_the_searchs_end_to_it():
    budget_clock = clock(elapsed_s=130.0)  # the search ended 30 s ago (reserve 0)
    budget_clock.reserve_s = 0.0
    budget_clock.observe({"epoch": 12, "time_total_s": 125.0})  # the first, 30 s late
    assert budget_clock.search_left() == pytest.approx(0.0, abs=0.5)
    assert not budget_clock.stops_all(), "its neighbour, as far along, may still finish"
    assert not budget_clock.stops_trial({"epoch": 11, "time_total_s": 66.0}, 12)  # in the slack
    assert not budget_clock.fits()
    budget_clock.observe({"epoch": 12, "time_total_s": 130.0})  # a second moves nothing
    assert budget_clock.search_left() == pytest.approx(0.0, abs=0.5)


def test_the_clock_judges_a_trial_by_its_length():
    budget_clock = clock(total_s=1000.0, targets=(0.9,))
    assert budget_clock.trial_seconds(4) == 0.0 and budget_clock.fits(12)
    budget_clock.observe({"epoch": 12, "time_total_s": 360.0})
    budget_clock.observe({"epoch": 4, "time_total_s": 150.0})
    assert budget_clock.trial_seconds(12) == 360.0 and budget_clock.trial_seconds(4) == 150.0
    assert budget_clock.trial_seconds(6) == pytest.approx(6 * 150.0 / 4)  # the slowest pace
    assert budget_clock.trial_seconds() == 360.0 and budget_clock.completed == 2
    budget_clock.started -= 1000.0 - budget_clock.reserve_s - 200.0  # 200 s of search left
    assert budget_clock.fits(4) and not budget_clock.fits(12)


def test_the_reserve_is_the_test_certification_of_each_targets_winner_so_far():
    per_run = budget.FINAL_CERT_SAFETY * 200  # seconds per probed second per image
    default = budget.RESERVE_SHARE * 1000.0

    def completes(budget_clock: Clock, clean_acc: float, acr: float, per_image: float) -> float:
        metrics = {"clean_acc": clean_acc, "acr": acr, "final_cert_s_per_image": per_image}
        budget_clock.observe({"epoch": 12, "time_total_s": 360.0, **metrics})
        return budget_clock.reserve_s

    one_slot = clock(total_s=1000.0, targets=(0.9, 0.95), test_size=200)
    assert one_slot.reserve_s == default
    assert completes(one_slot, 0.96, 0.20, 0.5) == pytest.approx(0.5 * per_run)  # wins both
    # A robust run wins both targets now: the costly accuracy end would not be certified.
    assert completes(one_slot, 0.952, 0.34, 0.1) == default
    assert completes(one_slot, 0.93, 0.36, 0.9) == pytest.approx((0.1 + 0.9) * per_run)
    # Each winner's split in two shards, one per trial slot: half the time.
    two_slots = dataclasses.replace(one_slot, concurrency=2, finals=list(one_slot.finals))
    assert completes(two_slots, 0.80, 0.39, 0.4) == pytest.approx((0.1 + 0.9) / 2 * per_run)
    assert completes(one_slot, 0.99, 0.10, 90.0) == pytest.approx((0.1 + 0.9) * per_run)  # no win
    assert completes(one_slot, 0.951, 0.39, 9.0) == 0.5 * 1000.0  # at most half the budget


def test_a_trial_without_its_own_probe_is_priced_by_its_last_validation_pass():
    budget_clock = clock(total_s=1000.0, test_size=4000)
    last = {"epoch": 4, "time_total_s": 60.0, "clean_acc": 0.9, "acr": 0.1, "eval_seconds": 2.0}
    budget_clock.observe(last)
    assert budget_clock.finals == [], "no eval_n: nothing to price by"
    budget_clock.observe({**last, "eval_n": 100})
    per_image = 2.0 / 100 * budget.FINAL_CERT_COST
    assert [final.cert_s_per_image for final in budget_clock.finals] == [pytest.approx(per_image)]
    expected = per_image * budget.FINAL_CERT_SAFETY * 4000  # above the default reserve of 100 s
    assert budget_clock.reserve_s == pytest.approx(expected) and expected > 100.0


# Multi-fidelity rungs and Pareto ranks.


def _run(number: int, clean_acc: float, acr: float, fidelity: float = 0.25) -> RungRun:
    return RungRun(number, fidelity, clean_acc, acr, {"kappa": number / 100})


def test_a_short_run_keeps_the_schedules_shape():
    full = TrainConfig(dataset="mnist", epochs=12, warmup_epochs=1, ramp_epochs=6, max_eps=0.4)
    short = shortened(full, 1 / 3)
    assert (short.epochs, short.warmup_epochs, short.ramp_epochs) == (4, 1 / 3, 2.0)
    for cfg, steps in ((full, 100), (short, 100)):
        start, end = ramp_steps(steps, cfg)
        total = cfg.epochs * steps
        assert (start / total, end / total) == pytest.approx((1 / 12, 7 / 12), abs=0.01)
        assert scheduled_eps(start, steps, cfg) == 0 < scheduled_eps(start + 1, steps, cfg)
        assert scheduled_eps(end - 1, steps, cfg) < 0.4 == scheduled_eps(end, steps, cfg)
    assert shortened(full, 1.0) is full
    with pytest.raises(ValueError, match="fidelity"):
        shortened(full, 0)


def test_pareto_ranks_peel_fronts_and_rank_0_is_the_pareto_mask():
    points = [(0.9, 0.1), (0.8, 0.3), (0.85, 0.05), (0.7, 0.2), (0.9, 0.1)]
    assert pareto_ranks(points) == [0, 0, 1, 1, 0]
    assert pareto_ranks([]) == [] and pareto_ranks([(0.5, float("nan")), (0.1, 0.1)]) == [-1, 0]
    rng = random.Random(1)
    for _ in range(100):
        cloud = [(rng.choice([0.8, 0.9, 1.0]), rng.random()) for _ in range(rng.randint(1, 12))]
        ranks = pareto_ranks(cloud)
        assert [rank == 0 for rank in ranks] == list(pareto_mask(cloud))
        for i, rank in enumerate(ranks):  # a point of rank r > 0 is dominated by one of r - 1
            if rank > 0:
                assert any(
                    ranks[j] == rank - 1
                    and cloud[j] != cloud[i]
                    and cloud[j][0] >= cloud[i][0]
                    and cloud[j][1] >= cloud[i][1]
                    for j in range(len(cloud))
                )


def test_an_infeasible_run_is_never_promoted_over_a_feasible_one():
    rng = random.Random(0)
    for _ in range(200):
        runs = [_run(i, rng.uniform(0.6, 1.0), rng.uniform(0, 1)) for i in range(rng.randint(1, 9))]
        order = promotion_order(runs, min_target=0.8, margin=0.02)
        meets = [r.clean_acc >= 0.78 for r in order]
        assert meets == sorted(meets, reverse=True), "a run below the target ranked first"
        meeting = [r for r in runs if r.clean_acc >= 0.78]
        ranks = pareto_ranks([(r.clean_acc, r.acr) for r in meeting])
        front = [r for r, rank in zip(meeting, ranks, strict=True) if rank == 0]
        assert order[0] in front or not meeting


def test_a_rung_promotes_its_best_third_once_each_and_the_highest_rung_first():
    rungs, eta = (0.25, 0.5, 1.0), 3
    runs = [_run(0, 0.95, 0.2), _run(1, 0.70, 0.9), _run(2, 0.90, 0.5)]
    assert next_promotion(runs[:2], set(), rungs, eta, 0.8, 0.0) is None  # fewer than eta
    run, fidelity = next_promotion(runs, set(), rungs, eta, 0.8, 0.0)
    assert (run.number, fidelity) == (2, 0.5), "the feasible run with the most ACR goes on"
    assert next_promotion(runs, {2}, rungs, eta, 0.8, 0.0) is None
    higher = [_run(10 + i, 0.9, 0.1 * i, fidelity=0.5) for i in range(3)]
    run, fidelity = next_promotion([*runs, *higher], {2}, rungs, eta, 0.8, 0.0)
    assert (run.number, fidelity) == (12, 1.0)


def test_the_accuracy_margin_is_two_standard_errors():
    assert accuracy_margin(0.95, 1000) == pytest.approx(2 * (0.95 * 0.05 / 1000) ** 0.5)
    assert accuracy_margin(0.95, 10_000) < accuracy_margin(0.95, 1000)


# Polishing.


def whole_run(number: int, clean_acc: float, acr: float) -> WholeRun:
    return WholeRun(number, clean_acc, acr, {"kappa": number / 10})


def test_the_front_is_polished_from_its_robust_end_each_run_once():
    points = [(0.95, 0.35), (0.97, 0.21), (0.94, 0.30), (0.96, 0.30)]
    runs = [whole_run(number, *point) for number, point in enumerate(points)]
    order, polished = [], set()
    while (parent := next_parent(runs, polished)) is not None:
        order.append(parent.number)
        polished.add(parent.number)
    assert order == [0, 3, 1]  # run 2 is dominated by run 0: never polished
    assert next_parent([], set()) is None


# The searcher's next step.


def done(number: int, clean_acc: float, acr: float, fidelity: float = 1.0, **attrs) -> TrialRecord:
    """A completed trial."""
    params = {"kappa": number / 10}
    return TrialRecord(number, "complete", params, fidelity, clean_acc, acr, **attrs)


def saved(*numbers: int):
    """A ``checkpoints`` reader that knows the runs ``numbers``, and counts its calls."""

    def read() -> dict[int, str]:
        read.calls += 1
        return {n: f"/runs/{n}" for n in numbers}

    read.calls = 0
    return read


ONE_RUNG = SearchPlan(min_target=0.9, epochs=12, polish_epochs=1)
RUNGS = SearchPlan(rungs=(1 / 3, 1.0), eta=3, min_target=0.9, epochs=12, polish_epochs=1)


def test_without_a_budget_the_search_samples_known_points_then_new_ones():
    waiting = TrialRecord(1, "waiting")
    step = next_step([done(0, 0.9, 0.3), waiting], RUNGS, None, running=True, checkpoints=saved())
    assert step == Sample(1.0), "a known point runs whole"
    step = next_step([done(0, 0.9, 0.3)], RUNGS, None, running=False, checkpoints=saved())
    assert step == Sample(1 / 3), "a new configuration starts on the lowest rung"


def test_a_rungs_best_third_is_promoted_when_it_fits():
    short = [done(n, 0.92, 0.1 * n, fidelity=1 / 3) for n in range(3)]
    step = next_step(short, RUNGS, clock(total_s=1000.0), running=False, checkpoints=saved())
    assert isinstance(step, Promote) and (step.run.number, step.fidelity) == (2, 1.0)
    promoted = [*short, TrialRecord(3, "other", fidelity=1.0, promoted_from=2)]
    step = next_step(promoted, RUNGS, clock(total_s=1000.0), running=True, checkpoints=saved())
    assert step == Sample(1 / 3), "each run is promoted once"
    # A whole run no longer fits, a short one does: explore instead of promoting.
    tight = clock(total_s=1000.0, runs=[(12, 600.0), (4, 100.0)])
    tight.started -= 1000 - tight.reserve_s - 300.0  # 300 s of search left
    assert next_step(short, RUNGS, tight, running=False, checkpoints=saved()) == Sample(1 / 3)


def test_once_nothing_whole_fits_the_front_is_polished_robust_end_first():
    trials = [done(0, 0.95, 0.35), done(1, 0.97, 0.21), done(2, 0.94, 0.30)]
    late = clock(total_s=1000.0, runs=[(12, 600.0)])
    late.started -= 1000 - late.reserve_s - 100.0  # 100 s left: a polish (50 s) fits
    read = saved(0, 1, 2)
    step = next_step(trials, ONE_RUNG, late, running=False, checkpoints=read)
    assert step == Polish(WholeRun(0, 0.95, 0.35, {"kappa": 0.0}), "/runs/0") and read.calls == 1
    polishing = [*trials, TrialRecord(3, "other", {"kappa": 0.0}, 1.0, polished_from=0)]
    step = next_step(polishing, ONE_RUNG, late, running=True, checkpoints=saved(1, 2))
    assert isinstance(step, Polish) and step.run.number == 1
    # A run whose checkpoint the table lacks is passed over; a polish is not polished again.
    both = [*polishing, done(4, 0.99, 0.1, polished_from=1)]
    step = next_step(both, ONE_RUNG, late, running=False, checkpoints=saved(1, 2))
    assert step == Finish(), "run 2 is dominated, run 4 a polish: nothing left"
    assert next_step(polishing, ONE_RUNG, late, running=True, checkpoints=saved(0)) == Wait()


def test_when_not_even_a_polish_fits_the_search_waits_for_running_trials_then_ends():
    trials = [done(0, 0.95, 0.35)]
    spent = clock(total_s=1000.0, runs=[(12, 600.0)], elapsed_s=950.0)
    read = saved(0)
    assert next_step(trials, ONE_RUNG, spent, running=True, checkpoints=read) == Wait()
    assert next_step(trials, ONE_RUNG, spent, running=False, checkpoints=read) == Finish()
    assert read.calls == 0, "the trials table is read only when a parent is due"
    no_polish = dataclasses.replace(ONE_RUNG, polish_epochs=None)
    assert next_step(trials, no_polish, spent, running=True, checkpoints=read) == Finish()


def test_a_waiting_known_point_that_does_not_fit_ends_the_search_but_a_waiting_polish_runs():
    late = clock(total_s=1000.0, runs=[(12, 600.0)])
    late.started -= 1000 - late.reserve_s - 100.0
    known = [done(0, 0.95, 0.35), TrialRecord(1, "waiting")]
    assert next_step(known, ONE_RUNG, late, running=False, checkpoints=saved(0)) == Finish()
    # A polish a killed driver enqueued before it asked: handed out, not enqueued again.
    enqueued = [done(0, 0.95, 0.35), TrialRecord(1, "waiting", polished_from=0)]
    assert next_step(enqueued, ONE_RUNG, late, running=False, checkpoints=saved(0)) == Sample(1.0)


def raced(number: int, method: str, clean_acc: float, acr: float, **attrs) -> TrialRecord:
    """A completed trial of ``method``."""
    return TrialRecord(number, "complete", {"method": method}, 1.0, clean_acc, acr, **attrs)


METHODS = SearchPlan(min_target=0.9, methods=("acert", "ibp", "sabr"))


def test_new_configurations_go_to_the_methods_on_the_front_the_least_tried_first():
    recipes = [
        raced(0, "acert", 0.95, 0.35),
        raced(1, "ibp", 0.94, 0.30),
        raced(2, "sabr", 0.97, 0.2),
    ]
    step = next_step(recipes, METHODS, None, running=False, checkpoints=saved())
    assert step == Sample(1.0, "acert"), "ibp is dominated by acert; acert comes first"
    tried = [*recipes, TrialRecord(3, "other", {"method": "acert", "kappa": 0.5})]
    step = next_step(tried, METHODS, None, running=True, checkpoints=saved())
    assert step == Sample(1.0, "sabr"), "the running acert trial counts as tried"
    # ibp, the least tried, is off the front; with a recipe on it, it is next.
    more = [*tried, raced(4, "sabr", 0.9, 0.1)]
    assert next_step(more, METHODS, None, running=True, checkpoints=saved()) == Sample(1.0, "acert")
    more[1] = raced(1, "ibp", 0.99, 0.05)
    assert next_step(more, METHODS, None, running=True, checkpoints=saved()) == Sample(1.0, "ibp")


def test_the_sampler_draws_the_method_until_every_method_has_a_run():
    started = [raced(0, "acert", 0.95, 0.35), TrialRecord(1, "other", {"method": "ibp"})]
    assert next_step(started, METHODS, None, running=True, checkpoints=saved()) == Sample(1.0)
    one = dataclasses.replace(METHODS, methods=("acert",))
    assert next_step(
        [raced(0, "acert", 0.95, 0.35)], one, None, running=False, checkpoints=saved()
    ) == Sample(1.0)
    waiting = [*started, raced(2, "sabr", 0.9, 0.1), TrialRecord(3, "waiting", {"method": "ibp"})]
    assert next_step(waiting, METHODS, None, running=True, checkpoints=saved()) == Sample(1.0), (
        "a known point first"
    )


def test_a_method_is_live_on_the_front_of_its_own_fidelity():
    # sabr's short run is dominated by acert's whole run, not by any run of its own rung.
    runs = [
        MethodRun("acert", 1.0, 0.95, 0.35),
        MethodRun("ibp", 1.0, 0.94, 0.3),
        MethodRun("sabr", 1 / 3, 0.9, 0.1),
    ]
    assert live_methods(("acert", "ibp", "sabr"), runs) == ("acert", "sabr")
    assert live_methods(("acert", "ibp", "sabr"), runs[:2]) is None, "sabr has no run yet"
    assert next_method(("acert", "ibp"), runs[:2], ["acert", "acert", "ibp"]) == "acert"
    assert next_method(("acert",), runs[:1], ["acert"]) is None
