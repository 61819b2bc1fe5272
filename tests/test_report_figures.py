"""The report's figures and importances: fronts, the ACR-as-area identity of the certified
accuracy curves, a curve per verifier stage beside PGD's, parameter importances, and a real tiny
study (attacked by PGD) drawn end to end."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import copy_study, metadata_cell
from studyfiles import MET_TARGET, SEARCH_SPACE, TARGETS, write_journal, write_study

from raycert.cert.verifiers import DEFAULT_VERIFIER, parse_verifier
from raycert.errors import UserError
from raycert.report.figures import (
    cert_acc_curve,
    curve_area,
    curves_figure,
    front_figure,
    pgd_acc_curve,
)
from raycert.report.page import build_report
from raycert.report.reading import load_study
from raycert.study.tune.run import StudyRequest, run_study
from raycert.studyfolder import JOURNAL, StudyDir, read_trials, write_trials


def test_both_studies_overlay_on_one_front(studies: list[Path]):
    loaded = [load_study(d) for d in studies]
    names = [trace.name for trace in front_figure(loaded).data]
    for study in ("acert-mnist", "ibp-mnist"):
        assert [n.split(": ")[1] for n in names if n.startswith(study + ":")] == [
            "feasible",
            "infeasible",
            "pruned / failed",
            "Pareto front",
        ]
    front = next(t for t in front_figure(loaded[:1]).data if t.name.endswith("Pareto front"))
    trials = pd.read_parquet(studies[0] / "trials.parquet")
    assert sorted(front.x) == sorted(trials.loc[trials["pareto"], "clean_acc"])
    assert front.line.shape == "vh"


def pareto_trace(study_dir: Path):
    traces = front_figure([load_study(study_dir)]).data
    return next(t for t in traces if t.name.endswith("Pareto front"))


def test_the_front_is_the_stored_pareto_column(studies: list[Path], tmp_path: Path):
    """The report draws the ``pareto`` column the study stored; it does not recompute it."""
    study = copy_study(studies[0], tmp_path)
    store = StudyDir.at(study)
    trials = read_trials(store, list(TARGETS))
    on_front = trials.index[trials["pareto"]]
    dominated = trials.index[(trials["status"] == "completed") & ~trials["pareto"]]
    trials.loc[on_front[0], "pareto"] = False
    trials.loc[dominated[0], "pareto"] = True
    write_trials(store, trials)
    front = pareto_trace(study)
    expected = trials.loc[trials["pareto"]].sort_values(["clean_acc", "acr"])
    assert list(front.x) == list(expected["clean_acc"]) and list(front.y) == list(expected["acr"])


def test_area_under_the_certified_accuracy_curve_is_the_acr(studies: list[Path]):
    study = studies[0]
    radii = pd.read_csv(study / "chosen" / f"{MET_TARGET:g}" / "test_radii.csv")
    results = json.loads((study / "results.json").read_text())["targets"]
    test_acr = next(r for r in results if r["met"])["test"]["acr"]
    cap = json.loads((study / "study.json").read_text())["acr_cap"]

    (trace,) = [t for t in curves_figure([load_study(study)]).data if t.line.dash == "solid"]
    eps, accuracy = np.asarray(trace.x), np.asarray(trace.y)
    radius, correct = radii["radius"].to_numpy(), radii["correct"].to_numpy(dtype=bool)
    assert trace.line.shape == "vh" and eps[0] == 0 and eps[-1] == cap
    # each point is the certified accuracy at its eps, straight from the CSV
    expected = [(correct & (radius >= e)).mean() for e in eps]
    np.testing.assert_allclose(accuracy, expected, rtol=0, atol=1e-15)
    assert accuracy[0] == pytest.approx(correct.mean())
    # a vh step holds its right end's value: the area is the mean capped radius, i.e. the ACR
    area = float(np.sum(np.diff(eps) * accuracy[1:]))
    assert area == pytest.approx(np.minimum(radius, cap).mean(), rel=1e-12)
    assert area == pytest.approx(test_acr, rel=1e-12)
    assert curve_area(eps, accuracy) == pytest.approx(area, rel=1e-12)


def test_cert_acc_curve_of_a_hand_made_case():
    eps, accuracy = cert_acc_curve(
        np.array([0.0, 0.1, 0.1, 0.3, 0.5]), np.array([False, True, True, True, True]), cap=0.4
    )
    np.testing.assert_allclose(eps, [0.0, 0.1, 0.3, 0.4])
    np.testing.assert_allclose(accuracy, [0.8, 0.8, 0.4, 0.2])
    assert curve_area(eps, accuracy) == pytest.approx((0.1 + 0.1 + 0.3 + 0.4) / 5)


def test_each_model_has_a_curve_per_verifier_stage_and_pgd_when_attacked(studies: list[Path]):
    """acert-mnist stores radii per stage and PGD's; ibp-mnist, an older study, one radius."""
    traces = curves_figure([load_study(d) for d in studies]).data
    model = f"acert-mnist @ {MET_TARGET:g}"
    assert [(t.name.split(" (")[0], t.line.dash, t.line.shape) for t in traces] == [
        (f"{model}: ibp+crown-ibp", "solid", "vh"),
        (f"{model}: ibp", "dash", "vh"),
        (f"{model}: PGD", "dot", "hv"),
        (f"ibp-mnist @ {MET_TARGET:g}: certified", "solid", "vh"),
    ]
    assert (
        len({t.line.color for t in traces[:3]}) == 1
        and traces[3].line.color != traces[0].line.color
    )
    # Every point from the CSV the study wrote: certified at eps = correct and radius >= eps;
    # PGD at eps = correct and pgd_radius > eps (a flip was found at the pgd radius itself).
    csv = pd.read_csv(studies[0] / "chosen" / f"{MET_TARGET:g}" / "test_radii.csv")
    correct = csv["correct"].to_numpy(dtype=bool)
    columns = {0: "radius_crown-ibp", 1: "radius_ibp"}
    for index, column in columns.items():
        radius = csv[column].to_numpy()
        expected = [(correct & (radius >= e)).mean() for e in traces[index].x]
        np.testing.assert_allclose(traces[index].y, expected, rtol=0, atol=1e-15)
    pgd = csv["pgd_radius"].to_numpy()
    pgd_eps, pgd_acc = np.asarray(traces[2].x), np.asarray(traces[2].y)
    np.testing.assert_allclose(pgd_acc, [(correct & (pgd > e)).mean() for e in pgd_eps], atol=1e-15)
    assert np.isinf(pgd).any() and pgd_eps[-1] == 0.4 and pgd_acc[-1] == np.isinf(pgd).mean()
    # The attack bounds the guarantee from above: PGD accuracy >= certified accuracy everywhere.
    cascade = csv["radius"].to_numpy()
    assert (pgd_acc >= [(correct & (cascade >= e)).mean() for e in pgd_eps]).all()
    assert (csv["radius_ibp"] <= csv["radius"]).all() and (csv["radius_ibp"] < csv["radius"]).any()


def test_pgd_acc_curve_of_a_hand_made_case():
    """Strict: a sample whose flip PGD found at 0.1 no longer counts at eps = 0.1."""
    pgd = np.array([0.0, 0.1, 0.1, 0.3, 0.4, np.inf])
    eps, accuracy = pgd_acc_curve(pgd, np.array([False, True, True, True, True, True]), cap=0.4)
    np.testing.assert_allclose(eps, [0.0, 0.1, 0.3, 0.4])
    np.testing.assert_allclose(accuracy, [5 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_importances_from_the_journal_else_from_the_trials_table(studies: list[Path], tmp_path):
    study = load_study(studies[0])
    assert set(study.importances) == set(SEARCH_SPACE)
    assert sum(study.importances.values()) == pytest.approx(1.0)
    assert "optuna.journal" in study.importance_note

    broken = copy_study(studies[0], tmp_path)
    (broken / JOURNAL).write_text('{"op_code": 0, "worker_id": broken\n')
    from_table = load_study(broken)
    assert set(from_table.importances) == set(SEARCH_SPACE)
    assert "trials table" in from_table.importance_note
    assert "optuna.journal not used" in from_table.importance_note

    (broken / JOURNAL).unlink()
    assert "no optuna.journal" in load_study(broken).importance_note


def _with_journal(study: Path, tmp_path: Path, objectives: tuple[str, ...] | None) -> Path:
    copy = copy_study(study, tmp_path / str(objectives))
    (copy / JOURNAL).unlink()
    write_journal(copy, copy.name, read_trials(StudyDir.at(copy), list(TARGETS)), objectives)
    return copy


def test_the_acr_objective_is_found_by_its_name(studies: list[Path], tmp_path: Path):
    """Importances rank ACR's objective wherever the journal's metric names put it."""
    named = load_study(studies[0])
    reordered = load_study(_with_journal(studies[0], tmp_path, ("acr", "clean_acc")))
    assert "on optuna.journal" in reordered.importance_note
    assert reordered.importances == named.importances
    by_accuracy = load_study(_with_journal(studies[0], tmp_path, ("clean_acc",)))
    assert "optuna.journal not used (it names no acr objective)" in by_accuracy.importance_note
    unnamed = load_study(_with_journal(studies[0], tmp_path, None))
    assert "optuna.journal not used (it names no acr objective)" in unnamed.importance_note


def test_too_few_trials_give_no_importances_but_a_page(tmp_path):
    study = write_study(tmp_path, n_trials=4)  # trials 0-2 completed, 3 pruned
    loaded = load_study(study)
    assert loaded.importances == {} and "need 4 completed trials" in loaded.importance_note
    text = build_report([study], tmp_path / "few.html").read_text()
    assert 'data-figure="importance"' not in text and "need 4 completed trials" in text


def test_report_of_a_real_tiny_study(ray_local, tmp_path: Path):
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.8, 0.999),
        preset="smoke",
        trials=3,
        concurrency=2,
        storage=str(tmp_path),
        attack=True,
    )
    result = run_study(request, progress=False)
    assert result.status == "finished" and result.meta.attack
    study_dir = Path(result.study_dir)
    text = build_report([study_dir], tmp_path / "real.html").read_text()

    rows = re.findall(r'<tr class="(met|unmet)" data-target="([0-9.]+)">', text)
    assert [float(t) for _, t in rows] == [r.target for r in result.targets]
    study = load_study(study_dir)
    met = [c for c in study.chosen if c.result.met and c.radii is not None]
    assert met and 'data-figure="front"' in text
    # Per chosen model: IBP alone and the cascade, then PGD (the study ran with attack on).
    assert text.count("(ACR ") == 2 * len(met) and text.count(": PGD") == len(met)
    for chosen in met:
        eps, accuracy = cert_acc_curve(chosen.radii, chosen.correct, study.acr_cap)
        assert curve_area(eps, accuracy) == pytest.approx(chosen.result.test["acr"], rel=1e-12)
        # PGD's empirical radius bounds the certified one from above, sample by sample.
        csv = pd.read_csv(study_dir / chosen.result.run_dir / "test_radii.csv")
        stages = [f"radius_{name}" for name in parse_verifier(DEFAULT_VERIFIER)]
        assert list(csv.columns[-3:]) == [*stages, "pgd_radius"]
        assert (csv["pgd_radius"] >= csv["radius"]).all()
        assert (csv.loc[csv["correct"] == 1, "pgd_radius"] > 0).all()
        assert set(chosen.result.test) >= {"pgd_acc@0.05", "cert_acc@0.05"}
        assert chosen.result.test["pgd_acc@0.05"] >= chosen.result.test["cert_acc@0.05"]
    # Resuming keeps the attack setting; asking for another one is refused.
    again = run_study(dataclasses.replace(request, resume=True, attack=None), progress=False)
    assert again.meta.attack and json.loads((study_dir / "study.json").read_text())["attack"]
    with pytest.raises(UserError, match="attack was True, now False"):
        run_study(dataclasses.replace(request, resume=True, attack=False), progress=False)

    # The counts the study wrote to study.json are the ones on the page, and they add up.
    counts = json.loads((study_dir / "study.json").read_text())["trial_counts"]
    assert counts == result.meta.trial_counts and counts["completed"] + counts["pruned"] > 0
    listed = ", ".join(f"{status} {n}" for status, n in counts.items())
    assert metadata_cell(text, "trials") == f"3 recorded: {listed}"
    # The front drawn is the Pareto column the study stored.
    table = pd.read_parquet(study_dir / "trials.parquet")
    stored = table[table["pareto"]].sort_values(["clean_acc", "acr"])
    assert len(stored) and list(pareto_trace(study_dir).x) == list(stored["clean_acc"])
