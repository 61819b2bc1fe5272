"""A run folder: what ``raycert train`` writes, how it resumes, and how a model is rebuilt.

Files: ``config.json`` (the resolved config and the dataset facts that rebuild the model),
``model.pt`` (state_dict), ``state.pt`` (optimizer, LR schedule, epoch), ``metrics.jsonl``
(one line per epoch) and ``status.json`` (``running``, ``completed``, ``diverged``, or
``failed``/``interrupted`` with the reason; a run that failed before its first epoch ended
may be started again in place). Every file is written through a rename, so a run
killed at any moment leaves the last finished epoch readable; every ``.pt`` loads with
``torch.load(weights_only=True)``. Unreadable files are one-line ``UserError``s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raycert.cert.models import build_model
from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.files import atomic_path
from raycert.training.config import TrainConfig

Metrics = dict[str, Any]


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def write_status(run_dir: Path, status: str, epoch: int, epochs: int, message: str = "") -> None:
    info = {"status": status, "epoch": epoch, "epochs": epochs, "message": message}
    _write_json(run_dir / "status.json", info)


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    metrics: list[Metrics],
    train_seconds: float,
    cfg: TrainConfig,
) -> None:
    """Metrics first, then the model, then ``state.pt``, whose epoch is the commit point."""
    lines = "".join(json.dumps(row) + "\n" for row in metrics)
    with atomic_path(run_dir / "metrics.jsonl") as tmp:
        tmp.write_text(lines)
    with atomic_path(run_dir / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    state = {
        "epoch": len(metrics),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "train_seconds": train_seconds,
    }
    with atomic_path(run_dir / "state.pt") as tmp:
        torch.save(state, tmp)
    done = len(metrics) == cfg.epochs
    write_status(run_dir, "completed" if done else "running", len(metrics), cfg.epochs)


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """Start a run in ``run_dir``, or with ``resume`` load the run saved there (None if none)."""
    has_checkpoint = (run_dir / "state.pt").exists()
    if (run_dir / "config.json").exists() and not resume and not _failed_before_epoch_1(run_dir):
        raise UserError(f"{run_dir} already holds a run; resume it or choose another folder")
    if resume and has_checkpoint:
        saved_cfg = _read_config(run_dir)[0].to_dict()
        changed = [k for k, v in cfg.to_dict().items() if saved_cfg.get(k) != v]
        if changed:
            raise UserError(f"cannot resume {run_dir}: its config differs in {', '.join(changed)}")
        return _read_saved(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = dataset_info(cfg.dataset)
    dataset = {
        "name": info.name,
        "shape": list(info.shape),
        "num_classes": info.num_classes,
        "mean": list(info.mean),
        "std": list(info.std),
        "acr_cap": info.acr_cap,
    }
    _write_json(run_dir / "config.json", {"config": cfg.to_dict(), "dataset": dataset})
    write_status(run_dir, "running", 0, cfg.epochs)
    return None


def _failed_before_epoch_1(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` failed before its first epoch ended (nothing to keep)."""
    if (run_dir / "state.pt").exists():
        return False
    try:
        return json.loads((run_dir / "status.json").read_text()).get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return False


def _load_torch(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"no checkpoint at {path.parent}: {path.name} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same user problem
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"checkpoint {path} is corrupt ({reason}); retrain or resume") from None


def _read_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"no run at {run_dir}: config.json is missing")
    try:
        data = json.loads(path.read_text())
        saved, dataset = data["config"], data["dataset"]
        # Left out, these would read as their defaults and rebuild another model than the one
        # saved (fields added since a run was saved do read as their defaults).
        missing = [name for name in ("dataset", "model") if name not in saved]
        if missing:
            raise UserError(
                f"{path} lacks {', '.join(missing)}: it was edited or not written by raycert;"
                " restore it from the run it came with"
            )
        return TrainConfig.from_dict(saved), dataset
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is unreadable ({exc})") from None


def _read_saved(run_dir: Path) -> dict[str, Any]:
    """Model, optimizer state and metrics of the last finished epoch, and the run's status."""
    state = _load_torch(run_dir / "state.pt")
    model_state = _load_torch(run_dir / "model.pt")
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        metrics = [json.loads(line) for line in lines[: state["epoch"]]]
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"run files in {run_dir} are unreadable ({exc})") from None
    if len(metrics) != state["epoch"]:
        raise UserError(f"{run_dir}/metrics.jsonl has fewer lines than finished epochs")
    finished = status.get("status") in ("completed", "diverged")
    return {
        "model": model_state,
        "state": state,
        "metrics": metrics,
        "status": status["status"] if finished else "running",
        "message": status.get("message", ""),
    }


def read_metrics(run_dir: str | Path) -> tuple[str, list[Metrics]]:
    """A run's status (``status.json``) and the metrics of its finished epochs."""
    run_dir = Path(run_dir)
    try:
        status = json.loads((run_dir / "status.json").read_text())["status"]
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return status, [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"run files in {run_dir} are unreadable ({exc})") from None


def load_run(run_dir: str | Path) -> tuple[nn.Sequential, TrainConfig]:
    """Rebuild the model a run saved (in eval mode, on the CPU) and its resolved config."""
    run_dir = Path(run_dir)
    cfg, dataset = _read_config(run_dir)
    model = build_model(
        cfg.model, dataset["shape"], dataset["num_classes"], dataset["mean"], dataset["std"]
    )
    try:
        model.load_state_dict(_load_torch(run_dir / "model.pt"))
    except (RuntimeError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0]
        raise UserError(f"{run_dir}/model.pt does not fit its config ({reason})") from None
    return model.eval(), cfg
