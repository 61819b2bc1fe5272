"""``raycert train`` (one model, certified on val every epoch) and ``raycert certify`` (a trained
model's certificates on a split)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from raycert.cli.output import console, print_metrics, progress_bar
from raycert.cli.root import (
    DataDirOption,
    DatasetArgument,
    DeviceOption,
    NoDownloadOption,
    PresetOption,
)
from raycert.errors import UserError
from raycert.interrupts import Interrupted, held
from raycert.units import format_eps, parse_eps


def train_command(
    dataset: DatasetArgument,
    method: Annotated[
        str | None, typer.Option(help="acert, ibp, mtl-ibp, sabr, crown-ibp or standard.")
    ] = None,
    preset: PresetOption = "quick",
    model: Annotated[str | None, typer.Option(help="cnn7, cnn_small or mlp.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_eps: Annotated[str | None, typer.Option(help="Training radius: 0.3, 2/255 or 2px.")] = None,
    kappa: Annotated[float | None, typer.Option(help="Weight of the clean loss, 0 to 1.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: DeviceOption = "auto",
    data_dir: DataDirOption = None,
    no_download: NoDownloadOption = False,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/train/...).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
) -> None:
    """Train one model (ACERT by default) and certify it on the validation split every epoch."""
    with held():  # a signal must not cut a native module's import in half
        from raycert.paths import writable_dir
        from raycert.spec import load_preset
        from raycert.training.loop import train

    overrides = {"method": method, "model": model, "epochs": epochs, "kappa": kappa, "lr": lr}
    overrides.update(seed=seed, max_eps=None if max_eps is None else parse_eps(max_eps))
    config = (
        load_preset(dataset, preset)
        .replace(**{k: v for k, v in overrides.items() if v is not None})
        .resolve()
    )
    warning = config.ramp_warning()
    if warning:
        typer.echo(warning, err=True)
    if resume and out is None:
        raise UserError("--resume needs --out, the run folder to continue")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = writable_dir(
        out or Path("runs") / "train" / f"{config.dataset}-{config.method}-{stamp}", "--out"
    )
    console.print(f"training {config.method} on {config.dataset} ({preset}) -> {run_dir}")

    def report_epoch(row: dict, _run_dir: Path | None) -> None:
        console.print(
            f"epoch {row['epoch']:>3}/{config.epochs}  eps {format_eps(row['eps']):>7}  "
            f"loss {row['train_loss']:.4f}  val clean {row['clean_acc']:.2%}  "
            f"ACR {row['acr_pct']:.1f}% of cap"
        )

    try:
        result = train(
            config,
            run_dir,
            data_dir=data_dir,
            download=not no_download,
            resume=resume,
            callback=report_epoch,
            device=device,
            progress=True,
        )
    except KeyboardInterrupt:  # status.json says "interrupted" now, if the run had started
        where = str(run_dir) if (run_dir / "status.json").exists() else None
        raise Interrupted(where, () if out is not None else ("--out", str(run_dir))) from None
    if result.metrics:
        print_metrics(f"{result.status}: {run_dir}", result.metrics[-1])
    if result.status != "completed":
        raise UserError(f"training {result.status}: {result.message}; the last good epoch is saved")


def certify_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by raycert train.")],
    split: Annotated[str, typer.Option(help="test or val.")] = "test",
    eps: Annotated[str | None, typer.Option(help="Radii, e.g. 2/255,8/255.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Certify N samples.")] = None,
    float32: Annotated[
        bool, typer.Option("--float32", help="Faster; radii are re-verified in float64.")
    ] = False,
    verifier: Annotated[
        str | None,
        typer.Option(
            help="A verifier or a cascade of them joined by +, e.g. ibp+crown-ibp (cheaper, "
            "looser); an unknown name lists the verifiers.",
            show_default="the tightest cascade",
        ),
    ] = None,
    attack: Annotated[
        bool, typer.Option("--attack", help="Also run PGD: pgd_acc@eps, empirical radii.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    per_sample: Annotated[Path | None, typer.Option(help="Write one CSV row per sample.")] = None,
    device: DeviceOption = "auto",
    data_dir: DataDirOption = None,
    no_download: NoDownloadOption = False,
) -> None:
    """Certify a trained model: clean accuracy, ACR (value, % of cap, cap), certified accuracy."""
    with held():  # a signal must not cut a native module's import in half
        import torch

        from raycert.cert.attack import AttackSettings
        from raycert.cert.verifiers import DEFAULT_VERIFIER
        from raycert.paths import writable_file
        from raycert.training.evaluation import certify_run

    if split not in ("test", "val"):
        raise UserError(f"unknown split {split!r}: choose test or val")
    eps_list = None if eps is None else tuple(parse_eps(e) for e in eps.split(",") if e.strip())
    if per_sample is not None:
        per_sample = writable_file(per_sample, "--per-sample")
    certs, summary = certify_run(
        run_dir,
        split,
        data_dir=data_dir,
        download=not no_download,
        limit=limit,
        eps_list=eps_list,
        dtype=torch.float32 if float32 else torch.float64,
        verifier=DEFAULT_VERIFIER if verifier is None else verifier,
        attack=AttackSettings() if attack else None,
        device=device,
        progress=None if as_json else progress_bar("certifying"),
    )
    if per_sample is not None:
        certs.write_csv(per_sample)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    print_metrics(f"{run_dir} on {split} ({summary['verifier']})", summary)
    for name, stage in summary["by_verifier"].items():
        console.print(f"ACR after {name}: {stage['acr']:.5f} ({stage['acr_pct']:.1f}% of cap)")
    for key, value in summary.items():
        if key.startswith("pgd_acc@"):
            console.print(f"PGD accuracy at {key.removeprefix('pgd_acc@')}: {value:.2%}")
    if per_sample is not None:
        console.print(f"per-sample radii: {per_sample}")
