"""The certificates of a dataset: per-sample verified radii, ACR and certified accuracy.

``certify`` runs the radius search of ``raycert.cert.radius`` over a split in batches, in float64
by default (radii found in another dtype are re-verified in float64), and keeps per sample the
label, prediction, radius, the verifier that verified it and the radius after each stage of the
cascade (``Certificates``, one CSV row each). ``summarize`` turns them into clean accuracy, the
average certified radius (ACR: the mean radius, 0 for misclassified samples, in pixel units of
[0, 1] images) and certified accuracy at given eps (correct and radius >= eps).
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from raycert.cert.precision import exact_float32
from raycert.cert.radius import reverify, search_radii
from raycert.cert.verifiers import DEFAULT_VERIFIER, parse_verifier
from raycert.errors import UserError
from raycert.units import cert_acc_key

# Summary values that are means over a split's samples.
MEAN_KEYS = ("clean_acc", "acr", "acr_pct")


@dataclass
class Certificates:
    """Per-sample results of certifying a split: the raw material of every summary."""

    labels: Tensor  # (n,) int64
    predictions: Tensor  # (n,) int64
    radii: Tensor  # (n,) float64, pixel units, 0 when misclassified, at most cap
    cap: float
    verifier: str = "ibp"  # one verifier or a cascade, e.g. "ibp+crown-ibp"
    verified_by: Tensor | None = None  # (n,) stage index of the verifier of each radius, -1 at 0
    stage_radii: dict[str, Tensor] = field(default_factory=dict)  # radius after each stage
    empirical_radii: Tensor | None = None  # (n,) smallest eps where PGD flips; inf if none

    @property
    def correct(self) -> Tensor:
        return self.labels == self.predictions

    def verifier_names(self) -> list[str]:
        """The name of the verifier that verified each sample's radius ("" where it is 0)."""
        stages = parse_verifier(self.verifier)
        if self.verified_by is None:
            return [stages[0] if r > 0 else "" for r in self.radii.tolist()]
        return [stages[i] if i >= 0 else "" for i in self.verified_by.tolist()]

    def to_csv(self) -> str:
        """One row per sample: ``index,label,prediction,radius,correct,verifier``, then one
        ``radius_<stage>`` column per verifier of the cascade, then ``pgd_radius`` when an attack
        ran (radii in pixels; ``inf`` where PGD found no flip up to the cap)."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        stages = list(self.stage_radii)
        extra = [self.stage_radii[name].tolist() for name in stages]
        header = [f"radius_{name}" for name in stages]
        if self.empirical_radii is not None:
            extra.append(self.empirical_radii.tolist())
            header.append("pgd_radius")
        writer.writerow(["index", "label", "prediction", "radius", "correct", "verifier", *header])
        columns = (
            self.labels.tolist(),
            self.predictions.tolist(),
            self.radii.tolist(),
            self.verifier_names(),
            *extra,
        )
        rows = zip(*columns, strict=True)
        for index, (label, prediction, radius, verifier, *per_stage) in enumerate(rows):
            writer.writerow(
                [index, label, prediction, repr(radius), int(label == prediction), verifier]
                + [repr(r) for r in per_stage]
            )
        return text.getvalue()

    @classmethod
    def concat(cls, parts: Sequence[Certificates]) -> Certificates:
        """The certificates of consecutive parts of one split (each certified alike), in order."""
        first = parts[0]

        def cat(tensors: list[Tensor | None]) -> Tensor | None:
            return None if any(t is None for t in tensors) else torch.cat(tensors)

        return cls(
            labels=torch.cat([p.labels for p in parts]),
            predictions=torch.cat([p.predictions for p in parts]),
            radii=torch.cat([p.radii for p in parts]),
            cap=first.cap,
            verifier=first.verifier,
            verified_by=cat([p.verified_by for p in parts]),
            stage_radii={
                k: torch.cat([p.stage_radii[k] for p in parts]) for k in first.stage_radii
            },
            empirical_radii=cat([p.empirical_radii for p in parts]),
        )

    def write_csv(self, path: str | Path) -> Path:
        """``to_csv`` into the file ``path`` (its folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_csv())
        return path


def certify(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    cap: float,
    *,
    tol: float = 1e-5,
    verifier: str = DEFAULT_VERIFIER,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    progress: Iterable | None = None,
) -> Certificates:
    """Certify every sample of ``images`` (uint8 (N,C,H,W) or float in [0, 1]) in eval mode.

    Runs on a copy of ``model`` cast to ``dtype``: float64 by default, because float32 rounding
    can flip the sign of a bound that sits at the margin. Radii found in another dtype are
    re-verified in float64 before they are returned, and the samples that fail are searched
    again in float64. Float32 bounds run in IEEE float32, never TF32 (``exact_float32``).
    ``verifier`` is one verifier or a cascade (``parse_verifier``); ``progress`` wraps the
    batch starts.
    """
    if not (0 < tol < cap):
        raise UserError(
            f"the certification tolerance {tol:g} must lie in (0, cap {cap:g}): a tolerance at or "
            "above the cap gives radius 0 to every sample not certified at the cap"
        )
    parse_verifier(verifier)
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    check = None if dtype == torch.float64 else copy.deepcopy(model).to(device, torch.float64)
    predictions, parts = [], []
    starts = range(0, len(images), batch_size)
    with exact_float32():  # a float32 bound, never a TF32 one
        for start in progress(starts) if progress else starts:
            batch = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            x = batch.to(dtype) / 255 if batch.dtype == torch.uint8 else batch.to(dtype)
            with torch.no_grad():
                logits = net(x)
            predictions.append(logits.argmax(dim=1).cpu())
            found = search_radii(net, x, y, cap, tol, verifier=verifier, clean_logits=logits)
            if check is not None:
                x64 = batch.double() / 255 if batch.dtype == torch.uint8 else batch.double()
                found = reverify(check.eval(), x64, y, found, cap, tol)
            parts.append(found)
    cat = lambda ts: torch.cat([t.cpu() for t in ts]) if ts else torch.zeros(0)  # noqa: E731
    return Certificates(
        labels=labels.cpu().long(),
        predictions=torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long),
        radii=cat([p.radius for p in parts]).double(),
        cap=cap,
        verifier=verifier,
        verified_by=cat([p.verified_by for p in parts]).long(),
        stage_radii={
            name: cat([p.stage_radii[name] for p in parts]).double()
            for name in parse_verifier(verifier)
        },
    )


def summarize(certs: Certificates, eps_list: Sequence[float] = ()) -> dict[str, Any]:
    """Clean accuracy, ACR (value, % of cap, cap) and certified accuracy at each eps, the
    ``verifier`` that produced them, and ``by_verifier``: the same ACR and certified-accuracy
    figures after each stage of the cascade (``by_verifier["ibp"]`` is pure IBP)."""
    metrics: dict[str, Any] = {
        "clean_acc": float(certs.correct.double().mean()) if len(certs.labels) else 0.0,
        **_radius_metrics(certs, certs.radii, eps_list),
        "n": len(certs.labels),
        "verifier": certs.verifier,
    }
    metrics["by_verifier"] = {
        name: _radius_metrics(certs, radii, eps_list) for name, radii in certs.stage_radii.items()
    }
    return metrics


def merge_summaries(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a split from those of its consecutive parts: every per-sample mean
    (accuracies, ACR and its %, ``cert_acc@``/``pgd_acc@``, per stage too) weighted by the
    part's ``n``; ``n`` and ``cert_seconds`` (compute time) added up; the rest as the first's."""
    sizes = [part["n"] for part in parts]
    total = sum(sizes)

    def merged(values: list[Any], key: str) -> Any:
        if isinstance(values[0], dict):
            return {k: merged([v[k] for v in values], k) for k in values[0]}
        if key in ("n", "cert_seconds"):
            return sum(values)
        if key in MEAN_KEYS or key.startswith(("cert_acc@", "pgd_acc@")):
            return sum(v * n for v, n in zip(values, sizes, strict=True)) / total if total else 0.0
        return values[0]

    return {key: merged([part[key] for part in parts], key) for key in parts[0]}


def _radius_metrics(certs: Certificates, radii: Tensor, eps_list: Sequence[float]) -> dict:
    n = len(radii)
    acr = float(radii.mean()) if n else 0.0
    metrics = {
        "acr": acr,
        "acr_cap": certs.cap,
        "acr_pct": 100.0 * acr / certs.cap if certs.cap > 0 else 0.0,
    }
    for eps in eps_list:
        certified = certs.correct & (radii >= eps)
        metrics[cert_acc_key(eps)] = float(certified.double().mean()) if n else 0.0
    return metrics


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    cap: float,
    eps_list: Sequence[float] = (),
    **certify_kwargs,
) -> dict[str, Any]:
    """Certify a split and summarize it: ``clean_acc``, ``acr``, ``acr_pct``, ``acr_cap``,
    ``cert_acc@<eps>``."""
    return summarize(certify(model, images, labels, cap, **certify_kwargs), eps_list)
