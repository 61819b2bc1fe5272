"""Polishing: the end of a study's budget spent fine-tuning the models of its front.

Once no whole trial fits in what is left of the budget, the searcher starts *polish* trials
instead of ending: each continues a completed whole run's model for a short fine-tuning
(``polished``: one epoch at the run's full radius, constant learning rate, then the spec's
``[study.<preset>] polish`` changes). The README gives what it bought on MNIST's quick preset.

Which runs: the completed whole runs on the (clean accuracy, ACR) front of the whole runs,
each once, the most robust first (the front's accuracy end gains least area). A polish trial
has its parent's parameters and names its parent (``polished_from``), which the Optuna journal
keeps across ``--resume``. Its model stands beside its parent's: the targets' winners are
chosen from both. TPE reads a polish trial as one more observation of its parent's parameters:
that matters only to a study resumed with a larger budget.

This module is the polish rule's one home: which run is polished next, and how.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raycert.studyfolder import pareto_ranks
from raycert.training.config import TrainConfig


@dataclass(frozen=True)
class WholeRun:
    """A completed whole-length trial as polishing sees it."""

    number: int
    clean_acc: float
    acr: float
    params: dict[str, Any]


def next_parent(runs: Sequence[WholeRun], polished: set[int]) -> WholeRun | None:
    """The run to polish next: of the front of ``runs``, the most robust not in ``polished``."""
    ranks = pareto_ranks([(r.clean_acc, r.acr) for r in runs])
    front = [r for r, rank in zip(runs, ranks, strict=True) if rank == 0]
    left = [r for r in front if r.number not in polished]
    return max(left, key=lambda r: (r.acr, -r.number), default=None)


def polished(cfg: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """The config that fine-tunes a finished run of ``cfg``: at ``cfg``'s full radius from the
    first step (no warm-up, no ramp, so no regularizers), a constant learning rate, for one
    epoch; ``changes`` (``kappa``, ``lr``, ``epochs``, ...) go over that. The run starts from
    the finished run's model (``train(init_from=...)``)."""
    return cfg.replace(
        **{
            "epochs": 1,
            "warmup_epochs": 0,
            "ramp_epochs": 0,
            "lr_schedule": "constant",
            "lr_milestones": (),
            **changes,
        }
    )
