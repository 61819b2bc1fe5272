"""A realistic persisted study directory, written exactly as ``raycert.study`` lays one out.

``write_study`` makes ``<root>/<name>/`` with study.json, trials.parquet + trials.csv,
results.json (target 0.8 met, target 0.995 unmet), chosen/0.8/test_radii.csv +
test_metrics.json and an optuna.journal written by real Optuna. Trials are random but
plausible: an accuracy/ACR trade-off driven by ``kappa``, some infeasible, two pruned, one
diverged and one error row (NaN metrics).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from raycert.studyfolder import pareto_mask
from raycert.units import cert_acc_key

ACR_CAP = 0.4
EPS_LIST = (0.1, 0.3)
TARGETS = (0.8, 0.995)
MET_TARGET, UNMET_TARGET = TARGETS
TEST_SAMPLES = 300
SEARCH_SPACE = {
    "lr": {"type": "log-float", "low": 1e-4, "high": 1e-2},
    "kappa": {"type": "float", "low": 0.0, "high": 1.0},
    "reg_weight": {"type": "float", "low": 0.0, "high": 1.0},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}
DISTRIBUTIONS = {
    "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    "kappa": optuna.distributions.FloatDistribution(0.0, 1.0),
    "reg_weight": optuna.distributions.FloatDistribution(0.0, 1.0),
    "optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"]),
}
# Trial numbers that end early: pruned (partial metrics), diverged (chance level), error (NaN).
PRUNED, DIVERGED, ERROR = (3, 9), (5,), (7,)


def target_key(target: float) -> str:
    return f"{target:g}"


def _metrics(clean_acc: float, radii_or_acr: np.ndarray | float) -> dict[str, float]:
    """Metrics as the study reports them; from per-sample radii when given, else from an ACR."""
    if isinstance(radii_or_acr, np.ndarray):
        radii = radii_or_acr
        acr = float(radii.mean())
        cert = {cert_acc_key(e): float((radii >= e).mean()) for e in EPS_LIST}
    else:
        acr = radii_or_acr
        cert = {cert_acc_key(e): clean_acc * max(0.0, 1 - e / (2 * acr + 1e-9)) for e in EPS_LIST}
    return {
        "clean_acc": clean_acc,
        "acr": acr,
        "acr_cap": ACR_CAP,
        "acr_pct": 100 * acr / ACR_CAP,
        **cert,
    }


def _trials(rng: np.random.Generator, n_trials: int, acr_scale: float) -> pd.DataFrame:
    rows = []
    for number in range(n_trials):
        params = {
            "lr": float(10 ** rng.uniform(-4, -2)),
            "kappa": float(rng.uniform(0, 1)),
            "reg_weight": float(rng.uniform(0, 1)),
            "optimizer": str(rng.choice(["adam", "sgd"])),
        }
        kappa = params["kappa"]
        clean_acc = float(np.clip(0.72 + 0.26 * kappa + rng.normal(0, 0.02), 0, 0.99))
        acr = float(np.clip(acr_scale * ACR_CAP * (1 - 0.8 * kappa) + rng.normal(0, 0.01), 0, 0.4))
        status, epoch = "completed", 10
        if number in PRUNED:
            status, epoch, clean_acc, acr = "pruned", 4, clean_acc - 0.1, acr * 0.5
        elif number in DIVERGED:
            status, epoch, clean_acc, acr = "diverged", 2, 0.1, 0.0
        metrics = _metrics(clean_acc, acr)
        if number in ERROR:
            status, epoch = "error", math.nan
            metrics = {key: math.nan for key in metrics}
        rows.append(
            {
                "trial_id": f"t{number:03d}",
                "number": number,
                "status": status,
                "node": "node-a" if number % 2 else "node-b",
                "seconds": float(rng.uniform(20, 60)),
                **{f"param.{k}": v for k, v in params.items()},
                **metrics,
                "epoch": epoch,
                "run_dir": f"trials/t{number:03d}",
                "extra_column_from_a_newer_study": "ignored",
            }
        )
    trials = pd.DataFrame(rows)
    done = trials["status"] == "completed"
    for target in TARGETS:
        trials[f"feasible@{target_key(target)}"] = done & (trials["clean_acc"] >= target)
    front = pareto_mask(trials.loc[done, ["clean_acc", "acr"]].to_numpy())
    trials["pareto"] = False
    trials.loc[done, "pareto"] = front
    return trials


def _test_radii(rng: np.random.Generator, clean_acc: float, acr: float) -> pd.DataFrame:
    labels = rng.integers(0, 10, TEST_SAMPLES)
    correct = rng.random(TEST_SAMPLES) < clean_acc
    predictions = np.where(correct, labels, (labels + 1) % 10)
    mean_correct = min(acr / max(clean_acc, 1e-9), ACR_CAP * 0.95)
    radii = np.minimum(rng.exponential(mean_correct, TEST_SAMPLES), ACR_CAP)
    radii[rng.random(TEST_SAMPLES) < 0.1] = ACR_CAP  # verified at the cap
    radii = np.where(correct, radii, 0.0)
    return pd.DataFrame(
        {
            "index": np.arange(TEST_SAMPLES),
            "label": labels,
            "prediction": predictions,
            "radius": radii,
            "correct": correct,
        }
    )


def _journal(path: Path, name: str, trials: pd.DataFrame) -> None:
    """The Optuna journal as the study's searcher leaves it: two objectives, no metric names."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(
        storage=storage, study_name=name, directions=["maximize", "maximize"]
    )
    states = {
        "completed": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "diverged": optuna.trial.TrialState.FAIL,
        "error": optuna.trial.TrialState.FAIL,
    }
    for row in trials.to_dict("records"):
        state = states[row["status"]]
        values = [row["clean_acc"], row["acr"]] if state.name == "COMPLETE" else None
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                values=values,
                params={k: row[f"param.{k}"] for k in DISTRIBUTIONS},
                distributions=DISTRIBUTIONS,
            )
        )


def _params_of(row: pd.Series) -> dict[str, Any]:
    return {k.removeprefix("param."): v for k, v in row.items() if k.startswith("param.")}


def _chosen(
    study_dir: Path, rng: np.random.Generator, trials: pd.DataFrame, target: float
) -> dict[str, Any]:
    feasible = trials[trials[f"feasible@{target_key(target)}"]]
    if feasible.empty:
        done = trials[trials["status"] == "completed"]
        near = done.loc[done["clean_acc"].idxmax()]
        return {
            "target": target,
            "met": False,
            "trial_id": None,
            "params": None,
            "val": None,
            "test": None,
            "run_dir": None,
            "closest": {
                "trial_id": near["trial_id"],
                "params": _params_of(near),
                "val": _metrics(float(near["clean_acc"]), float(near["acr"])),
            },
        }
    best = feasible.loc[feasible["acr"].idxmax()]
    run_dir = f"chosen/{target_key(target)}"
    folder = study_dir / run_dir
    folder.mkdir(parents=True)
    radii = _test_radii(rng, float(best["clean_acc"]) - 0.01, float(best["acr"]))
    radii.to_csv(folder / "test_radii.csv", index=False)
    test = _metrics(float(radii["correct"].mean()), radii["radius"].to_numpy())
    (folder / "test_metrics.json").write_text(json.dumps({**test, "eval_split": "test"}))
    val = {k: float(best[k]) for k in ("clean_acc", "acr", "acr_cap", "acr_pct")}
    val.update({cert_acc_key(e): float(best[cert_acc_key(e)]) for e in EPS_LIST})
    return {
        "target": target,
        "met": True,
        "trial_id": best["trial_id"],
        "params": _params_of(best),
        "val": val,
        "test": test,
        "run_dir": run_dir,
        "closest": None,
    }


def write_study(
    root: Path,
    name: str = "acert-mnist",
    method: str = "acert",
    seed: int = 0,
    n_trials: int = 24,
) -> Path:
    """Write a finished study ``<root>/<name>/`` in the persisted contract and return its path."""
    rng = np.random.default_rng(seed)
    study_dir = root / name
    study_dir.mkdir(parents=True)
    trials = _trials(rng, n_trials, acr_scale=0.5 if method == "acert" else 0.3)
    trials.to_parquet(study_dir / "trials.parquet", index=False)
    trials.to_csv(study_dir / "trials.csv", index=False)
    counts = {s: int((trials["status"] == s).sum()) for s in ("completed", "pruned", "diverged")}
    counts["error"] = int((trials["status"] == "error").sum())
    study = {
        "name": name,
        "dataset": "mnist",
        "preset": "quick",
        "method": method,
        "targets": list(TARGETS),
        "trials_requested": n_trials,
        "seed": seed,
        "search_space": SEARCH_SPACE,
        "base_config": {"dataset": "mnist", "model": "cnn_small", "method": method, "epochs": 10},
        "acr_cap": ACR_CAP,
        "eps_list": list(EPS_LIST),
        "storage": str(root),
        "address": None,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
        "concurrency": 2,
        "hardware": {"nodes": 1, "cpus": 2, "gpus": 0},
        "versions": {
            "raycert": "0.1.0",
            "ray": "2.60.0",
            "optuna": "5.0.0",
            "torch": "2.13.0",
            "python": "3.11.2",
        },
        "started": "2025-11-24T10:00:00+00:00",
        "finished": "2025-11-24T10:12:34+00:00",
        "status": "finished",
        "trials": counts,
    }
    (study_dir / "study.json").write_text(json.dumps(study, indent=2))
    chosen = [_chosen(study_dir, rng, trials, t) for t in TARGETS]
    (study_dir / "results.json").write_text(json.dumps({"targets": chosen}, indent=2))
    _journal(study_dir / "optuna.journal", name, trials)
    return study_dir
