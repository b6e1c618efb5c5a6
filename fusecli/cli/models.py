"""``fusecli models``."""

from __future__ import annotations

from rich.table import Table

from ..models import list_models, model_summary
from ._console import out, reporting_errors


def models() -> None:
    """List the available models: name, tasks, parameters, default weights and paper."""
    with reporting_errors():
        rows = [model_summary(entry) for entry in list_models()]
    table = Table(title="fusecli models")
    for column in ("name", "tasks", "parameters", "default weights", "paper"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["tasks"]), f"{row['parameters']:,}",
                      row["default_weights"] or ("none: use --checkpoint" if row["needs_weights"] else "not needed"),
                      row["paper"])
    out.print(table)
