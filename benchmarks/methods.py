"""The certified-training methods side by side on real MNIST: accuracy, radius and cost.

    python benchmarks/methods.py [--data-dir DIR] [--out runs/methods] [--radii 0.2,0.4]
        [--methods ibp,acert,mtl-ibp,mtl-ibp+adaptive,...] [--train-limit 20000] [--epochs 12]

Every run is the MNIST ``quick`` preset (the small CNN, 12 epochs on 20k images: 1 warm-up,
6 ramp) with its method and training radius changed, on the CPU; ``+adaptive`` trains at
adaptive radii (ACERT's, an option of mtl-ibp, sabr and crown-ibp). ``ibp`` also runs at
``--front-radii``, so that its accuracy-radius front has a few points. Each model is certified
on ``--test-limit`` test images by the same code as every method (``certify_run``: float64,
the default verifier cascade, cap 0.4).

Printed per run: test clean accuracy, ACR as % of the cap, certified accuracy at 0.1 and 0.3,
seconds per training epoch over the run and over the ramp's epochs as multiples of ``ibp``'s
at the same radius in this invocation, and ACR against IBP's front at the same clean accuracy
(percentage points above or below the line through IBP's Pareto points; "above" where the run
is more accurate than every IBP point and has at least the ACR of the most accurate one).

Goals: per-epoch cost of mtl-ibp and sabr at most 1.5x ibp's (attack included), crown-ibp at
most 3x; mtl-ibp and sabr on or above IBP's front. Part two, the methods searched together in
one study against an ACERT-only study at the same budget: ``benchmarks/method_search.py``. A
run folder that exists is resumed, so its seconds are those of the invocation that trained it:
remove ``--out`` to time everything anew.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from raycert.spec import load_preset
from raycert.training.config import TrainConfig
from raycert.training.evaluation import certify_run
from raycert.training.loop import train
from raycert.training.methods import METHOD_SPECS

ALL_RUNS = "ibp,acert,mtl-ibp,mtl-ibp+adaptive,sabr,sabr+adaptive,crown-ibp,crown-ibp+adaptive"


@dataclass
class Row:
    name: str
    method: str
    max_eps: float
    clean: float
    acr_pct: float
    cert_01: float
    cert_03: float
    epoch_s: float
    ramp_epoch_s: float


def parse_runs(text: str) -> list[tuple[str, bool]]:
    """``mtl-ibp+adaptive`` -> (method, adaptive); a method that fixes its radii takes none."""
    runs = []
    for item in text.split(","):
        method, _, flag = item.strip().partition("+")
        if method not in METHOD_SPECS or flag not in ("", "adaptive"):
            raise SystemExit(f"unknown run {item!r}: a method of {', '.join(METHOD_SPECS)}")
        if flag and METHOD_SPECS[method].adaptive != "option":
            raise SystemExit(f"{method} fixes its radii: drop +adaptive")
        runs.append((method, bool(flag)))
    return runs


def seconds_per_epoch(metrics: list[dict], cfg: TrainConfig) -> tuple[float, float]:
    """Mean training seconds per epoch over the run and over the ramp's whole epochs."""
    cumulative = [0.0] + [m["train_seconds"] for m in metrics]
    start = int(cfg.warmup_epochs)
    end = min(int(cfg.warmup_epochs + cfg.ramp_epochs), len(metrics))
    ramp = (cumulative[end] - cumulative[start]) / max(end - start, 1)
    return cumulative[-1] / len(metrics), ramp


def front_gap(row: Row, ibp: list[Row]) -> str:
    """The row against IBP's front (its Pareto points in clean accuracy and ACR): within the
    front's accuracy range, ACR minus the front's line there in % points of the cap; outside
    it, "below" where an IBP point is at least as accurate and robust, "above" where the row
    is at least as accurate and robust as the front's end, else "beyond" (a trade-off IBP's
    runs do not reach, with the side named)."""
    points = sorted((r.clean, r.acr_pct) for r in ibp)
    pareto = [
        p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)
    ]
    if not pareto:
        return "n/a"
    for (c0, a0), (c1, a1) in zip(pareto, pareto[1:], strict=False):
        if c0 <= row.clean <= c1:
            line = a0 if c1 == c0 else a0 + (a1 - a0) * (row.clean - c0) / (c1 - c0)
            return f"{row.acr_pct - line:+.1f}"
    if any(c >= row.clean and a >= row.acr_pct for c, a in pareto):
        return "below (dominated)"
    end = pareto[-1] if row.clean > pareto[-1][0] else pareto[0]
    if row.clean >= end[0] and row.acr_pct >= end[1]:
        return "above (dominates)"
    return "beyond (more accurate)" if row.clean > end[0] else "beyond (more robust)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/methods"))
    parser.add_argument("--methods", default=ALL_RUNS)
    parser.add_argument("--radii", default="0.2,0.4", help="training radii of every method")
    parser.add_argument("--front-radii", default="0.1,0.3", help="more radii for ibp alone")
    parser.add_argument("--train-limit", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--ramp-epochs", type=float, default=6)
    parser.add_argument("--test-limit", type=int, default=2_000)
    args = parser.parse_args()
    runs = parse_runs(args.methods)
    radii = [float(r) for r in args.radii.split(",")]
    front = [float(r) for r in args.front_radii.split(",") if r.strip()]
    base = load_preset("mnist", "quick").replace(
        epochs=args.epochs, ramp_epochs=args.ramp_epochs, train_limit=args.train_limit
    )
    print(
        f"MNIST quick preset: {base.model}, {base.epochs} epochs ({base.warmup_epochs} warm-up, "
        f"{base.ramp_epochs} ramp), {args.train_limit} training images, batch "
        f"{base.batch_size}; {args.test_limit} test images, cap 0.4; CPU, "
        f"{torch.get_num_threads()} thread(s)",
        flush=True,
    )
    plan = [("ibp", False, eps) for eps in sorted(set(radii) | set(front))]
    plan += [(m, a, eps) for m, a in runs if (m, a) != ("ibp", False) for eps in radii]
    rows: list[Row] = []
    for method, adaptive, eps in plan:
        name = f"{method}{'+adaptive' if adaptive else ''} {eps:g}"
        cfg = base.replace(method=method, max_eps=eps, adaptive=True if adaptive else None)
        run_dir = args.out / name.replace(" ", "-")
        result = train(cfg, run_dir, data_dir=args.data_dir, device="cpu", resume=run_dir.exists())
        if result.status != "completed":
            print(f"{name}: {result.status} ({result.message})", flush=True)
            continue
        _, test = certify_run(
            run_dir, "test", data_dir=args.data_dir, limit=args.test_limit, device="cpu"
        )
        epoch_s, ramp_s = seconds_per_epoch(result.metrics, result.config)
        rows.append(
            Row(
                name,
                method,
                eps,
                test["clean_acc"],
                test["acr_pct"],
                test["cert_acc@0.1"],
                test["cert_acc@0.3"],
                epoch_s,
                ramp_s,
            )
        )
        print(f"{name}: done, {epoch_s:.1f} s/epoch", flush=True)
    ibp = {r.max_eps: r for r in rows if r.name.startswith("ibp ")}
    header = (
        f"{'run':<24} {'clean':>7} {'ACR %cap':>9} {'cert@0.1':>9} {'cert@0.3':>9} "
        f"{'s/epoch':>8} {'x ibp':>6} {'ramp x ibp':>11}  ACR vs IBP front"
    )
    lines = [header]
    for r in rows:
        same = ibp.get(r.max_eps)
        ratio = f"{r.epoch_s / same.epoch_s:6.2f}" if same else f"{'n/a':>6}"
        ramp = f"{r.ramp_epoch_s / same.ramp_epoch_s:11.2f}" if same else f"{'n/a':>11}"
        gap = "" if r.method == "ibp" else front_gap(r, list(ibp.values()))
        lines.append(
            f"{r.name:<24} {r.clean:7.2%} {r.acr_pct:9.1f} {r.cert_01:9.2%} {r.cert_03:9.2%} "
            f"{r.epoch_s:8.1f} {ratio} {ramp}  {gap}"
        )
    print("\n".join(["", *lines]))


if __name__ == "__main__":
    main()
