"""Several accuracy targets from one set of trials: which Optuna set-up finds each target's best?

    python benchmarks/multi_target.py [--trials 24 48] [--seeds 20]

A toy study with ACERT's trade-off (training radius ``e`` and clean-loss weight ``k`` trade
accuracy for ACR; a learning rate off its optimum costs both) and targets 0.9 and 0.8. Three
ways to spend the same trials, each told the accuracy constraint with ``trial.set_constraint``:

- ``two-objective``: TPE on (clean_acc, acr), constrained at the lowest target (raycert's choice
  for several targets);
- ``acr @ lowest``: TPE on acr, constrained at the lowest target (raycert's choice for one);
- ``acr @ highest``: TPE on acr, constrained at the highest target.

Printed: the mean regret per target over ``--seeds`` seeds, as % of the best ACR that meets the
target (found on a fine grid): lower is better. Optuna only, no Ray: seconds per setting.
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import optuna

TARGETS = (0.9, 0.8)
SETUPS = {
    "two-objective": min(TARGETS),
    "acr @ lowest": min(TARGETS),
    "acr @ highest": max(TARGETS),
}


def toy(e: float, k: float, lr: float) -> tuple[float, float]:
    """(clean_acc, acr) of the toy model."""
    off = (math.log10(lr) + 2.5) ** 2
    return 0.99 - 0.3 * e * (1 - 0.6 * k) - 0.08 * off, 0.6 * e * (1 - 0.7 * k) * (1 - 0.4 * off)


def best_acr(target: float) -> float:
    """The highest ACR with clean_acc >= target, on a fine grid at the best learning rate."""
    grid = np.linspace(0, 1, 201)
    points = [toy(e, k, 10**-2.5) for e in grid for k in grid]
    return max(acr for acc, acr in points if acc >= target)


def regret(setup: str, seed: int, trials: int, best: dict[float, float]) -> dict[float, float]:
    """% of each target's best ACR that the best feasible trial of one study misses."""
    two = setup == "two-objective"
    study = optuna.create_study(
        directions=["maximize", "maximize"] if two else ["maximize"],
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    found = []
    for _ in range(trials):
        trial = study.ask()
        acc, acr = toy(
            trial.suggest_float("e", 0, 1),
            trial.suggest_float("k", 0, 1),
            trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        )
        trial.set_constraint("min_acc", SETUPS[setup] - acc)
        study.tell(trial, [acc, acr] if two else acr)
        found.append((acc, acr))
    return {
        t: 100 * (best[t] - max((r for a, r in found if a >= t), default=0.0)) / best[t]
        for t in TARGETS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[24, 48])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    best = {t: best_acr(t) for t in TARGETS}
    print(f"mean regret over {args.seeds} seeds, % of the best ACR meeting each target")
    print(f"{'trials':>6}  {'setup':<14}" + "".join(f"  target {t:g}" for t in TARGETS) + "  worst")
    for trials in args.trials:
        for setup in SETUPS:
            runs = [regret(setup, seed, trials, best) for seed in range(args.seeds)]
            means = [float(np.mean([r[t] for r in runs])) for t in TARGETS]
            cells = "".join(f"  {m:>9.1f}%" for m in means)
            print(f"{trials:>6}  {setup:<14}{cells}  {max(means):>4.1f}%")


if __name__ == "__main__":
    main()
