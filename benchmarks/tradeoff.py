"""Accuracy-robustness trade-off on real MNIST: standard, IBP at two radii, ACERT at two kappas.

    python benchmarks/tradeoff.py --preset quick [--data-dir DIR] [--out runs/tradeoff]

Every model gets the same budget (by default the issue's reference: 12 epochs on 20k training
images, the small CNN with BatchNorm) and is certified on 2k test images in float64 with the
MNIST cap 0.4. The claim to check: at comparable clean accuracy, ACERT reaches a higher ACR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raycert.spec import load_preset
from raycert.training.evaluation import certify_run
from raycert.training.loop import train

RUNS = [
    ("standard", {"method": "standard"}),
    ("ibp eps 0.3", {"method": "ibp", "max_eps": 0.3}),
    ("ibp eps 0.4", {"method": "ibp", "max_eps": 0.4}),
    ("acert eps 0.4 kappa 0", {"method": "acert", "max_eps": 0.4, "kappa": 0.0}),
    ("acert eps 0.4 kappa 0.75", {"method": "acert", "max_eps": 0.4, "kappa": 0.75}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/tradeoff"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--ramp-epochs", type=int, default=6)
    parser.add_argument("--train-limit", type=int, default=20_000)
    parser.add_argument("--test-limit", type=int, default=2_000)
    args = parser.parse_args()
    base = load_preset("mnist", args.preset).replace(
        epochs=args.epochs,
        ramp_epochs=args.ramp_epochs,
        train_limit=args.train_limit,
        eval_limit=500,
    )
    print(
        f"MNIST, {base.model}, {args.epochs} epochs ({base.warmup_epochs} warm-up, "
        f"{args.ramp_epochs} ramp) on {args.train_limit} images; "
        f"{args.test_limit} test images, cap 0.4"
    )
    header = (
        f"{'run':<26} {'clean':>7} {'ACR % cap':>10} {'cert@0.1':>9} {'cert@0.3':>9} {'train s':>8}"
    )
    rows = [header]
    for name, overrides in RUNS:
        cfg = base.replace(**overrides)
        run_dir = args.out / name.replace(" ", "-")
        result = train(cfg, run_dir, data_dir=args.data_dir, resume=run_dir.exists())
        _, test = certify_run(run_dir, "test", data_dir=args.data_dir, limit=args.test_limit)
        rows.append(
            f"{name:<26} {test['clean_acc']:7.2%} {test['acr_pct']:10.1f} "
            f"{test['cert_acc@0.1']:9.2%} {test['cert_acc@0.3']:9.2%} "
            f"{result.metrics[-1]['train_seconds']:8.0f}"
        )
        print(rows[-1], flush=True)
    print("\n".join(["", *rows]))


if __name__ == "__main__":
    main()
