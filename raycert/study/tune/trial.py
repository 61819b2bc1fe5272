"""What runs on Ray workers for a study: one trial's training, and the chosen models' test
certification (``certify_on_cluster`` launches it as Ray tasks).

``train_trial`` is the Ray Tune function trainable. It builds a ``TrainConfig`` from the study's
base config and the sampled hyperparameters, trains on the device Ray assigned, and reports
after every epoch with the run directory as a ``tune.Checkpoint``; a trial Tune restarts (a
worker crash, ``--resume``) continues from that checkpoint. A config's ``fidelity`` (a
multi-fidelity study's short trial) shortens the whole run (``policy.fidelity.shortened``); a
polish trial's (``init_from``: a finished trial's checkpoint) fine-tunes that trial's model with
the study's ``polish`` changes (``policy.polish.polished``). Every
report carries the metrics the searcher and the scheduler need: ``clean_acc``, ``acr`` and
``sched_score`` (ACR when the epoch meets the lowest accuracy target, else minus the
shortfall), plus ``epochs`` (the run's length), ``final`` (a completed run's last epoch),
``diverged``, ``device`` and ``node``. The last report also carries
``final_cert_s_per_image``: the chosen models' test certification (the default cascade in
float64, PGD too with ``attack``) timed on the first ``FINAL_CERT_PROBE`` val images, which
sizes the budget's reserve for it (``raycert.study.policy.budget``).

Workers never download data (concurrent trials would race): the driver fetches it before the
study starts, and every node of a cluster needs it under the same data root (an absolute path:
the driver resolved it). A ``UserError`` (missing data on a node, a corrupt checkpoint) is
raised as it is; the study stops at it without a retry (``raycert.study.tune.failures``).

A trial whose run had ended (``TrialSetup.finished``: completed, pruned or diverged, as the
trials table recorded it) but which Tune restarts because its driver was killed before Tune
saved that end, reports its run's last epoch again with that run as its checkpoint, and trains
nothing.

Device policy: CUDA only when Ray assigned a GPU (``ray.get_gpu_ids()``) *and* torch sees one;
a fractional GPU also caps this process's share of the device memory. Otherwise the CPU, with
the threads Ray's CPU request allows.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raycert.cert.attack import AttackSettings, CertificateViolation
from raycert.cert.certify import Certificates, merge_summaries
from raycert.errors import UserError, one_line
from raycert.files import out_of_space
from raycert.study.policy.fidelity import shortened
from raycert.study.policy.polish import polished
from raycert.studyfolder import FIDELITY, POLISHED_FROM, StudyDir
from raycert.training.config import TrainConfig
from raycert.training.evaluation import certify_run
from raycert.training.loop import train
from raycert.training.rundir import Metrics, read_metrics

FINAL_CERT_PROBE = 128  # val images a completed trial certifies as the final test pass would
INIT_FROM = "init_from"  # a polish trial's config key: its parent's checkpoint in the study


@dataclass(frozen=True)
class FinishedRun:
    """A trial's run that had ended: its checkpoint (a path or URI on the study storage) and
    its status in the trials table (``completed``, ``pruned`` or ``diverged``)."""

    location: str
    status: str


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a study shares: the study folder where it lies now (``study``, a
    path or URI), the base config (a ``TrainConfig`` dict), the absolute data root on the
    workers, the GPU share per trial, the lowest accuracy target,
    the runs already over by trial id (see the module note), whether the chosen models'
    test certification runs PGD too (``attack``), and the ``TrainConfig`` changes of a polish
    trial (``polish``)."""

    study: str
    base: dict[str, Any]
    data_dir: str | None
    gpu_fraction: float
    min_target: float
    finished: dict[str, FinishedRun] = field(default_factory=dict)
    attack: bool = False
    polish: dict[str, Any] = field(default_factory=dict)


def pick_device(gpu_fraction: float) -> torch.device:
    """CUDA if Ray gave this worker a GPU and CUDA works here, else the CPU; a fractional GPU
    also limits the memory this process may take on the device (Ray's shares are logical)."""
    if ray.get_gpu_ids() and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        if 0 < gpu_fraction < 1:
            torch.cuda.set_per_process_memory_fraction(gpu_fraction, device)
        return device
    return torch.device("cpu")


def sched_score(metrics: Metrics, min_target: float) -> float:
    """ASHA's score: val ACR where the accuracy target holds, else minus the shortfall, so an
    infeasible epoch always ranks below a feasible one."""
    shortfall = min_target - float(metrics["clean_acc"])
    return float(metrics["acr"]) if shortfall <= 0 else -shortfall


def train_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Ray Tune function trainable: train ``setup.base`` with ``config`` and report each epoch.
    A full disk is a ``UserError`` (it stops the study: every other trial would fail alike)."""
    try:
        _train_trial(config, setup)
    except Exception as exc:
        if not out_of_space(exc):
            raise
        raise UserError(
            f"no space left on the disk of {setup.study} or of this node's temporary folder"
            f" ({one_line(exc)}); free some, then continue the study with --resume"
        ) from None


def _train_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    params = {k: v for k, v in config.items() if k not in (FIDELITY, POLISHED_FROM, INIT_FROM)}
    cfg = shortened(TrainConfig.from_dict({**setup.base, **params}), config.get(FIDELITY, 1.0))
    parent = config.get(INIT_FROM)
    if parent is not None:
        cfg = polished(cfg, setup.polish)
    device = pick_device(setup.gpu_fraction)
    extra = {
        "device": device.type,
        "node": ray.get_runtime_context().get_node_id(),
        "epochs": cfg.epochs,
    }
    reported = False

    def report(metrics: Metrics, run_dir: Path | None) -> None:
        nonlocal reported
        row = {**metrics, **extra, "diverged": False}
        row["sched_score"] = sched_score(metrics, setup.min_target)
        if metrics.get("final") and run_dir is not None:
            row["final_cert_s_per_image"] = final_cert_seconds(run_dir, setup, device)
        checkpoint = tune.Checkpoint.from_directory(run_dir) if run_dir else None
        tune.report(row, checkpoint=checkpoint)
        reported = True

    with tempfile.TemporaryDirectory(prefix="raycert-trial-") as tmp:
        run_dir = Path(tmp) / "run"
        over = setup.finished.get(tune.get_context().get_trial_id())
        if over is not None and _report_again(over, run_dir, extra, setup.min_target):
            return
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(run_dir)
        init_from = None
        if parent is not None and checkpoint is None:
            init_from = Path(tmp) / "parent"
            tune.Checkpoint(StudyDir.at(setup.study).locate(parent)).to_directory(init_from)
        result = train(
            cfg,
            run_dir,
            data_dir=setup.data_dir,
            download=False,  # fetched by the driver: concurrent trials must not race
            resume=checkpoint is not None,
            callback=report,
            device=str(device),
            init_from=init_from,
        )
    last = result.metrics[-1] if result.metrics else None
    if result.status == "diverged":
        # The last good epoch's numbers (or none at all), marked so the searcher prunes it.
        zeros = {"clean_acc": 0.0, "acr": 0.0, "epoch": 0}
        row = {**(last or zeros), **extra, "final": False, "diverged": True}
        row["sched_score"] = sched_score(row, setup.min_target)
        tune.report(row)
    elif not reported and last is not None:
        # Restarted from the checkpoint of its last epoch: nothing left to train, report again.
        tune.report(
            {**last, **extra, "diverged": False, "sched_score": sched_score(last, setup.min_target)}
        )


def final_cert_seconds(run_dir: Path, setup: TrialSetup, device: torch.device) -> float:
    """Seconds per image of the final test certification, timed on ``FINAL_CERT_PROBE`` val
    images of the run in ``run_dir`` (the default cascade in float64; PGD with ``attack``)."""
    settings = AttackSettings() if setup.attack else None
    _, probe = certify_run(
        run_dir,
        "val",
        data_dir=setup.data_dir,
        download=False,
        limit=FINAL_CERT_PROBE,
        attack=settings,
        device=str(device),
    )
    return probe["cert_seconds"] / probe["n"]


def _report_again(
    over: FinishedRun, run_dir: Path, extra: dict[str, Any], min_target: float
) -> bool:
    """Report the last epoch of a run that had ended, with that run as the checkpoint; False
    (train as usual) if the run is no longer on the storage."""
    try:
        tune.Checkpoint(over.location).to_directory(run_dir)
        status, metrics = read_metrics(run_dir)
    except (OSError, UserError):
        return False
    if not metrics:
        return False
    row = {**metrics[-1], **extra, "diverged": over.status == "diverged"}
    row.update(final=over.status == "completed", sched_score=sched_score(row, min_target))
    tune.report(row, checkpoint=tune.Checkpoint.from_directory(run_dir))
    return True


def certify_test(
    checkpoint: tune.Checkpoint,
    data_dir: str | None,
    gpu_fraction: float,
    attack: bool = False,
    rows: slice | None = None,
) -> tuple[Certificates, Metrics]:
    """Certify a trial's saved model on the test split (``rows``: those samples of it) in
    float64 (run it as a Ray task): the per-sample certificates and their summary at the run's
    standard radii. With ``attack``, PGD too (default ``AttackSettings``): ``pgd_acc@<eps>``
    and per-sample empirical radii; a flip inside a certified radius raises
    ``CertificateViolation``."""
    device = pick_device(gpu_fraction)
    settings = AttackSettings() if attack else None
    with checkpoint.as_directory() as run_dir:
        return certify_run(
            run_dir,
            "test",
            data_dir=data_dir,
            download=False,
            attack=settings,
            device=str(device),
            rows=rows,
        )


def certify_on_cluster(
    runs: dict[str, tune.Checkpoint],
    data_dir: str | None,
    cpus: float,
    gpus: float,
    *,
    attack: bool = False,
    test_size: int | None = None,
    shards: int = 1,
) -> dict[str, tuple[Certificates, Metrics]]:
    """``certify_test`` each run (by trial id) at once, as Ray tasks with a trial's resources.
    With the split's ``test_size``, each run's split is cut into ``shards`` parts, one task
    each, so that the runs share the cluster evenly (a study's accuracy-end model can take
    five times the recipe's time per image), and the parts are joined again."""
    task = ray.remote(certify_test).options(num_cpus=cpus, num_gpus=gpus)
    parts = [None]
    if test_size is not None and shards > 1:
        size = math.ceil(test_size / shards)
        parts = [slice(start, start + size) for start in range(0, test_size, size)]
    refs = {
        trial_id: [task.remote(ckpt, data_dir, gpus, attack, rows) for rows in parts]
        for trial_id, ckpt in runs.items()
    }
    out = {}
    for trial_id, shard_refs in refs.items():
        try:
            done = ray.get(shard_refs)
            out[trial_id] = (
                Certificates.concat([certs for certs, _ in done]),
                merge_summaries([summary for _, summary in done]),
            )
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, CertificateViolation):  # a bug in the bounds: no user error
                raise exc.cause from None
            cause = exc.cause if isinstance(exc.cause, UserError) else exc
            raise UserError(f"test certification of trial {trial_id} failed: {cause}") from None
    return out
