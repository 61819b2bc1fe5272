"""The report's Plotly figures, built from loaded studies (``raycert.report.reading``).

Every trial-level number here is on the validation split the search optimised; the certified
accuracy curves are the chosen models' test-split radii. Several studies share each figure: one
colour per study; within a study, the line dash tells the accuracy targets apart. The curves
figure is the exception: one colour per chosen model, and the dash tells its curves apart (each
verifier stage's guarantee, solid for the whole cascade, and dotted the PGD attack's accuracy),
so the gap between what is proved and what an attack breaks shows per model.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from raycert.report.reading import ChosenModel, StudyResults, is_log_scale
from raycert.studyfolder import is_completed
from raycert.units import format_eps

COLORS = qualitative.Plotly
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
STAGE_DASHES = ("dash", "longdash", "dashdot", "longdashdot")  # earlier stages of a cascade
PGD_DASH = "dot"
TEMPLATE = "plotly_white"
STOPPED_STATUSES = ("pruned", "diverged", "error")


def color(index: int) -> str:
    """The colour of the ``index``-th study."""
    return COLORS[index % len(COLORS)]


def cert_acc_curve(
    radii: np.ndarray, correct: np.ndarray, cap: float
) -> tuple[np.ndarray, np.ndarray]:
    """Certified accuracy at eps = 0, at each distinct radius and at the cap.

    A sample is certified at eps when it is classified correctly and its radius is >= eps (at
    eps = 0 that is clean accuracy). Between two listed radii the curve takes its value at the
    right end (draw it with the ``vh`` line shape), so the area under it over ``[0, cap]`` is
    the mean radius capped at ``cap``: the ACR. ``curve_area`` computes that area.
    """
    radii = np.where(correct, np.minimum(np.asarray(radii, dtype=float), cap), -1.0)
    eps = np.unique(np.concatenate([[0.0, cap], radii[radii >= 0]]))
    accuracy = (radii[None, :] >= eps[:, None]).mean(axis=1)
    return eps, accuracy


def pgd_acc_curve(
    pgd_radii: np.ndarray, correct: np.ndarray, cap: float
) -> tuple[np.ndarray, np.ndarray]:
    """PGD accuracy at eps = 0, at each distinct empirical radius below the cap, and at the cap.

    A sample withstands the attack at eps when it is classified correctly and its empirical
    radius is *strictly* greater than eps: at that radius PGD found a flip (``inf``: none up to
    the cap). Between two listed radii the curve keeps its value at the left end (draw it with
    the ``hv`` line shape). Since every empirical radius is >= the certified one, this curve
    lies on or above ``cert_acc_curve``: the gap between them is what neither bound decides.
    """
    pgd = np.where(correct, np.asarray(pgd_radii, dtype=float), -1.0)
    inside = pgd[(pgd >= 0) & (pgd < cap)]
    eps = np.unique(np.concatenate([[0.0, cap], inside]))
    accuracy = (pgd[None, :] > eps[:, None]).mean(axis=1)
    return eps, accuracy


def curve_area(eps: np.ndarray, accuracy: np.ndarray) -> float:
    """Area under a ``vh`` step curve: each step holds its right end's value."""
    eps, accuracy = np.asarray(eps, dtype=float), np.asarray(accuracy, dtype=float)
    return float(np.sum(np.diff(eps) * accuracy[1:]))


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 480) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        margin={"l": 70, "r": 30, "t": 60, "b": 60},
        legend={"groupclick": "toggleitem"},
        hoverlabel={"align": "left"},
    )
    return fig


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _trial_hover(row: dict[str, Any], study: StudyResults) -> str:
    acr, cap = row["acr"], study.acr_cap
    lines = [
        f"<b>{html.escape(study.name)}</b> trial {row['number']} ({row['status']})",
        f"id {html.escape(str(row['trial_id']))}",
        f"clean acc {_fmt(row['clean_acc'])}",
        f"ACR {_fmt(acr)} = {_fmt(100 * acr / cap)}% of cap {format_eps(cap)}",
    ]
    lines += [
        f"{p} = {html.escape(_fmt(row[f'param.{p}']))}"
        for p in study.params
        if not _empty(row[f"param.{p}"])  # a knob the trial's method does not read
    ]
    return "<br>".join(lines)


def front_figure(studies: list[StudyResults]) -> go.Figure:
    """Validation accuracy vs ACR of every trial, each study's Pareto front and the targets.

    Per study: feasible trials (for the lowest target), infeasible completed ones (faded),
    stopped ones with metrics (pruned, diverged or failed; crosses, faded) and the stored Pareto
    front as a step line with its points ringed; a study that searched the method draws each
    method's front, one dash each.
    """
    fig = go.Figure()
    for i, study in enumerate(studies):
        trials = study.trials
        done = is_completed(trials)
        feasible = study.feasible(min(study.targets))
        stopped = ~done & trials["clean_acc"].notna() & trials["acr"].notna()
        groups = [
            ("feasible", trials[feasible], {"symbol": "circle", "size": 9, "opacity": 0.9}),
            ("infeasible", trials[done & ~feasible], {"symbol": "circle", "opacity": 0.3}),
            ("pruned / failed", trials[stopped], {"symbol": "x", "size": 7, "opacity": 0.3}),
        ]
        for label, rows, marker in groups:
            if rows.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=rows["clean_acc"],
                    y=rows["acr"],
                    mode="markers",
                    name=f"{study.name}: {label}",
                    legendgroup=study.name,
                    marker={"color": color(i), "size": 8, **marker},
                    text=[_trial_hover(r, study) for r in rows.to_dict("records")],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
        fronts = study.fronts()
        for k, (method, front) in enumerate(fronts.items()):
            if front.empty:
                continue
            label = f"{study.name}: Pareto front" + (f" ({method})" if method else "")
            dash = DASHES[k % len(DASHES)]
            fig.add_trace(
                go.Scatter(
                    x=front["clean_acc"],
                    y=front["acr"],
                    mode="lines+markers",
                    line={
                        "color": color(i),
                        "shape": "vh",
                        "width": 2,
                        "dash": dash,
                    },
                    marker={"symbol": "circle-open", "size": 14, "line": {"width": 1.5}},
                    name=label,
                    legendgroup=study.name,
                    hoverinfo="skip",
                )
            )
    for target in sorted({t for s in studies for t in s.targets}):
        fig.add_vline(
            x=target,
            line={"dash": "dash", "color": "#555", "width": 1},
            annotation_text=f"target {target:g}",
            annotation_position="top",
        )
    fig.update_xaxes(range=_accuracy_range(studies))
    caps = sorted({s.acr_cap for s in studies})
    cap_text = ", ".join(format_eps(c) for c in caps)
    return _layout(
        fig,
        "Clean accuracy vs ACR (validation split)",
        "clean accuracy",
        f"ACR (pixel units, cap {cap_text}; % of cap in hovers)",
        height=560,
    )


def _accuracy_range(studies: list[StudyResults]) -> list[float] | None:
    """Initial x range: completed trials and targets (a diverged trial at chance accuracy would
    squash the rest; double-clicking the plot shows everything)."""
    values = [v for s in studies for v in s.completed()["clean_acc"]]
    values += [t for s in studies for t in s.targets]
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max(0.01, 0.05 * (high - low))
    return [low - pad, min(high + pad, 1.0 + pad)]


def curves_figure(studies: list[StudyResults]) -> go.Figure:
    """Certified accuracy vs eps on the test split of each chosen model: one curve per verifier
    stage of its cascade (only the final radius for studies that did not record stages), and
    PGD accuracy when the study attacked. One colour per model, one dash per kind of curve."""
    fig = go.Figure()
    models = [(s, c) for s in studies for c in s.chosen if c.samples is not None]
    for k, (study, chosen) in enumerate(models):
        samples, cap = chosen.samples, study.acr_cap
        model = f"{study.name} @ {chosen.result.target:g}"
        cascades = samples.cascades() or {_verifier(chosen): samples.radius}
        for n, (verifier, radii) in enumerate(reversed(cascades.items())):
            eps, accuracy = cert_acc_curve(radii, samples.correct, cap)
            dash = "solid" if n == 0 else STAGE_DASHES[(n - 1) % len(STAGE_DASHES)]
            name = f"{model}: {verifier} (ACR {curve_area(eps, accuracy):.4g})"
            fig.add_trace(_curve(eps, accuracy, k, model, name, dash, "vh", "certified acc"))
        if samples.pgd is not None:
            eps, accuracy = pgd_acc_curve(samples.pgd, samples.correct, cap)
            name = f"{model}: PGD (attack, upper bound)"
            fig.add_trace(_curve(eps, accuracy, k, model, name, PGD_DASH, "hv", "PGD acc"))
    for eps in sorted({e for s in studies for e in s.eps_list}):
        fig.add_vline(
            x=eps,
            line={"dash": "dot", "color": "#999", "width": 1},
            annotation_text=f"eps {format_eps(eps)}",
            annotation_position="top right",
        )
    fig.update_yaxes(range=[0, 1.02])
    return _layout(
        fig,
        "Certified and PGD accuracy vs radius of the chosen models (test split)",
        "eps (L-inf radius, pixel units)",
        "accuracy",
    )


def _curve(
    eps: np.ndarray,
    accuracy: np.ndarray,
    k: int,
    model: str,
    name: str,
    dash: str,
    shape: str,
    what: str,
) -> go.Scatter:
    """A step curve of the ``k``-th chosen model, grouped with its other curves."""
    return go.Scatter(
        x=eps,
        y=accuracy,
        mode="lines",
        name=name,
        line={"color": color(k), "shape": shape, "dash": dash},
        legendgroup=model,
        hovertemplate=f"eps %{{x:.5g}}<br>{what} %{{y:.3f}}<extra>%{{fullData.name}}</extra>",
    )


def _verifier(chosen: ChosenModel) -> str:
    """The verifier of a chosen model's radii, as its test metrics name it (older: certified)."""
    name = (chosen.result.test or {}).get("verifier")
    return str(name) if name else "certified"


def progress_figure(studies: list[StudyResults]) -> go.Figure:
    """Best feasible validation ACR per target so far, against the trial number."""
    fig = go.Figure()
    for i, study in enumerate(studies):
        trials = study.trials
        done = study.completed()
        fig.add_trace(
            go.Scatter(
                x=done["number"],
                y=done["acr"],
                mode="markers",
                marker={"color": color(i), "opacity": 0.3, "size": 6},
                name=f"{study.name}: each completed trial (any accuracy)",
                legendgroup=study.name,
                text=[_trial_hover(r, study) for r in done.to_dict("records")],
                hovertemplate="%{text}<extra></extra>",
            )
        )
        for j, target in enumerate(study.targets):
            feasible = study.feasible(target)
            best = trials["acr"].where(feasible).cummax().ffill()
            if best.isna().all():
                continue
            fig.add_trace(
                go.Scatter(
                    x=trials["number"],
                    y=best,
                    mode="lines",
                    line={"color": color(i), "shape": "hv", "dash": DASHES[j % len(DASHES)]},
                    name=f"{study.name}: best ACR at acc >= {target:g}",
                    legendgroup=study.name,
                    hovertemplate="after trial %{x}: best ACR %{y:.4g}<extra></extra>",
                )
            )
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, "Search progress", "trial number", "best feasible ACR (validation)")


def importance_figure(studies: list[StudyResults]) -> go.Figure:
    """Hyperparameter importances for ACR, one bar series per study."""
    fig = go.Figure()
    names = sorted({p for s in studies for p in s.importances})
    order = sorted(names, key=lambda p: max(s.importances.get(p, 0.0) for s in studies))
    for i, study in enumerate(studies):
        if not study.importances:
            continue
        fig.add_trace(
            go.Bar(
                x=[study.importances.get(p, 0.0) for p in order],
                y=order,
                orientation="h",
                marker_color=color(i),
                name=study.name,
                hovertemplate="%{y}: %{x:.3f}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(barmode="group")
    return _layout(
        fig,
        "Hyperparameter importance for ACR",
        "importance (normalised, sums to 1 per study)",
        "",
        height=max(300, 120 + 40 * len(order) * max(1, len(fig.data))),
    )


def parallel_figure(study: StudyResults, method: str | None = None) -> go.Figure | None:
    """The search space of one study's completed trials, coloured by validation ACR: the
    parameters every one of them carries; with ``method``, that method's trials and every
    parameter they carry (None with fewer than two such trials)."""
    done = study.completed()
    if method is not None:
        done = done[done["param.method"] == method]
        if len(done) < 2:
            return None
    space = study.meta.search_space
    dimensions = []
    for p in study.params:
        values = done[f"param.{p}"]
        if values.isna().any() or (method is not None and p == "method"):
            continue  # a knob some of these trials do not carry: in its method's figure
        dimensions.append(_dimension(p, values, space.get(p)))
    dimensions.append({"label": "clean acc", "values": done["clean_acc"]})
    dimensions.append({"label": "ACR", "values": done["acr"]})
    fig = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": done["acr"],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": "ACR"}},
            },
            name=study.name,
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        title=f"{study.name}: search space of the {len(done)} completed"
        + (f" {method} trials" if method else " trials"),
        height=440,
        margin={"l": 70, "r": 40, "t": 100, "b": 40},
    )
    return fig


def _empty(value: Any) -> bool:
    """Whether a table cell holds nothing (None, NaN or NA): a parameter the trial lacks."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _dimension(name: str, values: pd.Series, spec: Any) -> dict[str, Any]:
    """A parallel-coordinates axis: categories as ticks, log-scaled numbers as log10."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        labels = sorted({str(v) for v in values.dropna()})
        codes = values.map(lambda v: labels.index(str(v)) if pd.notna(v) else np.nan)
        return {
            "label": name,
            "values": codes,
            "tickvals": list(range(len(labels))),
            "ticktext": labels,
        }
    if is_log_scale(values, spec) and (values.dropna() > 0).all():
        return {"label": f"log10 {name}", "values": np.log10(values)}
    return {"label": name, "values": values}
