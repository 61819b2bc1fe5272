"""``raycert study``: a hyperparameter search, its chosen models, and its report.

The command parses what the user typed and hands it over as typed: ``raycert.study.policy.plan``
checks every value and resolves every path, before Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from raycert.cli.output import console, counts_text, print_chosen, trials_summary
from raycert.cli.root import (
    DataDirOption,
    DatasetArgument,
    NoDownloadOption,
    PresetOption,
)
from raycert.errors import UserError
from raycert.interrupts import Interrupted, held
from raycert.units import format_duration, parse_duration

if TYPE_CHECKING:
    from raycert.study.tune.outcome import StudyResult


# The options of ``raycert study`` (the shared ones live in ``raycert.cli.root``).
MinAccOption = Annotated[
    list[str] | None,
    typer.Option(
        "--min-acc",
        help="Clean-accuracy target in (0, 1); repeat for several. Default: the spec's.",
        metavar="ACC",
        show_default=False,
    ),
]
MethodOption = Annotated[
    str | None,
    typer.Option(
        help="acert, ibp, mtl-ibp, sabr or crown-ibp (default: the preset's); several joined "
        "by commas (acert,sabr), or all, search the method too, each with its own knobs, and "
        "the report draws one front per method."
    ),
]
TrialsOption = Annotated[
    int | None,
    typer.Option(help="Trials in all (default: the spec's; with --resume, more extends it)."),
]
BudgetOption = Annotated[
    str | None,
    typer.Option(
        help="Wall clock for the whole study, like 10m, 2h or 1.5d; it ends on time with "
        "what finished, and spends an end too short for a whole trial polishing the front "
        "where its spec sets polish (default: the preset's).",
        show_default=False,
    ),
]
ConcurrencyOption = Annotated[
    int | None, typer.Option(help="Trials at once (default: as many as the cluster fits).")
]
CpusOption = Annotated[float, typer.Option(help="CPUs each trial asks Ray for.")]
GpusOption = Annotated[
    str, typer.Option(help="GPUs each trial asks Ray for (0.25 shares a GPU by four), or auto.")
]
AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster HOST:PORT, or auto (default: a local cluster).")
]
StorageOption = Annotated[str, typer.Option(help="Folder (shared on a cluster) or URI.")]
NameOption = Annotated[
    str | None, typer.Option(help="Study folder name (default DATASET-METHOD-PRESET).")
]
ResumeOption = Annotated[
    bool, typer.Option(help="Continue the interrupted, stopped or finished study --name.")
]
SeedOption = Annotated[int, typer.Option(help="Seeds the sampler and every trial.")]
SpecOption = Annotated[
    Path | None, typer.Option(help="Spec file instead of raycert/spec/presets/DATASET.toml.")
]
AttackOption = Annotated[
    bool | None,
    typer.Option(
        "--attack/--no-attack",
        help="Also attack the chosen models with PGD on the test split (pgd_acc@eps, "
        "pgd_radius; slower). Default: off, or as the resumed study ran.",
        show_default=False,
    ),
]


def study_command(
    dataset: DatasetArgument,
    min_acc: MinAccOption = None,
    method: MethodOption = None,
    preset: PresetOption = "quick",
    trials: TrialsOption = None,
    budget: BudgetOption = None,
    concurrency: ConcurrencyOption = None,
    cpus_per_trial: CpusOption = 1.0,
    gpus_per_trial: GpusOption = "auto",
    address: AddressOption = None,
    storage: StorageOption = "runs",
    name: NameOption = None,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    data_dir: DataDirOption = None,
    no_download: NoDownloadOption = False,
    spec: SpecOption = None,
    attack: AttackOption = None,
) -> None:
    """Search hyperparameters for the highest ACR at each accuracy target (Ray Tune + Optuna)."""
    with held():  # cut, these imports (Ray, torch) can crash in native code on the way out
        from raycert.study.tune.run import StudyRequest, run_study  # for this command only

    request = StudyRequest(
        dataset=dataset,
        targets=tuple(_accuracy(value) for value in min_acc or ()),
        method=method,
        preset=preset,
        trials=trials,
        budget_s=None if budget is None else parse_duration(budget),
        concurrency=concurrency,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=_gpus(gpus_per_trial),
        address=address,
        storage=storage,
        name=name,
        resume=resume,
        seed=seed,
        data_dir=None if data_dir is None else str(data_dir),
        spec=None if spec is None else str(spec),
        download=not no_download,
        attack=attack,
    )
    result = run_study(request)
    if result.status != "finished" and result.signalled:  # Tune stopped them, gracefully
        raise Interrupted(result.study_dir)
    if result.status != "finished":
        counts = result.meta.trial_counts
        typer.echo(
            f"error: Ray Tune ended the run of {result.study_dir} after {sum(counts.values())}"
            f" of {result.meta.trials_requested} trials, unasked (its messages above say why);"
            " continue it with --resume",
            err=True,
        )
        raise typer.Exit(1)
    try:
        _print_outcome(result)
    except KeyboardInterrupt:  # writing the report: the study itself is finished
        raise Interrupted(result.study_dir) from None


def _print_outcome(result: StudyResult) -> None:
    """A finished study: each target's model, the trial counts, the wall time, where the
    results and the report are; exit 1 when no trial completed."""
    from raycert.paths import is_uri
    from raycert.report.page import build_report

    meta = result.meta
    for chosen in result.targets:
        print_chosen(chosen, meta.acr_cap, meta.method)
    console.print(trials_summary(meta))
    counts = meta.trial_counts
    if meta.budget_s is not None:
        line = f"wall time: {format_duration(meta.spent_s)} of the "
        line += f"{format_duration(meta.budget_s)} budget"
        if meta.spent_s > 1.1 * meta.budget_s and sum(counts.values()):
            line += " (over it: the study waits for a first completed trial"
            if any(chosen.test for chosen in result.targets):
                line += ", and certifying on test took longer than the trials foretold"
            line += ")"
        console.print(line)
    console.print(f"results: {result.study_dir}/results.json (trials.csv, trials.parquet)")
    if is_uri(result.study_dir):
        console.print(f"copy the study folder locally, then: raycert report {result.study_dir}")
    else:
        typer.echo(f"study {result.study_dir}: writing the report", err=True)
        console.print(f"report: {build_report([Path(result.study_dir)])}")
    if not sum(counts.values()):
        line = f"error: no trial of {result.study_dir} ran"
        if meta.budget_s is not None:
            line += f" in its {format_duration(meta.budget_s)} budget; continue it with a"
            line += " larger --budget and --resume"
        typer.echo(line, err=True)
        raise typer.Exit(1)
    if not counts.get("completed"):
        errors = meta.errors
        why = (
            f"; the first failure (trial {errors[0].trial}): {errors[0].message}" if errors else ""
        )
        typer.echo(
            f"error: no trial of {result.study_dir} completed ({counts_text(counts)}){why}",
            err=True,
        )
        raise typer.Exit(1)


def _accuracy(text: str) -> float:
    """One ``--min-acc`` value as a number (its range is checked with the spec's targets)."""
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--min-acc: {text!r} is not a number; write 0.9 for 90%") from None


def _gpus(text: str) -> float | str:
    """``--gpus-per-trial`` as a number, or ``"auto"`` (its range is checked with the plan)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--gpus-per-trial must be a number >= 0 or auto, got {text!r}") from None
