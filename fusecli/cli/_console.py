"""Console output of the CLI: one stderr console, and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import FusecliError

out = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a :class:`FusecliError` into one red line on stderr and exit code 1; Ctrl-C into 130."""
    try:
        yield
    except FusecliError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
