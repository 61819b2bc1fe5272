"""What benchmarks/gpu.py measures, section by section: a model with realistic radii (0),
training epoch times (1), the val checks a trial runs and the final certification (2), TF32's
effect on float32 bounds and a profile of one ACERT step and one certification batch (2b),
and training processes sharing one device (3), with the helpers they share (sizes, device
sync, peak memory, bound-pass counting).

Beyond the standard library, imports only torch and raycert (the GPU image lacks ray, optuna and
plotly). The shared-device workers live here, in an importable module, so the spawned training
processes can unpickle them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

# counters is a sibling in benchmarks/, sys.path[0] when gpu.py runs as a file.
from counters import counting_bound_passes, counting_host_syncs
from torch import Tensor, nn

from raycert.cert.bounds import margin_lower_bounds
from raycert.cert.certify import certify
from raycert.cert.precision import cudnn_tf32, exact_float32
from raycert.data import dataset_info, synthetic_split
from raycert.spec import load_preset
from raycert.training import loop
from raycert.training.config import TrainConfig
from raycert.training.evaluation import EVAL_BATCH, evaluate_val
from raycert.training.methods import METHOD_SPECS, StepInput
from raycert.training.schedule import batches_per_epoch, regularizer_weight, scheduled_eps

CIFAR = dataset_info("cifar10")
EPOCH_IMAGES = 50_000  # the epoch the per-step times are extrapolated to
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
    val_images: int  # the final val check's images (CIFAR-10's val split: 5k)
    shared_steps: int  # timed steps per process when processes share the device
    processes: tuple[int, ...] = (1, 2, 4)


FULL = Sizes(
    "cnn7", 128, EPOCH_IMAGES, 60, 5, 40, 10_000, EVAL_BATCH, CIFAR.val_size, 60, (1, 2, 4, 8)
)
TINY = Sizes("cnn_small", 16, 256, 2, 1, 4, 48, 16, 24, 2)


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
        model,
        optimizer,
        scheduler,
        METHOD_SPECS[cfg.method].loss,
        images,
        labels,
        cfg,
        epoch,
        lambda: None,
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
    one_step = method_step(model, cfg, epoch, images, labels, sizes)
    with counting_host_syncs() as syncs:  # one more step, untimed: the counter slows it
        one_step()
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
        "host_syncs_per_step": syncs["total"],
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


def time_val_checks(
    model: nn.Sequential,
    cfg: TrainConfig,
    images: Tensor,
    labels: Tensor,
    sizes: Sizes,
    device: torch.device,
) -> dict[str, Any]:
    """Seconds of the val checks a trial runs (``raycert.training.evaluation.evaluate_val``, as
    the trainer calls it): each epoch's (IBP in float32 on ``cfg.eval_limit`` images, radii
    re-verified in float64) and the last epoch's (IBP in float64 on the whole val split, here
    ``sizes.val_images`` images). One untimed check first sets up the kernels."""
    val = synthetic_split(sizes.val_images, CIFAR.shape, CIFAR.num_classes, seed=0, split="val")
    per_epoch_n = min(cfg.eval_limit or len(val), len(val))
    small = dataclasses.replace(
        val, images=val.images[:per_epoch_n], labels=val.labels[:per_epoch_n]
    )
    evaluate_val(model, small, cfg, final=False, device=device)
    out: dict[str, Any] = {}
    for key, split, final in (("per_epoch", small, False), ("final", val, True)):
        sync(device)
        tic = time.perf_counter()
        summary = evaluate_val(model, split, cfg, final=final, device=device)
        sync(device)
        out[key] = {
            "images": len(split),
            "seconds": time.perf_counter() - tic,
            "dtype": "float64" if final else "float32",
            "clean_acc": summary["clean_acc"],
            "acr_pct": summary["acr_pct"],
        }
    return out


def tf32_error(
    model: nn.Sequential,
    images: Tensor,
    labels: Tensor,
    eps: float,
    sizes: Sizes,
    device: torch.device,
) -> dict[str, Any]:
    """How far float32 IBP margin bounds lie from float64's on one certification batch at
    ``eps`` (half the cap if 0), with TF32 allowed (PyTorch's default for cuDNN convolutions)
    and in IEEE float32 (``exact_float32``, what certification uses): the largest gap, and how
    many samples the two precisions certify differently (a float32 verdict that float64
    overturns costs a search again in float64). On a CPU, TF32 does not exist: the rows agree."""
    batch = sizes.cert_batch
    x = images[:batch].to(device).double() / 255
    y = labels[:batch].to(device)
    eps = eps or CIFAR.acr_cap / 2
    net64 = copy.deepcopy(model).double().eval()
    net32 = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        exact = margin_lower_bounds(net64, x, y, eps).min(dim=1).values
        with cudnn_tf32(True):  # PyTorch's default for cuDNN convolutions
            tf32 = margin_lower_bounds(net32, x.float(), y, eps).min(dim=1).values.double()
        with exact_float32():
            ieee = margin_lower_bounds(net32, x.float(), y, eps).min(dim=1).values.double()
    scale = exact.abs().max().clamp(min=1e-12)
    out: dict[str, Any] = {
        "images": len(y),
        "eps_pixel": eps,
        "certified_float64": int((exact > 0).sum()),
    }
    for name, bound in (("tf32_allowed", tf32), ("ieee_float32", ieee)):
        gap = (bound - exact).abs().max()
        out[name] = {
            "max_abs_gap": float(gap),
            "max_rel_gap": float(gap / scale),
            "verdicts_differ": int(((bound > 0) != (exact > 0)).sum()),
        }
    return out


def profile(fn, device: torch.device, top: int = 5) -> dict[str, Any]:
    """A short profile of one call of ``fn`` (after one untimed call): its top kernels by time
    on the device (on a CPU: its top operations by self CPU time), kernel launches, host syncs (CUDA
    synchronize and device-to-host copy calls; on a CPU, 0) and the device's busy share of
    the wall time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    sync(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        tic = time.perf_counter()
        fn()
        sync(device)
        wall_s = time.perf_counter() - tic
    events = prof.key_averages()
    on_device = device.type == "cuda"

    def self_us(event) -> float:
        return event.self_device_time_total if on_device else event.self_cpu_time_total

    kernels = [e for e in events if e.device_type.name == "CUDA"] if on_device else events
    ranked = sorted(kernels, key=self_us, reverse=True)[:top]
    launches = sum(e.count for e in events if "LaunchKernel" in e.key)
    syncs = sum(
        e.count
        for e in events
        if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
        or ("cudaMemcpy" in e.key and "Async" not in e.key)
    )
    busy_us = sum(self_us(e) for e in kernels) if on_device else 0.0
    return {
        "wall_s": wall_s,
        "top": [{"name": e.key, "self_ms": self_us(e) / 1e3, "calls": e.count} for e in ranked],
        "kernel_launches": launches,
        "host_syncs": syncs,
        "device_busy_share": busy_us / 1e6 / wall_s if on_device else None,
    }


def method_step(
    prepared: nn.Sequential,
    cfg: TrainConfig,
    epoch: int,
    images: Tensor,
    labels: Tensor,
    sizes: Sizes,
):
    """One call: one trainer step (``loop.train_step``) of ``cfg.method`` on the first batch at
    ``epoch``'s scheduled eps and regularizer weight, on a copy of ``prepared`` (the same copy
    at every call)."""
    model = copy.deepcopy(prepared).train()
    optimizer = loop.build_optimizer(cfg, model)
    at = epoch * sizes.steps + sizes.steps // 2
    eps = scheduled_eps(at, sizes.steps, cfg)
    reg = regularizer_weight(at, sizes.steps, eps, cfg)
    x = images[: sizes.batch].float() / 255
    step = StepInput(x, labels[: sizes.batch], eps, reg, seed=0)
    loss = METHOD_SPECS[cfg.method].loss
    return lambda: loop.train_step(model, optimizer, loss, step, cfg)


def certification_batch(
    model: nn.Sequential, images: Tensor, labels: Tensor, tol: float, sizes: Sizes, device
):
    """One call: ``certify`` of one evaluation batch at the CIFAR-10 cap, float64-verified with
    the default cascade (the final certification's unit of work)."""
    x, y = images[: sizes.cert_batch], labels[: sizes.cert_batch]
    return lambda: certify(model, x, y, CIFAR.acr_cap, tol=tol, batch_size=len(y), device=device)


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
