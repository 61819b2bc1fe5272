"""Studies through real Ray Tune and Optuna on the session's local Ray cluster (2 CPUs and one
declared GPU that does not exist). Toy trainables stand in for the trainer where only the
search logic is under test; they still report through ``tune.report``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import ray
import ray.cloudpickle
from helpers import assert_one_line_error
from ray import tune
from studyruns import journal_study, toy, toy_request, toy_spec
from typer.testing import CliRunner

from raycert.cert.verifiers import DEFAULT_VERIFIER, parse_verifier
from raycert.cli import app
from raycert.data import load
from raycert.errors import UserError
from raycert.report.reading import load_study
from raycert.study.policy.plan import check_resumable, plan
from raycert.study.tune.run import StudyRequest, run_study
from raycert.study.tune.state import repair_tune_state
from raycert.studyfolder import TUNE_DIR, TUNE_STATE_BACKUP, StudyDir, pareto_mask

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

STUDY_KEYS = {
    "name",
    "dataset",
    "preset",
    "method",
    "targets",
    "trials_requested",
    "seed",
    "search_space",
    "base_config",
    "acr_cap",
    "eps_list",
    "storage",
    "address",
    "resources",
    "hardware",
    "versions",
    "started",
    "finished",
    "status",
    "trial_counts",
    "attack",
}
SMOKE_TRIALS = 4


# ---------------------------------------------------------------------------------------------
# A real study on the synthetic smoke preset: everything in the contract is on disk
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_study(ray_local, tmp_path_factory: pytest.TempPathFactory):
    storage = tmp_path_factory.mktemp("smoke") / "runs"
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.8, 0.999),
        preset="smoke",
        trials=SMOKE_TRIALS,
        concurrency=2,
        storage=str(storage),
        name="smoke",
    )
    result = run_study(request, progress=False)
    return request, result, storage / "smoke"


def test_a_smoke_study_writes_study_json(smoke_study):
    _, result, study_dir = smoke_study
    assert Path(result.study_dir) == study_dir
    meta = json.loads((study_dir / "study.json").read_text())
    assert set(meta) >= STUDY_KEYS
    assert meta["status"] == result.status == "finished"
    assert meta["targets"] == [0.8, 0.999] and meta["trials_requested"] == SMOKE_TRIALS
    assert meta["acr_cap"] == 0.1 and meta["eps_list"] == [0.05]
    assert set(meta["search_space"]) == {"max_eps", "kappa", "lr"}
    assert meta["base_config"]["dataset"] == "synthetic" and meta["method"] == "acert"
    # gpus "auto" on a cluster with one (declared) GPU: an equal share per concurrent trial.
    assert meta["resources"] == {"cpus_per_trial": 1.0, "gpus_per_trial": 0.5}
    assert meta["hardware"] == {"nodes": 1, "cpus": 2.0, "gpus": 1.0}
    assert set(meta["versions"]) == {"raycert", "ray", "optuna", "torch", "python"}
    assert meta["started"] <= meta["finished"]
    assert sum(meta["trial_counts"].values()) == SMOKE_TRIALS
    assert meta["attack"] is False  # PGD only when asked: it costs time


def test_a_smoke_study_writes_the_trials_table(smoke_study):
    _, _, study_dir = smoke_study
    table = pd.read_parquet(study_dir / "trials.parquet")
    csv = pd.read_csv(study_dir / "trials.csv")
    assert list(csv.columns) == list(table.columns) and len(csv) == len(table) == SMOKE_TRIALS
    expected = {
        "trial_id",
        "number",
        "status",
        "node",
        "seconds",
        "param.max_eps",
        "param.kappa",
        "param.lr",
        "clean_acc",
        "acr",
        "acr_cap",
        "acr_pct",
        "cert_acc@0.05",
        "epoch",
        "feasible@0.8",
        "feasible@0.999",
        "pareto",
        "run_dir",
    }
    assert expected <= set(table.columns)
    assert sorted(table["number"]) == list(range(SMOKE_TRIALS))
    assert table["trial_id"].is_unique and set(table["status"]) == {"completed"}
    assert (table["epoch"] == 2).all() and (table["device"] == "cpu").all()
    assert (table["param.max_eps"].between(0.02, 0.1)).all()
    assert np.allclose(table["acr_pct"], 100 * table["acr"] / 0.1)
    for target in ("0.8", "0.999"):
        assert (table[f"feasible@{target}"] == (table["clean_acc"] >= float(target))).all()
    front = pareto_mask(table[["clean_acc", "acr"]].to_numpy())
    assert (table["pareto"] == front).all()
    for run_dir in table["run_dir"]:  # relative to the study folder
        assert run_dir.startswith("tune/") and {"model.pt", "config.json", "metrics.jsonl"} <= {
            p.name for p in (study_dir / run_dir).iterdir()
        }


def test_a_smoke_study_chooses_certifies_and_copies_each_winner(smoke_study):
    _, result, study_dir = smoke_study
    table = pd.read_parquet(study_dir / "trials.parquet")
    entries = json.loads((study_dir / "results.json").read_text())["targets"]
    assert [e["target"] for e in entries] == [0.8, 0.999]
    for entry in entries:
        feasible = table[table["clean_acc"] >= entry["target"]]
        assert entry["met"] == (len(feasible) > 0)
        if not entry["met"]:
            closest = table.sort_values("clean_acc", ascending=False).iloc[0]
            assert entry["closest"]["trial_id"] == closest["trial_id"]
            assert entry["run_dir"] is None
            continue
        best = feasible.sort_values("acr", ascending=False).iloc[0]
        assert entry["trial_id"] == best["trial_id"] and entry["val"]["acr"] == best["acr"]
        assert set(entry["params"]) == {"max_eps", "kappa", "lr"}
        chosen = study_dir / entry["run_dir"]
        assert entry["run_dir"] == f"chosen/{entry['target']:g}"
        assert {"model.pt", "config.json", "test_metrics.json", "test_radii.csv"} <= {
            p.name for p in chosen.iterdir()
        }
        radii = pd.read_csv(chosen / "test_radii.csv")
        head = ["index", "label", "prediction", "radius", "correct", "verifier"]
        stages = parse_verifier(DEFAULT_VERIFIER)  # final certification's cascade
        assert list(radii.columns) == [*head, *(f"radius_{name}" for name in stages)]
        # The cascade's radius is at least IBP's, and the verifier that proved it is named.
        assert (radii["radius"] >= radii["radius_ibp"]).all()
        assert set(radii.loc[radii["radius"] > 0, "verifier"]) <= set(stages)
        test = load("synthetic", "test")
        assert len(radii) == len(test) and (radii["label"] == test.labels.numpy()).all()
        correct = radii["correct"].astype(bool)
        assert (correct == (radii["label"] == radii["prediction"])).all()
        assert radii["radius"].between(0, 0.1).all() and (radii.loc[~correct, "radius"] == 0).all()
        metrics = json.loads((chosen / "test_metrics.json").read_text())
        assert metrics == entry["test"] and metrics["eval_split"] == "test"
        assert metrics["acr"] == pytest.approx(radii["radius"].mean(), rel=1e-12)
        assert metrics["clean_acc"] == pytest.approx(correct.mean())
        assert metrics["cert_acc@0.05"] == pytest.approx(
            (correct & (radii["radius"] >= 0.05)).mean()
        )
    assert [r.met for r in result.targets] == [e["met"] for e in entries]


def test_a_smoke_study_keeps_optuna_journal_and_tune_state(smoke_study):
    _, _, study_dir = smoke_study
    study = journal_study(study_dir, "smoke")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == SMOKE_TRIALS and study.metric_names == ["clean_acc", "acr"]
    table = pd.read_parquet(study_dir / "trials.parquet").set_index("trial_id")
    for trial in trials:
        row = table.loc[trial.user_attrs["tune_trial_id"]]
        assert trial.values == [row["clean_acc"], row["acr"]]
        assert trial.constraints == {"min_acc": pytest.approx(0.8 - row["clean_acc"])}
    assert tune.Tuner.can_restore(str(study_dir / "tune"))


def test_resuming_a_finished_study_changes_nothing(smoke_study):
    request, _, study_dir = smoke_study
    before = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()}
    again = run_study(StudyRequest(**{**request.__dict__, "resume": True}), progress=False)
    assert again.status == "finished" and [t.trial_id for t in again.targets]
    assert {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()} == before


def test_an_existing_study_without_resume_is_refused(smoke_study):
    request, _, study_dir = smoke_study
    with pytest.raises(UserError, match="--resume.*--name"):
        run_study(request, progress=False)
    changed = StudyRequest(**{**request.__dict__, "resume": True, "seed": 5})
    with pytest.raises(UserError, match="seed was 0, now 5"):
        run_study(changed, progress=False)
    attacked = StudyRequest(**{**request.__dict__, "resume": True, "attack": True})
    with pytest.raises(UserError, match="attack was False, now True"):
        run_study(attacked, progress=False)


def test_a_study_without_recipe_first_samples_trial_0(ray_local, tmp_path):
    spec = toy_spec(tmp_path, study='[study.smoke]\nsampler = "random"\nrecipe_first = false\n')
    request = toy_request(tmp_path, "random", (0.8,), trials=4, spec=spec)
    result = run_study(request, trainable=toy, progress=False)
    trials = journal_study(Path(result.study_dir), "random").trials
    assert len(trials) == 4 and trials[0].params["kappa"] != 0.0  # the recipe's kappa is 0


def test_the_specs_starts_are_tried_after_the_recipe(ray_local, tmp_path):
    spec = toy_spec(tmp_path, study="[study.smoke]\nstarts = [{ kappa = 0.5 }]\n")
    request = toy_request(tmp_path, "starts", (0.8,), trials=3, spec=spec)
    result = run_study(request, trainable=toy, progress=False)
    trials = journal_study(Path(result.study_dir), "starts").trials
    assert len(trials) == 3 and [t.params["kappa"] for t in trials[:2]] == [0.0, 0.5]


def method_toy(config: dict) -> None:
    """``toy`` where IBP trades 0.1 of accuracy for 0.1 more ACR than ACERT."""
    x, ibp = config["kappa"], config["method"] == "ibp"
    metrics = {"clean_acc": 0.9 - 0.2 * x - 0.1 * ibp, "acr": x + 0.1 * ibp}
    tune.report({**metrics, "final": True, "epoch": 1})


def test_a_study_searches_the_method_and_reports_a_front_per_method(ray_local, tmp_path):
    request = toy_request(tmp_path, None, (0.6,), trials=6, method="acert,ibp")
    result = run_study(request, trainable=method_toy, progress=False)
    assert result.meta.name == "synthetic-acert-ibp-smoke" and result.meta.method == "acert,ibp"
    assert result.meta.search_space["method"] == {
        "type": "categorical",
        "choices": ["acert", "ibp"],
    }
    trials = journal_study(Path(result.study_dir), result.meta.name).trials
    assert trials[0].params == {"kappa": 0.0, "method": "acert"}  # the recipe's method first
    assert trials[1].params == {"kappa": 0.0, "method": "ibp"}  # then each other method's
    assert {t.params["method"] for t in trials} == {"acert", "ibp"}
    study = load_study(Path(result.study_dir))
    fronts = study.fronts()
    assert set(fronts) == {"acert", "ibp"}
    for method, front in fronts.items():
        assert set(front["param.method"]) == {method} and len(front) >= 1
    with pytest.raises(UserError, match="'method' is searched with --method"):
        plan(dataclasses.replace(request, spec=toy_spec(tmp_path, search=METHOD_SEARCH)))


METHOD_SEARCH = '[search.method]\ntype = "categorical"\nchoices = ["acert", "ibp"]\n'


# ---------------------------------------------------------------------------------------------
# The accuracy constraint: infeasible trials are never chosen, whatever their ACR
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [(0.8, 0.95), (0.8,)], ids=["two-objective", "one-objective"])
def test_the_constraint_keeps_high_acr_infeasible_trials_out(ray_local, tmp_path, targets):
    result = run_study(toy_request(tmp_path, "toy", targets), trainable=toy, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert len(table) == 10 and set(table["status"]) == {"completed"}
    top = table.sort_values("acr").iloc[-1]
    assert top["clean_acc"] < 0.8  # the highest-ACR trial is infeasible: a real test
    feasible = table[table["clean_acc"] >= 0.8]
    by_target = {r.target: r for r in result.targets}
    assert (
        by_target[0.8].met
        and by_target[0.8].trial_id == feasible.sort_values("acr").iloc[-1]["trial_id"]
    )
    assert by_target[0.8].val["clean_acc"] >= 0.8 and by_target[0.8].trial_id != top["trial_id"]
    # Optuna saw the constraint on every trial, and its best feasible trials agree.
    study = journal_study(Path(result.study_dir), "toy")
    acc = table.set_index("trial_id")["clean_acc"]
    for trial in study.trials:
        feasible_here = acc[trial.user_attrs["tune_trial_id"]] >= 0.8
        assert (trial.constraints["min_acc"] <= 0) == feasible_here
    if len(targets) == 1:
        assert study.best_trial.user_attrs["tune_trial_id"] == by_target[0.8].trial_id
    else:
        assert all(t.values[0] >= 0.8 for t in study.best_trials)
        assert by_target[0.8].trial_id in set(table[table["pareto"]]["trial_id"])


def test_a_target_nobody_meets_is_reported_with_the_closest_trial(ray_local, tmp_path):
    result = run_study(toy_request(tmp_path, "unmet", (0.8, 0.95)), trainable=toy, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    entries = json.loads((Path(result.study_dir) / "results.json").read_text())["targets"]
    unmet = next(e for e in entries if e["target"] == 0.95)
    assert not unmet["met"] and unmet["trial_id"] is None and unmet["run_dir"] is None
    assert not table["feasible@0.95"].any()
    assert unmet["closest"]["trial_id"] == table.sort_values("clean_acc").iloc[-1]["trial_id"]
    assert unmet["closest"]["val"]["clean_acc"] == table["clean_acc"].max()


# ---------------------------------------------------------------------------------------------
# Resources: fractional GPUs share one device; GPUs the cluster lacks are refused up front
# ---------------------------------------------------------------------------------------------


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "error: unknown dataset 'nosuch'"),
        (["synthetic", "--min-acc", "1.5"], "error: --min-acc: target 1.5 is outside (0, 1)"),
        (["synthetic", "--min-acc", "0"], "error: --min-acc: target 0.0 is outside (0, 1)"),
        (["synthetic", "--method", "sgd"], "error: unknown study method 'sgd'"),
        (["synthetic", "--method", "ibp,ibp"], "error: --method 'ibp,ibp' names a method twice"),
        (["synthetic", "--spec", "/no/such.toml"], "error: no spec file /no/such.toml"),
        (["synthetic", "--trials", "0"], "error: --trials and --concurrency must be at least 1"),
        (["synthetic", "--gpus-per-trial", "half"], "error: --gpus-per-trial must be a number"),
        (["synthetic", "--budget", "10"], "error: cannot read duration '10': write a positive"),
        (["synthetic", "--budget", "-5m"], "error: cannot read duration '-5m'"),
    ],
)
def test_bad_inputs_are_one_line_and_lose_nothing(smoke_study, args, message):
    _, _, study_dir = smoke_study
    before = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()}
    where = ["--storage", str(study_dir.parent), "--name", "smoke", "--resume", "--preset", "smoke"]
    result = runner.invoke(app, ["study", *args, *where])
    assert result.exit_code == 2
    assert assert_one_line_error(result.stderr).startswith(message)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()} == before


def test_an_unreadable_spec_is_one_line(tmp_path):
    spec = tmp_path / "broken.toml"
    spec.write_text("[presets.smoke\nmodel = 'mlp'\n")
    result = runner.invoke(app, ["study", "synthetic", "--spec", str(spec)])
    assert result.exit_code == 2
    assert assert_one_line_error(result.stderr).startswith(f"error: cannot read {spec}")


def test_a_study_on_a_storage_uri_keeps_the_same_layout(ray_local, tmp_path, monkeypatch):
    """``file://`` goes through the same pyarrow filesystem code as ``s3://``; Optuna's journal
    lives in a local cache meanwhile and is copied into the study folder at the end."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.5,),
        preset="smoke",
        trials=2,
        concurrency=2,
        gpus_per_trial=0,
        storage=f"file://{tmp_path}/store",
        name="uri",
    )
    result = run_study(request, progress=False)
    study_dir = tmp_path / "store" / "uri"
    assert result.study_dir == f"file://{study_dir}" and result.status == "finished"
    table = pd.read_parquet(study_dir / "trials.parquet")
    assert table["run_dir"].str.startswith("tune/").all()  # relative to the study folder
    assert len(journal_study(study_dir, "uri").trials) == 2
    assert list((tmp_path / "cache" / "raycert" / "journals").glob("*/optuna.journal"))
    chosen = result.targets[0]
    assert chosen.met and (study_dir / chosen.run_dir / "test_radii.csv").is_file()
    assert (study_dir / chosen.run_dir / "model.pt").is_file()


def test_a_truncated_tune_state_is_restored_from_its_backup(smoke_study):
    """Tune copies its state into the study folder without a rename: a driver killed mid-copy
    leaves it truncated. The searcher keeps a whole copy, and resume puts back the whole set,
    so the experiment and the search state are of one snapshot."""
    _, _, study_dir = smoke_study
    store = StudyDir(str(study_dir.parent), study_dir.name)
    (state,) = (study_dir / TUNE_DIR).glob("experiment_state-*.json")
    backup = study_dir / TUNE_STATE_BACKUP / state.name
    assert json.loads(backup.read_text())["trial_data"], "the backup is a whole Tune state"
    assert repair_tune_state(store) == []  # nothing to repair in a whole state
    intact = state.read_bytes()
    state.write_bytes(intact[: len(intact) // 3])
    backups = sorted(p.name for p in (study_dir / TUNE_STATE_BACKUP).iterdir())
    assert state.name in backups and len(backups) > 1
    assert sorted(repair_tune_state(store)) == backups
    assert json.loads(state.read_text())["trial_data"]
    state.write_bytes(b"")
    backup.unlink()
    with pytest.raises(UserError, match="unreadable and has no backup"):
        repair_tune_state(store)
    state.write_bytes(intact)


@pytest.mark.parametrize(
    ("flag", "attack"), [([], None), (["--attack"], True), (["--no-attack"], False)]
)
def test_the_cli_hands_attack_to_the_study_as_typed(monkeypatch, flag, attack):
    """``None`` (not typed) lets ``plan`` choose: off for a new study, the saved one on resume."""
    asked = []

    def run(request: StudyRequest) -> None:
        asked.append(request)
        raise KeyboardInterrupt

    monkeypatch.setattr("raycert.study.tune.run.run_study", run)
    result = runner.invoke(app, ["study", "synthetic", *flag])
    assert result.exit_code == 130 and [r.attack for r in asked] == [attack]
    assert plan(asked[0])[1].attack is bool(attack)


def test_a_resumed_study_keeps_its_attack_setting_unless_told_otherwise():
    request = StudyRequest(dataset="synthetic", targets=(0.8,), preset="smoke", attack=True)
    saved = plan(request)[1]
    resumed = plan(dataclasses.replace(request, attack=None))[1]
    assert saved.attack and not resumed.attack  # a new study without --attack: off
    check_resumable(saved, resumed, None, "s", attack=None)
    assert resumed.attack and resumed.trials_requested == saved.trials_requested
    with pytest.raises(UserError, match=r"cannot resume s .*attack was True, now False"):
        check_resumable(
            saved, plan(dataclasses.replace(request, attack=False))[1], None, "s", False
        )
