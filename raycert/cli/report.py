"""``raycert report``: one offline HTML page for one or several study folders."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from raycert.interrupts import held


def report(
    study_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Study directories (<storage>/<name>); several are overlaid on one front.",
            metavar="STUDY_DIR",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HTML file to write; default reports/<name>.html (names joined by +).",
            show_default=False,
        ),
    ] = None,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the page in the default web browser.")
    ] = False,
) -> None:
    """Write one offline HTML page: accuracy-vs-ACR fronts, chosen models, certified curves."""
    with held():  # a signal must not cut a native module's import in half
        from raycert.paths import writable_file
        from raycert.report.page import build_report  # no torch, no Ray

    if out is not None:
        out = writable_file(out, "--out")
    path = build_report(study_dirs, out)
    typer.echo(f"report written to {path}")
    if open_page and not webbrowser.open(path.resolve().as_uri()):
        typer.echo(f"no web browser found here; open {path.resolve().as_uri()}")
