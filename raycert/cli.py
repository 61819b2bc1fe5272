"""The ``raycert`` command line: validates input, calls library functions, prints results.

Start-up stays fast (``raycert --help`` well under a second): this module imports only Typer and
Rich at the top, and each command imports the library it needs (torch, Ray, the report) in its
body, so ``raycert report`` never loads torch or Ray.

Error handling, shared by every command: a ``UserError`` raised anywhere below a command prints
``error: <message>`` as one line on stderr and exits with code 2, without a traceback (the root
group catches it, so new commands and sub-apps get this for free). Usage errors from Typer
(unknown option, bad value) are one ``error:`` line with exit code 2 as well. Any other
exception is a bug and keeps its traceback.

Paths mean what they say: every path option and ``RAYCERT_DATA`` is resolved against the
working folder the command was typed in, and every output is checked writable before any work
starts (``raycert.paths``). ``study`` exits 0 when it finished with at least one completed trial,
2 on bad input or when a trial hit one (the study stops at once), 1 when no trial completed, and
130 when stopped by Ctrl-C or SIGTERM (continue it with ``--resume``).
"""

from __future__ import annotations

import json
import webbrowser
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table
from typer.core import TyperGroup

from raycert import __version__
from raycert.errors import UserError
from raycert.units import format_eps, parse_eps

if TYPE_CHECKING:
    from raycert.studyfolder import StudyMeta

USER_ERROR_EXIT_CODE = 2


class RaycertGroup(TyperGroup):
    """Root command group that turns a ``UserError`` into one stderr line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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


@data_app.command("check")
def data_check(data_dir: DataDirOption = None) -> None:
    """Report which datasets are present and readable under the data root, with split sizes.

    Exits 2 if the root is missing or a dataset there is present but invalid (a gate for
    scripts); datasets that are simply absent are listed and do not fail the check."""
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


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="mnist, cifar10 or tinyimagenet.")],
    data_dir: DataDirOption = None,
) -> None:
    """Download a dataset from its official source (or $RAYCERT_MIRROR), checking md5 sums."""
    from raycert import data

    folder = data.download(name, data_dir)
    console.print(f"{data.dataset_info(name).name} ready in {folder}")


@app.command("report")
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
    from raycert.paths import writable_file
    from raycert.report.page import build_report  # no torch, no Ray

    if out is not None:
        out = writable_file(out, "--out")
    path = build_report(study_dirs, out)
    typer.echo(f"report written to {path}")
    if open_page and not webbrowser.open(path.resolve().as_uri()):
        typer.echo(f"no web browser found here; open {path.resolve().as_uri()}")


@app.command("train")
def train_command(
    dataset: Annotated[str, typer.Argument(help="mnist, cifar10, tinyimagenet or synthetic.")],
    method: Annotated[str | None, typer.Option(help="acert, ibp or standard.")] = None,
    preset: Annotated[
        str,
        typer.Option(
            help="smoke, quick or paper (the spec file raycert/study/presets/DATASET.toml)."
        ),
    ] = ("quick"),
    model: Annotated[str | None, typer.Option(help="cnn7, cnn_small or mlp.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_eps: Annotated[str | None, typer.Option(help="Training radius: 0.3, 2/255 or 2px.")] = None,
    kappa: Annotated[float | None, typer.Option(help="Weight of the clean loss, 0 to 1.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    data_dir: DataDirOption = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download.")] = False,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/train/...).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
) -> None:
    """Train one model (ACERT by default) and certify it on the validation split every epoch."""
    from raycert.study.spec import load_preset
    from raycert.training.loop import train

    overrides = {"method": method, "model": model, "epochs": epochs, "kappa": kappa, "lr": lr}
    overrides.update(seed=seed, max_eps=None if max_eps is None else parse_eps(max_eps))
    config = (
        load_preset(dataset, preset)
        .replace(**{k: v for k, v in overrides.items() if v is not None})
        .resolve()
    )
    if resume and out is None:
        raise UserError("--resume needs --out, the run folder to continue")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = out or Path("runs") / "train" / f"{config.dataset}-{config.method}-{stamp}"
    from raycert.paths import writable_dir

    run_dir = writable_dir(run_dir, "--out")
    data_root = _data_root(data_dir)
    console.print(f"training {config.method} on {config.dataset} ({preset}) -> {run_dir}")

    def report_epoch(row: dict, _run_dir: Path | None) -> None:
        console.print(
            f"epoch {row['epoch']:>3}/{config.epochs}  eps {format_eps(row['eps']):>7}  "
            f"loss {row['train_loss']:.4f}  val clean {row['clean_acc']:.2%}  "
            f"ACR {row['acr_pct']:.1f}% of cap"
        )

    result = train(
        config,
        run_dir,
        data_dir=data_root,
        download=not no_download,
        resume=resume,
        callback=report_epoch,
        device=device,
        progress=True,
    )
    if result.metrics:
        _print_metrics(f"{result.status}: {run_dir}", result.metrics[-1])
    if result.status != "completed":
        raise UserError(f"training {result.status}: {result.message}; the last good epoch is saved")


@app.command("certify")
def certify_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by raycert train.")],
    split: Annotated[str, typer.Option(help="test or val.")] = "test",
    eps: Annotated[str | None, typer.Option(help="Radii, e.g. 2/255,8/255.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Certify N samples.")] = None,
    float32: Annotated[
        bool, typer.Option("--float32", help="Faster; radii are re-verified in float64.")
    ] = False,
    verifier: Annotated[
        str, typer.Option(help="ibp, crown-ibp, crown, or a cascade like ibp+crown-ibp.")
    ] = "ibp+crown-ibp",
    attack: Annotated[
        bool, typer.Option("--attack", help="Also run PGD: pgd_acc@eps, empirical radii.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    per_sample: Annotated[Path | None, typer.Option(help="Write one CSV row per sample.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    data_dir: DataDirOption = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download.")] = False,
) -> None:
    """Certify a trained model: clean accuracy, ACR (value, % of cap, cap), certified accuracy."""
    import torch

    from raycert.cert.attack import AttackSettings
    from raycert.training.evaluation import certify_run

    if split not in ("test", "val"):
        raise UserError(f"unknown split {split!r}: choose test or val")
    eps_list = None if eps is None else tuple(parse_eps(e) for e in eps.split(",") if e.strip())
    from raycert.paths import writable_file

    if per_sample is not None:
        per_sample = writable_file(per_sample, "--per-sample")
    certs, summary = certify_run(
        run_dir,
        split,
        data_dir=_data_root(data_dir),
        download=not no_download,
        limit=limit,
        eps_list=eps_list,
        dtype=torch.float32 if float32 else torch.float64,
        verifier=verifier,
        attack=AttackSettings() if attack else None,
        device=device,
        progress=None if as_json else _track("certifying"),
    )
    if per_sample is not None:
        certs.write_csv(per_sample)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_metrics(f"{run_dir} on {split} ({summary['verifier']})", summary)
        for name, stage in summary["by_verifier"].items():
            console.print(f"ACR after {name}: {stage['acr']:.5f} ({stage['acr_pct']:.1f}% of cap)")
        for key, value in summary.items():
            if key.startswith("pgd_acc@"):
                console.print(f"PGD accuracy at {key.removeprefix('pgd_acc@')}: {value:.2%}")
        if per_sample is not None:
            console.print(f"per-sample radii: {per_sample}")


def _track(description: str):
    """A progress wrapper for an iterable, drawn on stderr."""
    return lambda items: track(items, description=description, console=Console(stderr=True))


def _print_metrics(title: str, metrics: dict) -> None:
    """Clean accuracy, ACR with its cap and %, and certified accuracy at each radius."""
    table = Table("metric", "value", title=title)
    table.add_row("clean accuracy", f"{metrics['clean_acc']:.2%}")
    cap = format_eps(metrics["acr_cap"])
    table.add_row("ACR", f"{metrics['acr']:.5f} ({metrics['acr_pct']:.1f}% of cap {cap})")
    for key, value in metrics.items():
        if key.startswith("cert_acc@"):
            table.add_row(f"certified accuracy at {key.removeprefix('cert_acc@')}", f"{value:.2%}")
    console.print(table)


@app.command("study")
def study_command(
    dataset: Annotated[str, typer.Argument(help="mnist, cifar10, tinyimagenet or synthetic.")],
    min_acc: Annotated[
        list[str] | None,
        typer.Option(
            "--min-acc",
            help="Clean-accuracy target in (0, 1); repeat for several. Default: the spec's.",
            metavar="ACC",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="acert or ibp (default: the preset's).")
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            help="smoke, quick or paper (the spec file raycert/study/presets/DATASET.toml)."
        ),
    ] = ("quick"),
    trials: Annotated[
        int | None,
        typer.Option(help="Trials in all (default: the spec's; with --resume, more extends it)."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Trials at once (default: as many as the cluster fits).")
    ] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs each trial asks Ray for.")] = 1.0,
    gpus_per_trial: Annotated[
        str, typer.Option(help="GPUs each trial asks Ray for (0.25 shares a GPU by four), or auto.")
    ] = "auto",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster HOST:PORT, or auto (default: a local cluster).")
    ] = None,
    storage: Annotated[str, typer.Option(help="Folder (shared on a cluster) or URI.")] = "runs",
    name: Annotated[
        str | None, typer.Option(help="Study folder name (default DATASET-METHOD-PRESET).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the interrupted, stopped or finished study --name.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seeds the sampler and every trial.")] = 0,
    data_dir: DataDirOption = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download.")] = False,
    spec: Annotated[
        Path | None, typer.Option(help="Spec file instead of raycert/study/presets/DATASET.toml.")
    ] = None,
) -> None:
    """Search hyperparameters for the highest ACR at each accuracy target (Ray Tune + Optuna)."""
    gpus: float | str = "auto"
    if gpus_per_trial != "auto":
        try:
            gpus = float(gpus_per_trial)
        except ValueError:
            gpus = -1.0
        if not 0 <= gpus < float("inf"):
            raise UserError(
                f"--gpus-per-trial must be a number >= 0 or auto, got {gpus_per_trial!r}"
            )
    targets = tuple(_accuracy(value) for value in min_acc or ())
    from raycert.paths import absolute
    from raycert.report.page import build_report
    from raycert.study.run import StudyRequest, run_study  # Ray loads for this command only

    request = StudyRequest(
        dataset=dataset,
        targets=targets,
        method=method,
        preset=preset,
        trials=trials,
        concurrency=concurrency,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus,
        address=address,
        storage=absolute(storage),
        name=name,
        resume=resume,
        seed=seed,
        data_dir=str(_data_root(data_dir)),
        spec=None if spec is None else absolute(spec),
        download=not no_download,
    )
    try:
        result = run_study(request)
    except KeyboardInterrupt:
        result = None
    if result is None or result.status != "finished":
        where = f" {result.study_dir}" if result is not None else ""
        console.print(f"study interrupted:{where}; continue it with --resume")
        raise typer.Exit(130)
    for chosen in result.targets:
        _print_chosen(chosen, result.meta.acr_cap)
    console.print(_trials_summary(result.meta))
    console.print(f"results: {result.study_dir}/results.json (trials.csv, trials.parquet)")
    if "://" in result.study_dir:
        console.print(f"copy the study folder locally, then: raycert report {result.study_dir}")
    else:
        console.print(f"report: {build_report([Path(result.study_dir)])}")
    counts = result.meta.trial_counts
    if not counts.get("completed"):
        errors = result.meta.errors
        why = (
            f"; the first failure (trial {errors[0].trial}): {errors[0].message}" if errors else ""
        )
        typer.echo(
            f"error: no trial of {result.study_dir} completed ({_counts_text(counts)}){why}",
            err=True,
        )
        raise typer.Exit(1)


def _data_root(data_dir: Path | None) -> Path:
    """The data root as the user means it (``--data-dir``, ``RAYCERT_DATA`` or the cache),
    absolute against their working folder."""
    from raycert.data import resolve_root

    return resolve_root(data_dir)


def _accuracy(text: str) -> float:
    """One ``--min-acc`` value as a number (its range is checked with the spec's targets)."""
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--min-acc: {text!r} is not a number; write 0.9 for 90%") from None


def _counts_text(counts: dict[str, int]) -> str:
    order = ("completed", "pruned", "diverged", "error")
    names = {"error": "failed"}
    return ", ".join(f"{counts.get(k, 0)} {names.get(k, k)}" for k in order if counts.get(k))


def _trials_summary(meta: StudyMeta) -> str:
    """One line: how the trials ended, and why the first failed one failed."""
    counts = meta.trial_counts
    line = f"trials: {sum(counts.values())} ({_counts_text(counts) or 'none finished'})"
    if meta.errors:
        first = meta.errors[0]
        line += f"; the first failure (trial {first.trial}): {first.message}"
    return line


def _print_chosen(chosen: Any, cap: float) -> None:
    """One target's winner: hyperparameters, val and test accuracy and ACR (or the closest)."""
    goal = f"clean accuracy >= {chosen.target:g}"
    if not chosen.met:
        near = chosen.closest
        detail = "no trial completed"
        if near:
            detail = f"closest: trial {near.trial_id}, val clean {near.val['clean_acc']:.2%}"
        console.print(f"{goal}: not met by any trial ({detail})")
        return
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.params.items()
    )
    table = Table("", "val", "test", title=goal, caption=f"trial {chosen.trial_id}: {params}")

    def cells(key: str, fmt: str) -> list[str]:
        return [
            fmt.format(m[key]) if m and m.get(key) is not None else "-"
            for m in (chosen.val, chosen.test)
        ]

    table.add_row("clean accuracy", *cells("clean_acc", "{:.2%}"))
    table.add_row(f"ACR (cap {format_eps(cap)})", *cells("acr", "{:.5f}"))
    table.add_row("ACR % of cap", *cells("acr_pct", "{:.1f}%"))
    console.print(table)


if __name__ == "__main__":
    app(prog_name="raycert")
