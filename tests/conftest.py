"""Shared fixtures: the real dataset root, a local HTTP mirror for download tests, one local
Ray cluster for the in-process study tests, and one killed-and-resumed CLI study.

The ``slow`` marker (``pytest -m "not slow"`` leaves them out; CI runs everything) goes on every
test that starts a Ray cluster or a study process, clones the repository, builds a wheel or
runs a browser: by hand on the tests that do so themselves, and here on every test that uses a
fixture doing so (``SLOW_FIXTURES``)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from studyruns import KilledStudy

# Ray's local clusters (the session's ``ray_local`` and every study CLI the tests start, which
# inherit this) prestart no idle workers for the first driver: in our runs Ray killed those
# unused a second after they started, and on the CI's 2 cores their start-up cost each study
# CLI 3-6 s. What a study does is unchanged (its trials and tasks start their workers as ever).
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")

# Fixtures that start a Ray cluster or a study process: the tests using them are slow.
SLOW_FIXTURES = {"ray_local", "killed_study", "two_nodes", "installed"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that uses a fixture of ``SLOW_FIXTURES``."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared dataset root holding the real MNIST: $RAYCERT_DATA, else ../shared/data.

    Tests and CI run on the shared data, so a missing copy fails the tests that need it (it is
    never skipped, which would hide that they did not run).
    """
    root = Path(os.environ.get("RAYCERT_DATA") or Path(__file__).parents[2] / "shared" / "data")
    raw = root / "MNIST" / "raw"
    if not raw.is_dir():
        pytest.fail(
            f"real MNIST not found: {raw} is missing; set RAYCERT_DATA to the shared data root",
            pytrace=False,
        )
    return root


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Mirror:
    """A folder served over HTTP on 127.0.0.1: files put in ``folder`` are at ``url``."""

    folder: Path
    url: str


@pytest.fixture
def mirror(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mirror]:
    folder = tmp_path_factory.mktemp("mirror")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield Mirror(folder, f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """One local Ray cluster for the session: 2 CPUs and one declared GPU that does not exist
    physically (fractional-GPU scheduling can be tested; CUDA stays unavailable)."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def killed_study(tmp_path_factory: pytest.TempPathFactory) -> KilledStudy:
    """``studyruns.kill_then_resume``: one CLI study killed by SIGKILL and resumed, shared by the
    tests of what a resume keeps (test_study_resume.py) and of the lock it takes over
    (test_study_lock.py)."""
    from studyruns import kill_then_resume

    return kill_then_resume(tmp_path_factory.mktemp("killed"))


@pytest.fixture(scope="module", params=[0, 1, 6])
def random_case(request: pytest.FixtureRequest) -> tuple[Any, Any, Any]:
    """A random float64 net, 48 inputs in [0, 1] and labels = its own predictions except the
    first four (misclassified): ``(net, x, y)``, with over 20 IBP radii inside (0, 0.3)."""
    import torch
    from nets import random_net

    from raycert.cert.radius import certified_radius

    seed = request.param
    net = random_net(seed=seed, channels=1, size=6, num_classes=3, conv_layers=1).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(48, 1, 6, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    y[:4] = (y[:4] + 1) % 3  # four misclassified samples
    radius = certified_radius(net, x, y, 0.3, tol=1e-5)
    assert ((radius > 0) & (radius < 0.3)).sum() > 20, "the net must give radii inside (0, cap)"
    return net, x, y


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two persisted study folders (``acert-mnist``, ``ibp-mnist``) from tests/studyfiles.py;
    ``ibp-mnist`` as an older raycert wrote it (no radius per verifier stage, no PGD). Shared by
    the report tests: a test that damages or edits one works on a ``copy_study``."""
    from studyfiles import write_study

    root = tmp_path_factory.mktemp("storage")
    older = write_study(root, name="ibp-mnist", method="ibp", seed=1, older=True)
    return [write_study(root), older]


@pytest.fixture(scope="session")
def page(studies: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report page of both ``studies``."""
    from raycert.report.page import build_report

    return build_report(studies, tmp_path_factory.mktemp("reports") / "acert+ibp.html")
