"""Console output of the CLI: one stdout and one stderr console, tables and progress that read
well both on a terminal and in a pipe or log file, and the one place errors become exit codes.

On a terminal tables are Rich tables and progress is a live bar; otherwise (``fusecli models |
grep``, SLURM logs) tables are plain aligned text with every value whole, and progress is a plain
line on stderr every 10 %.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..errors import FusecliError

out = Console()
err = Console(stderr=True)

def print_table(columns: Sequence[str], rows: Sequence[Sequence[str | Text]], *, title: str | None = None,
                right: Sequence[str] = (), console: Console | None = None) -> None:
    """Print a table on ``console`` (default: stdout).

    On a terminal: a Rich table whose long cells wrap (never cut). Otherwise: a title line, then
    the header and one line per row, columns separated by two spaces and padded to their widest
    value, every value whole and no style, so that ``grep``, ``cut`` and logs see what was computed.

    Args:
        columns: column headers.
        rows: one sequence of cells per row (str, taken literally, or :class:`rich.text.Text`).
        title: printed above the table.
        right: the headers of the columns to right-align (numbers).
    """
    console = console or out
    if console.is_terminal:
        table = Table(title=title)
        for name in columns:
            table.add_column(name, justify="right" if name in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in row))
        console.print(table)
        return
    cells = [list(columns)] + [[cell.plain if isinstance(cell, Text) else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [] if title is None else [title]
    for row in cells:
        padded = [cell.rjust(w) if name in right else cell.ljust(w) for cell, w, name in zip(row, widths, columns)]
        lines.append("  ".join(padded).rstrip())
    for line in lines:
        console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit or "items"

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"-- {self.unit}/s" if speed is None else f"{speed:.2f} {self.unit}/s", style="progress.data.speed")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Reporter:
    """Progress of a long command on stderr: a Rich bar on a terminal, a plain line every ``every``
    of the work (and at its end) otherwise, nothing when ``quiet``. The plain lines start once the
    work has run :attr:`after` seconds: a short run's log holds its result (or its error) only.

    Call it (or :meth:`update`) with ``(done, total)``; nothing is shown before the first call, so
    a mistake found before the work starts stays one line. Use it as a context manager, or call
    :meth:`stop`. Several bars at once: pass a ``task`` name to :meth:`update` (one bar each).
    """

    def __init__(self, description: str, *, unit: str = "", quiet: bool = False, transient: bool = True,
                 every: float = 0.1, console: Console | None = None):
        self.description, self.unit, self.quiet, self.transient = description, unit, quiet, transient
        self.every = every
        self.console = console or err
        self.bar: Progress | None = None
        self.tasks: dict[str, dict] = {}

    #: seconds of work before the first plain line
    after: float = 1.0

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __call__(self, done: int, total: int | None, info: str = "") -> None:
        self.update(done, total, info=info)

    def update(self, done: int, total: int | None, *, info: str = "", task: str | None = None) -> None:
        """``done`` of ``total`` (None: not known yet) for ``task`` (default: the one bar), with
        ``info`` (plain text: a name, loss values) shown beside it."""
        if self.quiet or total == 0:
            return
        name = self.description if task is None else task
        state = self.tasks.get(name)
        if state is None:
            state = self.tasks[name] = {"start": time.perf_counter(), "first": done, "next": 0.0, "id": None,
                                        "last": None}
        if self.console.is_terminal:
            if self.bar is None:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    _RateColumn(self.unit), TextColumn("ETA"), TimeRemainingColumn(),
                                    TextColumn("{task.fields[info]}"), console=self.console,
                                    transient=self.transient)
                self.bar.start()
            if state["id"] is None:
                state["id"] = self.bar.add_task(escape(name), total=total, info="")
            self.bar.update(state["id"], completed=done, total=total, info=escape(info))
            return
        if not total or done <= 0 or state["last"] == done or time.perf_counter() - state["start"] < self.after:
            return
        if done / total >= state["next"] or done >= total:
            state["next"] = done / total + self.every
            state["last"] = done
            self.console.print(self._line(name, state, done, total, info), markup=False, highlight=False,
                               emoji=False, soft_wrap=True)

    def _line(self, name: str, state: dict, done: int, total: int, info: str) -> str:
        unit = self.unit or "items"
        elapsed = time.perf_counter() - state["start"]
        rate = (done - state["first"]) / elapsed if elapsed > 0 else 0.0  # since this run started
        text = f"{name}: {done}/{total}{' ' + self.unit if self.unit else ''} ({100 * done / total:.0f} %)"
        if rate > 0:  # known from the second report on
            text += f", {rate:.2f} {unit}/s, ETA {_clock((total - done) / rate)}"
        return f"{text} - {info}" if info else text

    def print(self, message: str) -> None:
        """Print a line of Rich markup on stderr (above the bar, when there is one)."""
        (self.bar.console if self.bar is not None else self.console).print(message, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        """Remove the bar (or leave it, with ``transient=False``); idempotent."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def progress(description: str, *, unit: str = "", quiet: bool = False, transient: bool = True) -> Reporter:
    """A :class:`Reporter` on stderr: ``with progress("fusing", unit="pairs") as bar: bar(done, total)``."""
    return Reporter(description, unit=unit, quiet=quiet, transient=transient)


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
