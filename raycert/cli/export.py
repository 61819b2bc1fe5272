"""``raycert export``: a run's model, or a study's chosen models, as ONNX with one VNN-LIB
property per test sample, laid out for complete verifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raycert.cli.output import progress_bar
from raycert.cli.root import DataDirOption, NoDownloadOption
from raycert.errors import UserError
from raycert.interrupts import held


def export_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="A run folder (raycert train) or a study folder (<storage>/<name>): its "
            "chosen model per met target.",
            metavar="RUN_OR_STUDY",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write into.", show_default=False)],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Export the first N test samples.")
    ] = None,
    eps: Annotated[
        str | None,
        typer.Option(
            help="One radius (e.g. 2/255) for every correctly classified sample.",
            show_default="each sample's certified radius",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds per property in instances.csv.")
    ] = 300.0,
    data_dir: DataDirOption = None,
    no_download: NoDownloadOption = False,
) -> None:
    """Write model.onnx, one VNN-LIB property per test sample, instances.csv and a README."""
    with held():  # a signal must not cut a native module's import in half
        from raycert.export import export, missing_packages, source_kind
        from raycert.paths import absolute, writable_dir
        from raycert.units import parse_eps

    missing = missing_packages()
    if missing:
        raise UserError(f"raycert export needs {', '.join(missing)}: pip install 'raycert[export]'")

    radius = None if eps is None else parse_eps(eps)
    if radius is not None and radius <= 0:
        raise UserError(f"--eps {eps}: give a radius > 0")
    source = Path(absolute(source))
    source_kind(source)  # before --out is created
    folder = writable_dir(out, "--out")
    exported = export(
        source,
        folder,
        limit=limit,
        eps=radius,
        timeout_s=timeout,
        data_dir=data_dir,
        download=not no_download,
        progress=progress_bar("certifying"),
    )
    for one in exported:
        typer.echo(
            f"{one.out}: model.onnx, {one.properties} properties "
            f"({one.left_out} samples left out), instances.csv"
        )
