"""The ``fusecli`` command line: argument parsing and printing only; the work is done by the library."""

from __future__ import annotations

import typer

from .. import __version__
from . import batch as _batch
from . import compare as _compare
from . import degrade as _degrade
from . import fuse as _fuse
from . import metrics as _metrics
from . import models as _models
from . import robustness as _robustness
from . import train as _train

app = typer.Typer(
    name="fusecli",
    help="Fuse infrared/visible, medical, multi-exposure and multi-focus images with deep unfolding networks.",
    no_args_is_help=True,
    add_completion=True,  # fusecli --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fusecli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Fuse images from different sensors with deep unfolding networks."""


app.command("fuse", no_args_is_help=True)(_fuse.fuse)
app.command("batch", no_args_is_help=True)(_batch.batch)
app.command("models")(_models.models)
app.command("degrade", no_args_is_help=True)(_degrade.degrade)
app.command("robustness", no_args_is_help=True)(_robustness.robustness)
app.command("train", no_args_is_help=True)(_train.train)
app.command("metrics", no_args_is_help=True)(_metrics.metrics)
app.command("compare", no_args_is_help=True)(_compare.compare)
