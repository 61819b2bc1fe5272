"""A realistic persisted study folder, written through the same ``raycert.studyfolder`` writers
and rules as ``raycert.study`` (so a writer/reader mismatch fails the report tests).

``write_study`` makes ``<root>/<name>/`` with study.json, trials.parquet + trials.csv,
results.json (target 0.8 met, target 0.995 unmet), chosen/0.8/test_radii.csv +
test_metrics.json (real ``Certificates`` and ``summarize``: the ``ibp+crown-ibp`` cascade's
radius per stage and PGD's empirical radii with ``pgd_acc@<eps>``, as ``study --attack`` writes
them; with ``older=True`` only the final radius, as studies before cascades and attacks wrote
it) and an optuna.journal with metric names as the study's searcher sets them. Trials are
random but plausible: an accuracy/ACR trade-off driven by ``kappa``, some infeasible, two
pruned, one diverged and one error row (no metrics). Only Ray Tune is left out: the rows come
from the Tune-style last results that ``trial_row`` reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch

from raycert.cert.certify import Certificates, summarize
from raycert.studyfolder import (
    CHOSEN,
    Hardware,
    StudyDir,
    StudyMeta,
    TargetResult,
    TrialResources,
    TrialRow,
    choose,
    journal_storage,
    target_label,
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
from raycert.units import cert_acc_key, pgd_acc_key

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
# Trial numbers that end early: pruned (partial metrics), diverged (chance level), error (none).
PRUNED, DIVERGED, ERROR = (3, 9), (5,), (7,)
EXTRA_COLUMN = "extra_column_from_a_newer_study"


def _metrics(clean_acc: float, acr: float) -> dict[str, float]:
    """Val metrics as a trial reports them."""
    cert = {cert_acc_key(e): clean_acc * max(0.0, 1 - e / (2 * acr + 1e-9)) for e in EPS_LIST}
    return {
        "clean_acc": clean_acc,
        "acr": acr,
        "acr_cap": ACR_CAP,
        "acr_pct": 100 * acr / ACR_CAP,
        **cert,
    }


def _rows(rng: np.random.Generator, n_trials: int, acr_scale: float) -> list[TrialRow]:
    """Rows from the last result Ray Tune would keep of each trial."""
    rows = []
    for number in range(n_trials):
        config = {
            "lr": float(10 ** rng.uniform(-4, -2)),
            "kappa": float(rng.uniform(0, 1)),
            "reg_weight": float(rng.uniform(0, 1)),
            "optimizer": str(rng.choice(["adam", "sgd"])),
        }
        kappa = config["kappa"]
        clean_acc = float(np.clip(0.72 + 0.26 * kappa + rng.normal(0, 0.02), 0, 0.99))
        acr = float(np.clip(acr_scale * ACR_CAP * (1 - 0.8 * kappa) + rng.normal(0, 0.01), 0, 0.4))
        flags, epoch = {"final": True}, 10
        if number in PRUNED:
            flags, epoch, clean_acc, acr = {"final": False}, 4, clean_acc - 0.1, acr * 0.5
        elif number in DIVERGED:
            flags, epoch, clean_acc, acr = {"final": False, "diverged": True}, 2, 0.1, 0.0
        last = {**_metrics(clean_acc, acr), **flags, "epoch": epoch, "device": "cpu"}
        last.update(node="node-a" if number % 2 else "node-b", time_total_s=rng.uniform(20, 60))
        errored = number in ERROR
        if errored:
            last = {}  # Tune keeps no result of a trial that failed before its first report
        run_dir = f"trials/t{number:03d}"
        rows.append(
            trial_row(number, f"t{number:03d}", errored, last, config, list(config), run_dir)
        )
    return rows


def _certificates(
    rng: np.random.Generator, clean_acc: float, acr: float, older: bool
) -> Certificates:
    """Test-split certificates near a trial's val numbers, some verified at the cap. Unless
    ``older``: IBP alone verifies a smaller radius for some samples (CROWN-IBP the rest of
    it), and PGD flips each correct sample above its certified radius (never where it is
    certified at the cap: ``inf``)."""
    labels = rng.integers(0, 10, TEST_SAMPLES)
    correct = rng.random(TEST_SAMPLES) < clean_acc
    predictions = np.where(correct, labels, (labels + 1) % 10)
    mean_correct = min(acr / max(clean_acc, 1e-9), ACR_CAP * 0.95)
    radii = np.minimum(rng.exponential(mean_correct, TEST_SAMPLES), ACR_CAP)
    radii[rng.random(TEST_SAMPLES) < 0.1] = ACR_CAP
    radii = np.where(correct, radii, 0.0)
    certs = Certificates(
        torch.from_numpy(labels), torch.from_numpy(predictions), torch.from_numpy(radii), ACR_CAP
    )
    if older:
        return certs
    ibp = np.where(
        rng.random(TEST_SAMPLES) < 0.6, radii * rng.uniform(0.3, 1.0, TEST_SAMPLES), radii
    )
    pgd = radii + rng.exponential(0.05, TEST_SAMPLES) + 1e-3
    pgd = np.where(correct, np.where((pgd > ACR_CAP) | (radii == ACR_CAP), np.inf, pgd), 0.0)
    certs.verifier = "ibp+crown-ibp"
    certs.verified_by = torch.from_numpy(np.select([radii == 0, ibp == radii], [-1, 0], 1))
    certs.stage_radii = {"ibp": torch.from_numpy(ibp), "crown-ibp": torch.from_numpy(radii)}
    certs.empirical_radii = torch.from_numpy(pgd)
    return certs


def _result(
    store: StudyDir, rng: np.random.Generator, table: pd.DataFrame, target: float, older: bool
) -> TargetResult:
    """A target's result as the study makes it: chosen by ``choose``, certified, written."""
    winner, closest = choose(table, target)
    if winner is None:
        return unmet(target, closest)
    result = won(target, winner)
    certs = _certificates(rng, winner.metrics["clean_acc"] - 0.01, winner.metrics["acr"], older)
    result.test = {**summarize(certs, EPS_LIST), "eval_split": "test", "dtype": "float64"}
    if older:  # test metrics before verifiers had names
        del result.test["verifier"], result.test["by_verifier"]
    if certs.empirical_radii is not None:  # PGD accuracy as ``attack_split`` names it
        for eps in EPS_LIST:
            survives = certs.correct & (certs.empirical_radii > eps)
            result.test[pgd_acc_key(eps)] = float(survives.double().mean())
    result.run_dir = f"{CHOSEN}/{target_label(target)}"
    write_test(store, result.run_dir, result.test, certs.to_csv())
    return result


def write_journal(
    study_dir: Path,
    name: str,
    table: pd.DataFrame,
    objectives: tuple[str, ...] | None = ("clean_acc", "acr"),
) -> None:
    """The Optuna journal as the study's searcher leaves it: one maximized objective per name
    of ``objectives``, its values from those columns (``None``: ``clean_acc`` and ``acr``
    without names, as an older raycert wrote)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = StudyDir.at(study_dir)
    columns = list(objectives or ("clean_acc", "acr"))
    study = optuna.create_study(
        storage=journal_storage(store), study_name=name, directions=["maximize"] * len(columns)
    )
    if objectives is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(columns)
    states = {
        "completed": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "diverged": optuna.trial.TrialState.PRUNED,
        "error": optuna.trial.TrialState.FAIL,
    }
    for row in table.to_dict("records"):
        state = states[row["status"]]
        values = [row[c] for c in columns] if state.name == "COMPLETE" else None
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                values=values,
                params={k: row[f"param.{k}"] for k in DISTRIBUTIONS},
                distributions=DISTRIBUTIONS,
                user_attrs={"tune_trial_id": row["trial_id"]},
            )
        )


def write_study(
    root: Path,
    name: str = "acert-mnist",
    method: str = "acert",
    seed: int = 0,
    n_trials: int = 24,
    older: bool = False,
) -> Path:
    """Write a finished study ``<root>/<name>/`` in the persisted contract and return its path
    (``older``: as a study before verifier cascades and ``--attack`` wrote it)."""
    rng = np.random.default_rng(seed)
    store = StudyDir(root, name)
    table = trials_table(_rows(rng, n_trials, 0.5 if method == "acert" else 0.3), list(TARGETS))
    table[EXTRA_COLUMN] = "ignored"
    write_trials(store, table)
    write_results(store, [_result(store, rng, table, t, older) for t in TARGETS])
    write_journal(Path(store.path), name, table)
    meta = _meta(root, name, method, seed, n_trials, trial_counts(table))
    meta.attack = not older
    write_meta(store, meta)
    return Path(store.path)


def _meta(
    root: Path, name: str, method: str, seed: int, n_trials: int, counts: dict[str, int]
) -> StudyMeta:
    base: dict[str, Any] = {"dataset": "mnist", "model": "cnn_small", "method": method}
    return StudyMeta(
        name=name,
        dataset="mnist",
        preset="quick",
        method=method,
        targets=list(TARGETS),
        trials_requested=n_trials,
        seed=seed,
        search_space=SEARCH_SPACE,
        asha=False,
        base_config={**base, "epochs": 10},
        acr_cap=ACR_CAP,
        eps_list=list(EPS_LIST),
        storage=str(root),
        address="local",
        spec_file="raycert/spec/presets/mnist.toml",
        versions={
            "raycert": "0.1.0",
            "ray": "2.60.0",
            "optuna": "5.0.0",
            "torch": "2.13.0",
            "python": "3.11.2",
        },
        started="2025-11-24T10:00:00+00:00",
        finished="2025-11-24T10:12:34+00:00",
        status="finished",
        trial_counts=counts,
        resources=TrialResources(1, 0),
        concurrency=2,
        hardware=Hardware(1, 2, 0),
    )
