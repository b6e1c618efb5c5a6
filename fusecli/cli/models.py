"""``fusecli models``."""

from __future__ import annotations

import json

import typer

from ..models import list_models, model_summary
from ._console import print_table, reporting_errors


def models(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of the table: name, tasks, "
                                 "parameters, default_weights, needs_weights, paper per model."),
) -> None:
    """List the available models: name, tasks, parameters, default weights and paper."""
    with reporting_errors():
        rows = [model_summary(entry) for entry in list_models()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    print_table(("name", "tasks", "parameters", "default weights", "paper"),
                [(row["name"], ", ".join(row["tasks"]), f"{row['parameters']:,}",
                  row["default_weights"] or ("none: use --checkpoint" if row["needs_weights"] else "not needed"),
                  row["paper"]) for row in rows],
                title="fusecli models", right=("parameters",))
