"""A study as asked for, checked and described before Ray starts.

``StudyRequest`` holds what the user typed (``None``: the spec file's default). ``resolve_paths``
makes its paths absolute against the working folder, on the driver, because Ray runs trials in
folders of its own; it is the one place that does so (the CLI passes paths as typed). ``plan``
checks every setting that needs no cluster (method, targets, counts, the CPUs and GPUs a trial
asks for, the study's name) and describes the study: its spec, and the settings study.json
records. ``--method`` names one study method, several joined by commas, or ``all``
(``raycert.spec.STUDY_METHODS``, the preset's first): a study of several draws each trial's
method first, with that method's own knobs conditional on it (``raycert.spec.study``).
``check_resumable`` refuses to continue a study with other settings; a setting left unsaid on
resume (``trials``, ``budget_s``, ``attack``: ``None``) is the saved study's.

Trials and budget: ``--trials`` caps the trial count and ``--budget`` the wall time; a study
ends at whichever comes first. A budget given without ``--trials`` lets the budget alone decide
(up to ``MAX_TRIALS``); otherwise the spec's ``[study.<preset>]`` settings fill in.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version

from raycert import __version__
from raycert.data import dataset_info, resolve_root
from raycert.errors import UserError
from raycert.paths import absolute
from raycert.spec import STUDY_METHODS, StudySpec, load_study_spec, parse_targets
from raycert.studyfolder import StudyMeta

# Settings a resumed study must share with the one it continues (its trial count may grow).
RESUME_KEYS = ("dataset", "preset", "method", "targets", "seed", "attack")
MAX_TRIALS = 10_000  # the trial count of a study that only its budget ends


@dataclass(frozen=True)
class StudyRequest:
    """A study as asked for on the command line; ``None`` means the spec file's default.

    ``cpus_per_trial`` must be > 0 and ``gpus_per_trial`` a number >= 0 or ``"auto"``
    (``plan`` checks); paths may be relative to the working folder (``resolve_paths``).
    ``attack``: PGD on the chosen models' test split too (it costs time); ``None`` is off for a
    new study and the saved setting for a resumed one."""

    dataset: str
    targets: tuple[float, ...] = ()
    method: str | None = None
    preset: str = "quick"
    trials: int | None = None
    concurrency: int | None = None
    budget_s: float | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = "auto"
    address: str | None = None
    storage: str = "runs"
    name: str | None = None
    resume: bool = False
    seed: int = 0
    data_dir: str | None = None
    spec: str | None = None
    download: bool = True
    attack: bool | None = None


def resolve_paths(request: StudyRequest) -> StudyRequest:
    """The request with its data root, storage and spec file absolute (URIs unchanged), as the
    user meant them from their working folder: Ray's trials run in folders of their own."""
    return dataclasses.replace(
        request,
        data_dir=str(resolve_root(request.data_dir)),
        storage=absolute(request.storage),
        spec=None if request.spec is None else absolute(request.spec),
    )


def plan(request: StudyRequest) -> tuple[StudySpec, StudyMeta]:
    """Check a request without Ray and describe the study it asks for (study.json's settings).

    Raises a ``UserError`` naming the option at fault. A resumed study without ``trials`` gets
    ``trials_requested=0`` here; ``check_resumable`` sets the saved count."""
    info = dataset_info(request.dataset)
    spec = load_study_spec(info.name, request.preset, request.spec)
    methods = _methods(request.method or spec.base.method, spec.base.method)
    method = ",".join(methods)
    targets = parse_targets(list(request.targets or spec.targets), "--min-acc")
    if not targets:
        raise UserError(f"no accuracy target: pass --min-acc or set [study] targets in {spec.path}")
    budget_s = request.budget_s if request.budget_s is not None else spec.budget_s
    if request.trials is not None:
        trials = request.trials
    elif request.budget_s is not None or (spec.trials is None and budget_s is not None):
        trials = MAX_TRIALS
    else:
        trials = spec.trials
    if trials is None and not request.resume:  # a resumed study has its count
        raise UserError(
            f"no trial count: pass --trials or --budget, or set [study.{spec.preset}] trials"
        )
    if (trials is not None and trials < 1) or (
        request.concurrency is not None and request.concurrency < 1
    ):
        raise UserError("--trials and --concurrency must be at least 1")
    _check_resources(request.cpus_per_trial, request.gpus_per_trial)
    label = "all" if set(methods) == set(STUDY_METHODS) else "-".join(methods)
    name = request.name or f"{info.name}-{label}-{spec.preset}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"study name {name!r}: use letters, digits, '.', '_' and '-'")
    # Several methods: each trial's adaptive radii are its method's choice (or searched).
    mixed = {"adaptive": None} if len(methods) > 1 else {}
    base = spec.base.replace(method=methods[0], seed=request.seed, **mixed).resolve()
    spec = dataclasses.replace(spec, base=base, methods=methods)
    meta = StudyMeta(
        name=name,
        dataset=info.name,
        preset=spec.preset,
        method=method,
        targets=list(targets),
        trials_requested=trials if trials is not None else 0,  # resumed: the saved count
        seed=request.seed,
        search_space=spec.search_space,
        asha=spec.asha,
        rungs=list(spec.rungs),
        base_config=base.to_dict(),
        acr_cap=base.cert_cap,
        eps_list=list(base.cert_eps or ()),
        storage=request.storage,
        address=request.address or "local",
        spec_file=str(spec.path),
        versions=_versions(),
        started=timestamp(),
        finished=None,
        status="running",
        trial_counts={},
        attack=bool(request.attack),
        budget_s=budget_s,
        polish=spec.polish if budget_s is not None else None,
    )
    return spec, meta


def _methods(text: str, preset_method: str) -> tuple[str, ...]:
    """``--method``: one study method, several joined by commas (``acert,sabr``), or ``all``
    (every study method, the preset's first)."""
    if text.strip().lower() == "all":
        return tuple(sorted(STUDY_METHODS, key=lambda m: m != preset_method))
    methods = tuple(m.strip().lower() for m in text.split(","))
    if len(set(methods)) != len(methods):
        raise UserError(f"--method {text!r} names a method twice; write acert,ibp")
    unknown = [m for m in methods if m not in STUDY_METHODS]
    if unknown:
        raise UserError(
            f"unknown study method {unknown[0]!r} in --method {text!r}; choose from "
            f"{', '.join(STUDY_METHODS)}, several joined by commas (acert,sabr) to search the "
            "method too, or all"
        )
    return methods


def check_resumable(
    saved: StudyMeta,
    meta: StudyMeta,
    trials: int | None,
    where: str,
    attack: bool | None = None,
    budget_s: float | None = None,
) -> None:
    """Refuse to resume with other settings; ``trials`` and ``budget_s`` (None: the saved
    ones) may grow.

    Sets ``meta.trials_requested`` and ``meta.budget_s`` to what the resumed study runs to,
    carries over the time spent so far (it counts against the budget), and sets
    ``meta.attack`` to the saved one when ``attack`` is ``None`` (not asked for either way)."""
    if attack is None:
        meta.attack = saved.attack
    changed = [k for k in RESUME_KEYS if getattr(saved, k) != getattr(meta, k)]
    if changed:
        diffs = "; ".join(
            f"{k} was {getattr(saved, k)!r}, now {getattr(meta, k)!r}" for k in changed
        )
        raise UserError(f"cannot resume {where} with other settings ({diffs})")
    before = saved.trials_requested
    meta.trials_requested = before if trials is None else trials
    if meta.trials_requested < before:
        raise UserError(
            f"cannot resume {where} with --trials {trials}: it asked for {before} trials; "
            "pass the same or a larger count"
        )
    meta.budget_s = saved.budget_s if budget_s is None else budget_s
    meta.spent_s = saved.spent_s


def timestamp() -> str:
    """Now, in UTC, as ISO 8601 to the second (study.json's ``started`` and ``finished``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_resources(cpus: float, gpus: float | str) -> None:
    """The range of a trial's CPUs (> 0) and GPUs (>= 0, or auto); whether the cluster holds
    them is ``raycert.study.tune.cluster.plan_resources``' question, once Ray runs."""
    if not (isinstance(cpus, int | float) and 0 < cpus < math.inf):
        raise UserError(f"--cpus-per-trial must be a number > 0, got {cpus}")
    if gpus != "auto" and not (isinstance(gpus, int | float) and 0 <= gpus < math.inf):
        raise UserError(f"--gpus-per-trial must be a number >= 0 or auto, got {gpus}")


def _versions() -> dict[str, str]:
    """The versions study.json records, read from the installed packages (the policy imports
    neither Ray nor Optuna)."""
    packages = {name: version(name) for name in ("ray", "optuna", "torch")}
    return {"raycert": __version__, **packages, "python": platform.python_version()}
