"""The ``raycert`` application with every command added."""

from __future__ import annotations

from raycert.cli import dashboard, data, export, report, study, train
from raycert.cli.root import app

app.add_typer(data.app, name="data")
app.command("report")(report.report)
app.command("train")(train.train_command)
app.command("certify")(train.certify_command)
app.command("study")(study.study_command)
app.command("export")(export.export_command)
app.command("dashboard")(dashboard.dashboard_command)

__all__ = ["app"]
