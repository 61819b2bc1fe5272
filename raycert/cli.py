"""The ``raycert`` command line: validates input, calls library functions, prints results.

Error handling, shared by every command: a ``UserError`` raised anywhere below a command prints
``error: <message>`` as one line on stderr and exits with code 2, without a traceback (the root
group catches it, so new commands and sub-apps get this for free). Usage errors from Typer
(unknown option, bad value) also exit with code 2. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from raycert import data
from raycert.errors import UserError

USER_ERROR_EXIT_CODE = 2


class RaycertGroup(TyperGroup):
    """Root command group that turns a ``UserError`` into one stderr line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None


app = typer.Typer(
    cls=RaycertGroup,
    help="Find certified-robust image classifiers that stay accurate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Check and download datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Dataset root (torchvision layout); default $RAYCERT_DATA, else ~/.cache/raycert/data",
        show_default=False,
    ),
]


def _package_version() -> str:
    try:
        return version("raycert")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"raycert {_package_version()}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Find certified-robust image classifiers that stay accurate."""


@data_app.command("check")
def data_check(data_dir: DataDirOption = None) -> None:
    """Report which datasets are present and readable under the data root, with split sizes."""
    root = data.resolve_root(data_dir)
    console.print(f"data root: {root}")
    table = Table("dataset", "present", "valid", "train", "val", "test")
    table.add_column("note", overflow="fold")
    for status in data.check(root):
        counts = [str(status.counts.get(split, "-")) for split in data.SPLITS]
        table.add_row(
            status.name,
            "yes" if status.present else "no",
            "yes" if status.valid else "no",
            *counts,
            status.message,
        )
    console.print(table)
    console.print("fetch a missing dataset with: raycert data download NAME")


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="mnist, cifar10 or tinyimagenet.")],
    data_dir: DataDirOption = None,
) -> None:
    """Download a dataset from its official source (or $RAYCERT_MIRROR), checking md5 sums."""
    folder = data.download(name, data_dir)
    console.print(f"{data.dataset_info(name).name} ready in {folder}")


if __name__ == "__main__":
    app(prog_name="raycert")
