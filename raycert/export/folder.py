"""The exported folder, laid out as a VNN-COMP benchmark so a complete verifier can be pointed
at it as it is:

- ``model.onnx``: the network (``raycert.export.network``);
- ``properties/sample_<index>.vnnlib``: one robustness property per exported test sample
  (``raycert.export.vnnlib``), ``<index>`` its place in raycert's test split;
- ``instances.csv``: ``onnx,vnnlib,timeout`` per property, no header (VNN-COMP's);
- ``properties.csv``: the same properties with their sample, label and radius, for scripts;
- ``README.txt``: what the properties claim and where their radii come from.

A run folder exports its model; a study exports each met target's chosen model into
``<out>/<target>/``.
"""

from __future__ import annotations

import copy
import csv
import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raycert.errors import UserError
from raycert.export.network import export_onnx
from raycert.export.vnnlib import RobustnessProperty

MODEL_ONNX = "model.onnx"
PROPERTIES_DIR = "properties"
INSTANCES_CSV = "instances.csv"
PROPERTIES_CSV = "properties.csv"
README_TXT = "README.txt"


@dataclass
class Exported:
    """One exported folder: where it is, the properties written and the samples left out
    (misclassified, or no radius verified)."""

    out: Path
    properties: int
    left_out: int


@dataclass(frozen=True)
class Radii:
    """Where a model's per-sample radii come from: certified by raycert (``fixed`` None) or one
    radius for every correctly classified sample (``fixed``)."""

    radii: np.ndarray  # (n,) pixel units; 0 where nothing was verified
    correct: np.ndarray  # (n,) bool
    origin: str  # how they were obtained, for the README
    fixed: float | None = None


def export(
    source: Path,
    out: Path,
    *,
    limit: int | None = None,
    eps: float | None = None,
    timeout_s: float = 300.0,
    data_dir: str | None = None,
    download: bool = True,
    progress: Callable | None = None,
) -> list[Exported]:
    """Export ``source``, a run folder (``config.json``) or a study folder (``study.json``),
    into ``out``: its first ``limit`` test samples (all by default), each at its certified
    radius, or with ``eps`` at that radius for every correctly classified one. ``progress``
    wraps the batches of a run's certification (a study's radii are read, not computed)."""
    settings = _Settings(limit, eps, timeout_s, data_dir, download, progress)
    if source_kind(source) == "study":
        return _export_study(source, out, settings)
    return [_export_run(source, out, None, settings)]


@dataclass(frozen=True)
class _Settings:
    """What every exported model of one call shares."""

    limit: int | None
    eps: float | None
    timeout_s: float
    data_dir: str | None
    download: bool
    progress: Callable | None


def source_kind(source: Path) -> str:
    """``study`` for a study folder (``study.json``), ``run`` for a run folder
    (``config.json``); a ``UserError`` for anything else."""
    from raycert.studyfolder import STUDY_JSON

    if (source / STUDY_JSON).is_file():
        return "study"
    if (source / "config.json").is_file():
        return "run"
    if not source.is_dir():
        raise UserError(f"{source} is not a folder; give a run folder or a study folder")
    raise UserError(
        f"{source} is neither a run folder (no config.json) nor a study folder (no study.json);"
        " give one written by raycert train or raycert study"
    )


def _export_study(study_dir: Path, out: Path, settings: _Settings) -> list[Exported]:
    """Each met target's chosen model, into ``out/<target>``, at the test radii the study
    certified (or ``eps``)."""
    from raycert.studyfolder import StudyDir, read_results, read_test_radii

    store = StudyDir(str(study_dir.parent), study_dir.name)
    results = read_results(store)
    if results is None:
        raise UserError(
            f"{study_dir} has no results.json yet: finish the study (--resume), then export it"
        )
    met = [r for r in results if r.met and r.run_dir is not None]
    if not met:
        raise UserError(f"{study_dir}: no target was met, so there is no chosen model to export")
    exported = []
    for result in met:
        run_dir = Path(store.locate(result.run_dir))
        saved = None
        if settings.eps is None:
            sample = read_test_radii(store, result.run_dir)
            origin = (
                "certified by the study on the test split (test_radii.csv of "
                f"{result.run_dir}; verifier {(result.test or {}).get('verifier', '?')}, float64)"
            )
            saved = Radii(sample.radius, sample.correct, origin)
        target_out = out / f"{result.target:g}"
        exported.append(_export_run(run_dir, target_out, saved, settings))
    return exported


def _export_run(run_dir: Path, out: Path, saved: Radii | None, settings: _Settings) -> Exported:
    """One model's folder: ``model.onnx``, its properties, the instances and the README."""
    from raycert.data import dataset_info, load
    from raycert.training.evaluation import certify_run
    from raycert.training.rundir import load_run

    model, cfg = load_run(run_dir)
    # The first samples of the whole split, so that every index is the sample's own.
    data = load(cfg.dataset, "test", settings.data_dir, download=settings.download)
    rows = slice(0, settings.limit)
    labels = data.labels[rows]
    images = data.images[rows].double() / 255  # the pixels raycert certifies
    if settings.eps is not None:  # every correctly classified sample at that radius
        eps = settings.eps
        correct = (_predictions(model, images) == labels).numpy()
        radii = Radii(np.full(len(correct), eps), correct, f"fixed at {eps:g}", fixed=eps)
    elif saved is not None:
        radii = saved
    else:
        certs, summary = certify_run(
            run_dir,
            "test",
            data_dir=settings.data_dir,
            download=settings.download,
            rows=rows,
            progress=settings.progress,
        )
        radii = Radii(
            certs.radii.numpy(),
            certs.correct.numpy(),
            f"certified by raycert certify (verifier {summary['verifier']}, float64)",
        )
    n = len(labels)
    out.mkdir(parents=True, exist_ok=True)
    (out / PROPERTIES_DIR).mkdir(exist_ok=True)
    export_onnx(model, tuple(data.images.shape[1:]), out / MODEL_ONNX)
    written = []
    images, labels = images.numpy(), labels.numpy()
    num_classes = dataset_info(cfg.dataset).num_classes
    for index in range(n):
        radius = float(radii.radii[index])
        if not radii.correct[index] or radius <= 0:
            continue
        prop = RobustnessProperty(index, images[index], int(labels[index]), radius, num_classes)
        name = f"{PROPERTIES_DIR}/sample_{index:05d}.vnnlib"
        (out / name).write_text(prop.text())
        written.append((index, prop.label, radius, name))
    _write_tables(out, written, settings.timeout_s)
    readme = _readme(run_dir, cfg, num_classes, radii, n, len(written), settings.timeout_s)
    (out / README_TXT).write_text(readme)
    return Exported(out, len(written), n - len(written))


def _predictions(model, images, batch_size: int = 500):
    """The float64 network's classes for ``images`` (float64 in [0, 1])."""
    import torch

    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return torch.cat([net(batch).argmax(1) for batch in images.split(batch_size)])


def _write_tables(out: Path, rows: list[tuple[int, int, float, str]], timeout_s: float) -> None:
    instances, table = io.StringIO(), io.StringIO()
    writer = csv.writer(instances, lineterminator="\n")
    writer.writerows((MODEL_ONNX, name, f"{timeout_s:g}") for *_, name in rows)
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(("sample", "label", "radius", "vnnlib"))
    writer.writerows((index, label, repr(radius), name) for index, label, radius, name in rows)
    (out / INSTANCES_CSV).write_text(instances.getvalue())
    (out / PROPERTIES_CSV).write_text(table.getvalue())


def _readme(
    run_dir: Path, cfg, num_classes: int, radii: Radii, n: int, written: int, timeout_s: float
) -> str:
    """README.txt: what the folder holds and what each property claims."""
    claim = (
        "raycert verified each of these radii (a sound, incomplete verifier), so a complete "
        "verifier should prove every property unsatisfiable"
        if radii.fixed is None
        else "a complete verifier decides each: unsatisfiable means robust at that radius"
    )
    entries = [
        f"{MODEL_ONNX}: input 'input' [1, C, H, W], raw pixels in [0, 1] (the normalization is "
        f"the network's first layer); output 'logits' [1, {num_classes}]; float32, BatchNorm in "
        "eval mode.",
        f"{PROPERTIES_DIR}/sample_<index>.vnnlib (VNN-LIB 1.0): for test sample <index> (its "
        f"place in raycert's test split of {cfg.dataset}) with label y at L-inf radius r, the "
        "inputs X_0.. (the image flattened in channel, row, column order) lie in the box "
        "[x - r, x + r] clipped to [0, 1], and some output Y_j, j != y, is at least Y_y. "
        "Unsatisfiable means robust on the box.",
        f"Radii: {radii.origin}; {claim}. raycert certifies the network in float64; "
        f"{MODEL_ONNX} holds it in float32.",
        f"{INSTANCES_CSV}: onnx, vnnlib, timeout ({timeout_s:g} s) per property, VNN-COMP's "
        "layout.",
        f"{PROPERTIES_CSV}: the sample, label, radius and file of each property.",
        f"Samples: the first {n} of the test split; {written} properties; {n - written} left out "
        "(misclassified, or no radius verified).",
    ]
    head = f"raycert export of {run_dir}\nmodel: {cfg.model} trained on {cfg.dataset} with "
    head += f"{cfg.method}\n"
    body = "\n".join(textwrap.fill(e, width=88, subsequent_indent="  ") for e in entries)
    return f"{head}\n{body}\n"
