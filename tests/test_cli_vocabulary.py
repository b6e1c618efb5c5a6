"""One meaning per option across the subcommands (issue 17, item 6): a short flag names one option
everywhere, an option has one short flag everywhere, the shared options keep their spelling and
default in every command, and the old spellings still work for a release with one deprecation line."""

from __future__ import annotations

import pytest
import typer.core
import typer.main
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.cli._options import RENAMED, rename_options

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands

#: the shared vocabulary: every command with the option spells it so (``--models``: a list of models)
VOCABULARY = {"-o": "--output", "-m": "--model", "-c": "--checkpoint", "-d": "--device", "-j": "--workers",
              "-q": "--quiet"}


def _options():
    for name, command in COMMANDS.items():
        for param in command.params:
            if isinstance(param, typer.core.TyperOption) and not param.hidden:
                longs = [o for o in param.opts if o.startswith("--")]
                shorts = [o for o in param.opts if not o.startswith("--")]
                yield name, param, _word(longs[0]), shorts


#: options that take a list where a command sweeps or compares several: the same option as the singular
PLURALS = {"--models": "--model", "--kinds": "--kind", "--levels": "--level"}


def _word(long: str) -> str:
    return PLURALS.get(long, long)


def test_a_short_flag_names_one_option_everywhere():
    meanings: dict[str, dict[str, list[str]]] = {}
    for name, _, word, shorts in _options():
        for short in shorts:
            meanings.setdefault(short, {}).setdefault(word, []).append(name)
    assert {s: m for s, m in meanings.items() if len(m) > 1} == {}


def test_an_option_has_one_short_flag_everywhere():
    shorts_of: dict[str, dict[str, list[str]]] = {}
    for name, _, word, shorts in _options():
        if shorts:
            shorts_of.setdefault(word, {}).setdefault("/".join(shorts), []).append(name)
    assert {w: s for w, s in shorts_of.items() if len(s) > 1} == {}


def test_the_shared_vocabulary_in_every_command():
    seen = set()
    for name, param, word, shorts in _options():
        for short, long in VOCABULARY.items():
            if word == long:
                assert shorts == [short], (name, param.opts)
                seen.add(long)
        if word == "--device":
            assert param.default == "auto", name
        if word == "--quiet":
            assert param.is_flag and param.default is False, name
    assert seen == set(VOCABULARY.values())
    quiet = {name for name, _, word, _ in _options() if word == "--quiet"}
    assert quiet == set(COMMANDS) - {"models"}  # models prints a table, nothing else


@pytest.mark.parametrize(("args", "expected", "used"), [
    (["x", "-m", "EN", "-w", "2"], ["x", "--metrics", "EN", "-j", "2"], ["-m", "-w"]),
    (["-mEN", "-w2"], ["--metrics", "EN", "-j", "2"], ["-m", "-w"]),
    (["-qm", "EN"], ["-q", "--metrics", "EN"], ["-m"]),
    (["--sources", "-m", "-m", "EN"], ["--sources", "-m", "--metrics", "EN"], ["-m"]),  # a value is left alone
    (["-q", "--metrics=EN", "-j", "1"], ["-q", "--metrics=EN", "-j", "1"], []),
    (["--", "-m"], ["--", "-m"], []),
])
def test_old_spellings_are_rewritten(args, expected, used):
    takes_value = {"--metrics", "--sources", "-j", "-s"}.__contains__
    assert rename_options(args, RENAMED["metrics"], takes_value) == (expected, used)


@pytest.fixture
def fused_dataset(tmp_path):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        (tmp_path / "ds" / role).mkdir(parents=True)
    (tmp_path / "fused").mkdir()
    for i in range(2):
        for folder in ("ds/ir", "ds/vis", "fused"):
            cv2.imwrite(str(tmp_path / folder / f"{i}.png"), rng.integers(0, 256, (32, 32), dtype=np.uint8))
    return tmp_path


def test_old_spellings_still_work_with_one_deprecation_line(fused_dataset):
    base = ["metrics", str(fused_dataset / "fused"), "--sources", str(fused_dataset / "ds"), "-q"]
    new = runner.invoke(app, base + ["--metrics", "EN,SD", "-j", "2"])
    old = runner.invoke(app, base + ["-m", "EN,SD", "-w", "2"])
    assert new.exit_code == 0 and old.exit_code == 0, old.output
    assert "deprecated" not in new.output
    warnings = [line for line in old.output.splitlines() if "deprecated" in line]
    assert len(warnings) == 2 and "write --metrics" in warnings[0] and "write -j/--workers" in warnings[1], warnings
    assert old.stdout == new.stdout  # the same table
