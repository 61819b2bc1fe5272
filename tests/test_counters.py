"""benchmarks/counters.py: the host syncs it counts are the calls that would wait for a GPU, each
once, and none for arithmetic; ACERT's training step makes more of them, and more bound passes,
than IBP's, which makes none."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from nets import net_and_batch

from raycert.training.config import TrainConfig
from raycert.training.loop import train_step
from raycert.training.methods import METHOD_SPECS, StepInput

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from counters import counting_bound_passes, counting_host_syncs  # noqa: E402


@pytest.mark.parametrize(
    ("call", "op"),
    [
        (lambda x, mask: x.sum().item(), "item"),
        (lambda x, mask: torch.nonzero(mask), "nonzero"),
        (lambda x, mask: mask.nonzero(), "nonzero"),
        (lambda x, mask: x[mask], "__getitem__[mask]"),
        (lambda x, mask: x[None, mask], "__getitem__[mask]"),
        (lambda x, mask: x.clone().__setitem__(mask, x[:1]), "__setitem__[mask]"),
        (lambda x, mask: 1 if mask.any() else 0, "__bool__"),
        (lambda x, mask: x.tolist(), "tolist"),
    ],
)
def test_each_sync_counts_once(call, op):
    x = torch.arange(6.0)
    mask = x > 2
    sites: Counter[tuple[str, str]] = Counter()
    with counting_host_syncs(sites) as counts:
        call(x, mask)
    assert counts == {"total": 1, op: 1}
    ((counted, site),) = sites
    assert counted == op and site.startswith(__file__)


def test_arithmetic_and_sync_free_indexing_count_nothing():
    x = torch.arange(6.0, requires_grad=True)
    mask = x > 2
    optimizer = torch.optim.Adam([x])  # its step counters stay on the host on a GPU too
    with counting_host_syncs() as counts:
        y = (x * 2 + 1).exp().sum() + torch.where(mask, x, 0.0).sum()
        y = y + x[torch.tensor([0, 2])].sum() + x[1:3].sum() + len(x)
        y.backward()
        optimizer.step()
        x.detach()[mask] = 0.0  # a masked fill, which does not sync
        x.detach().repeat_interleave(2)
    assert counts == {"total": 0}


def test_acert_step_syncs_and_passes_more_than_ibp():
    net, x, _ = net_and_batch(seed=3)
    with torch.no_grad():
        y = net(x).argmax(dim=1)  # every sample classified right: each has a radius to search
    cfg = TrainConfig(
        dataset="synthetic", method="acert", max_eps=0.1, search_steps=5, search_tol=1e-4
    )
    counted = {}
    for method in ("ibp", "acert"):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
        step = StepInput(x, y, 0.05, 0.25, seed=0)
        with counting_bound_passes() as passes, counting_host_syncs() as syncs:
            assert train_step(net, optimizer, METHOD_SPECS[method].loss, step, cfg) is not None
        counted[method] = passes["passes"], syncs["total"]
    (ibp_passes, ibp_syncs), (acert_passes, acert_syncs) = counted["ibp"], counted["acert"]
    assert ibp_passes == 0 and acert_passes >= 2
    assert acert_syncs > ibp_syncs >= 1  # ibp: the trainer's one finite check
