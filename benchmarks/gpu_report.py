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
from raycert.spec import load_study_spec
from raycert.training.config import TrainConfig
from raycert.training.schedule import batches_per_epoch

CIFAR = dataset_info("cifar10")
FINAL_CERT_PROBE = 128  # val images a trial certifies to price its final test pass (trial.py's)
STUDY_TRIALS = 48
GPUS_PER_TRIAL = (1.0, 0.5, 0.25, 0.125)  # those whose sharing was measured
STUDY_GPUS = (1, 8)


# ---------------------------------------------------------------------------------------------
# 4. Projection: a paper trial, and a 48-trial study
# ---------------------------------------------------------------------------------------------


def project(
    cfg: TrainConfig,
    train: dict[str, dict[str, Any]],
    val_check: dict[str, dict[str, Any]],
    cert: dict[str, dict[str, Any]],
    shared: list[dict[str, Any]],
) -> dict[str, Any]:
    """Wall time of one ``paper`` trial alone on a device, and of a study sharing devices.

    A trial trains on the training split less val (45k images): its warm-up epochs at the
    measured warm-up acert step time, its ramp at the mid-ramp one, the rest at the post-ramp
    one. After each epoch but the last it runs the per-epoch val check as measured (IBP, float32,
    ``eval_limit`` images), after the last the final one (IBP, float64, the whole val split), and
    then it times the final certification on ``FINAL_CERT_PROBE`` val images (the default
    cascade, float64-verified). With k trials per device each runs at speed-up(k) / k of its
    speed alone; trials run in waves of (devices x k). No early stopping (ASHA would cut it).
    The study ends by certifying each target's chosen model on the 10k test images, shared over
    its trial slots.
    """
    train_images = CIFAR.train_size - CIFAR.val_size
    steps = batches_per_epoch(train_images, cfg.batch_size)
    after = cfg.epochs - cfg.warmup_epochs - cfg.ramp_epochs
    train_s = steps * (
        cfg.warmup_epochs * train["acert_warmup"]["step_s"]
        + cfg.ramp_epochs * train["acert"]["step_s"]
        + after * train["acert_post_ramp"]["step_s"]
    )
    final = val_check["final"]
    checks_s = (cfg.epochs - 1) * val_check["per_epoch"]["seconds"]
    checks_s += final["seconds"] * CIFAR.val_size / final["images"]
    final_s_per_image = 1 / cert["float64"]["images_per_s"]
    checks_s += FINAL_CERT_PROBE * final_s_per_image
    trial_s = train_s + checks_s
    test_cert_s = CIFAR.test_size * final_s_per_image
    targets = len(load_study_spec("cifar10", "paper").targets)
    speedup = {row["processes"]: row["speedup"] for row in shared}
    study = []
    for share in GPUS_PER_TRIAL:
        per_device = round(1 / share)
        if per_device not in speedup:
            continue
        trial_shared_s = trial_s * per_device / speedup[per_device]
        for gpus in STUDY_GPUS:
            slots = gpus * per_device
            waves = math.ceil(STUDY_TRIALS / slots)
            ending_s = targets * test_cert_s * per_device / speedup[per_device] / slots
            study.append(
                {
                    "gpus_per_trial": share,
                    "gpus": gpus,
                    "trials": STUDY_TRIALS,
                    "hours": (waves * trial_shared_s + ending_s) / 3600,
                }
            )
    return {
        "epochs": cfg.epochs,
        "train_images": train_images,
        "steps_per_epoch": steps,
        "trial_train_hours": train_s / 3600,
        "trial_eval_hours": checks_s / 3600,
        "trial_hours": trial_s / 3600,
        "test_cert_seconds": test_cert_s,
        "targets": targets,
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
        if name == "ibp":
            note += "; goal <= 5 s"
        rows.append((label, fmt(t["epoch_s"]), "s/epoch", note))
    for name, t in train.items():
        if not name.startswith("acert_sweep_"):
            continue
        probes_rounds = name.removeprefix("acert_sweep_")
        note = (
            f"{probes_rounds} probes x rounds; "
            f"x{t['epoch_s'] / train['ibp']['epoch_s']:.2f} ibp's, "
            f"mean radius {fmt(t['radius_pct_of_eps'])}% of eps "
            f"(bracketing: {fmt(train['acert']['radius_pct_of_eps'])}%)"
        )
        rows.append(
            (f"acert epoch, mid-ramp, sweep {probes_rounds}", fmt(t["epoch_s"]), "s/epoch", note)
        )
    goals = {
        "acert/standard": "",
        "acert/ibp": "goal <= 1.3",
        "ibp/standard": "",
        "acert warm-up/standard": "goal <= 2",
    }
    for name, ratio in results["ratios"].items():
        rows.append((name, f"{ratio:.2f}", "ratio", goals[name]))
    acert = train["acert"]
    search = f"{results['search_steps']} search steps max"
    rows.append(
        ("acert search bound passes per step", fmt(acert["bound_passes_per_step"]), "", search)
    )
    syncs = ", ".join(f"{name} {t['host_syncs_per_step']}" for name, t in train.items())
    rows.append(
        (
            "acert host syncs per step",
            str(acert["host_syncs_per_step"]),
            "",
            f"counted by benchmarks/counters.py in one step; {syncs}",
        )
    )
    rows.append(("acert mean radius", fmt(acert["radius_pct_of_eps"]), "% of eps", "mid-ramp"))
    rows.append(("train clean accuracy", fmt(100 * acert["clean_acc"]), "%", "acert, mid-ramp"))
    for name in ("standard", "ibp", "acert"):
        peak = train[name]["peak_mib"]
        rows.append((f"peak memory {name}", fmt(peak), "MiB", "max_memory_allocated, data incl."))
    check = results["val_check"]
    per_epoch, final = check["per_epoch"], check["final"]
    rows.append(
        (
            f"per-epoch val check ({per_epoch['images']} images)",
            fmt(per_epoch["seconds"]),
            "s",
            f"IBP, float32 + float64 re-check; {100 * per_epoch['share_of_acert_epoch']:.1f}% "
            "of an acert mid-ramp epoch; goal <= 5%",
        )
    )
    rows.append(
        (
            f"final val check ({final['images']} images)",
            fmt(final["seconds"]),
            "s",
            "IBP, float64; after the last epoch",
        )
    )
    for dtype in ("float32", "float64"):
        c = results["certify"][dtype]
        note = (
            f"{c['images']} images at cap 8.8/255, tol {c['tol']:g}, batch {c['batch_size']}; "
            f"{100 * c['clean_acc']:.0f}% correct, "
            f"{c['radii_inside_cap_pct']:.0f}% of radii inside (0, cap)"
        )
        rows.append((f"certify {dtype}", fmt(c["images_per_s"]), "images/s", note))
        goal = "default cascade, float64-verified; goal <= 30 s" if dtype == "float64" else ""
        rows.append((f"certify {dtype}, 10k images", fmt(c["seconds_per_10k"]), "s", goal))
        passes = (
            f"{c['passes_per_batch']:.1f} per batch, "
            f"{c['sample_passes_per_image']:.2f} sample-passes per image"
        )
        rows.append((f"certify {dtype} bound passes", str(c["bound_passes"]), "passes", passes))
    tf32 = results["tf32"]
    for key, label in (("tf32_allowed", "TF32 allowed"), ("ieee_float32", "IEEE float32")):
        gap = tf32[key]
        note = (
            f"largest gap to float64 over {tf32['images']} images at eps "
            f"{255 * tf32['eps_pixel']:.2f}/255, relative to the largest bound; "
            f"{gap['verdicts_differ']} of {tf32['certified_float64']} float64 verdicts differ"
        )
        rows.append((f"float32 IBP bound, {label}", f"{gap['max_rel_gap']:.2e}", "rel.", note))
    for key, label in (("acert_step", "one acert step"), ("cert_batch", "one certification batch")):
        prof = results["profile"][key]
        busy = prof["device_busy_share"]
        top = ", ".join(f"{t['name']} {t['self_ms']:.1f} ms x{t['calls']}" for t in prof["top"][:3])
        busy_note = "n/a" if busy is None else f"{100 * busy:.0f}%"
        note = (
            f"{prof['kernel_launches']} kernel launches, {prof['host_syncs']} host syncs, "
            f"device busy {busy_note}; top: {top}"
        )
        rows.append((f"profile: {label}", fmt(1e3 * prof["wall_s"]), "ms", note))
    rows += shared_rows(results["shared"])
    p = results["projection"]
    rows.append(
        (
            f"paper trial ({p['epochs']} epochs)",
            fmt(p["trial_hours"]),
            "h",
            f"alone on 1 device; train {fmt(p['trial_train_hours'])} h + "
            f"val checks and final probe {fmt(p['trial_eval_hours'])} h; "
            f"{p['train_images']} train images; goal <= 0.5 h",
        )
    )
    rows.append(
        (
            "test certification of a chosen model",
            fmt(p["test_cert_seconds"]),
            "s",
            f"10k images, default cascade, float64-verified; {p['targets']} targets",
        )
    )
    for s in p["study"]:
        label = f"{s['trials']}-trial study, {s['gpus_per_trial']:g} GPU/trial, {s['gpus']} GPU(s)"
        note = "every trial runs all epochs (no ASHA), then the test certifications"
        if s["gpus"] == 8:
            note += "; goal <= 2 h at the recommended share"
        rows.append((label, fmt(s["hours"]), "h", note))

    return markdown(rows)


def shared_rows(shared: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """The table's rows of section 3: k training processes sharing one device."""
    rows = []
    for row in shared:
        k = row["processes"]
        fraction = "n/a" if row["memory_fraction"] is None else f"{row['memory_fraction']:g}"
        note = (
            f"speed-up {row['speedup']:.2f} over 1; memory fraction {fraction}; "
            f"peak {fmt(row['peak_mib_per_process'])} MiB/process"
        )
        if k == 4:
            note += "; goal speed-up >= 2"
        rows.append((f"{k} training process(es)", fmt(row["images_per_s"]), "images/s", note))
    return rows


def markdown(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| measurement | value | unit | note |", "| --- | ---: | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
