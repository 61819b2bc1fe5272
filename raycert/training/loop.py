"""The trainer: one loop for every method, an eps schedule, checkpoints and per-epoch metrics.

A run is a function of its ``TrainConfig``: the model is initialized from ``seed``, and each
epoch shuffles and augments with a generator seeded from ``(seed, epoch)``, and each step's loss
draws its random numbers (an attack's start) from a seed of ``(seed, epoch, batch)``, so a
resumed run replays exactly what an uninterrupted one computes. Data stay uint8 on the device;
batches are scaled to [0, 1] (and augmented) there.

After every epoch the model is certified on the validation split (the first ``eval_limit``
samples in float32; at the last epoch the whole split in float64), the checkpoint is written
atomically, and ``callback(metrics, run_dir)`` runs. A non-finite loss or gradient ends the run
with status ``"diverged"``, keeping the metrics and checkpoint of the last finished epoch.

The run folder (its files, resume, ``load_run``) is ``raycert.training.rundir``; evaluation on a
split (``certify_run``) is ``raycert.training.evaluation``; the eps schedule is
``raycert.training.schedule``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from raycert.cert.models import build_model, ibp_init
from raycert.data import augment, dataset_info, load
from raycert.errors import UserError
from raycert.training.config import TrainConfig
from raycert.training.evaluation import SPLIT_SEED, evaluate_val, resolve_device
from raycert.training.methods import METHOD_SPECS, LossFn, Stats, StepInput, l1_penalty
from raycert.training.rundir import (
    Metrics,
    load_run,
    prepare_run_dir,
    read_metrics,
    save_checkpoint,
    write_status,
)
from raycert.training.schedule import batches_per_epoch, regularizer_weight, scheduled_eps

LR_STEP_FACTOR = 0.2

Callback = Callable[[Metrics, Path | None], None]


@dataclass
class TrainResult:
    """How a run ended: ``status`` is ``"completed"`` or ``"diverged"`` (then ``message`` says
    where); ``metrics`` has one entry per finished epoch; ``model`` is the model in eval mode as
    training left it (after a divergence, ``load_run`` gives the last finished epoch's)."""

    status: str
    metrics: list[Metrics]
    run_dir: Path | None
    model: nn.Sequential
    config: TrainConfig
    message: str = ""


def new_model(cfg: TrainConfig) -> nn.Sequential:
    """The untrained model of a resolved config, initialized from ``cfg.seed`` alone."""
    info = dataset_info(cfg.dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, info.shape, info.num_classes, info.mean, info.std)
        if cfg.init == "ibp":
            ibp_init(model)
    return model


def train(
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    resume: bool = False,
    callback: Callback | None = None,
    device: str = "auto",
    progress: bool = False,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train ``cfg`` on its dataset's train split, certifying on val after every epoch.

    With ``run_dir``, checkpoints go there; ``resume=True`` continues the run saved there (a
    finished run is returned as it is). ``init_from``, a run folder, starts the model from the
    one saved there (fine-tuning, ``schedule.polished``) instead of ``cfg.seed``'s
    initialization; a resumed run starts from its own checkpoint. ``callback(metrics,
    run_dir)`` runs after each epoch's checkpoint; an exception from it stops the run, which
    can then be resumed. A missing dataset is downloaded unless ``download=False``.
    """
    cfg = cfg.resolve()
    dev = resolve_device(device)
    if resume and run_dir is None:
        raise UserError("resume needs the run folder to resume from")
    out = Path(run_dir) if run_dir is not None else None
    saved = prepare_run_dir(out, cfg, resume) if out is not None else None
    model = new_model(cfg).to(dev)
    if init_from is not None and saved is None:
        _start_from(model, init_from)
    if saved is not None and saved["status"] != "running":  # finished before: nothing to do
        model.load_state_dict(saved["model"])
        return TrainResult(
            saved["status"], saved["metrics"], out, model.eval(), cfg, saved["message"]
        )

    try:
        status, message, metrics = _train_loop(
            cfg, model, out, saved, data_dir, download, callback, dev, progress
        )
    except KeyboardInterrupt:
        if out is not None:
            _mark_ended(out, "interrupted", "stopped by Ctrl-C or SIGTERM", cfg)
        raise
    except Exception as exc:
        if out is not None:
            _mark_ended(out, "failed", " ".join(str(exc).split()) or type(exc).__name__, cfg)
        raise
    return TrainResult(status, metrics, out, model.eval(), cfg, message)


def _start_from(model: nn.Sequential, run_dir: str | Path) -> None:
    """Load the model saved in ``run_dir`` into ``model`` (same architecture)."""
    parent, _ = load_run(run_dir)
    try:
        model.load_state_dict(parent.state_dict())
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise UserError(f"cannot start from the run in {run_dir}: {reason}") from None


def _train_loop(
    cfg: TrainConfig,
    model: nn.Sequential,
    out: Path | None,
    saved: dict | None,
    data_dir: str | Path | None,
    download: bool,
    callback: Callback | None,
    dev: torch.device,
    progress: bool,
) -> tuple[str, str, list[Metrics]]:
    """``train``'s epochs: the run's status, its message and the metrics of every epoch."""
    data = {"root": data_dir, "download": download, "seed": SPLIT_SEED}
    train_split = load(cfg.dataset, "train", **data, limit=cfg.train_limit)
    val_split = load(cfg.dataset, "val", **data, limit=cfg.val_limit)
    steps_per_epoch = batches_per_epoch(len(train_split), cfg.batch_size)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer, steps_per_epoch)
    metrics: list[Metrics] = []
    train_seconds = 0.0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["state"]["optimizer"])
        scheduler.load_state_dict(saved["state"]["lr_scheduler"])
        train_seconds = saved["state"]["train_seconds"]
        metrics = saved["metrics"]

    images, labels = train_split.images.to(dev), train_split.labels.to(dev)
    loss_fn = METHOD_SPECS[cfg.method].loss
    status, message = "completed", ""
    with _progress_bar(progress, (cfg.epochs - len(metrics)) * steps_per_epoch) as advance:
        for epoch in range(len(metrics), cfg.epochs):
            tic = time.perf_counter()
            summary = train_epoch(
                model, optimizer, scheduler, loss_fn, images, labels, cfg, epoch, advance
            )
            if isinstance(summary, str):
                status, message = "diverged", summary
                break
            train_seconds += time.perf_counter() - tic
            final = epoch + 1 == cfg.epochs
            row: Metrics = {
                "epoch": epoch + 1,
                "eps": scheduled_eps((epoch + 1) * steps_per_epoch, steps_per_epoch, cfg),
                **summary,
            }
            tic = time.perf_counter()
            row.update(evaluate_val(model, val_split, cfg, final=final, device=dev))
            row.update(
                train_seconds=train_seconds,
                eval_seconds=time.perf_counter() - tic,
                eval_split="val",
                final=final,
            )
            metrics.append(row)
            if out is not None:
                save_checkpoint(out, model, optimizer, scheduler, metrics, train_seconds, cfg)
            if callback is not None:
                callback(row, out)
    if out is not None:
        write_status(out, status, len(metrics), cfg.epochs, message)
    return status, message, metrics


def _mark_ended(out: Path, status: str, message: str, cfg: TrainConfig) -> None:
    """Record in the run folder why training stopped early (its last good epoch stays)."""
    epochs = 0
    with contextlib.suppress(OSError, UserError):
        epochs = len(read_metrics(out)[1]) if (out / "state.pt").exists() else 0
    with contextlib.suppress(OSError):
        write_status(out, status, epochs, cfg.epochs, message)


def train_epoch(
    model: nn.Sequential,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: LossFn,
    images: Tensor,
    labels: Tensor,
    cfg: TrainConfig,
    epoch: int,
    advance: Callable[[], None],
) -> dict[str, float] | str:
    """One pass over the shuffled training data: the epoch's mean loss, accuracy and radius and
    its last learning rate, or why it diverged."""
    generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    steps_per_epoch = batches_per_epoch(len(order), cfg.batch_size)
    model.train()
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), device=labels.device)
    radius_sum = torch.zeros((), device=labels.device)
    seen = 0
    for batch in range(steps_per_epoch):
        index = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
        x, y = images[index].float().div_(255.0), labels[index]
        if cfg.augment:
            x = augment(x, cfg.crop_pad, generator)
        step = epoch * steps_per_epoch + batch
        eps = scheduled_eps(step, steps_per_epoch, cfg)
        reg_weight = regularizer_weight(step, steps_per_epoch, eps, cfg)
        lr = optimizer.param_groups[0]["lr"]
        seed = _step_seed(cfg.seed, epoch, batch)
        taken = train_step(model, optimizer, loss_fn, StepInput(x, y, eps, reg_weight, seed), cfg)
        if taken is None:
            return f"non-finite loss or gradient at epoch {epoch + 1}, batch {batch + 1}"
        loss, stats = taken
        scheduler.step()
        loss_sum += loss * len(y)
        correct += stats["correct"]
        radius_sum += stats["radius"]
        seen += len(y)
        advance()
    return {
        "lr": lr,
        "train_loss": loss_sum.item() / seen,
        "train_clean_acc": correct.item() / seen,
        "train_radius": radius_sum.item() / seen,
    }


def train_step(
    model: nn.Sequential,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    step: StepInput,
    cfg: TrainConfig,
) -> tuple[Tensor, Stats] | None:
    """One optimizer step on ``step`` (its batch, scheduled radius, regularizer weight and the
    seed of its random draws).

    The method's loss plus ``cfg.l1`` times the L1 penalty, backward, the gradient clipped to
    L2 norm ``cfg.grad_clip`` (0: not clipped), then the step. Returns the detached loss and the
    method's batch stats, or ``None`` (and no step) when the loss or gradient is not finite.
    """
    loss, stats = loss_fn(model, step, cfg)
    if cfg.l1 > 0:
        loss = loss + cfg.l1 * l1_penalty(model)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
    if not torch.isfinite(loss.detach() + grad_norm):  # the one device sync per step
        return None
    optimizer.step()
    return loss.detach(), stats


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed per (run seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


def _step_seed(seed: int, epoch: int, batch: int) -> int:
    """A well-mixed 63-bit seed per (run seed, epoch, batch), apart from the epoch seeds: the
    seed of the step's random draws in the loss, replayed exactly by a resumed run."""
    sequence = np.random.SeedSequence(seed, spawn_key=(epoch, batch))
    return int(sequence.generate_state(1, np.uint64)[0] >> 1)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``model``'s parameters: Adam, or SGD with momentum 0.9, at
    ``cfg.lr`` with ``cfg.weight_decay``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
    )


def build_lr_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch. ``onecycle``: PyTorch's three-phase OneCycleLR as ACERT configures
    it (peak ``lr``, start ``lr/25``, end ``lr/2500``, linear); ``step``: x0.2 at each of
    ``lr_milestones`` (epochs); ``constant``: ``lr`` throughout."""
    if cfg.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=cfg.epochs * steps_per_epoch,
            pct_start=0.3,
            anneal_strategy="linear",
            div_factor=25.0,
            final_div_factor=100.0,
            three_phase=True,
        )
    milestones = cfg.lr_milestones if cfg.lr_schedule == "step" else ()

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        return LR_STEP_FACTOR ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar over training steps on stderr, or a no-op when disabled."""
    if not enabled:
        yield lambda: None
        return
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("train", total=total)
        yield lambda: bar.advance(task)
