"""Searching the method too, at an equal wall-clock budget on real MNIST: does a study of every
training method beat an ACERT-only study? (The methods benchmark's second part:
``benchmarks/methods.py`` trains each method alone.)

    python benchmarks/method_search.py [--budget 20m] [--seeds 0 1] [--strategies acert all]
        [--data-dir DIR] [--out runs/method-search] [--test-limit 2000]

Each strategy is one ``run_study`` of the MNIST quick preset as shipped (its search space,
starts and polish), targets 0.95 and 0.9, at the same wall-clock ``--budget``:

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
import json
from pathlib import Path

import pandas as pd
from search import hypervolume, test_front  # benchmarks/search.py, beside this script

from raycert.data import resolve_root
from raycert.study.tune.run import StudyRequest, run_study
from raycert.units import parse_duration

TARGETS = (0.95, 0.9)
STRATEGIES = {"acert": "acert", "all": "all"}  # strategy -> --method


def request_for(
    strategy: str, seed: int, budget: str, out: Path, data_dir: str | None
) -> StudyRequest:
    """The study of ``strategy`` and ``seed`` (resumed if its folder exists)."""
    name = f"{strategy}-seed{seed}"
    return StudyRequest(
        dataset="mnist",
        targets=TARGETS,
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
    strategy: str, seed: int, budget: str, out: Path, data_dir: str, test_limit: int
) -> dict:
    """One study of ``strategy``: its row of the table."""
    result = run_study(request_for(strategy, seed, budget, out, data_dir), progress=False)
    counts = result.meta.trial_counts
    row = {"strategy": strategy, "seed": seed, "trials": sum(counts.values())}
    row["completed"] = counts.get("completed", 0)
    row["minutes"] = result.meta.spent_s / 60
    table = pd.read_csv(Path(result.study_dir) / "trials.csv")
    one = pd.Series([result.meta.method] * len(table))  # a study of one method
    methods = table.get("param.method", one)
    row["per method"] = " ".join(f"{m}:{n}" for m, n in methods.value_counts().items())
    chosen = {t.target: t for t in result.targets}
    for target in TARGETS:
        won = chosen[target] if chosen[target].met else None
        test = won.test if won else None
        row[f"method@{target}"] = won.params.get("method", result.meta.method) if won else "-"
        row[f"clean@{target}"] = test["clean_acc"] if test else float("nan")
        row[f"acr%@{target}"] = test["acr_pct"] if test else float("nan")
    row["hypervolume"] = hypervolume(test_front(Path(result.study_dir), data_dir, test_limit))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="20m")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/method-search"))
    parser.add_argument("--test-limit", type=int, default=2000)
    args = parser.parse_args()
    parse_duration(args.budget)  # a bad budget fails before any study runs
    data_dir = str(resolve_root(args.data_dir))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for strategy in args.strategies:
            row = run_strategy(strategy, seed, args.budget, out, data_dir, args.test_limit)
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    if "acert" in args.strategies:
        anchor = table[table["strategy"] == "acert"].set_index("seed")["hypervolume"]
        table["hv / acert"] = table["hypervolume"] / table["seed"].map(anchor)
    table.to_csv(out / "method_search.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    columns = [c for c in ("hypervolume", "hv / acert", "minutes") if c in table]
    means = table.groupby("strategy")[columns].mean()
    print("\nmeans over seeds\n" + means.to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
