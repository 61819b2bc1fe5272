"""Section 3 of benchmarks/gpu.py: training processes sharing one device, as study trials
with ``--gpus-per-trial 1/k`` share it. The workers live in this importable module so that the
spawned processes can unpickle them.

Beyond the standard library, imports only torch and raycert (the GPU image lacks ray, optuna and
plotly).
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

# gpu_measure is a sibling in benchmarks/, sys.path[0] when gpu.py runs as a file.
from gpu_measure import (
    Sizes,
    log,
    peak_memory_mib,
    reset_peak_memory,
    run_epoch,
    sync,
    synthetic_cifar,
)
from torch import nn

from raycert.training import loop
from raycert.training.config import TrainConfig

WORKER_TIMEOUT_S = 300.0
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
        if 0 < fraction < 1:  # as raycert.study.tune.trial.pick_device sets it
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
    """Total training images/s of ``sizes.processes`` (1, 2, 4, 8) training at once on ``device``.

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
