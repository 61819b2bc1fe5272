"""What the commands print: metric tables, a study's chosen models and trial counts, progress.

Everything goes to ``console`` (stdout) except progress, which is drawn on stderr so that
``--json`` output stays clean."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

from raycert.units import format_eps

if TYPE_CHECKING:
    from raycert.studyfolder import StudyMeta, TargetResult

console = Console()


def progress_bar(description: str) -> Callable[[Iterable[Any]], Iterable[Any]]:
    """A progress wrapper for an iterable, drawn on stderr."""
    return lambda items: track(items, description=description, console=Console(stderr=True))


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    """Clean accuracy, ACR with its cap and %, and certified accuracy at each radius."""
    table = Table("metric", "value", title=title)
    table.add_row("clean accuracy", f"{metrics['clean_acc']:.2%}")
    cap = format_eps(metrics["acr_cap"])
    table.add_row("ACR", f"{metrics['acr']:.5f} ({metrics['acr_pct']:.1f}% of cap {cap})")
    for key, value in metrics.items():
        if key.startswith("cert_acc@"):
            table.add_row(f"certified accuracy at {key.removeprefix('cert_acc@')}", f"{value:.2%}")
    console.print(table)


def print_chosen(chosen: TargetResult, cap: float, method: str = "") -> None:
    """One target's winner: its method (its ``method`` parameter where the study searched
    several, else the study's ``method``), hyperparameters, val and test accuracy and ACR, test
    PGD accuracy when the study attacked (or the closest trial)."""
    goal = f"clean accuracy >= {chosen.target:g}"
    if not chosen.met:
        near = chosen.closest
        detail = "no trial completed"
        if near:
            name = near.trial_id if near.number is None else near.number
            which = near.params.get("method", method)
            detail = f"closest: trial {name}{f' ({which})' if which else ''}"
            detail += f", val clean {near.val['clean_acc']:.2%}"
        console.print(f"{goal}: not met by any trial ({detail})")
        return
    won_by = chosen.params.get("method", method)
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in chosen.params.items()
        if k != "method"
    )
    name = chosen.trial_id if chosen.number is None else chosen.number
    title = f"{goal}: {won_by + ', ' if won_by else ''}trial {name}"
    table = Table("", "val", "test", title=title, caption=params, min_width=len(title))

    def cells(key: str, fmt: str) -> list[str]:
        return [
            fmt.format(m[key]) if m and m.get(key) is not None else "-"
            for m in (chosen.val, chosen.test)
        ]

    table.add_row("clean accuracy", *cells("clean_acc", "{:.2%}"))
    table.add_row(f"ACR (cap {format_eps(cap)})", *cells("acr", "{:.5f}"))
    table.add_row("ACR % of cap", *cells("acr_pct", "{:.1f}%"))
    for key in (k for k in chosen.test or {} if k.startswith("pgd_acc@")):  # study --attack
        table.add_row(f"PGD accuracy at {key.removeprefix('pgd_acc@')}", *cells(key, "{:.2%}"))
    console.print(table)


def trials_summary(meta: StudyMeta) -> str:
    """One line: how the trials ended, and why the first failed one failed."""
    counts = meta.trial_counts
    line = f"trials: {sum(counts.values())} ({counts_text(counts) or 'none finished'})"
    if meta.errors:
        first = meta.errors[0]
        line += f"; the first failure (trial {first.trial}): {first.message}"
    return line


def counts_text(counts: dict[str, int]) -> str:
    """Trial counts by how they ended (``3 completed, 1 failed``), the empty ones left out."""
    order = ("completed", "pruned", "diverged", "error")
    names = {"error": "failed"}
    return ", ".join(f"{counts.get(k, 0)} {names.get(k, k)}" for k in order if counts.get(k))
