"""What benchmarks/gpu.py makes of its measurements: the projection of a ``paper`` CIFAR-10
trial and of a 48-trial study (section 4), the markdown table, and the JSON file.

Reads only the results dict the measurement sections fill; imports no ray, optuna or plotly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from raycert.data import dataset_info
from raycert.training.config import TrainConfig
from raycert.training.schedule import batches_per_epoch

CIFAR = dataset_info("cifar10")
STUDY_TRIALS = 48
GPUS_PER_TRIAL = (1.0, 0.5, 0.25)
STUDY_GPUS = (1, 8)


# ---------------------------------------------------------------------------------------------
# 4. Projection: a paper trial, and a 48-trial study
# ---------------------------------------------------------------------------------------------


def project(
    cfg: TrainConfig,
    train: dict[str, dict[str, Any]],
    cert: dict[str, dict[str, Any]],
    shared: list[dict[str, Any]],
) -> dict[str, Any]:
    """Wall time of one ``paper`` trial alone on a device, and of a study sharing devices.

    A trial trains on the training split less val (45k images): its warm-up epochs at the
    measured warm-up acert step time, its ramp at the mid-ramp one, the rest at the post-ramp
    one; each epoch but the last certifies ``eval_limit`` val images in float32, the last the
    whole val split in float64. With k trials per device each runs at speed-up(k) / k of its
    speed alone; trials run in waves of (devices x k). No early stopping (ASHA would cut it).
    """
    train_images = CIFAR.train_size - CIFAR.val_size
    steps = batches_per_epoch(train_images, cfg.batch_size)
    after = cfg.epochs - cfg.warmup_epochs - cfg.ramp_epochs
    train_s = steps * (
        cfg.warmup_epochs * train["acert_warmup"]["step_s"]
        + cfg.ramp_epochs * train["acert"]["step_s"]
        + after * train["acert_post_ramp"]["step_s"]
    )
    eval_n = min(cfg.eval_limit or CIFAR.val_size, CIFAR.val_size)
    eval_s = (cfg.epochs - 1) * eval_n / cert["float32"]["images_per_s"]
    eval_s += CIFAR.val_size / cert["float64"]["images_per_s"]
    trial_s = train_s + eval_s
    speedup = {row["processes"]: row["speedup"] for row in shared}
    study = []
    for share in GPUS_PER_TRIAL:
        per_device = round(1 / share)
        if per_device not in speedup:
            continue
        trial_shared_s = trial_s * per_device / speedup[per_device]
        for gpus in STUDY_GPUS:
            waves = math.ceil(STUDY_TRIALS / (gpus * per_device))
            study.append(
                {
                    "gpus_per_trial": share,
                    "gpus": gpus,
                    "trials": STUDY_TRIALS,
                    "hours": waves * trial_shared_s / 3600,
                }
            )
    return {
        "epochs": cfg.epochs,
        "train_images": train_images,
        "steps_per_epoch": steps,
        "trial_train_hours": train_s / 3600,
        "trial_eval_hours": eval_s / 3600,
        "trial_hours": trial_s / 3600,
        "study": study,
    }


# ---------------------------------------------------------------------------------------------
# Output: one markdown table, and the numbers as JSON
# ---------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def table(results: dict[str, Any]) -> str:
    """The results as a markdown table: measurement, value, unit, note."""
    rows: list[tuple[str, str, str, str]] = []
    train, steps = results["train"], results["timed_steps"]
    epoch_note = f"{steps} steps timed, x{results['steps_per_epoch']} steps (50k/batch)"
    for name, label in [
        ("standard", "standard epoch, mid-ramp"),
        ("ibp", "ibp epoch, mid-ramp"),
        ("acert", "acert epoch, mid-ramp"),
        ("acert_warmup", "acert epoch, warm-up"),
        ("acert_post_ramp", "acert epoch, after the ramp"),
    ]:
        t = train[name]
        note = f"epoch {t['epoch']}, eps {255 * t['eps_pixel']:.2f}/255; {epoch_note}"
        rows.append((label, fmt(t["epoch_s"]), "s/epoch", note))
    goals = {"acert/standard": "goal <= 4", "acert/ibp": "goal <= 1.3", "ibp/standard": ""}
    for name, ratio in results["ratios"].items():
        rows.append((name, f"{ratio:.2f}", "ratio", goals[name]))
    acert = train["acert"]
    search = f"{results['search_steps']} search steps max"
    rows.append(
        ("acert search bound passes per step", fmt(acert["bound_passes_per_step"]), "", search)
    )
    rows.append(("acert mean radius", fmt(acert["radius_pct_of_eps"]), "% of eps", "mid-ramp"))
    rows.append(("train clean accuracy", fmt(100 * acert["clean_acc"]), "%", "acert, mid-ramp"))
    for name in ("standard", "ibp", "acert"):
        peak = train[name]["peak_mib"]
        rows.append((f"peak memory {name}", fmt(peak), "MiB", "max_memory_allocated, data incl."))
    for dtype in ("float32", "float64"):
        c = results["certify"][dtype]
        note = (
            f"{c['images']} images at cap 8.8/255, tol {c['tol']:g}, batch {c['batch_size']}; "
            f"{100 * c['clean_acc']:.0f}% correct, "
            f"{c['radii_inside_cap_pct']:.0f}% of radii inside (0, cap)"
        )
        rows.append((f"certify {dtype}", fmt(c["images_per_s"]), "images/s", note))
        goal = "goal < 60 s" if dtype == "float64" else ""
        rows.append((f"certify {dtype}, 10k images", fmt(c["seconds_per_10k"]), "s", goal))
        passes = (
            f"{c['passes_per_batch']:.1f} per batch, "
            f"{c['sample_passes_per_image']:.2f} sample-passes per image"
        )
        rows.append((f"certify {dtype} bound passes", str(c["bound_passes"]), "passes", passes))
    for row in results["shared"]:
        k = row["processes"]
        fraction = "n/a" if row["memory_fraction"] is None else f"{row['memory_fraction']:g}"
        note = (
            f"speed-up {row['speedup']:.2f} over 1; memory fraction {fraction}; "
            f"peak {fmt(row['peak_mib_per_process'])} MiB/process"
        )
        if k == 4:
            note += "; goal speed-up >= 2"
        rows.append((f"{k} training process(es)", fmt(row["images_per_s"]), "images/s", note))
    p = results["projection"]
    rows.append(
        (
            f"paper trial ({p['epochs']} epochs)",
            fmt(p["trial_hours"]),
            "h",
            f"alone on 1 device; train {fmt(p['trial_train_hours'])} h + "
            f"eval {fmt(p['trial_eval_hours'])} h; {p['train_images']} train images",
        )
    )
    for s in p["study"]:
        label = f"{s['trials']}-trial study, {s['gpus_per_trial']:g} GPU/trial, {s['gpus']} GPU(s)"
        rows.append((label, fmt(s["hours"]), "h", "every trial runs all epochs (no ASHA)"))

    lines = ["| measurement | value | unit | note |", "| --- | ---: | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
