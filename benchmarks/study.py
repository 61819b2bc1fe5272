"""Overhead of a study: N short trials through Ray Tune + Optuna vs the same trials run directly.

    python benchmarks/study.py [--trials 24] [--epochs 6]

Studies of N/2 and N trials on the synthetic dataset (the MLP, ``--epochs`` epochs, a checkpoint
and a report per epoch) run through ``run_study`` at concurrency 1 and 2, one CPU per trial, on
a local Ray cluster started once beforehand (its start-up is printed apart). The N configs of
the first N-trial study then train directly, one after another, in this process with one
thread, as a trial does.

- wall per added trial = (wall N - wall N/2) / (N/2); "fixed" = what a study costs besides its
  trials (spec, worker start-up, Tuner set-up, trials table, choosing and test-certifying the
  winner), the intercept.
- overhead per trial = concurrency x wall per added trial - direct time per trial: the
  slot-seconds a trial costs beyond its own training (it includes the slow-down of trials that
  share the 2 cores). "incl. fixed" spreads the fixed cost over the N trials as well.
- "in-trial": the time a trial spends inside its trainable (Tune's ``time_total_s``).

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

from raycert.spec import PRESETS_DIR
from raycert.study.tune.run import StudyRequest, run_study
from raycert.training.config import TrainConfig
from raycert.training.loop import train

GOAL_S, ONE_MINUTE = 1.0, 60.0


def bench_spec(folder: Path, epochs: int) -> Path:
    """The synthetic spec with a smoke preset of ``epochs`` epochs on the full synthetic split."""
    text = (PRESETS_DIR / "synthetic.toml").read_text()
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
        name=f"c{concurrency}-{trials}",
        spec=str(spec),
    )
    tic = time.perf_counter()
    result = run_study(request, progress=False)
    wall = time.perf_counter() - tic
    return wall, pd.read_parquet(Path(result.study_dir) / "trials.parquet")


def direct(folder: Path, base: dict, table: pd.DataFrame) -> float:
    """The study's trials, trained one after another in this process with one thread, after
    one untimed warm-up run."""
    torch.set_num_threads(1)
    params = [c for c in table.columns if c.startswith("param.")]
    configs = [
        TrainConfig.from_dict({**base, **{c.removeprefix("param."): row[c] for c in params}})
        for _, row in table.iterrows()
    ]
    train(configs[0], folder / "warm-up")  # first-call costs; a study pays them in "fixed"
    tic = time.perf_counter()
    for number, config in enumerate(configs):
        train(config, folder / f"direct-{number}")
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="N (even); N/2 also runs")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    sizes = (args.trials // 2, args.trials)

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
            for n in sizes:
                walls[concurrency, n], tables[concurrency, n] = run(folder, spec, n, concurrency)
        ray.shutdown()
        study = json.loads((folder / f"c1-{args.trials}" / "study.json").read_text())
        direct_wall = direct(folder, study["base_config"], tables[1, args.trials])

    per_trial = direct_wall / args.trials
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{args.trials} trials of {args.epochs} epochs, direct in one process: {direct_wall:.1f} s"
    )
    print(f"({per_trial:.2f} s per trial)")
    print(
        "concurrency  wall N/2  wall N  fixed  in-trial  overhead/trial  % of trial  % of 1 min"
        "  incl. fixed"
    )
    half = sizes[0]
    for concurrency in (1, 2):
        small, large = walls[concurrency, half], walls[concurrency, args.trials]
        marginal = (large - small) / (args.trials - half)  # wall per added trial
        fixed = small - half * marginal
        overhead = concurrency * marginal - per_trial
        amortized = (concurrency * large - direct_wall) / args.trials
        in_trial = tables[concurrency, args.trials]["seconds"].mean()
        print(
            f"{concurrency:>11}  {small:>6.1f} s  {large:>4.1f} s  {fixed:>3.1f} s"
            f"  {in_trial:>6.2f} s"
            f"  {overhead:>12.2f} s  {100 * overhead / per_trial:>9.0f}%"
            f"  {100 * overhead / ONE_MINUTE:>9.1f}%  {amortized:>9.2f} s"
        )
    print(f"goal: <= {GOAL_S:g} s per trial (<= 5% of a one-minute trial)")


if __name__ == "__main__":
    main()
