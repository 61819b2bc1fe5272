r"""The GPU path, measured: cnn7 training and certification speed, peak memory, shared GPUs.

On CIFAR-10-shaped synthetic data (3x32x32, 10 classes, 50k training images from
``raycert.data.synthetic_split``: class prototypes plus noise, learnable, so a short IBP training
gives the radius search real radii to find; no dataset files), for cnn7 at batch 128:

1. Training. Seconds per epoch of ``standard``, ``ibp`` and ``acert`` (10 search steps) mid-ramp
   of the CIFAR-10 ``paper`` preset, taken by the trainer's own epoch function
   (``raycert.training.loop.train_epoch``: batches indexed from uint8 images on the device,
   augmentation, the eps schedule, the loss of ``raycert.training.methods.LOSSES``, clipping,
   the one sync per step). Each method is timed over 60 steps after 5 untimed ones and
   extrapolated to an epoch of 50k images (391 steps); the output says so. Also: acert in
   the warm-up epoch and after the ramp (for the projection), the ratios benchmarks/train.py
   prints, the acert search's bound passes per step, and each method's peak device memory.
2. Certification. Images/s of ``raycert.cert.certify.certify`` in float32 and float64 on 10k
   images at the CIFAR-10 cap 8.8/255 and the preset's ``eval_tol``, in the evaluation's batches
   of 512, and the bound passes the radius search made (calls of ``radius.min_margin``, counted
   as benchmarks/bounds.py counts them). A dtype that would take over ``--cert-budget`` seconds is
   stopped there and measured on the images it finished (the output says how many).
3. Sharing one device. 1, 2 and 4 training processes at once (acert mid-ramp), each capping its
   memory with ``torch.cuda.set_per_process_memory_fraction(1 / k)`` as a study trial with
   ``--gpus-per-trial 1/k`` does (``raycert.study.trial.pick_device``); total images/s and the
   speed-up over one process.
4. Projection. Wall time of one ``paper`` CIFAR-10 trial (its epochs, ramp, eval sizes read from
   ``raycert/study/presets/cifar10.toml``) and of a 48-trial study at 1, 0.5 and 0.25 GPU per
   trial on 1 and 8 GPUs, from the numbers above.

Prints a markdown table and, as its last line, the same numbers as one JSON object
(``--out-json PATH`` also writes them there, after every section, so a run cut short keeps
what it measured). Needs torch, numpy, rich (``raycert.data`` imports rich) and pydantic
(``TrainConfig`` is a pydantic model); no ray, optuna or plotly. The nvidia-h200 image lacks
pydantic: carry its wheels (the device README's recipe), here, in the repo root::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection

and begin the device command (``carry: [".whl"]``) with ``python3 -m pip install -q --no-index
--no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. || exit;``.

    PYTHONPATH=. python3 benchmarks/gpu.py --out-json $OUT/gpu.json   # the GPU: under 8 minutes
    PYTHONPATH=. python3 benchmarks/gpu.py --device cpu --tiny         # CPU check: seconds

The device command for the session that runs it (one ``run`` call, timeout_s 600; the image has
pytest, so the CUDA tests run too: the suite has no ``cuda`` marker, ``-k cuda`` picks the tests
named for CUDA, which skip without it)::

    set -o pipefail; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    PYTHONPATH=. timeout 470 python3 benchmarks/gpu.py --out-json $OUT/gpu.json 2>&1 \
      | tee $OUT/gpu.txt; echo "gpu.py rc $?"; \
    PYTHONPATH=. timeout 90 python3 -m pytest -q -p no:cacheprovider -k cuda \
      tests/test_data.py tests/test_gpu_benchmark.py 2>&1 | tail -15
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

import raycert.cert.radius as radius_module
from raycert.cert.certify import certify
from raycert.data import dataset_info, synthetic_split
from raycert.errors import UserError
from raycert.study.spec import load_preset
from raycert.training import loop
from raycert.training.config import TrainConfig
from raycert.training.evaluation import EVAL_BATCH, resolve_device
from raycert.training.methods import LOSSES
from raycert.training.schedule import batches_per_epoch, scheduled_eps

CIFAR = dataset_info("cifar10")
EPOCH_IMAGES = 50_000  # the epoch the per-step times are extrapolated to
STUDY_TRIALS = 48
GPUS_PER_TRIAL = (1.0, 0.5, 0.25)
STUDY_GPUS = (1, 8)
WORKER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Sizes:
    """How much each section measures: the full run on a GPU, or ``--tiny`` for a CPU check."""

    model: str
    batch: int
    train_images: int  # held on the device, as the trainer holds its training split
    steps: int  # timed steps per training measurement
    warm_steps: int  # untimed steps before each (allocator, cuDNN plans)
    prep_steps: int  # IBP steps per schedule phase that give the model realistic radii
    cert_images: int
    cert_batch: int
    shared_steps: int  # timed steps per process when processes share the device
    processes: tuple[int, ...] = (1, 2, 4)


FULL = Sizes("cnn7", 128, EPOCH_IMAGES, 60, 5, 40, 10_000, EVAL_BATCH, 60)
TINY = Sizes("cnn_small", 16, 256, 2, 1, 4, 48, 16, 2)


def log(message: str) -> None:
    """Progress on stderr, so a run cut short shows how far it got."""
    print(f"[gpu.py {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    """``torch.cuda.max_memory_allocated`` in MiB since the last reset; None on the CPU."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


@contextlib.contextmanager
def counting_bound_passes() -> Iterator[dict[str, int]]:
    """Count the radius search's bound passes (calls of ``radius.min_margin``) and the
    samples they carried, as benchmarks/bounds.py does; the search looks it up at each call."""
    counts = {"passes": 0, "samples": 0}
    original = radius_module.min_margin

    def counting(net, xs, *args, **kwargs):
        counts["passes"] += 1
        counts["samples"] += len(xs)
        return original(net, xs, *args, **kwargs)

    radius_module.min_margin = counting
    try:
        yield counts
    finally:
        radius_module.min_margin = original


def paper_config(sizes: Sizes, method: str, **changes: Any) -> TrainConfig:
    """The CIFAR-10 ``paper`` preset as a study trial runs it, for ``method`` at ``sizes``."""
    cfg = load_preset("cifar10", "paper")
    return cfg.replace(
        method=method, model=sizes.model, batch_size=sizes.batch, **changes
    ).resolve()


def run_epoch(
    model: nn.Sequential, cfg: TrainConfig, images: Tensor, labels: Tensor, epoch: int
) -> dict[str, float]:
    """One call of the trainer's epoch function over ``images`` at ``epoch`` of the schedule.

    The schedule is in epochs, so a short epoch of a few steps sees the eps (and regularizer
    weight) that a full epoch sees at the same point of the run.
    """
    optimizer = loop.build_optimizer(cfg, model)
    steps = batches_per_epoch(len(labels), cfg.batch_size)
    scheduler = loop.build_lr_scheduler(cfg, optimizer, steps)
    summary = loop.train_epoch(
        model, optimizer, scheduler, LOSSES[cfg.method], images, labels, cfg, epoch, lambda: None
    )
    if isinstance(summary, str):
        raise RuntimeError(f"{cfg.method} diverged during the benchmark: {summary}")
    return summary


def synthetic_cifar(n: int, split: str = "train") -> tuple[Tensor, Tensor]:
    data = synthetic_split(n, CIFAR.shape, CIFAR.num_classes, seed=0, split=split)
    return data.images, data.labels


def mid_ramp_epoch(cfg: TrainConfig) -> int:
    return int(cfg.warmup_epochs + cfg.ramp_epochs // 2)


# ---------------------------------------------------------------------------------------------
# 0. A model with realistic radii: a short IBP training up the ramp to mid-ramp eps
# ---------------------------------------------------------------------------------------------


def prepare_model(sizes: Sizes, images: Tensor, labels: Tensor, device: torch.device):
    """cnn7 (IBP init) after ``prep_steps`` IBP steps at each of a few points up the ramp, at a
    constant learning rate: clean accuracy well above chance and radii spread inside eps."""
    cfg = paper_config(sizes, "ibp", lr_schedule="constant")
    model = loop.new_model(cfg).to(device)
    n = sizes.prep_steps * sizes.batch
    middle = mid_ramp_epoch(cfg)
    for epoch in (0, middle // 4, middle // 2, 3 * middle // 4, middle):
        summary = run_epoch(model, cfg, images[:n], labels[:n], epoch)
    log(f"prepared {sizes.model}: IBP train accuracy {summary['train_clean_acc']:.0%}")
    return model


# ---------------------------------------------------------------------------------------------
# 1. Training: seconds per epoch, bound passes, peak memory
# ---------------------------------------------------------------------------------------------


def time_training(
    prepared: nn.Sequential,
    cfg: TrainConfig,
    epoch: int,
    images: Tensor,
    labels: Tensor,
    sizes: Sizes,
    device: torch.device,
) -> dict[str, Any]:
    """Seconds per step of ``cfg.method`` at ``epoch`` over ``sizes.steps`` timed steps (after
    ``warm_steps`` untimed ones), extrapolated to an epoch of ``EPOCH_IMAGES``; its peak memory."""
    model = copy.deepcopy(prepared)
    warm, timed = sizes.warm_steps * sizes.batch, sizes.steps * sizes.batch
    run_epoch(model, cfg, images[:warm], labels[:warm], epoch)
    sync(device)
    reset_peak_memory(device)
    with counting_bound_passes() as counts:
        tic = time.perf_counter()
        summary = run_epoch(
            model, cfg, images[warm : warm + timed], labels[warm : warm + timed], epoch
        )
        sync(device)
        seconds = time.perf_counter() - tic
    step_s = seconds / sizes.steps
    eps = scheduled_eps(epoch * sizes.steps + sizes.steps // 2, sizes.steps, cfg)
    return {
        "epoch": epoch + 1,
        "eps_pixel": eps,
        "step_s": step_s,
        "epoch_s": step_s * batches_per_epoch(EPOCH_IMAGES, sizes.batch),
        "peak_mib": peak_memory_mib(device),
        "clean_acc": summary["train_clean_acc"],
        "radius_pct_of_eps": 100 * summary["train_radius"] / eps if eps > 0 else None,
        "bound_passes_per_step": counts["passes"] / sizes.steps,
    }


# ---------------------------------------------------------------------------------------------
# 2. Certification throughput, float32 and float64
# ---------------------------------------------------------------------------------------------


def within_budget(budget_s: float):
    """A ``progress`` wrapper for ``certify`` that stops handing out batches after ``budget_s``."""

    def wrap(starts):
        tic = time.perf_counter()
        for start in starts:
            yield start
            if time.perf_counter() - tic > budget_s:
                return

    return wrap


def time_certification(
    model: nn.Sequential,
    images: Tensor,
    labels: Tensor,
    dtype: torch.dtype,
    tol: float,
    sizes: Sizes,
    device: torch.device,
    budget_s: float,
) -> dict[str, Any]:
    """Images/s of ``certify`` at the CIFAR-10 cap in ``dtype``, with the bound passes it made.

    Images start as uint8 on the CPU, as ``certify_run`` hands them over; one untimed batch
    first sets up the kernels of this dtype.
    """
    cap, batch = CIFAR.acr_cap, sizes.cert_batch
    run = dict(tol=tol, batch_size=batch, dtype=dtype, device=device)
    certify(model, images[:batch], labels[:batch], cap, **run)
    with counting_bound_passes() as counts:
        tic = time.perf_counter()
        certs = certify(model, images, labels, cap, **run, progress=within_budget(budget_s))
        seconds = time.perf_counter() - tic
    done = len(certs.radii)
    radii = certs.radii
    return {
        "images": done,
        "seconds": seconds,
        "images_per_s": done / seconds,
        "seconds_per_10k": 10_000 * seconds / done,
        "bound_passes": counts["passes"],
        "passes_per_batch": counts["passes"] / math.ceil(done / batch),
        "sample_passes_per_image": counts["samples"] / done,
        "clean_acc": float((certs.predictions == labels[:done]).double().mean()),
        "radii_inside_cap_pct": 100 * float(((radii > 0) & (radii < cap)).double().mean()),
        "cap": cap,
        "tol": tol,
        "batch_size": batch,
    }


# ---------------------------------------------------------------------------------------------
# 3. Training processes sharing one device
# ---------------------------------------------------------------------------------------------


def _shared_worker(rank: int, barriers: dict, commands, results, job: dict[str, Any]) -> None:
    """Worker ``rank`` of the pool: set up (data on the device), report ready, then run one
    round for each ``procs`` it is sent (``None`` ends it). Every report carries ``error``: the
    traceback of what failed, or None."""
    try:
        device = torch.device(job["device"])
        cfg = TrainConfig.from_dict(job["cfg"])
        images, labels = synthetic_cifar((job["warm_steps"] + job["steps"]) * cfg.batch_size)
        data = images.to(device), labels.to(device)
    except Exception:
        results.put({"rank": rank, "error": traceback.format_exc()})
        return
    results.put({"rank": rank, "error": None})
    while (procs := commands.get()) is not None:
        report: dict[str, Any] = {"rank": rank, "error": None}
        try:
            report |= _shared_round(procs, barriers[procs], cfg, data, device, job)
        except Exception:
            report["error"] = traceback.format_exc()
            barriers[procs].abort()  # the others in this round stop waiting and report too
        results.put(report)


def _shared_round(
    procs: int, barrier, cfg: TrainConfig, data, device: torch.device, job: dict[str, Any]
) -> dict[str, Any]:
    """One process of ``procs`` sharing the device: cap its memory as a study trial with
    ``--gpus-per-trial 1/procs`` does, warm up, wait for the others, train ``job['steps']``
    timed steps; start and end on the machine's monotonic clock (one clock for every process)."""
    fraction = 1 / procs
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the cap applies to what the allocator holds
        if 0 < fraction < 1:  # as raycert.study.trial.pick_device sets it
            torch.cuda.set_per_process_memory_fraction(fraction, device)
    else:  # a study gives each CPU trial its share of the cores
        torch.set_num_threads(max(1, job["threads"] // procs))
    model = loop.new_model(cfg)
    model.load_state_dict(torch.load(job["state"]))
    model.to(device)
    images, labels = data
    warm = job["warm_steps"] * cfg.batch_size
    run_epoch(model, cfg, images[:warm], labels[:warm], job["epoch"])
    sync(device)
    reset_peak_memory(device)
    barrier.wait(timeout=WORKER_TIMEOUT_S)
    start = time.monotonic()
    run_epoch(model, cfg, images[warm:], labels[warm:], job["epoch"])
    sync(device)
    end = time.monotonic()
    images_done = len(labels) - warm
    return {"start": start, "end": end, "images": images_done, "peak_mib": peak_memory_mib(device)}


def shared_throughput(
    prepared: nn.Sequential, cfg: TrainConfig, epoch: int, sizes: Sizes, device: torch.device
) -> list[dict[str, Any]]:
    """Total training images/s of 1, 2, 4 processes training at once on ``device``.

    One pool of spawned workers serves every round (workers 0..k-1 run round k), so process
    start-up is paid once, and no round starts before every worker has set up (an idle worker
    waits on its queue); every round starts from the prepared model.
    """
    with tempfile.TemporaryDirectory(prefix="raycert-gpu-bench-") as tmp:
        state = Path(tmp) / "model.pt"  # a file, not shared-memory tensors: /dev/shm may be small
        torch.save({k: v.cpu() for k, v in prepared.state_dict().items()}, state)
        return _run_rounds(str(state), cfg, epoch, sizes, device)


def _run_rounds(
    state: str, cfg: TrainConfig, epoch: int, sizes: Sizes, device: torch.device
) -> list[dict[str, Any]]:
    job = {
        "device": str(device),
        "cfg": cfg.to_dict(),
        "state": state,
        "epoch": epoch,
        "steps": sizes.shared_steps,
        "warm_steps": sizes.warm_steps,
        "threads": torch.get_num_threads(),
    }
    ctx = mp.get_context("spawn")
    barriers = {procs: ctx.Barrier(procs) for procs in sizes.processes}
    commands = [ctx.Queue() for _ in range(max(sizes.processes))]
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_shared_worker, args=(rank, barriers, queue, results, job))
        for rank, queue in enumerate(commands)
    ]
    for worker in workers:
        worker.start()
    rows: list[dict[str, Any]] = []
    try:
        ready = [results.get(timeout=WORKER_TIMEOUT_S) for _ in workers]
        errors = [r["error"] for r in ready if r["error"]]
        if errors:
            raise RuntimeError(f"a training process failed to set up:\n{errors[0]}")
        for procs in sizes.processes:
            log(f"sharing the device: {procs} training process(es)")
            for queue in commands[:procs]:
                queue.put(procs)
            reports = [results.get(timeout=2 * WORKER_TIMEOUT_S) for _ in range(procs)]
            errors = [r["error"] for r in reports if r["error"]]
            if errors:
                raise RuntimeError(f"a training process failed:\n{errors[0]}")
            span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
            peaks = [r["peak_mib"] for r in reports if r["peak_mib"] is not None]
            rows.append(
                {
                    "processes": procs,
                    "memory_fraction": 1 / procs if device.type == "cuda" else None,
                    "images_per_s": sum(r["images"] for r in reports) / span,
                    "peak_mib_per_process": max(peaks) if peaks else None,
                }
            )
    finally:
        for queue in commands:
            queue.put(None)
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    for row in rows:
        row["speedup"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


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


# ---------------------------------------------------------------------------------------------
# Main: the sections in order
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--tiny", action="store_true", help="small sizes: a CPU check in seconds")
    parser.add_argument("--out-json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--cert-budget", type=float, default=90.0, help="seconds at most per certification dtype"
    )
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":  # with its index, as pick_device names it: the memory cap needs one
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = TINY if args.tiny else FULL
    tic = time.perf_counter()
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results: dict[str, Any] = {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "tiny": args.tiny,
        "model": sizes.model,
        "batch_size": sizes.batch,
        "epoch_images": EPOCH_IMAGES,
        "steps_per_epoch": batches_per_epoch(EPOCH_IMAGES, sizes.batch),
        "timed_steps": sizes.steps,
    }
    log(f"{sizes.model}, batch {sizes.batch}, on {name}; torch {torch.__version__}")

    # 0. Data on the device, and a model with realistic radii.
    images, labels = synthetic_cifar(sizes.train_images)
    images, labels = images.to(device), labels.to(device)
    prepared = prepare_model(sizes, images, labels, device)

    # 1. Training: mid-ramp for every method; acert also in warm-up and after the ramp.
    cfg = {m: paper_config(sizes, m) for m in LOSSES}
    middle = mid_ramp_epoch(cfg["acert"])
    after = int(cfg["acert"].warmup_epochs + cfg["acert"].ramp_epochs)
    after += (cfg["acert"].epochs - after) // 2
    runs = {m: (cfg[m], middle) for m in LOSSES}
    runs |= {"acert_warmup": (cfg["acert"], 0), "acert_post_ramp": (cfg["acert"], after)}
    train = {}
    for key, (run_cfg, epoch) in runs.items():
        log(f"timing {key} at epoch {epoch + 1}")
        train[key] = time_training(prepared, run_cfg, epoch, images, labels, sizes, device)
    epoch_s = {m: train[m]["epoch_s"] for m in LOSSES}
    results["train"] = train
    results["search_steps"] = cfg["acert"].search_steps
    results["ratios"] = {
        "acert/standard": epoch_s["acert"] / epoch_s["standard"],
        "acert/ibp": epoch_s["acert"] / epoch_s["ibp"],
        "ibp/standard": epoch_s["ibp"] / epoch_s["standard"],
    }
    write_json(results, args.out_json)
    del images, labels

    # 2. Certification throughput, float32 then float64.
    cert_images, cert_labels = synthetic_cifar(sizes.cert_images, "test")
    results["certify"] = {}
    for dtype in (torch.float32, torch.float64):
        log(f"certifying {sizes.cert_images} images in {dtype}")
        results["certify"][str(dtype).removeprefix("torch.")] = time_certification(
            prepared,
            cert_images,
            cert_labels,
            dtype,
            cfg["acert"].eval_tol,
            sizes,
            device,
            args.cert_budget,
        )
    write_json(results, args.out_json)

    # 3. Training processes sharing the device.
    results["shared"] = shared_throughput(prepared, cfg["acert"], middle, sizes, device)
    write_json(results, args.out_json)

    # 4. Projection.
    results["projection"] = project(cfg["acert"], train, results["certify"], results["shared"])
    results["seconds_total"] = time.perf_counter() - tic
    write_json(results, args.out_json)

    tiny = " (--tiny: sizes for a CPU check, not a measurement)" if args.tiny else ""
    print(
        f"# raycert GPU benchmark: {sizes.model}, batch {sizes.batch}, {name}, "
        f"torch {torch.__version__}{tiny}\n"
        f"Synthetic CIFAR-10-shaped data (3x32x32, 10 classes, {sizes.train_images} train images "
        f"on the device). Epoch times: {sizes.steps} timed steps per method, extrapolated to "
        f"{results['steps_per_epoch']} steps ({EPOCH_IMAGES} images / {sizes.batch}). "
        f"Took {results['seconds_total']:.0f} s.\n"
    )
    print(table(results))
    print()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
