"""Cost of one training step per method, as ratios measured in one run.

    python benchmarks/train.py [--data-dir DIR] [--repeats 5] [--sites]

Goal: acert/ibp <= 1.5 (a plain 8-step bisection measured 1.5-1.67 per epoch on MNIST).
Steps run at half the cap, mid-ramp, with the regularizers on. The small CNN is first trained
for a few IBP steps on real MNIST so that ACERT's radius search meets realistic radii; cnn7 runs
on random 3x32x32 images labelled with its own predictions.

Then one untimed step of every method (and of each optional adaptive variant; on cnn7 ibp and
acert only) is counted: its bound passes (calls of ``min_margin``: the radius search's dependent
rounds) and the calls that would make the host wait for a GPU (``benchmarks/counters.py``), in
total and the top 3 ops. On a GPU both set a floor under a step's time that faster kernels do
not lower. ``--sites`` lists where in the code ACERT's step makes its syncs. ACERT with its
fixed-shape radius search (``search_probes``: 8 probes x 3 rounds, a step with no sync but the
trainer's one) is timed and counted beside its bracketing search: on a CPU its passes cost 8x;
what they cost on a GPU, benchmarks/gpu.py measures.
"""

from __future__ import annotations

import argparse
import timeit
from collections import Counter
from pathlib import Path

import torch
from counters import counting_bound_passes, counting_host_syncs, top_syncs  # beside this script

from raycert.data import dataset_info, load
from raycert.training.config import TrainConfig
from raycert.training.loop import new_model, train_step
from raycert.training.methods import METHOD_SPECS, StepInput

ROOT = Path(__file__).resolve().parents[1]


SWEEP = (8, 3)  # probes, rounds of acert's fixed-shape radius search (search_probes)


def swept(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with acert's radii from the fixed-shape search (``raycert.cert.sweep``)."""
    return cfg.replace(search_probes=SWEEP[0], search_steps=SWEEP[1])


def step(model, optimizer, method: str, x, y, eps: float, cfg: TrainConfig) -> torch.Tensor:
    """The trainer's own step of ``method`` at ``eps``, mid-ramp (half the regularizer weight);
    the summed training radius of the batch."""
    spec = METHOD_SPECS[method]
    step = StepInput(x, y, eps, cfg.reg_weight / 2, seed=0)
    taken = train_step(model, optimizer, spec.loss, step, cfg)
    assert taken is not None, f"{method} diverged"
    return taken[1]["radius"]


def time_step(model, method: str, x, y, eps: float, cfg: TrainConfig, repeats: int) -> float:
    """Least seconds per step over ``repeats`` rounds (the least disturbed by other work)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)  # tiny lr: the model stays put
    timer = timeit.Timer(lambda: step(model, optimizer, method, x, y, eps, cfg))
    calls, _ = timer.autorange()
    return min(timer.repeat(repeats, calls)) / calls


def count_step(
    model, method: str, adaptive: bool | None, x, y, eps: float, cfg: TrainConfig, sites: Counter
) -> tuple[int, dict[str, int]]:
    """One step of ``method`` (``adaptive`` radii or not; None: its own choice) that leaves the
    model as it was: its bound passes and host syncs (``sites`` gets where each sync is made)."""
    cfg = cfg.replace(method=method, adaptive=adaptive)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with counting_bound_passes() as passes, counting_host_syncs(sites) as syncs:
        step(model, optimizer, method, x, y, eps, cfg)
    return passes["passes"], syncs


def count_methods(
    name: str, model, x, y, eps: float, cfg: TrainConfig, methods, show_sites: bool
) -> None:
    """Bound passes and host syncs of one step of each of ``methods`` (and of its optional
    adaptive variant); with ``show_sites``, where ACERT's step makes its syncs."""
    print(f"{name:<30} per step:  bound passes  host syncs  (top ops)")
    acert_sites: Counter[tuple[str, str]] = Counter()
    for method in methods:
        spec = METHOD_SPECS[method]
        for adaptive in (None, True) if spec.adaptive == "option" else (None,):
            sites = acert_sites if method == "acert" else Counter()
            passes, syncs = count_step(model, method, adaptive, x, y, eps, cfg, sites)
            label = f"{method} adaptive" if adaptive else method
            print(f"    {label:<26} {passes:12d} {syncs['total']:11d}  ({top_syncs(syncs)})")
    passes, syncs = count_step(model, "acert", None, x, y, eps, swept(cfg), Counter())
    label = f"acert sweep {SWEEP[0]}x{SWEEP[1]}"
    print(f"    {label:<26} {passes:12d} {syncs['total']:11d}  ({top_syncs(syncs)})")
    if show_sites:
        print("    acert's host syncs by call site:")
        for (op, site), n in acert_sites.most_common():
            print(f"        {n:4d}  {op:<28} {site.removeprefix(str(ROOT) + '/')}")


def bench(
    name: str, cfg: TrainConfig, x, y, repeats: int, warm_steps: int, counted, show_sites: bool
) -> None:
    """Times of the standard, ibp and acert steps, then the counts of the ``counted`` methods."""
    cfg = cfg.resolve()
    model = new_model(cfg).train()
    eps = cfg.max_eps / 2
    if warm_steps:
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        for i in range(warm_steps):
            step(model, optimizer, "ibp", x, y, eps * i / warm_steps, cfg)
    seconds = {
        m: time_step(model, m, x, y, eps, cfg, repeats) for m in ("standard", "ibp", "acert")
    }
    sweep_s = time_step(model, "acert", x, y, eps, swept(cfg), repeats)
    radius = float(step(model, torch.optim.SGD(model.parameters(), 0.0), "acert", x, y, eps, cfg))
    print(
        f"{name:<30} step ms: standard {1e3 * seconds['standard']:7.1f}  "
        f"ibp {1e3 * seconds['ibp']:7.1f}  acert {1e3 * seconds['acert']:7.1f}   "
        f"acert/ibp {seconds['acert'] / seconds['ibp']:.2f}  "
        f"ibp/standard {seconds['ibp'] / seconds['standard']:.2f}   "
        f"acert mean radius {radius / len(y) / eps:.0%} of eps"
    )
    sweep_radius = float(
        step(model, torch.optim.SGD(model.parameters(), 0.0), "acert", x, y, eps, swept(cfg))
    )
    print(
        f"{'':<30} acert sweep {SWEEP[0]}x{SWEEP[1]} {1e3 * sweep_s:7.1f} ms: "
        f"x{sweep_s / seconds['acert']:.2f} acert's bracketing step, "
        f"mean radius {sweep_radius / len(y) / eps:.0%} of eps"
    )
    count_methods(name, model, x, y, eps, cfg, counted, show_sites)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sites", action="store_true", help="where ACERT's step syncs")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128")

    mnist = load("mnist", "train", args.data_dir, download=False, limit=128)
    x, y = mnist.images.float() / 255, mnist.labels
    cfg = TrainConfig(dataset="mnist", model="cnn_small", search_steps=5, search_tol=1e-4)
    bench("cnn_small MNIST eps 0.2", cfg, x, y, args.repeats, 60, METHOD_SPECS, args.sites)

    cfg = TrainConfig(dataset="cifar10", model="cnn7", search_steps=5, search_tol=1e-5)
    torch.manual_seed(0)
    x = torch.rand(128, *dataset_info("cifar10").shape)
    with torch.no_grad():
        y = new_model(cfg.resolve()).eval()(x).argmax(dim=1)
    # cnn7's radii are near 0 and each of its steps takes seconds on a CPU: ibp and acert only.
    bench("cnn7 3x32x32 eps 4.4/255", cfg, x, y, args.repeats, 0, ("ibp", "acert"), args.sites)


if __name__ == "__main__":
    main()
