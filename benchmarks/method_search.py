"""Searching the method too, at an equal wall-clock budget on real MNIST: does a study of every
training method beat an ACERT-only study? (The methods benchmark's second part:
``benchmarks/methods.py`` trains each method alone.)

    python benchmarks/method_search.py [--budget 20m] [--seeds 0 1] [--strategies acert all]
        [--targets 0.95 0.98] [--data-dir DIR] [--out runs/method-search] [--test-limit 2000]

Each strategy is one ``run_study`` of the MNIST quick preset as shipped (its search space,
starts and polish), at ``--targets`` (clean accuracy), at the same wall-clock ``--budget``:

- ``acert``: ``--method acert``, the quick study of the README's main job, at this budget;
- ``all``: ``--method all``: each trial draws its method (acert, ibp, mtl-ibp, sabr,
  crown-ibp) and that method's knobs; the five methods' recipes are its first trials.

Printed per strategy and seed: trials in all and per method, the chosen model's method, test
clean accuracy and ACR (% of the cap) at each target (the study's own float64 certification
of the whole test split), and the hypervolume of the test-split front (``benchmarks/search.py``:
every completed trial on the val Pareto front, certified on the first ``--test-limit`` test
images; unit clean accuracy x fraction of the cap) with its ratio to ``acert``'s. The question:
is ``all``'s hypervolume at least ``acert``'s, at the same budget. A study folder that exists is
resumed (and not rerun): remove ``--out`` to measure anew. Hours of CPU: 2 strategies x 2 seeds
x 20 minutes by default.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import pandas as pd
from search import compare, study_row  # benchmarks/search.py, beside this script

from raycert.study.tune.run import StudyRequest, run_study
from raycert.units import parse_duration

STRATEGIES = {"acert": "acert", "all": "all"}  # strategy -> --method
TARGETS = (0.95, 0.98)  # the issue's: where MNIST's methods differ most


def request_for(
    strategy: str,
    seed: int,
    budget: str,
    out: Path,
    data_dir: str | None,
    targets: tuple[float, ...] = TARGETS,
) -> StudyRequest:
    """The study of ``strategy`` and ``seed`` (resumed if its folder exists)."""
    name = f"{strategy}-seed{seed}"
    return StudyRequest(
        dataset="mnist",
        targets=targets,
        method=STRATEGIES[strategy],
        preset="quick",
        budget_s=parse_duration(budget),
        seed=seed,
        storage=str(out),
        name=name,
        resume=(out / name / "study.json").exists(),
        data_dir=data_dir,
        download=False,
    )


def run_strategy(
    strategy: str,
    seed: int,
    budget: str,
    out: Path,
    data_dir: str,
    test_limit: int,
    targets: tuple[float, ...] = TARGETS,
) -> dict:
    """One study of ``strategy``: its row of the table."""
    request = request_for(strategy, seed, budget, out, data_dir, targets)
    result = run_study(request, progress=False)
    row = study_row(result, strategy, seed, data_dir, test_limit)
    table = pd.read_csv(Path(result.study_dir) / "trials.csv")
    one = pd.Series([result.meta.method] * len(table))  # a study of one method
    methods = table.get("param.method", one)
    row["per method"] = " ".join(f"{m}:{n}" for m, n in methods.value_counts().items())
    for chosen in result.targets:
        row[f"method@{chosen.target}"] = (
            chosen.params.get("method", result.meta.method) if chosen.met else "-"
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="20m")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/method-search"))
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    args = parser.parse_args()
    runner = functools.partial(run_strategy, targets=tuple(args.targets))
    compare(args, runner, anchor="acert", csv="method_search.csv")


if __name__ == "__main__":
    main()
