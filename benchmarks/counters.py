"""Counters of the work that keeps a GPU waiting, measurable on a CPU.

``counting_bound_passes``: the radius search's bound passes, each one dependent round.
``counting_host_syncs``: the calls that make the host wait for the device on CUDA (a value read
back, or an output whose size depends on the data), counted wherever the code makes them, so a
CPU run shows where a GPU run would stall.

Beyond the standard library, imports only torch and raycert (the GPU image lacks the rest).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

import raycert.cert.verifiers as verifiers_module


@contextlib.contextmanager
def counting_bound_passes() -> Iterator[dict[str, int]]:
    """Count the radius search's bound passes (calls of ``raycert.cert.verifiers.min_margin``)
    and the samples they carried, as benchmarks/bounds.py does; the search looks it up at each
    call, so the patch reaches it."""
    counts = {"passes": 0, "samples": 0}
    original = verifiers_module.min_margin

    def counting(net, xs, *args, **kwargs):
        counts["passes"] += 1
        counts["samples"] += len(xs)
        return original(net, xs, *args, **kwargs)

    verifiers_module.min_margin = counting
    try:
        yield counts
    finally:
        verifiers_module.min_margin = original


# ---------------------------------------------------------------------------------------------
# Host syncs
# ---------------------------------------------------------------------------------------------

TORCH_DIR = str(Path(torch.__file__).parent)
OPTIM_DIR = str(Path(torch.optim.__file__).parent)
THIS_FILE = __file__
MASK_DTYPES = (torch.bool, torch.uint8)

# Each op's rule: its name in the counts when this call of it (args, kwargs) would sync on
# CUDA, else None.
Rule = Callable[[tuple[Any, ...], dict[str, Any]], str | None]


def _always(name: str) -> Rule:
    return lambda args, kwargs: name


def _parts(index: Any) -> tuple[Any, ...]:
    return tuple(index) if isinstance(index, tuple | list) else (index,)


def _index_read(op: str, index: Any) -> str | None:
    """Whether indexing with ``index`` reads the device: by a mask (a bool or uint8 tensor,
    whose ``nonzero`` sizes the result), or by a 0-dim integer tensor (read back as an int)."""
    tensors = [part for part in _parts(index) if isinstance(part, Tensor)]
    if any(t.dtype in MASK_DTYPES for t in tensors):
        return f"{op}[mask]"
    if any(t.dim() == 0 and not t.is_floating_point() for t in tensors):
        return f"{op}[0-dim tensor]"
    return None


def _getitem(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    return _index_read("__getitem__", args[1])


def _setitem(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """A masked write syncs, except ``x[mask] = number`` with the mask the only tensor index:
    PyTorch turns that into ``masked_fill_``."""
    index, value = args[1], args[2]
    tensors = [part for part in _parts(index) if isinstance(part, Tensor)]
    scalar = isinstance(value, int | float) and len(tensors) == 1
    if scalar and tensors[0].dtype in MASK_DTYPES and tensors[0].dim() > 0:
        return None
    return _index_read("__setitem__", index)


def _where(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """``torch.where(condition)`` alone is ``nonzero``; with values it is elementwise."""
    return "where(condition)" if len(args) + len(kwargs) == 1 else None


def _repeat_interleave(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Repeats given as a tensor size the output from the data, unless ``output_size`` says it;
    ``torch.repeat_interleave(repeats)`` alone always does."""
    if kwargs.get("output_size") is not None or len(args) > 3:
        return None
    alone = len(args) == 1 and "repeats" not in kwargs
    repeats = kwargs.get("repeats", args[1] if len(args) > 1 else None)
    return "repeat_interleave(tensor)" if alone or isinstance(repeats, Tensor) else None


def _to_host(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """A blocking copy to the CPU from another device (so never on a CPU run)."""
    if args[0].device.type == "cpu":
        return None
    device, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
    to_cpu = device is not None and device.type == "cpu" and not non_blocking
    return "to(cpu)" if to_cpu else None


def _cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    return "to(cpu)" if args[0].device.type != "cpu" else None


SYNC_OPS: dict[Any, Rule] = {
    Tensor.item: _always("item"),
    Tensor.tolist: _always("tolist"),
    Tensor.__bool__: _always("__bool__"),
    Tensor.__int__: _always("__int__"),
    Tensor.__float__: _always("__float__"),
    Tensor.__index__: _always("__index__"),
    Tensor.__format__: _always("__format__"),
    Tensor.numpy: _always("numpy"),
    torch.nonzero: _always("nonzero"),
    Tensor.nonzero: _always("nonzero"),
    torch.argwhere: _always("argwhere"),
    Tensor.argwhere: _always("argwhere"),
    torch.where: _where,
    torch.masked_select: _always("masked_select"),
    Tensor.masked_select: _always("masked_select"),
    torch.unique: _always("unique"),
    Tensor.unique: _always("unique"),
    torch.unique_consecutive: _always("unique"),
    Tensor.unique_consecutive: _always("unique"),
    torch.equal: _always("equal"),
    Tensor.equal: _always("equal"),
    Tensor.__getitem__: _getitem,
    Tensor.__setitem__: _setitem,
    torch.repeat_interleave: _repeat_interleave,
    Tensor.repeat_interleave: _repeat_interleave,
    Tensor.cpu: _cpu,
    Tensor.to: _to_host,
}


def _caller() -> FrameType | None:
    """The frame that called the op being counted: the innermost one outside this module and
    torch, or inside ``torch.optim`` (whose own calls ``counting_host_syncs`` leaves out)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != THIS_FILE and (not name.startswith(TORCH_DIR) or name.startswith(OPTIM_DIR)):
            break
        frame = frame.f_back
    return frame


class _SyncCounter(TorchFunctionMode):
    """Counts each call of ``SYNC_OPS`` that would sync on CUDA. PyTorch pops the mode while
    its ``__torch_function__`` runs, so the checks here and the op's own inner torch calls are
    not seen (``Tensor.unique`` counts once, not again for its ``torch.unique``)."""

    def __init__(self, counts: dict[str, int], sites: Counter[tuple[str, str]] | None) -> None:
        super().__init__()
        self.counts, self.sites = counts, sites

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        rule = SYNC_OPS.get(func)
        name = None if rule is None else rule(args, kwargs)
        if name is not None:
            caller = _caller()
            where = "?" if caller is None else caller.f_code.co_filename
            if not where.startswith(OPTIM_DIR):
                self.counts["total"] += 1
                self.counts[name] = self.counts.get(name, 0) + 1
                if self.sites is not None:
                    line = 0 if caller is None else caller.f_lineno
                    self.sites[name, f"{where}:{line}"] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting_host_syncs(
    sites: Counter[tuple[str, str]] | None = None,
) -> Iterator[dict[str, int]]:
    """Count the calls inside the block that would make the host wait for a CUDA device: reading
    a value back (``item``, ``tolist``, ``bool``/``int``/``float``/``index`` of a tensor,
    ``numpy``, a blocking copy to the CPU), or an op whose output size depends on the data
    (``nonzero``, ``argwhere``, ``where(condition)``, ``masked_select``, ``unique``, ``equal``,
    indexing by a mask, ``repeat_interleave`` by a tensor). Yields ``{"total": n, op: n, ...}``;
    ``sites``, where given, gets ``(op, "file:line")`` counts of the code that made each call.

    A call counts whatever device its tensor is on, as it would sync were the tensor on a GPU
    (on a CPU run none of them waits), so reads of 0-dim tensors that hold a Python number and
    stay on the host on a GPU too count as well; the one exception is ``torch.optim``'s reads
    of its step counters. A copy to the CPU counts only from another device: never on a CPU
    run. Not counted: syncs inside PyTorch's C++ (``F.one_hot`` without ``num_classes``, say)
    and copies to a GPU.
    """
    counts = {"total": 0}
    with _SyncCounter(counts, sites):
        yield counts


def top_syncs(counts: dict[str, int], n: int = 3) -> str:
    """The ``n`` most frequent ops of ``counting_host_syncs``'s counts, as ``op n, ...``."""
    ops = sorted(((v, k) for k, v in counts.items() if k != "total"), reverse=True)
    return ", ".join(f"{k} {v:g}" for v, k in ops[:n]) or "-"
