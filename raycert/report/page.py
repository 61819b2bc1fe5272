"""Accuracy-vs-ACR report of one or more studies: one self-contained, offline HTML page.

``build_report`` reads only what studies persisted (``raycert.report.reading``) and writes a page
with plotly.js inlined once and nothing fetched from a network. It shows each study's trials
and Pareto front, the chosen model per accuracy target, their certified-accuracy curves (per
verifier stage, beside PGD accuracy when the study ran ``--attack``), the search progress,
hyperparameter importances, the search space and the study metadata. Several studies given
together (say acert and ibp) are overlaid, one colour each.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline

from raycert.errors import UserError
from raycert.files import atomic_path
from raycert.report import figures
from raycert.report.reading import ChosenModel, StudyResults, load_study
from raycert.studyfolder import CHOSEN, RESULTS_JSON, TEST_RADII_CSV, Metrics
from raycert.units import cert_acc_key, format_eps, pgd_acc_key

REPORTS_DIR = Path("reports")
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2933; margin: 0; background: #f6f7f9; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; border-bottom: 1px solid #d9dde3; padding-bottom: 4px; }
p.note, .generated { color: #52606d; font-size: 13.5px; margin: 4px 0 10px; }
ul.summary { margin: 6px 0 0; padding-left: 20px; }
.figure { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; margin: 10px 0;
          padding: 4px; }
table { border-collapse: collapse; background: #fff; font-size: 13.5px; width: 100%; }
th, td { border: 1px solid #e1e4e8; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
table.metadata tbody th { white-space: nowrap; width: 1%; }
td code, td.name { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.met td.status { color: #17692e; font-weight: 600; }
tr.unmet { background: #fff6f5; }
tr.unmet td.status { color: #a61b1b; font-weight: 600; }
code { font: 12.5px ui-monospace, "SFMono-Regular", Menlo, monospace; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
          margin-right: 5px; vertical-align: -1px; }
"""


def default_report_path(names: list[str]) -> Path:
    """``reports/<name>.html``, or ``reports/<name1>+<name2>.html`` for several studies."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", name) for name in names]
    return REPORTS_DIR / f"{'+'.join(safe)}.html"


def build_report(study_dirs: list[Path], out: Path | None = None) -> Path:
    """Write the HTML report of the studies in ``study_dirs`` to ``out`` and return its path.

    ``out`` defaults to ``default_report_path`` of the study names. A missing or corrupt study
    file is a one-line ``UserError`` naming it. The file is replaced atomically.
    """
    if not study_dirs:
        raise UserError("give at least one study directory")
    resolved = [Path(d).resolve() for d in study_dirs]
    if len(set(resolved)) < len(resolved):
        raise UserError("the same study directory was given twice")
    studies = [load_study(Path(d)) for d in study_dirs]
    seen: dict[str, int] = {}
    for study in studies:  # label same-named studies from different storages apart
        seen[study.name] = seen.get(study.name, 0) + 1
        if seen[study.name] > 1:
            study.name = f"{study.name} ({seen[study.name]})"
    out = Path(out) if out is not None else default_report_path([s.name for s in studies])
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(render_page(studies), encoding="utf-8")
    return out


def render_page(studies: list[StudyResults], generated: datetime | None = None) -> str:
    """The whole HTML page for already loaded studies."""
    generated = generated or datetime.now(UTC)
    title = "raycert report: " + " + ".join(s.name for s in studies)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="generated">generated {generated:%Y-%m-%d %H:%M UTC}; offline page, '
        "hover a point for its hyperparameters, click legend entries to hide series</p>",
        _summary(studies),
        "<h2>Clean accuracy vs ACR</h2>",
        '<p class="note">Every trial on the validation split the search optimised. Lines: each '
        "study's Pareto front, its trials ringed (no other trial has both higher accuracy and "
        "higher ACR). Dashed "
        "verticals: accuracy targets. Faded: infeasible trials (below every target); crosses: "
        "pruned, diverged or failed trials (their last reported metrics). Double-click the plot "
        "to zoom out to every trial.</p>",
        _figure("front", figures.front_figure(studies)),
        "<h2>Chosen model per target</h2>",
        '<p class="note">The highest-ACR trial meeting each accuracy target on validation, '
        "with its test-split numbers. ACR is in pixel units with the cap beside it.</p>",
        _chosen_table(studies),
        "<h2>Certified accuracy vs radius</h2>",
    ]
    if any(c.radii is not None for s in studies for c in s.chosen):
        parts += [
            '<p class="note">Fraction of test samples certified at each radius (correct, and '
            f"certified radius &ge; eps; from <code>{CHOSEN}/&lt;target&gt;/{TEST_RADII_CSV}"
            "</code>). One colour per chosen model: solid, its verifier cascade; dashed, the "
            "cascade's earlier stages (IBP alone); dotted, when the study ran with "
            "<code>--attack</code>, PGD accuracy (correct, and PGD found no flip up to eps: the "
            "sample's empirical radius &gt; eps). The truth lies between a model's solid and "
            "dotted curves. The area under each certified curve, from 0 to the cap, is its ACR "
            "(the mean certified radius).</p>",
            _figure("curves", figures.curves_figure(studies)),
        ]
    else:
        parts.append('<p class="note">No target met yet: no chosen model to certify.</p>')
    parts += [
        "<h2>Search progress</h2>",
        '<p class="note">Best validation ACR among completed trials meeting each target, after '
        "each trial.</p>",
        _figure("progress", figures.progress_figure(studies)),
        "<h2>Hyperparameter importance</h2>",
        _importance_notes(studies),
    ]
    if any(s.importances for s in studies):
        parts.append(_figure("importance", figures.importance_figure(studies)))
    parts.append("<h2>Search space</h2>")
    for i, study in enumerate(studies):
        if len(study.completed()) < 2:
            parts.append(
                f'<p class="note">{html.escape(study.name)}: too few completed trials.</p>'
            )
            continue
        parts.append(_figure(f"parallel-{i}", figures.parallel_figure(study)))
        methods = study.methods()
        for method in methods if len(methods) > 1 else []:  # each method's own knobs too
            figure = figures.parallel_figure(study, method)
            if figure is not None:
                parts.append(_figure(f"parallel-{i}-{method}", figure))
    parts += ["<h2>Studies</h2>", _metadata_table(studies)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n'
        "</head>\n<body>\n<main>\n" + "\n".join(parts) + "\n</main>\n</body>\n</html>\n"
    )


def _figure(key: str, fig: go.Figure) -> str:
    """A figure in a ``div.figure`` with ``data-figure`` (its key) and ``data-traces``."""
    body = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=f"fig-{key}",
        config=PLOTLY_CONFIG,
    )
    return f'<div class="figure" data-figure="{key}" data-traces="{len(fig.data)}">{body}</div>'


def _swatch(index: int) -> str:
    return f'<span class="swatch" style="background:{figures.color(index)}"></span>'


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if _is_number(value) else "–"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _acr(metrics: Metrics | None, cap: float) -> str:
    acr = (metrics or {}).get("acr")
    if not _is_number(acr):
        return "–"
    return f"{acr:.4g} ({100 * acr / cap:.1f}% of {format_eps(cap)})"


def _params(params: dict[str, Any]) -> str:
    if not params:
        return "–"
    items = (
        f"{html.escape(str(k))} = {html.escape(f'{v:.4g}' if _is_number(v) else str(v))}"
        for k, v in params.items()
    )
    return "<br>".join(f"<code>{item}</code>" for item in items)


def _summary(studies: list[StudyResults]) -> str:
    items = []
    for i, study in enumerate(studies):
        m = study.meta
        head = (
            f"{_swatch(i)}<b>{html.escape(study.name)}</b> ({html.escape(m.dataset)}, "
            f"{html.escape(m.method)}, preset {html.escape(m.preset)}, {html.escape(m.status)}"
            f"): {len(study.trials)} trials, {len(study.completed())} completed"
        )
        outcomes = []
        for chosen in (c.result for c in study.chosen):
            if chosen.met:
                method = html.escape(study.method_of(chosen.params))
                outcomes.append(
                    f"target {chosen.target:g} met by {method} ({html.escape(str(chosen.trial_id))}"
                    f"), test ACR {_acr(chosen.test, study.acr_cap)}"
                )
            else:
                outcomes.append(f"target {chosen.target:g} <b>unmet</b>")
        items.append(f"<li>{head}{'; ' if outcomes else ''}{'; '.join(outcomes)}</li>")
    return f'<ul class="summary">{"".join(items)}</ul>'


def _chosen_table(studies: list[StudyResults]) -> str:
    """One row per study and accuracy target (``tr[data-target]``); unmet rows show the
    closest trial's validation numbers."""
    eps_keys = list(dict.fromkeys(cert_acc_key(e) for s in studies for e in s.eps_list))
    tests = [c.result.test or {} for s in studies for c in s.chosen]
    pgd_keys = [pgd_acc_key(e) for s in studies for e in s.eps_list]  # studies run --attack
    eps_keys += [k for k in dict.fromkeys(pgd_keys) if any(k in test for test in tests)]
    header = ["study", "target", "status", "trial", "method", "hyperparameters", "val acc"]
    header.append("val ACR")
    header += ["test acc", "test ACR"] + [f"test {k.replace('_', ' ')}" for k in eps_keys]
    header.append("run directory")
    rows = []
    for i, study in enumerate(studies):
        if not study.chosen:
            status = _text(study.meta.status)
            rows.append(
                f"<tr><td>{_swatch(i)}{html.escape(study.name)}</td>"
                f'<td colspan="{len(header) - 1}">no {RESULTS_JSON} yet (study {status})</td></tr>'
            )
            continue
        rows += [_chosen_row(i, study, chosen, eps_keys) for chosen in study.chosen]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(rows)
    return f'<table class="targets"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _chosen_row(i: int, study: StudyResults, model: ChosenModel, eps_keys: list[str]) -> str:
    cap, chosen = study.acr_cap, model.result
    if chosen.met:
        trial, params, val = chosen.trial_id, chosen.params, chosen.val or {}
        status, test, run_dir = "met", chosen.test or {}, chosen.run_dir
    else:
        closest = chosen.closest
        trial = f"closest: {closest.trial_id if closest else '–'}"
        params, val = (closest.params, closest.val) if closest else ({}, {})
        status, test, run_dir = "unmet", {}, None
    path = "–"
    if run_dir:
        full = html.escape(str(study.directory / run_dir))
        path = f'<code title="{full}">{html.escape(str(run_dir))}</code>'

    cells = [
        f'<td class="name">{_swatch(i)}{html.escape(study.name)}</td>',
        f'<td class="num">{chosen.target:g}</td>',
        f'<td class="status">{status}</td>',
        f"<td>{html.escape(str(trial))}</td>",
        f'<td class="method">{html.escape(study.method_of(params)) if params else "–"}</td>',
        f"<td>{_params({k: v for k, v in params.items() if k != 'method'})}</td>",
        f'<td class="num">{_pct(val.get("clean_acc"))}</td>',
        f'<td class="num">{_acr(val, cap)}</td>',
        f'<td class="num">{_pct(test.get("clean_acc"))}</td>',
        f'<td class="num">{_acr(test, cap)}</td>',
        *(f'<td class="num">{_pct(test.get(k))}</td>' for k in eps_keys),
        f"<td>{path}</td>",
    ]
    return f'<tr class="{status}" data-target="{chosen.target:g}">{"".join(cells)}</tr>'


def _importance_notes(studies: list[StudyResults]) -> str:
    notes = "; ".join(f"{html.escape(s.name)}: {html.escape(s.importance_note)}" for s in studies)
    return (
        '<p class="note">How much each hyperparameter decides validation ACR among completed '
        f"trials (PED-ANOVA: which values the best 10% of trials concentrate on). {notes}.</p>"
    )


def _metadata_table(studies: list[StudyResults]) -> str:
    fields = [
        ("directory", lambda s: f"<code>{html.escape(str(s.directory))}</code>"),
        ("dataset / preset / method", _dataset_line),
        ("status", lambda s: _text(s.meta.status)),
        ("accuracy targets", lambda s: ", ".join(f"{t:g}" for t in s.targets)),
        ("budget (trials requested)", lambda s: _text(s.meta.trials_requested)),
        ("trials", _counts),
        ("ACR cap / standard radii", _radii_line),
        ("PGD attack (--attack)", lambda s: "on" if s.meta.attack else "off"),
        ("seed", lambda s: _text(s.meta.seed)),
        ("hardware", _hardware),
        ("cluster address / storage", _where),
        ("started / finished", _times),
        ("versions", lambda s: _key_values(s.meta.versions)),
        ("search space", lambda s: _lines(s.meta.search_space)),
        ("base config", lambda s: _lines(s.meta.base_config)),
    ]
    head = "".join(f"<th>{_swatch(i)}{html.escape(s.name)}</th>" for i, s in enumerate(studies))
    rows = "".join(
        f"<tr><th>{label}</th>{''.join(f'<td>{cell(s)}</td>' for s in studies)}</tr>"
        for label, cell in fields
    )
    return (
        f'<table class="metadata"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _text(value: Any) -> str:
    return "–" if value is None else html.escape(str(value))


def _key_values(values: Any) -> str:
    if not isinstance(values, dict):
        return _text(values)
    return ", ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in values.items())


def _lines(value: Any) -> str:
    """A dict as one ``key: value`` line each (values as compact JSON)."""
    if not isinstance(value, dict):
        return _text(value)
    return "<br>".join(
        f"<code>{html.escape(str(k))}: {html.escape(json.dumps(v, default=str))}</code>"
        for k, v in value.items()
    )


def _dataset_line(s: StudyResults) -> str:
    return " / ".join(_text(v) for v in (s.meta.dataset, s.meta.preset, s.meta.method))


def _radii_line(s: StudyResults) -> str:
    return f"{format_eps(s.acr_cap)} / {', '.join(format_eps(e) for e in s.eps_list) or '–'}"


def _counts(s: StudyResults) -> str:
    """The trial counts the study recorded when it stopped (none while it runs)."""
    if not s.meta.trial_counts:
        status = _text(s.meta.status)
        return f"{len(s.trials)} finished so far; counted when the study stops ({status})"
    return f"{sum(s.meta.trial_counts.values())} recorded: " + _key_values(s.meta.trial_counts)


def _hardware(s: StudyResults) -> str:
    hw, res = s.meta.hardware, s.meta.resources
    cluster = f"{hw.nodes} node(s), {hw.cpus:g} CPUs, {hw.gpus:g} GPUs" if hw else "–"
    per_trial = f"{res.cpus_per_trial:g} CPU + {res.gpus_per_trial:g} GPU per trial" if res else "–"
    concurrency = s.meta.concurrency
    at_once = f", {_text(concurrency)} at once" if concurrency is not None else ""
    return f"{cluster}; {per_trial}{at_once}"


def _where(s: StudyResults) -> str:
    return f"{_text(s.meta.address)} / <code>{_text(s.meta.storage)}</code>"


def _times(s: StudyResults) -> str:
    started, finished = s.meta.started, s.meta.finished
    text = f"{_text(started)} / {_text(finished)}"
    try:
        seconds = (
            datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))
        ).total_seconds()
    except (TypeError, ValueError):
        return text
    return f"{text} ({seconds / 60:.1f} min)"
