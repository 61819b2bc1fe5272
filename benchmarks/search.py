"""Search quality at an equal wall-clock budget on real MNIST: does a study beat its anchors?

    python benchmarks/search.py [--budget 10m] [--seeds 0 1]
        [--strategies raycert rungs tpe random old]
        [--data-dir DIR] [--out runs/search] [--test-limit 2000]

Every strategy is one ``run_study`` of the MNIST quick preset's search space, ACERT, targets
0.95 and 0.9, at the same wall-clock ``--budget`` (the old quick study has its own length):

- ``raycert``: the quick preset as shipped (the recipe as trial 0, its ``starts`` next, then
  TPE; the budget's end polishes the front, ``raycert.study.policy.polish``);
- ``rungs``: the same with a multi-fidelity search over the run's length: new configurations
  train a third of the run (4 of 12 epochs, the schedule's shape kept), the best third of
  those are re-run whole;
- ``tpe``: Ray Tune + Optuna as a user would wire them alone: TPE, every trial at the quick
  preset's full schedule, no enqueued recipe, no polishing (the fair anchor);
- ``random``: random search at that length, no recipe, no polishing;
- ``old``: the quick study before budgets, for the record: 12 trials of 5 epochs (1 warm-up,
  3 ramp) on 15k images, ``max_eps`` 0.1-0.4, ``kappa`` <= 0.5, ``lr``.

Printed per strategy and seed: the chosen model's test clean accuracy and ACR (% of the cap) at
0.95 and 0.9 (from the study's own float64 test certification), the hypervolume of the
test-split front above (clean 0.90, ACR 0) and its ratio to ``tpe``. The hypervolume certifies
every completed trial on the val Pareto front on the first ``--test-limit`` test images (the
default cascade); its unit is clean accuracy x fraction of the cap. Goals (issue 12): the
main job's model at 0.95 has test clean >= 95% and ACR >= 85% of the cap; hypervolume >= 1.3x
``tpe``. Hours of CPU: 5 strategies x 2 seeds x 10 minutes by default.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from raycert.data import resolve_root
from raycert.spec import PRESETS_DIR
from raycert.study.tune.run import StudyRequest, StudyResult, run_study
from raycert.training.evaluation import certify_run
from raycert.units import parse_duration

TARGETS = (0.95, 0.9)
REFERENCE = (0.90, 0.0)  # (clean accuracy, ACR as a fraction of the cap)
QUICK_STUDY = '[study.quick]\nbudget = "10m"\n'
OLD_QUICK = """epochs = 5
batch_size = 128
max_eps = 0.4
warmup_epochs = 1
ramp_epochs = 3
kappa = 0.0
reg_weight = 0.5
lr = 2e-3
train_limit = 15000
"""
OLD_SEARCH = """[search.max_eps]
type = "float"
low = 0.1
high = 0.4

[search.kappa]
type = "float"
low = 0.0
high = 0.5

[search.lr]
type = "log-float"
low = 5e-4
high = 5e-3

[study]"""


def spec_text(strategy: str, budget: str) -> str:
    """The MNIST spec file with ``[study.quick]`` (and for ``old`` the preset and search) set
    for ``strategy``."""
    text = (PRESETS_DIR / "mnist.toml").read_text()
    assert QUICK_STUDY in text, "the quick study table changed: update this benchmark"
    settings = {
        "raycert": f'budget = "{budget}"\n',
        "rungs": f'budget = "{budget}"\nrungs = [0.333, 1.0]\neta = 3\n',
        "tpe": f'budget = "{budget}"\nrecipe_first = false\n',
        "random": f'budget = "{budget}"\nrecipe_first = false\nsampler = "random"\n',
        "old": "trials = 12\nrecipe_first = false\n",
    }[strategy]
    text = text.replace(QUICK_STUDY, f"[study.quick]\n{settings}")
    if strategy in ("tpe", "random", "old"):  # polishing is raycert's
        text = re.sub(r"(?m)^polish = .*\n", "", text)
    if strategy == "old":
        quick = text.index("[presets.quick]")
        end = text.index("train_limit = 20000\n", quick) + len("train_limit = 20000\n")
        body = text[quick:end]
        start = body.index("epochs = 12")
        text = text[:quick] + body[:start] + OLD_QUICK + text[end:]
        search = text.index("[search.max_eps]")
        text = text[:search] + OLD_SEARCH + text[text.index("[study]", search) + len("[study]") :]
    return text


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by ``points`` (clean accuracy, ACR fraction) above ``REFERENCE``."""
    ref_acc, ref_acr = REFERENCE
    area, best_acr = 0.0, ref_acr
    for acc, acr in sorted(points, reverse=True):  # by accuracy, highest first
        if acc > ref_acc and acr > best_acr:
            area += (acc - ref_acc) * (acr - best_acr)
            best_acr = acr
    return area


def test_front(study_dir: Path, data_dir: str, limit: int) -> list[tuple[float, float]]:
    """(test clean accuracy, test ACR fraction) of every completed trial on the val front."""
    table = pd.read_csv(study_dir / "trials.csv")
    front = table[(table["status"] == "completed") & table["pareto"] & table["run_dir"].notna()]
    points = []
    for run_dir in front["run_dir"]:  # relative to the study folder
        _, test = certify_run(
            study_dir / run_dir, "test", data_dir=data_dir, download=False, limit=limit
        )
        points.append((test["clean_acc"], test["acr"] / test["acr_cap"]))
    return points


def run_strategy(
    strategy: str, seed: int, budget: str, out: Path, data_dir: str, test_limit: int
) -> dict:
    """One study of ``strategy`` (resumed if its folder exists): its row of the table."""
    name = f"{strategy}-seed{seed}"
    spec = out / f"{name}.toml"
    spec.write_text(spec_text(strategy, budget))
    request = StudyRequest(
        dataset="mnist",
        targets=TARGETS,
        preset="quick",
        seed=seed,
        storage=str(out),
        name=name,
        resume=(out / name / "study.json").exists(),
        data_dir=data_dir,
        spec=str(spec),
        download=False,
    )
    return study_row(run_study(request, progress=False), strategy, seed, data_dir, test_limit)


def study_row(
    result: StudyResult, strategy: str, seed: int, data_dir: str, test_limit: int
) -> dict:
    """A finished study's row: its trials, minutes, each target's test clean accuracy and ACR
    (% of cap), and the hypervolume of its val front on the test split."""
    counts = result.meta.trial_counts
    row = {"strategy": strategy, "seed": seed, "trials": sum(counts.values())}
    row["completed"] = counts.get("completed", 0)
    row["minutes"] = result.meta.spent_s / 60
    chosen = {t.target: t for t in result.targets}
    for target in sorted(chosen):
        test = chosen[target].test if chosen[target].met else None
        row[f"clean@{target}"] = test["clean_acc"] if test else float("nan")
        row[f"acr%@{target}"] = test["acr_pct"] if test else float("nan")
    row["hypervolume"] = hypervolume(test_front(Path(result.study_dir), data_dir, test_limit))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--strategies", nargs="+", default=["raycert", "rungs", "tpe", "random", "old"]
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/search"))
    parser.add_argument("--test-limit", type=int, default=2000)
    args = parser.parse_args()
    compare(args, run_strategy, anchor="tpe", csv="search.csv")


def compare(args: argparse.Namespace, run_strategy, anchor: str, csv: str) -> None:
    """Run every strategy for every seed (``args``: budget, seeds, strategies, data_dir, out,
    test_limit), print each row as it comes, then the table with each hypervolume over the
    ``anchor`` strategy's of the same seed and the means over seeds; write it to ``csv``."""
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
    ratio = f"hv / {anchor}"
    if anchor in args.strategies:
        base = table[table["strategy"] == anchor].set_index("seed")["hypervolume"]
        table[ratio] = table["hypervolume"] / table["seed"].map(base)
    table.to_csv(out / csv, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    columns = [c for c in ("hypervolume", ratio, "minutes") if c in table]
    means = table.groupby("strategy")[columns].mean()
    print("\nmeans over seeds\n" + means.to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
