"""Certifying a model on a split: the per-epoch val check and the final certification of a run.

The val split is the run's own held-out part of the training set, fixed by ``SPLIT_SEED`` for
every run whatever its seed; final numbers are float64 certificates. The per-epoch val check
certifies with interval bounds alone (the verifier training optimizes, and the cheapest); a
run's final certification uses the default cascade of ``raycert.cert.verifiers`` unless told.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from raycert.cert.attack import AttackSettings, attack_split
from raycert.cert.certify import Certificates, certify, evaluate, summarize
from raycert.cert.verifiers import DEFAULT_VERIFIER, parse_verifier
from raycert.data import Split, load
from raycert.errors import UserError
from raycert.training.config import TrainConfig
from raycert.training.rundir import Metrics, load_run

SPLIT_SEED = 0  # the train/val partition is the same for every run, whatever its seed
EVAL_BATCH = 512


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is a ``UserError``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; choose auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but CUDA is not available; use auto or cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {device!r}; choose auto, cpu or cuda")
    return resolved


def evaluate_val(
    model: nn.Sequential, val: Split, cfg: TrainConfig, *, final: bool, device: torch.device
) -> Metrics:
    """Certify the val split with IBP: ``eval_limit`` samples in float32 (radii re-verified in
    float64), all of it in float64 if final."""
    n = len(val) if final or cfg.eval_limit is None else min(cfg.eval_limit, len(val))
    summary = evaluate(
        model,
        val.images[:n],
        val.labels[:n],
        cfg.cert_cap,
        cfg.cert_eps,
        tol=cfg.eval_tol,
        verifier="ibp",
        batch_size=EVAL_BATCH,
        dtype=torch.float64 if final else torch.float32,
        device=device,
    )
    summary["eval_n"] = summary.pop("n")
    for key in ("verifier", "by_verifier"):  # per-epoch metrics stay flat numbers
        summary.pop(key)
    return summary


def certify_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    limit: int | None = None,
    eps_list: tuple[float, ...] | None = None,
    dtype: torch.dtype = torch.float64,
    verifier: str = DEFAULT_VERIFIER,
    attack: AttackSettings | None = None,
    device: str = "auto",
    progress: Callable | None = None,
    rows: slice | None = None,
) -> tuple[Certificates, Metrics]:
    """Certify a saved run on ``split`` (``test`` or ``val``): per-sample certificates and their
    summary (clean accuracy, ACR with cap and %, certified accuracy at ``eps_list``, default the
    run's standard radii; the same per stage of the ``verifier`` cascade under
    ``by_verifier``). The val split is the run's own held-out one. With ``attack``, PGD runs
    too: ``pgd_acc@<eps>`` at the same radii and per-sample empirical radii (the CSV's
    ``pgd_radius``); a flip inside a certified radius raises ``CertificateViolation``.
    ``cert_seconds`` is the wall time of the certification and the attack, loading excluded.
    ``rows`` certifies only those samples of the split (a shard: ``Certificates.concat`` and
    ``merge_summaries`` join the shards of a split into its whole)."""
    parse_verifier(verifier)  # a bad name fails before any data is loaded
    model, cfg = load_run(run_dir)
    data = load(cfg.dataset, split, data_dir, download=download, seed=SPLIT_SEED, limit=limit)
    if rows is not None:
        data = dataclasses.replace(data, images=data.images[rows], labels=data.labels[rows])
    tic = time.perf_counter()
    certs = certify(
        model,
        data.images,
        data.labels,
        cfg.cert_cap,
        tol=cfg.eval_tol,
        verifier=verifier,
        batch_size=EVAL_BATCH,
        dtype=dtype,
        device=resolve_device(device),
        progress=progress,
    )
    radii_eps = cfg.cert_eps if eps_list is None else eps_list
    summary = summarize(certs, radii_eps)
    summary.update(eval_split=split, dtype=str(dtype).removeprefix("torch."))
    if attack is not None:
        certified = torch.where(certs.correct, certs.radii, torch.zeros_like(certs.radii))
        found = attack_split(
            model,
            data.images,
            data.labels,
            radii_eps,
            cap=cfg.cert_cap,
            certified=certified,
            settings=attack,
            batch_size=EVAL_BATCH,
        )
        certs.empirical_radii = found.radii
        summary.update(found.pgd_acc)
        summary["attack"] = {"steps": attack.steps, "restarts": attack.restarts}
    summary["cert_seconds"] = time.perf_counter() - tic
    return certs, summary
