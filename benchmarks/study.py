"""Overhead of a study: N short trials through Ray Tune + Optuna vs the same trials run directly.

    python benchmarks/study.py [--trials 12] [--epochs 6]

A study of N trials on the synthetic dataset (the MLP, ``--epochs`` epochs, a checkpoint and a
report per epoch) runs through ``run_study`` at concurrency 1 and 2, one CPU per trial, on a
local Ray cluster started once beforehand (its start-up is printed apart). The same N configs
(the ones the first study sampled) then train directly, one after another, in this process with
one thread, as a trial does. Overhead per trial = (concurrency x study wall - direct wall) / N:
the slot-seconds a trial costs beyond its training, with every fixed cost of a study (spec,
Tuner set-up, trials table, choosing and test-certifying the winner) spread over the N trials.
"beyond in-trial" is concurrency x study wall / N minus the time a trial spent inside its
trainable (Tune's ``time_total_s``): what Ray Tune, Optuna and the study's own bookkeeping add
per trial slot, without the slow-down that concurrent trials impose on each other.
Goal: <= 1 s per trial, i.e. <= 5% of a one-minute trial.

Noisy on a shared machine: compare lines of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
import torch

from raycert.specs import STUDIES_DIR, TrainConfig
from raycert.study import StudyRequest, run_study
from raycert.train import train

GOAL_S, ONE_MINUTE = 1.0, 60.0


def bench_spec(folder: Path, epochs: int) -> Path:
    """The synthetic spec with a smoke preset of ``epochs`` epochs on the full synthetic split."""
    text = (STUDIES_DIR / "synthetic.toml").read_text()
    smoke = (
        f'[presets.smoke]\nmodel = "mlp"\nmethod = "acert"\nepochs = {epochs}\nbatch_size = 64\n'
        f"warmup_epochs = 1\nramp_epochs = {max(1, epochs // 2)}\nlr = 1e-2\nval_limit = 400\n"
        "eval_limit = 200\nsearch_steps = 5\nsearch_tol = 1e-4\n"
    )
    search = text[text.index("[search.") : text.index("[study]")]
    path = folder / "bench.toml"
    path.write_text(f"{smoke}\n{search}")
    return path


def run(folder: Path, spec: Path, trials: int, concurrency: int) -> tuple[float, pd.DataFrame]:
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.5,),
        preset="smoke",
        trials=trials,
        concurrency=concurrency,
        cpus_per_trial=1,
        gpus_per_trial=0,
        storage=str(folder),
        name=f"c{concurrency}",
        spec=str(spec),
    )
    tic = time.perf_counter()
    result = run_study(request, progress=False)
    wall = time.perf_counter() - tic
    return wall, pd.read_parquet(Path(result.study_dir) / "trials.parquet")


def direct(folder: Path, base: dict, table: pd.DataFrame) -> float:
    """The study's trials, trained one after another in this process with one thread."""
    torch.set_num_threads(1)
    params = [c for c in table.columns if c.startswith("param.")]
    tic = time.perf_counter()
    for number, row in table.iterrows():
        values = {c.removeprefix("param."): row[c] for c in params}
        train(TrainConfig.from_dict({**base, **values}), folder / f"direct-{number}")
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="raycert-bench-") as tmp:
        folder = Path(tmp)
        spec = bench_spec(folder, args.epochs)
        tic = time.perf_counter()
        ray.init(
            address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False
        )
        print(f"ray.init (once per study, not counted below): {time.perf_counter() - tic:.1f} s")
        walls, tables = {}, {}
        for concurrency in (1, 2):
            walls[concurrency], tables[concurrency] = run(folder, spec, args.trials, concurrency)
        ray.shutdown()
        base = json.loads((folder / "c1" / "study.json").read_text())["base_config"]
        direct_wall = direct(folder, base, tables[1])

    per_trial = direct_wall / args.trials
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{args.trials} trials of {args.epochs} epochs, direct in one process: {direct_wall:.1f} s"
    )
    print(f"({per_trial:.2f} s per trial)")
    print(
        "concurrency  study wall  in-trial s  overhead s/trial  % of trial  % of 1 min"
        "  beyond in-trial"
    )
    for concurrency, wall in walls.items():
        overhead = (concurrency * wall - direct_wall) / args.trials
        in_trial = tables[concurrency]["seconds"].mean()
        beyond = concurrency * wall / args.trials - in_trial
        print(
            f"{concurrency:>11}  {wall:>8.1f} s  {in_trial:>8.2f} s  {overhead:>14.2f} s"
            f"  {100 * overhead / per_trial:>9.0f}%  {100 * overhead / ONE_MINUTE:>9.1f}%"
            f"  {beyond:>13.2f} s"
        )
    print(f"goal: <= {GOAL_S:g} s per trial (<= 5% of a one-minute trial)")


if __name__ == "__main__":
    main()
