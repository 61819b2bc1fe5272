"""The study folder's contract: the table's rules (completed, feasible, Pareto, winner), records
that read back as written, one-line errors for unreadable files, and the Pareto sweep against
brute force (ties, duplicates, NaN)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pydantic
import pytest
from helpers import assert_one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

import raycert
from raycert.errors import UserError
from raycert.studyfolder import (
    JOURNAL,
    PARETO,
    RESULTS_JSON,
    STUDY_JSON,
    TEST_METRICS_JSON,
    TEST_RADII_CSV,
    TRIALS_CSV,
    TRIALS_PARQUET,
    Hardware,
    StudyDir,
    StudyMeta,
    TrialResources,
    TrialRow,
    choose,
    feasible_column,
    is_completed,
    pareto_mask,
    read_meta,
    read_results,
    read_test_metrics,
    read_test_radii,
    read_trials,
    trial_counts,
    trial_row,
    trials_table,
    unmet,
    won,
    write_meta,
    write_results,
    write_test,
    write_trials,
)


def brute_force(values: np.ndarray) -> np.ndarray:
    result = []
    for i, p in enumerate(values):
        if np.isnan(p).any():
            result.append(False)
            continue
        dominated = any(
            not np.isnan(q).any() and (q >= p).all() and (q > p).any()
            for j, q in enumerate(values)
            if j != i
        )
        result.append(not dominated)
    return np.array(result, dtype=bool)


# Few distinct values make ties and duplicates common; NaN appears too.
coordinate = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, float("nan")])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate), min_size=0, max_size=30))
def test_two_objectives_match_brute_force(points):
    values = np.array(points, dtype=float).reshape(-1, 2)
    np.testing.assert_array_equal(pareto_mask(values), brute_force(values))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=1, max_size=20))
def test_three_objectives_match_brute_force(points):
    values = np.array(points, dtype=float)
    np.testing.assert_array_equal(pareto_mask(values), brute_force(values))


def test_random_continuous_points_match_brute_force():
    rng = np.random.default_rng(0)
    values = rng.random((400, 2))
    np.testing.assert_array_equal(pareto_mask(values), brute_force(values))


# ---------------------------------------------------------------------------------------------
# The trials table: completed, feasible, Pareto and the winner, one rule each
# ---------------------------------------------------------------------------------------------


def row(number: int, status: str, clean_acc: float | None, acr: float | None, **params) -> TrialRow:
    last = {"clean_acc": clean_acc, "acr": acr, "final": status != "pruned"}
    if status == "diverged":
        last["diverged"] = True
    errored = status == "error"
    config = {"lr": 0.01, **params}
    return trial_row(number, f"t{number}", errored, last, config, list(config), f"/runs/t{number}")


ROWS = [
    row(0, "completed", 0.90, 0.10),
    row(1, "completed", 0.85, 0.20),  # the best ACR at 0.8
    row(2, "completed", 0.70, 0.35),  # the best ACR overall, infeasible at 0.8
    row(3, "pruned", 0.95, 0.40),  # better than all, but stopped early
    row(4, "completed", 0.80, 0.05),  # dominated
    row(5, "completed", float("nan"), 0.50),  # no accuracy: not completed
    row(6, "error", None, None),
    row(7, "diverged", 0.10, 0.0),
]


def test_the_table_marks_completed_feasible_and_pareto_trials():
    table = trials_table(list(reversed(ROWS)), [0.8, 0.95])
    assert list(table["number"]) == list(range(8))
    assert list(table["status"]) == [
        "completed",
        "completed",
        "completed",
        "pruned",
        "completed",
        "completed",
        "error",
        "diverged",
    ]
    assert list(is_completed(table)) == [True, True, True, False, True, False, False, False]
    assert list(table[feasible_column(0.8)]) == [
        True,
        True,
        False,
        False,
        True,
        False,
        False,
        False,
    ]
    assert not table[feasible_column(0.95)].any()
    assert list(table[PARETO]) == [True, True, True, False, False, False, False, False]
    assert table.columns[-1] == "run_dir" and "param.lr" in table


def test_the_winner_is_the_best_feasible_acr_else_the_closest_completed_trial():
    table = trials_table(ROWS, [0.8, 0.95])
    winner, closest = choose(table, 0.8)
    assert closest is None and winner.trial_id == "t1" and winner.metrics["acr"] == 0.2
    assert winner.params == {"lr": 0.01} and winner.run_dir == "/runs/t1"
    result = won(0.8, winner)
    assert result.met and result.val["clean_acc"] == 0.85 and result.test is None
    winner, closest = choose(table, 0.95)
    assert winner is None and closest.trial_id == "t0"  # t3 is more accurate but pruned
    assert unmet(0.95, closest).closest.val["clean_acc"] == 0.9
    nothing = trials_table(ROWS[3:4] + ROWS[6:], [0.8])
    assert choose(nothing, 0.8) == (None, None)
    assert unmet(0.8, None).closest is None
    assert trial_counts(table) == {"completed": 5, "pruned": 1, "diverged": 1, "error": 1}


def test_a_table_row_reads_back_as_it_was_written():
    table = trials_table(ROWS, [0.8])
    for written in ROWS[:5]:
        read = TrialRow.from_columns(table[table["number"] == written.number].iloc[0].to_dict())
        assert read.params == written.params and read.run_dir == written.run_dir
        assert read.metrics["clean_acc"] == written.metrics["clean_acc"]
        assert read.metrics["acr"] == written.metrics["acr"]


# ---------------------------------------------------------------------------------------------
# The records: what one side writes the other reads, on a path and behind a URI
# ---------------------------------------------------------------------------------------------


def meta(**changes) -> StudyMeta:
    fields = dict(
        name="s",
        dataset="synthetic",
        preset="smoke",
        method="acert",
        targets=[0.8, 0.95],
        trials_requested=8,
        seed=0,
        search_space={"lr": {"type": "log-float", "low": 1e-4, "high": 1e-2}},
        asha=True,
        base_config={"epochs": 2, "cert_eps": [0.05]},
        acr_cap=0.1,
        eps_list=[0.05],
        storage="runs",
        address="local",
        spec_file="spec.toml",
        versions={"raycert": "0.1.0"},
        started="2026-01-01T00:00:00+00:00",
        finished=None,
        status="running",
        trial_counts={},
    )
    return StudyMeta(**{**fields, **changes})


@pytest.mark.parametrize("scheme", ["", "file://"], ids=["path", "uri"])
def test_records_read_back_as_written(tmp_path: Path, scheme: str):
    store = StudyDir(f"{scheme}{tmp_path}", "s")
    written = meta(
        status="finished",
        trial_counts={"completed": 7, "pruned": 1, "diverged": 0, "error": 0},
        resources=TrialResources(1.0, 0.5),
        concurrency=2,
        hardware=Hardware(1, 2.0, 1.0),
    )
    write_meta(store, written)
    assert read_meta(store) == written
    assert read_results(store) is None
    table = trials_table(ROWS, written.targets)
    results = [won(0.8, choose(table, 0.8)[0]), unmet(0.95, choose(table, 0.95)[1])]
    results[0].test = {"clean_acc": 0.8, "acr": 0.1, "n": 3, "cert_acc@0.05": 0.5}
    results[0].run_dir = "chosen/0.8"
    write_results(store, results)
    assert read_results(store) == results
    write_test(store, "chosen/0.8", results[0].test, "radius,correct\n0.1,1\n0.0,0\n0.2,1\n")
    assert read_test_metrics(store, "chosen/0.8") == results[0].test
    radii = read_test_radii(store, "chosen/0.8")
    assert radii.radius.tolist() == [0.1, 0.0, 0.2] and radii.correct.tolist() == [1, 0, 1]
    assert radii.stages == {} and radii.pgd is None  # a CSV of an older study
    write_trials(store, table)
    read = read_trials(store, written.targets)
    assert read.drop(columns="run_dir").equals(table.drop(columns="run_dir"))


def test_test_radii_read_back_per_stage_and_pgd_from_the_real_csv(tmp_path: Path):
    """``Certificates.to_csv`` writes what the study stores; every radius reads back exactly."""
    import torch

    from raycert.cert.certify import Certificates

    certs = Certificates(
        labels=torch.tensor([0, 1, 2, 1]),
        predictions=torch.tensor([0, 0, 2, 1]),
        radii=torch.tensor([0.25, 0.0, 0.1, 0.4], dtype=torch.float64),
        cap=0.4,
        verifier="ibp+crown-ibp",
        verified_by=torch.tensor([1, -1, 0, 0]),
        stage_radii={
            "ibp": torch.tensor([1 / 30, 0.0, 0.1, 0.4], dtype=torch.float64),
            "crown-ibp": torch.tensor([0.25, 0.0, 0.1, 0.4], dtype=torch.float64),
        },
        empirical_radii=torch.tensor([0.3 + 1e-9, 0.0, 0.1 + 2 / 255, np.inf]).double(),
    )
    store = StudyDir(tmp_path, "s")
    write_test(store, "chosen/0.8", {"clean_acc": 0.75}, certs.to_csv())
    radii = read_test_radii(store, "chosen/0.8")
    assert radii.radius.tolist() == certs.radii.tolist()
    assert radii.correct.tolist() == [True, False, True, True]
    assert list(radii.stages) == ["ibp", "crown-ibp"]  # in cascade order
    for name, stage in certs.stage_radii.items():
        assert radii.stages[name].tolist() == stage.tolist()
    assert list(radii.cascades()) == ["ibp", "ibp+crown-ibp"]
    assert radii.cascades()["ibp+crown-ibp"] is radii.stages["crown-ibp"]
    assert radii.pgd.tolist() == certs.empirical_radii.tolist() and radii.pgd[3] == np.inf

    certs.empirical_radii = None  # certified without --attack: no pgd_radius column
    write_test(store, "chosen/0.8", {"clean_acc": 0.75}, certs.to_csv())
    assert read_test_radii(store, "chosen/0.8").pgd is None


@pytest.mark.parametrize(
    ("column", "value"),
    [("pgd_radius", "-0.1"), ("pgd_radius", "nan"), ("radius_ibp", "inf"), ("radius", "x")],
)
def test_a_bad_radius_column_is_one_line_naming_it(tmp_path: Path, column: str, value: str):
    store = StudyDir(tmp_path, "s")
    rows = {"radius": "0.1", "correct": "1", "radius_ibp": "0.05", "pgd_radius": "0.2"}
    rows[column] = value
    write_test(store, "c", {}, f"{','.join(rows)}\n{','.join(rows.values())}\n")
    with pytest.raises(UserError) as exc:
        read_test_radii(store, "c")
    assert_one_line_error(exc, f"{tmp_path}/s/c/{TEST_RADII_CSV}", f"column {column!r} needs")


CORRUPT = {
    "not json": (b'{"name": "s", ', "not JSON"),
    "a list": (b"[]", "json: Input should be an object"),
    "no trial_counts": (None, "lacks trial_counts"),
    "bad targets": (None, "targets.1: Input should be a valid number"),
    "bad hardware": (None, "hardware.nodes: Input should be a valid integer"),
}


@pytest.mark.parametrize("case", CORRUPT, ids=list(CORRUPT))
def test_an_unreadable_study_json_is_one_line_naming_it(tmp_path: Path, case: str):
    store = StudyDir(tmp_path, "s")
    data, message = CORRUPT[case]
    if data is None:
        good = json.loads(pydantic.TypeAdapter(StudyMeta).dump_json(meta()))
        if case == "no trial_counts":
            del good["trial_counts"]
        elif case == "bad targets":
            good["targets"] = [0.8, "high"]
        else:
            good["hardware"] = {"nodes": "two", "cpus": 2, "gpus": 0}
        data = json.dumps(good).encode()
    store.write_bytes(STUDY_JSON, data)
    with pytest.raises(UserError) as exc:
        read_meta(store)
    assert_one_line_error(exc, f"{tmp_path}/s/{STUDY_JSON}", message)


def test_a_missing_study_json_is_one_line(tmp_path: Path):
    with pytest.raises(UserError) as exc:
        read_meta(StudyDir(tmp_path, "none"))
    assert_one_line_error(exc, f"{tmp_path}/none/{STUDY_JSON} is missing")


# ---------------------------------------------------------------------------------------------
# One home: the journal opens in studyfolder only; the report reads through it only
# ---------------------------------------------------------------------------------------------

PACKAGE = Path(raycert.__file__).parent
FILE_NAMES = (STUDY_JSON, RESULTS_JSON, TRIALS_PARQUET, TRIALS_CSV, JOURNAL)
FILE_NAMES += (TEST_RADII_CSV, TEST_METRICS_JSON)


def test_the_journal_is_opened_only_by_studyfolder():
    opening = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"JournalStorage|JournalFileBackend", path.read_text())
    )
    assert opening == ["studyfolder/journal.py"]


def _code_strings(tree: ast.AST) -> list[str]:
    """String literals that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


@pytest.mark.parametrize("module", ["page", "figures", "reading"])
def test_the_report_reads_study_files_only_through_studyfolder(module: str):
    tree = ast.parse((PACKAGE / "report" / f"{module}.py").read_text())
    named = [s for s in _code_strings(tree) for name in FILE_NAMES if name in s]
    assert named == [], "use the raycert.studyfolder constants"
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    readers = {"read_parquet", "read_csv", "read_text", "read_bytes", "loads", "load", "open"}
    assert calls & readers == set(), "read study files with raycert.studyfolder's readers"
