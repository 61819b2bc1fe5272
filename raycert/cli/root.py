"""The root of the command line: the Typer application, the group that turns errors into one
``error:`` line, ``--version``, and the options several commands share."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from raycert import __version__
from raycert.errors import UserError
from raycert.interrupts import Interrupted, InterruptedExit, stop_signals

USER_ERROR_EXIT_CODE = 2


class RaycertGroup(TyperGroup):
    """Root command group that turns a ``UserError`` into one stderr line and exit code 2, and
    Ctrl-C or SIGTERM into one line and exit code 130 (``raycert.interrupts``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with stop_signals():
                return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            if not isinstance(exc, Interrupted):
                exc = Interrupted(None)
            click.echo(interrupted_line(ctx, exc), err=True)
            raise InterruptedExit from None
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None
        except Exception as exc:  # a bad option or value: one line too
            if not _is_usage_error(exc):
                raise
            context = getattr(exc, "ctx", None)
            command = context.command_path if context is not None else "raycert"
            message = " ".join(exc.format_message().split()).rstrip(".")
            click.echo(f"error: {message}; see {command} --help", err=True)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None


def interrupted_line(ctx: click.Context, stop: Interrupted) -> str:
    """What a command stopped by a signal says: what it stopped, where its state is kept and
    the command that continues it (the same words, with ``--resume``)."""
    command = ctx.invoked_subcommand or "raycert"
    if stop.where is None:
        return f"{command} interrupted before it wrote anything"
    words = ["raycert", *sys.argv[1:], *stop.resume_args]
    if "--resume" not in words:
        words.append("--resume")
    where = stop.where
    return f"{command} interrupted: {where} keeps its state; continue it with {shlex.join(words)}"


def _is_usage_error(exc: Exception) -> bool:
    """Whether ``exc`` is Click's ``UsageError`` (Typer may bring its own copy of Click), other
    than the request for help that a group without arguments makes."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return "UsageError" in names and "NoArgsIsHelpError" not in names


app = typer.Typer(
    cls=RaycertGroup,
    help="Find certified-robust image classifiers that stay accurate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"raycert {__version__}")
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


# Options shared by several commands.

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Dataset root (torchvision layout); default $RAYCERT_DATA, else ~/.cache/raycert/data",
        show_default=False,
    ),
]
NoDownloadOption = Annotated[bool, typer.Option("--no-download", help="Never download.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
PresetOption = Annotated[
    str,
    typer.Option(
        help="smoke (seconds: tries the tool), quick (a laptop CPU: MNIST's study is a 10-minute "
        "budget) or paper (the ACERT paper's runs: GPU days); raycert/spec/presets/DATASET.toml."
    ),
]
DatasetArgument = Annotated[str, typer.Argument(help="mnist, cifar10, tinyimagenet or synthetic.")]
