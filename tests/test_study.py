"""Studies through real Ray Tune and Optuna on the session's local Ray cluster (2 CPUs and one
declared GPU that does not exist). Toy trainables stand in for the trainer where only the
search logic is under test; they still report through ``tune.report``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import ray
import ray.cloudpickle
import torch
from ray import tune
from typer.testing import CliRunner

from raycert.cli import app
from raycert.data import load
from raycert.errors import UserError
from raycert.pareto import pareto_mask
from raycert.specs import STUDIES_DIR, load_study_spec
from raycert.study import StudyRequest, run_study
from raycert.studydir import TUNE_DIR, TUNE_STATE_BACKUP, StudyDir, repair_tune_state
from raycert.trial import TrialSetup, train_trial

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
}
SMOKE_TRIALS = 4
REPO = Path(__file__).parents[1]


def toy_spec(tmp_path: Path, study: str = "", search: str = "") -> str:
    """The synthetic smoke preset with a one-parameter search (``kappa`` stands for x in [0, 1])."""
    presets = (STUDIES_DIR / "synthetic.toml").read_text().split("[search.")[0]
    search = search or '[search.kappa]\ntype = "float"\nlow = 0.0\nhigh = 1.0\n'
    path = tmp_path / "toy.toml"
    path.write_text(f"{presets}\n{search}\n{study}\n")
    return str(path)


def toy(config: dict) -> None:
    """acc = 0.9 - 0.2 x, acr = x: the highest ACRs are the least accurate; none reaches 0.95."""
    x = config["kappa"]
    tune.report({"clean_acc": 0.9 - 0.2 * x, "acr": x, "final": True, "epoch": 1})


def toy_request(tmp_path: Path, name: str, targets: tuple[float, ...], **changes) -> StudyRequest:
    values = dict(
        dataset="synthetic",
        targets=targets,
        preset="smoke",
        trials=10,
        concurrency=2,
        gpus_per_trial=0,
        storage=str(tmp_path / "runs"),
        name=name,
    )
    values.update(changes)
    if "spec" not in values:
        values["spec"] = toy_spec(tmp_path)
    return StudyRequest(**values)


def journal_study(study_dir: Path, name: str) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(study_dir / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


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
    for run_dir in table["run_dir"]:
        assert {"model.pt", "config.json", "metrics.jsonl"} <= {
            p.name for p in Path(run_dir).iterdir()
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
        assert list(radii.columns) == ["index", "label", "prediction", "radius", "correct"]
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
    changed = StudyRequest(**{**request.__dict__, "resume": True, "trials": 5})
    with pytest.raises(UserError, match="trials_requested was 4, now 5"):
        run_study(changed, progress=False)


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


def test_four_quarter_gpu_trials_share_gpu_0_and_train_on_the_cpu(ray_local, tmp_path):
    """A marker-file barrier proves the four trials run at once; each then runs the real trial
    code, which must fall back to the CPU because no CUDA device exists here."""
    assert not torch.cuda.is_available()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.8,),
        preset="smoke",
        trials=4,
        concurrency=4,
        cpus_per_trial=0.5,
        gpus_per_trial=0.25,
        storage=str(tmp_path / "runs"),
        name="gpus",
    )
    base = load_study_spec("synthetic", "smoke").base.resolve().to_dict()
    setup = TrialSetup(base, None, 0.25, 0.8)

    def trainable(config: dict) -> None:
        me = barrier / tune.get_context().get_trial_id()
        me.write_text("")
        deadline = time.monotonic() + 90
        while len(list(barrier.glob("*"))) < 8 and time.monotonic() < deadline:
            seen = len([p for p in barrier.iterdir() if p.suffix != ".json"])
            if seen >= 4:
                break
            time.sleep(0.1)
        seen = len([p for p in barrier.iterdir() if p.suffix != ".json"])
        info = {"seen": seen, "gpu_ids": [int(g) for g in ray.get_gpu_ids()]}
        me.with_suffix(".json").write_text(json.dumps(info))
        train_trial(config, setup)

    result = run_study(request, trainable=trainable, progress=False)
    infos = [json.loads(p.read_text()) for p in barrier.glob("*.json")]
    assert len(infos) == 4
    assert all(info["seen"] == 4 for info in infos)  # all four were running at once
    assert all(info["gpu_ids"] == [0] for info in infos)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert set(table["status"]) == {"completed"} and set(table["device"]) == {"cpu"}
    assert result.meta["resources"] == {"cpus_per_trial": 0.5, "gpus_per_trial": 0.25}


def test_more_gpus_than_a_node_has_are_refused_before_anything_runs(ray_local, tmp_path):
    request = toy_request(tmp_path, "greedy", (0.8,), gpus_per_trial=2)
    with pytest.raises(UserError, match="--gpus-per-trial 2 is more than any node"):
        run_study(request, trainable=toy, progress=False)
    assert not (tmp_path / "runs" / "greedy").exists()


def test_cpus_beyond_a_node_are_refused(ray_local, tmp_path):
    request = toy_request(tmp_path, "cpus", (0.8,), cpus_per_trial=3)
    with pytest.raises(UserError, match="--cpus-per-trial 3 is more than any node"):
        run_study(request, trainable=toy, progress=False)


# ---------------------------------------------------------------------------------------------
# Failures: crashed, diverged and early-stopped trials are recorded and the study goes on
# ---------------------------------------------------------------------------------------------


def flaky(config: dict) -> None:
    """x < 0.4 crashes every time, x > 0.7 diverges; the others complete (seed 0 samples all
    three kinds)."""
    x = config["kappa"]
    if x < 0.4:
        raise RuntimeError("a crash")
    metrics = {"clean_acc": 0.9 - 0.2 * x, "acr": x, "epoch": 1}
    if x > 0.7:
        tune.report({**metrics, "final": False, "diverged": True})
        return
    tune.report({**metrics, "final": True})


def test_crashed_and_diverged_trials_are_recorded_and_the_study_goes_on(ray_local, tmp_path):
    result = run_study(toy_request(tmp_path, "flaky", (0.8,)), trainable=flaky, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert result.status == "finished" and len(table) == 10
    x = table["param.kappa"]
    expected = np.where(x < 0.4, "error", np.where(x > 0.7, "diverged", "completed"))
    assert list(table["status"]) == list(expected)
    assert {"error", "diverged", "completed"} <= set(table["status"])
    assert not table.loc[table["status"] != "completed", "pareto"].any()
    counts = result.meta["trial_counts"]
    assert counts == {s: int((table["status"] == s).sum()) for s in counts}
    states = {
        t.user_attrs["tune_trial_id"]: t.state
        for t in journal_study(Path(result.study_dir), "flaky").trials
    }
    optuna_state = {"error": "FAIL", "diverged": "PRUNED", "completed": "COMPLETE"}
    for trial_id, status in zip(table["trial_id"], table["status"], strict=True):
        assert states[trial_id].name == optuna_state[status]
    chosen = result.targets[0]
    assert chosen.met and table.set_index("trial_id").loc[chosen.trial_id, "status"] == "completed"


def test_real_trials_that_diverge_are_recorded_as_diverged(ray_local, tmp_path):
    search = (
        '[search.lr]\ntype = "log-float"\nlow = 1e29\nhigh = 1e30\n'
        '[search.optimizer]\ntype = "categorical"\nchoices = ["sgd"]\n'
        '[search.grad_clip]\ntype = "categorical"\nchoices = [0.0]\n'
    )
    spec = toy_spec(tmp_path, search=search)
    request = toy_request(tmp_path, "nan", (0.5,), trials=2, method="ibp", spec=spec)
    result = run_study(request, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert result.status == "finished" and list(table["status"]) == ["diverged", "diverged"]
    assert (table["epoch"] == 0).all() and not table["pareto"].any()
    target = result.targets[0]
    assert not target.met and target.closest is None and target.run_dir is None
    states = {t.state.name for t in journal_study(Path(result.study_dir), "nan").trials}
    assert states == {"PRUNED"}


def epochs(config: dict) -> None:
    """Four epochs; ACR grows with x and epochs, accuracy falls with x (feasible iff x <= 0.5)."""
    x = config["kappa"]
    for epoch in range(1, 5):
        acc, acr = 0.9 - 0.2 * x, x * epoch / 4
        score = acr if acc >= 0.8 else acc - 0.8
        row = {"clean_acc": acc, "acr": acr, "epoch": epoch, "final": epoch == 4}
        tune.report({**row, "sched_score": score})


def test_asha_stops_trials_early_as_pruned(ray_local, tmp_path):
    spec = toy_spec(tmp_path, study="[study.smoke]\nasha = true\ngrace_period = 1\n")
    request = toy_request(tmp_path, "asha", (0.8,), trials=8, spec=spec)
    result = run_study(request, trainable=epochs, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert result.meta["asha"] and len(table) == 8
    pruned = table[table["status"] == "pruned"]
    assert len(pruned) > 0 and (pruned["epoch"] < 4).all()
    assert (table.loc[table["status"] == "completed", "epoch"] == 4).all()
    states = {
        t.user_attrs["tune_trial_id"]: t.state.name
        for t in journal_study(Path(result.study_dir), "asha").trials
    }
    assert {states[t] for t in pruned["trial_id"]} == {"PRUNED"}


# ---------------------------------------------------------------------------------------------
# The command line: a killed study resumes; bad inputs are one line and lose nothing
# ---------------------------------------------------------------------------------------------

runner = CliRunner()


def study_cli(*args: str, cwd: Path = REPO, **popen) -> subprocess.Popen:
    """``raycert study ...`` in a fresh interpreter and its own session (a process group that
    holds the local Ray cluster it starts)."""
    command = [sys.executable, "-m", "raycert.cli", "study", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, text=True, **popen)


def finished_rows(study_dir: Path) -> int:
    try:
        return len(pd.read_csv(study_dir / "trials.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def test_a_killed_study_resumes_without_losing_or_repeating_trials(tmp_path):
    args = ["synthetic", "--preset", "smoke", "--trials", "6", "--concurrency", "2"]
    args += ["--storage", str(tmp_path), "--name", "killed", "--min-acc", "0.8"]
    study_dir = tmp_path / "killed"
    process = study_cli(*args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while finished_rows(study_dir) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, "the study ended before it could be killed"
            time.sleep(0.1)
        before = pd.read_csv(study_dir / "trials.csv")
        assert 2 <= len(before) < 6
        process.kill()  # SIGKILL: no chance to save anything
        process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the Ray processes it started
    assert json.loads((study_dir / "study.json").read_text())["status"] == "running"

    resumed = study_cli(
        *args, "--resume", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = resumed.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(resumed.pid, signal.SIGKILL)
    assert resumed.returncode == 0, err
    after = pd.read_csv(study_dir / "trials.csv")
    assert len(after) == 6 and after["trial_id"].is_unique and after["number"].is_unique
    assert set(after["status"]) == {"completed"}
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    assert list(kept["clean_acc"]) == list(before["clean_acc"])  # the same trials, not reruns
    assert list(kept["acr"]) == list(before["acr"])
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["status"] == "finished" and meta["trial_counts"]["completed"] == 6
    complete = journal_study(study_dir, "killed").get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)
    )
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(after["trial_id"])
    assert "results:" in out
    report = tmp_path / "reports" / "killed.html"  # every finished study writes its report
    assert f"report: {report.relative_to(tmp_path)}" in out and report.stat().st_size > 100_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "error: unknown dataset 'nosuch'"),
        (["synthetic", "--min-acc", "1.5"], "error: --min-acc: target 1.5 is outside (0, 1)"),
        (["synthetic", "--min-acc", "0"], "error: --min-acc: target 0.0 is outside (0, 1)"),
        (["synthetic", "--method", "sgd"], "error: unknown study method 'sgd'"),
        (["synthetic", "--spec", "/no/such.toml"], "error: no spec file /no/such.toml"),
        (["synthetic", "--trials", "0"], "error: --trials and --concurrency must be at least 1"),
        (["synthetic", "--gpus-per-trial", "half"], "error: --gpus-per-trial must be a number"),
    ],
)
def test_bad_inputs_are_one_line_and_lose_nothing(smoke_study, args, message):
    _, _, study_dir = smoke_study
    before = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()}
    where = ["--storage", str(study_dir.parent), "--name", "smoke", "--resume", "--preset", "smoke"]
    result = runner.invoke(app, ["study", *args, *where])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()} == before


def test_an_unreadable_spec_is_one_line(tmp_path):
    spec = tmp_path / "broken.toml"
    spec.write_text("[presets.smoke\nmodel = 'mlp'\n")
    result = runner.invoke(app, ["study", "synthetic", "--spec", str(spec)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot read {spec}") and result.stderr.count("\n") == 1


def test_gpus_on_a_gpu_less_cluster_exit_2_with_one_line(tmp_path):
    """In a fresh process: its own local Ray cluster has no GPU (this machine has none)."""
    args = ["synthetic", "--preset", "smoke", "--gpus-per-trial", "0.5"]
    process = study_cli(
        *args, "--storage", str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 2
    assert err.splitlines() == [
        "error: --gpus-per-trial 0.5 asks for GPUs but the Ray cluster has none; "
        "use --gpus-per-trial 0 (or auto)"
    ]
    assert "Traceback" not in out + err and not any(tmp_path.iterdir())


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
    assert table["run_dir"].str.startswith(f"file://{study_dir}/tune/").all()
    assert len(journal_study(study_dir, "uri").trials) == 2
    assert list((tmp_path / "cache" / "raycert" / "journals").glob("*/optuna.journal"))
    chosen = result.targets[0]
    assert chosen.met and (study_dir / chosen.run_dir / "test_radii.csv").is_file()
    assert (study_dir / chosen.run_dir / "model.pt").is_file()


def test_a_truncated_tune_state_is_restored_from_its_backup(smoke_study):
    """Tune copies its state into the study folder without a rename: a driver killed mid-copy
    leaves it truncated. The searcher keeps a whole copy, and resume puts it back."""
    _, _, study_dir = smoke_study
    store = StudyDir(str(study_dir.parent), study_dir.name)
    (state,) = (study_dir / TUNE_DIR).glob("experiment_state-*.json")
    backup = study_dir / TUNE_STATE_BACKUP / state.name
    assert json.loads(backup.read_text())["trial_data"], "the backup is a whole Tune state"
    assert repair_tune_state(store) == []  # nothing to repair in a whole state
    intact = state.read_bytes()
    state.write_bytes(intact[: len(intact) // 3])
    assert repair_tune_state(store) == [state.name]
    assert json.loads(state.read_text())["trial_data"]
    state.write_bytes(b"")
    backup.unlink()
    with pytest.raises(UserError, match="unreadable and has no backup"):
        repair_tune_state(store)
    state.write_bytes(intact)
