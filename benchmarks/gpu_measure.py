"""What benchmarks/gpu.py measures first, and what every section shares: the sizes, device
helpers (sync, peak memory), the CIFAR-10 ``paper`` config, the trainer's epoch and step, a
model with realistic radii (section 0) and training epoch times (section 1). The checks and
certification (2) are in gpu_checks.py, the shared device (3) in gpu_shared.py.

Beyond the standard library, imports only torch and raycert (the GPU image lacks ray, optuna and
plotly).
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

# counters is a sibling in benchmarks/, sys.path[0] when gpu.py runs as a file.
from counters import counting_bound_passes, counting_host_syncs
from torch import Tensor, nn

from raycert.data import dataset_info, synthetic_split
from raycert.spec import load_preset
from raycert.training import loop
from raycert.training.config import TrainConfig
from raycert.training.evaluation import EVAL_BATCH
from raycert.training.methods import METHOD_SPECS, StepInput
from raycert.training.schedule import batches_per_epoch, regularizer_weight, scheduled_eps

CIFAR = dataset_info("cifar10")
EPOCH_IMAGES = 50_000  # the epoch the per-step times are extrapolated to


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
