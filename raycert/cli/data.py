"""``raycert data check`` and ``raycert data download``: the datasets under the data root."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from raycert.cli.output import console
from raycert.cli.root import DataDirOption
from raycert.errors import UserError
from raycert.interrupts import held

app = typer.Typer(help="Check and download datasets.", no_args_is_help=True)


@app.command("check")
def data_check(data_dir: DataDirOption = None) -> None:
    """Report which datasets are present and readable under the data root, with split sizes.

    Exits 2 if the root is missing or a dataset there is present but invalid (a gate for
    scripts); datasets that are simply absent are listed and do not fail the check."""
    with held():  # a signal must not cut a native module's import in half
        from raycert import data

    root = data.resolve_root(data_dir)
    statuses = data.check(root)
    console.print(f"data root: {root}")
    table = Table("dataset", "present", "valid", "train", "val", "test")
    table.add_column("note", overflow="fold")
    for status in statuses:
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
    invalid = [status for status in statuses if status.present and not status.valid]
    if invalid:
        names = ", ".join(status.name for status in invalid)
        raise UserError(
            f"invalid data under {root}: {names} ({invalid[0].message}); delete the damaged "
            f"files and run `raycert data download {invalid[0].name}`"
        )


@app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="mnist, cifar10 or tinyimagenet.")],
    data_dir: DataDirOption = None,
) -> None:
    """Download a dataset from its official source (or $RAYCERT_MIRROR), checking md5 sums."""
    with held():
        from raycert import data

    folder = data.download(name, data_dir)
    console.print(f"{data.dataset_info(name).name} ready in {folder}")
