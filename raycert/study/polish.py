"""Polishing: the end of a study's budget spent fine-tuning the models of its front.

Once no whole trial fits in what is left of the budget, the searcher starts *polish* trials
instead of ending: each continues a completed whole run's model for a short fine-tuning
(``[study.<preset>] polish``, applied by ``schedule.polished``: one epoch at the run's full
radius, constant learning rate, by default). On MNIST's quick preset one epoch at ``kappa``
0.95 raised the recipe's test clean accuracy by 0.9 and 1.0 points (two seeds) at 1.3 and 2.4
points less ACR (% of the cap), for a twelfth of the run's cost; the budget's end held
nothing else that fits.

Which runs: the completed whole runs on the (clean accuracy, ACR) front of the whole runs,
each once, the most robust first (the front's accuracy end gains least area). A polish trial
is an Optuna trial with its parent's parameters and the ``studyfolder.POLISHED_FROM`` user
attribute (its parent's number), which the journal keeps across ``--resume``; its Tune
config also names the parent's checkpoint (``init_from``). Its model stands beside its
parent's: the targets' winners are chosen from both. TPE reads a polish trial as one more
observation of its parent's parameters: that matters only to a study resumed with a larger
budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raycert.study.fidelity import pareto_ranks

INIT_FROM = "init_from"  # trial config key: the parent's checkpoint (a path or URI)


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
