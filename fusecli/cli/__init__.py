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
from ._options import Command

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


for _name, _function, _needs_args in (("fuse", _fuse.fuse, True), ("batch", _batch.batch, True),
                                      ("models", _models.models, False), ("degrade", _degrade.degrade, True),
                                      ("robustness", _robustness.robustness, True), ("train", _train.train, True),
                                      ("metrics", _metrics.metrics, True), ("compare", _compare.compare, True)):
    # Command: the old spellings of renamed options still work, with a deprecation line (see _options.RENAMED)
    app.command(_name, no_args_is_help=_needs_args, cls=Command)(_function)
