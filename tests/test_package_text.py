"""The package's own texts (docstrings, comments, --help) name public datasets, never this
checkout's data folder: a user's data lives wherever they put it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import fusecli
from fusecli.cli import app

PACKAGE = Path(fusecli.__file__).parent
COMMANDS = sorted(c.name for c in app.registered_commands)


def test_no_source_file_mentions_the_shared_folder():
    offenders = [f"{path.relative_to(PACKAGE)}:{n}" for path in sorted(PACKAGE.rglob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if "../shared" in line]
    assert not offenders, offenders


@pytest.mark.parametrize("command", COMMANDS)
def test_help_text_names_no_local_data_folder(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "shared/" not in result.output
