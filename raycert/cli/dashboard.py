"""``raycert dashboard``: optuna-dashboard on a study's journal, live and read-only."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from raycert.errors import UserError
from raycert.interrupts import held


def dashboard_command(
    study_dir: Annotated[
        Path,
        typer.Argument(
            help="The study's folder (<storage>/<name>), running or finished.",
            metavar="STUDY_DIR",
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Watch a study's trials in optuna-dashboard while it runs (read-only; Ctrl-C stops it)."""
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise UserError(
            "raycert dashboard needs optuna-dashboard: pip install 'raycert[dashboard]'"
        )
    with held():  # a signal must not cut a native module's import in half
        from raycert.paths import absolute
        from raycert.report.dashboard import serve_dashboard

    server = serve_dashboard(Path(absolute(study_dir)), host, port)
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/dashboard"
    typer.echo(f"dashboard of {study_dir}: {address} (read-only; Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # the way to stop it: not an interruption of any work
        typer.echo("dashboard stopped")
    finally:
        server.server_close()
