"""Section 2 of benchmarks/gpu.py: the val checks a trial runs, the final certification's
throughput, TF32 against float64 bounds, and a profile of one ACERT step and one
certification batch.

Beyond the standard library, imports only torch and raycert (the GPU image lacks ray, optuna and
plotly).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

import torch

# Siblings in benchmarks/, sys.path[0] when gpu.py runs as a file.
from counters import counting_bound_passes
from gpu_measure import CIFAR, Sizes, sync
from torch import Tensor, nn

from raycert.cert.bounds import margin_lower_bounds
from raycert.cert.certify import certify
from raycert.cert.precision import cudnn_tf32, exact_float32
from raycert.data import synthetic_split
from raycert.training.config import TrainConfig
from raycert.training.evaluation import evaluate_val

# ---------------------------------------------------------------------------------------------
# 2. The val checks, the final certification, TF32, profiles
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


def certification_batch(
    model: nn.Sequential, images: Tensor, labels: Tensor, tol: float, sizes: Sizes, device
):
    """One call: ``certify`` of one evaluation batch at the CIFAR-10 cap, float64-verified with
    the default cascade (the final certification's unit of work)."""
    x, y = images[: sizes.cert_batch], labels[: sizes.cert_batch]
    return lambda: certify(model, x, y, CIFAR.acr_cap, tol=tol, batch_size=len(y), device=device)
