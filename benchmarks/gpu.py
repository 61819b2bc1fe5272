r"""The GPU path, measured: cnn7 training and certification speed, peak memory, shared GPUs.

On CIFAR-10-shaped synthetic data (3x32x32, 10 classes, 50k training images from
``raycert.data.synthetic_split``: class prototypes plus noise, learnable, so a short IBP training
gives the radius search real radii to find; no dataset files), for cnn7 at batch 128:

1. Training. Seconds per epoch of ``standard``, ``ibp`` and ``acert`` (10 search steps) mid-ramp
   of the CIFAR-10 ``paper`` preset, taken by the trainer's own epoch function
   (``raycert.training.loop.train_epoch``: batches indexed from uint8 images on the device,
   augmentation, the eps schedule, the method's loss from ``raycert.training.methods``, clipping,
   the one sync per step). Each method is timed over 60 steps after 5 untimed ones and
   extrapolated to an epoch of 50k images (391 steps); the output says so. Also: acert in
   the warm-up epoch and after the ramp (for the projection), the ratios benchmarks/train.py
   prints, the acert search's bound passes per step, and each method's peak device memory;
   acert with its fixed-shape radius search (``raycert.cert.sweep``: 8 probes x 4 rounds and
   16 x 3, about the bracketing search's tightness at mid-ramp) against its bracketing one.
2. Checks and certification, as a trial runs them. The per-epoch val check
   (``raycert.training.evaluation.evaluate_val``: IBP in float32, radii re-verified in float64,
   on the preset's ``eval_limit`` images) as a share of an acert epoch, and the final one (IBP
   in float64 on the 5k val split). Then the final certification: images/s of
   ``raycert.cert.certify.certify`` with the default cascade in float32 and float64 on 10k
   images at the CIFAR-10 cap 8.8/255 and the preset's ``eval_tol``, in the evaluation's
   batches of 512, and the bound passes the radius search made (calls of ``min_margin``,
   counted as benchmarks/bounds.py counts them). A dtype that would take over
   ``--cert-budget`` seconds is stopped there and measured on the images it finished.
   Then (2b) float32 IBP bounds with TF32 allowed and in IEEE float32 (what ``certify`` now
   holds to) against float64's, and a profile of one acert step and of one certification
   batch: top operations, kernel launches, host syncs and the device's busy share.
3. Sharing one device. 1, 2, 4 and 8 training processes at once (``--tiny``: 1, 2, 4; acert
   mid-ramp), each capping its memory with ``torch.cuda.set_per_process_memory_fraction(1 / k)``
   as a study trial with ``--gpus-per-trial 1/k`` does (``raycert.study.tune.trial.pick_device``);
   total images/s and the speed-up over one process. With NVIDIA MPS running (the device
   command below starts it where the machine allows), the processes share the GPU through it.
4. Projection. Wall time of one ``paper`` CIFAR-10 trial (its epochs, ramp, eval sizes read from
   ``raycert/spec/presets/cifar10.toml``: training, every val check, the final certification's
   price probe) and of a 48-trial study at 1, 0.5, 0.25 and 0.125 GPU per trial on 1 and 8 GPUs,
   ending with the test certification of each target's chosen model, from the numbers above.

The measurement lives in benchmarks/gpu_measure.py (sections 0 and 1), gpu_checks.py (2) and
gpu_shared.py (3), the projection, table and JSON in gpu_report.py; this file runs the sections
in order.

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

    PYTHONPATH=. python3 benchmarks/gpu.py --out-json $OUT/gpu.json   # the GPU: minutes
    PYTHONPATH=. python3 benchmarks/gpu.py --device cpu --tiny         # CPU check: seconds

The device command for the session that runs it (one ``run`` call, timeout_s 600; the image has
pytest, so the CUDA tests run too: the suite has no ``cuda`` marker, ``-k cuda`` picks the tests
named for CUDA, which skip without it)::

    set -o pipefail; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    PYTHONPATH=. timeout 400 python3 benchmarks/gpu.py --cert-budget 60 \
      --out-json $OUT/gpu.json 2>&1 | tee $OUT/gpu.txt; echo "gpu.py rc $?"; \
    PYTHONPATH=. timeout 75 python3 -m pytest -q -p no:cacheprovider -k cuda \
      tests/test_data.py tests/test_gpu_benchmark.py 2>&1 | tail -15; \
    nvidia-cuda-mps-control -d && PYTHONPATH=. timeout 110 python3 benchmarks/gpu.py \
      --shared-only --out-json $OUT/gpu-mps.json 2>&1 | tee $OUT/gpu-mps.txt | tail -8; \
    echo quit | nvidia-cuda-mps-control

The last line measures section 3 again with NVIDIA MPS on (where the machine lets it start).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

# The gpu_* modules are siblings in benchmarks/, sys.path[0] when this runs as a file.
from gpu_checks import (
    certification_batch,
    profile,
    tf32_error,
    time_certification,
    time_val_checks,
)
from gpu_measure import (
    EPOCH_IMAGES,
    FULL,
    TINY,
    log,
    method_step,
    mid_ramp_epoch,
    paper_config,
    prepare_model,
    synthetic_cifar,
    time_training,
)
from gpu_report import markdown, project, shared_rows, table, write_json
from gpu_shared import shared_throughput

from raycert.errors import UserError
from raycert.training.evaluation import resolve_device
from raycert.training.schedule import batches_per_epoch

TIMED_METHODS = ("standard", "ibp", "acert")
SWEEPS = ((8, 4), (16, 3))  # (probes, rounds) of acert's fixed-shape radius search


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--tiny", action="store_true", help="small sizes: a CPU check in seconds")
    parser.add_argument("--out-json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--shared-only", action="store_true", help="only section 3 (k processes on one device)"
    )
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

    if args.shared_only:  # section 3 alone: to run again under NVIDIA MPS
        acert = paper_config(sizes, "acert")
        results["shared"] = shared_throughput(prepared, acert, mid_ramp_epoch(acert), sizes, device)
        write_json(results, args.out_json)
        print(markdown(shared_rows(results["shared"])))
        print(json.dumps(results))
        return 0

    # 1. Training: mid-ramp for every method; acert also in warm-up and after the ramp.
    cfg = {m: paper_config(sizes, m) for m in TIMED_METHODS}
    middle = mid_ramp_epoch(cfg["acert"])
    after = int(cfg["acert"].warmup_epochs + cfg["acert"].ramp_epochs)
    after += (cfg["acert"].epochs - after) // 2
    runs = {m: (cfg[m], middle) for m in TIMED_METHODS}
    runs |= {"acert_warmup": (cfg["acert"], 0), "acert_post_ramp": (cfg["acert"], after)}
    for probes, rounds in SWEEPS:  # the fixed-shape search: k probes per sample, fixed rounds
        swept = cfg["acert"].replace(search_probes=probes, search_steps=rounds)
        runs[f"acert_sweep_{probes}x{rounds}"] = (swept, middle)
    train = {}
    for key, (run_cfg, epoch) in runs.items():
        log(f"timing {key} at epoch {epoch + 1}")
        train[key] = time_training(prepared, run_cfg, epoch, images, labels, sizes, device)
    epoch_s = {m: train[m]["epoch_s"] for m in TIMED_METHODS}
    results["train"] = train
    results["search_steps"] = cfg["acert"].search_steps
    results["ratios"] = {
        "acert/standard": epoch_s["acert"] / epoch_s["standard"],
        "acert/ibp": epoch_s["acert"] / epoch_s["ibp"],
        "ibp/standard": epoch_s["ibp"] / epoch_s["standard"],
        "acert warm-up/standard": train["acert_warmup"]["epoch_s"] / epoch_s["standard"],
    }
    write_json(results, args.out_json)

    # 2. The val checks a trial runs, then the final certification, float32 then float64.
    cert_images, cert_labels = synthetic_cifar(sizes.cert_images, "test")
    log("timing the per-epoch and the final val check")
    results["val_check"] = time_val_checks(
        prepared, cfg["acert"], cert_images, cert_labels, sizes, device
    )
    results["val_check"]["per_epoch"]["share_of_acert_epoch"] = (
        results["val_check"]["per_epoch"]["seconds"] / epoch_s["acert"]
    )
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

    # 2b. TF32 against float32 bounds; a profile of one ACERT step and one certification batch.
    log("TF32 and the profiles")
    acert = train["acert"]  # bounds where the mid-ramp model's radii lie: verdicts can differ
    radius = acert["eps_pixel"] * (acert["radius_pct_of_eps"] or 0) / 100
    results["tf32"] = tf32_error(prepared, cert_images, cert_labels, radius, sizes, device)
    step = method_step(prepared, cfg["acert"], middle, images, labels, sizes)
    batch = certification_batch(
        prepared, cert_images, cert_labels, cfg["acert"].eval_tol, sizes, device
    )
    results["profile"] = {"acert_step": profile(step, device), "cert_batch": profile(batch, device)}
    write_json(results, args.out_json)
    del images, labels

    # 3. Training processes sharing the device.
    results["shared"] = shared_throughput(prepared, cfg["acert"], middle, sizes, device)
    write_json(results, args.out_json)

    # 4. Projection.
    results["projection"] = project(
        cfg["acert"], train, results["val_check"], results["certify"], results["shared"]
    )
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
