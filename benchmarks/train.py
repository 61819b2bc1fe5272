"""Cost of one training step per method, as ratios measured in one run.

    python benchmarks/train.py [--data-dir DIR] [--repeats 5]

Goal: acert/ibp <= 1.5 (a plain 8-step bisection measured 1.5-1.67 per epoch on MNIST).
Steps run at half the cap, mid-ramp, with the regularizers on. The small CNN is first trained
for a few IBP steps on real MNIST so that ACERT's radius search meets realistic radii; cnn7 runs
on random 3x32x32 images labelled with its own predictions.
"""

from __future__ import annotations

import argparse
import timeit

import torch

from raycert.data import dataset_info, load
from raycert.training.config import TrainConfig
from raycert.training.loop import new_model, train_step
from raycert.training.methods import METHOD_SPECS, StepInput


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


def bench(name: str, cfg: TrainConfig, x, y, repeats: int, warm_steps: int) -> None:
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
    radius = float(step(model, torch.optim.SGD(model.parameters(), 0.0), "acert", x, y, eps, cfg))
    print(
        f"{name:<30} step ms: standard {1e3 * seconds['standard']:7.1f}  "
        f"ibp {1e3 * seconds['ibp']:7.1f}  acert {1e3 * seconds['acert']:7.1f}   "
        f"acert/ibp {seconds['acert'] / seconds['ibp']:.2f}  "
        f"ibp/standard {seconds['ibp'] / seconds['standard']:.2f}   "
        f"acert mean radius {radius / len(y) / eps:.0%} of eps"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128")

    mnist = load("mnist", "train", args.data_dir, download=False, limit=128)
    x, y = mnist.images.float() / 255, mnist.labels
    cfg = TrainConfig(dataset="mnist", model="cnn_small", search_steps=5, search_tol=1e-4)
    bench("cnn_small MNIST eps 0.2", cfg, x, y, args.repeats, warm_steps=60)

    cfg = TrainConfig(dataset="cifar10", model="cnn7", search_steps=5, search_tol=1e-5)
    torch.manual_seed(0)
    x = torch.rand(128, *dataset_info("cifar10").shape)
    with torch.no_grad():
        y = new_model(cfg.resolve()).eval()(x).argmax(dim=1)
    bench("cnn7 3x32x32 eps 4.4/255", cfg, x, y, args.repeats, warm_steps=0)


if __name__ == "__main__":
    main()
