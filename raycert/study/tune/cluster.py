"""The Ray cluster a study runs on: connecting, what it holds, and what a trial may ask of it.

``connect`` starts Ray's local cluster (``address="local"``, never a stale ``ray start``
address) or joins an existing one. Joining by explicit address follows the rule ``ray start``
and ``ray.init("auto")`` use for token authentication (on when ``RAY_AUTH_MODE`` says so, or
when it is unset and a token exists); Ray 2.60 skips that rule for explicit addresses, and
the connection then fails only after minutes of retries. An address where nothing listens is
refused at once for the same reason.

``plan_resources`` turns the requested CPUs and GPUs per trial into ones the cluster can hold:
asking for more than any one node has, or for GPUs the cluster lacks, is a ``UserError`` up
front, because Ray Tune would otherwise leave such trials pending forever.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import ray

from raycert.errors import UserError, one_line

# Fractional resources in Ray are multiples of 1e-4.
RESOURCE_QUANTUM = 10_000
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Hardware:
    """What the alive nodes hold: node count, total CPUs and GPUs, and the most of each that
    one node has (a trial runs on one node)."""

    nodes: int
    cpus: float
    gpus: float
    node_cpus: float
    node_gpus: float

    def to_dict(self) -> dict[str, float]:
        return {"nodes": self.nodes, "cpus": self.cpus, "gpus": self.gpus}


@dataclass(frozen=True)
class Resources:
    """What each trial asks Ray for and how many trials run at once."""

    cpus_per_trial: float
    gpus_per_trial: float
    concurrency: int


@contextlib.contextmanager
def _sigterm_left_alone() -> Iterator[None]:
    """Within: ``ray.init`` keeps the caller's SIGTERM handler. It installs one that exits at
    once (``sys.exit``), which cut its start-up in half and left its processes behind; the
    caller holds signals while Ray starts instead (``raycert.interrupts.held``)."""
    utils = ray._private.utils
    original = getattr(utils, "set_sigterm_handler", None)
    if original is None:  # a Ray that no longer does this
        yield
        return
    utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = original


class Descendants:
    """This process's descendants as ``/proc`` lists them (Linux; elsewhere none), each by pid
    and start time so that a pid the system has reused is never mistaken for one of them.

    A local Ray cluster's daemons share the driver's process group, so a terminal's Ctrl-C
    reaches them too; a raylet that dies of it leaves its agents orphaned and running.
    ``note`` what runs below the driver while the cluster is up; after ``ray.shutdown``,
    ``kill`` ends whatever of it is still there."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}

    def note(self) -> None:
        """Remember every process of Ray's (its command line says so) now below this one."""
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        stack = list(children.get(os.getpid(), []))
        while stack:
            pid = stack.pop()
            if _is_ray(pid):
                self.seen[pid] = table[pid][1]
            stack.extend(children.get(pid, []))

    def kill(self) -> list[int]:
        """SIGKILL the remembered processes that still run; their pids."""
        table = _proc_table()
        alive = [pid for pid, start in self.seen.items() if table.get(pid, (0, ""))[1] == start]
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return alive


def _is_ray(pid: int) -> bool:
    """Whether process ``pid`` runs Ray (a ``ray::`` worker, a daemon, an agent)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return b"ray" in stream.read()
    except OSError:
        return False


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process ``/proc`` shows (none without it)."""
    table = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stream:
                fields = stream.read().rpartition(")")[2].split()
        except OSError:  # it ended meanwhile
            continue
        table[int(entry.name)] = (int(fields[1]), fields[19])  # ppid, starttime
    return table


def connect(address: str | None, *, quiet: bool = True) -> bool:
    """Connect this process to Ray; True if this call did (so the caller should shut it down).

    ``None`` starts Ray's local cluster; ``auto`` finds a cluster started with ``ray start`` on
    this machine; ``HOST:PORT`` joins that cluster's head. An existing connection is reused.
    ``quiet`` keeps Ray's warnings and the workers' output off the console (errors still show).
    """
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False} if address is None else {}
    kwargs.update(log_to_driver=not quiet, logging_level="ERROR" if quiet else "WARNING")
    if address is not None and address != "auto":
        if address.startswith("ray://"):
            raise UserError(
                f"Ray Client addresses ({address}) are not supported; run raycert on a node of the"
                " cluster with --address HOST:PORT or --address auto"
            )
        _check_listening(address)
        _match_cluster_auth()
    try:
        with _sigterm_left_alone():
            ray.init(address=address or "local", configure_logging=True, **kwargs)
    except ray.exceptions.AuthenticationError:
        raise UserError(
            f"the Ray cluster at {address} refused this process's token: export the same "
            "RAY_AUTH_MODE and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) as its nodes"
        ) from None
    except ConnectionError as exc:
        hint = "" if address is None else "; if its nodes use token auth, export the same token"
        where = address or "local"
        raise UserError(
            f"cannot connect to the Ray cluster at {where}: {one_line(exc)}{hint}"
        ) from None
    return True


def hardware() -> Hardware:
    """Resources of the alive nodes of the connected cluster."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = [float(n.get("CPU", 0.0)) for n in nodes]
    gpus = [float(n.get("GPU", 0.0)) for n in nodes]
    return Hardware(
        len(nodes), sum(cpus), sum(gpus), max(cpus, default=0.0), max(gpus, default=0.0)
    )


def plan_resources(
    hw: Hardware,
    cpus_per_trial: float,
    gpus_per_trial: float | str,
    concurrency: int | None,
    trials: int,
) -> Resources:
    """Check and complete a trial's resource request against the cluster.

    The request is in range already (``cpus_per_trial > 0``, ``gpus_per_trial`` a finite
    number >= 0 or ``"auto"``: ``raycert.study.policy.plan`` checks it before Ray starts); here
    it must fit one node, and GPUs must exist. ``gpus_per_trial="auto"`` is 0 without GPUs, else an
    equal share of the cluster's GPUs per concurrent trial (at most one GPU).
    ``concurrency=None`` runs as many trials as fit.
    """
    if cpus_per_trial > hw.node_cpus:
        raise UserError(
            f"--cpus-per-trial {cpus_per_trial:g} is more than any node of the Ray cluster has "
            f"({hw.node_cpus:g} CPUs); lower it"
        )
    auto = gpus_per_trial == "auto"
    gpus = 0.0 if auto else float(gpus_per_trial)
    if gpus > 0 and hw.gpus == 0:
        raise UserError(
            f"--gpus-per-trial {gpus:g} asks for GPUs but the Ray cluster has none; "
            "use --gpus-per-trial 0 (or auto)"
        )
    if gpus > hw.node_gpus:
        raise UserError(
            f"--gpus-per-trial {gpus:g} is more than any node of the Ray cluster has "
            f"({hw.node_gpus:g} GPUs); lower it"
        )
    fit = int(hw.cpus // cpus_per_trial)
    if gpus > 0:
        fit = min(fit, int(hw.gpus // gpus))
    running = max(1, min(trials, concurrency or fit))
    if auto and hw.gpus > 0:
        gpus = min(1.0, math.floor(hw.gpus / running * RESOURCE_QUANTUM) / RESOURCE_QUANTUM)
    return Resources(cpus_per_trial, gpus, running)


def _check_listening(address: str) -> None:
    """Refuse at once an address where nothing accepts connections."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} should be HOST:PORT (the head's GCS port) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head --port={port}` or check the address"
        ) from None


def _match_cluster_auth() -> None:
    """Apply ``ray start``'s token rule to this driver: token auth when a token is available and
    ``RAY_AUTH_MODE`` is unset (Ray's own helper sets the variable and reloads its config)."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
