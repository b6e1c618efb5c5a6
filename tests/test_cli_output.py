"""What the CLI prints when stdout/stderr are not a terminal (pipes, log files, SLURM): tables as
plain aligned text with every value whole on one line, progress as periodic plain lines."""

from __future__ import annotations

import io

import cv2
import numpy as np
from rich.console import Console
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.cli._console import Reporter, print_table
from fusecli.cli.metrics import _fmt
from fusecli.metrics.report import evaluate_folder
from fusecli.models import list_models, model_summary

from .conftest import SAMPLES

runner = CliRunner()
NARROW = {"COLUMNS": "40"}  # a Rich table this narrow would cut or wrap every long cell


def test_models_piped_prints_each_model_whole_on_one_line():
    result = runner.invoke(app, ["models"], env=NARROW)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for entry in list_models():
        row = model_summary(entry)
        mine = [line for line in lines if line.split("  ")[0] == row["name"]]
        assert len(mine) == 1, (row["name"], result.stdout)
        assert row["paper"] in mine[0] and f"{row['parameters']:,}" in mine[0]
    assert "…" not in result.stdout and "│" not in result.stdout


def _dataset(root):
    ir, vis = cv2.imread(str(SAMPLES / "ir.png"), 0)[:96, :128], cv2.imread(str(SAMPLES / "vis.png"), 0)[:96, :128]
    for role in ("ir", "vis", "fused"):
        (root / role).mkdir(parents=True)
    for i in range(3):
        shifted = np.roll(vis, 5 * i, axis=1)
        cv2.imwrite(str(root / "ir" / f"{i}.png"), ir)
        cv2.imwrite(str(root / "vis" / f"{i}.png"), shifted)
        cv2.imwrite(str(root / "fused" / f"{i}.png"), ((ir.astype(int) + shifted) // 2).astype(np.uint8))
    return root / "fused"


def test_metrics_piped_prints_full_values(tmp_path):
    fused = _dataset(tmp_path / "ds")
    names = ["EN", "SD", "MI", "Qabf", "SSIM", "VIF"]
    result = runner.invoke(app, ["metrics", str(fused), "--sources", str(tmp_path / "ds"), "--metrics", ",".join(names),
                                 "--per-image", "-q"], env=NARROW)
    assert result.exit_code == 0, result.output
    report = evaluate_folder(fused, tmp_path / "ds", names, "cddfuse")
    mean, std = report.mean(), report.std()
    summary = [line for line in result.stdout.splitlines() if line.split("  ")[0] == "fused"]
    assert len(summary) == 1, result.stdout
    for m in names:
        assert f"{_fmt(mean[m])} ± {_fmt(std[m])}" in summary[0]
    for row in report.rows:  # --per-image: one line per image with all its values
        line = next(line for line in result.stdout.splitlines() if line.split("  ")[0] == row.stem)
        assert all(_fmt(row.values[m]) in line for m in names)
    assert "…" not in result.stdout


def test_degrade_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(Reporter, "after", 0.0)  # a long run, as far as the lines go
    src = tmp_path / "in"
    src.mkdir()
    for i in range(10):
        cv2.imwrite(str(src / f"{i}.png"), np.full((16, 16), 20 * i, np.uint8))
    result = runner.invoke(app, ["degrade", str(src), "-o", str(tmp_path / "out"), "-k", "noise", "-l", "1"])
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("degrading: ")]
    assert 5 <= len(progress) <= 11 and progress[-1].startswith("degrading: 10/10 images (100 %)")
    assert "\x1b" not in result.stderr  # no live bar, no cursor movement
    quiet = runner.invoke(app, ["degrade", str(src), "-o", str(tmp_path / "out2"), "-k", "noise", "-l", "1", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_reporter_writes_about_every_tenth_in_a_log(monkeypatch):
    monkeypatch.setattr(Reporter, "after", 0.0)
    log = io.StringIO()
    with Reporter("train", unit="steps", console=Console(file=log, force_terminal=False)) as bar:
        for step in range(1, 101):
            bar(step, 100, f"loss {1 / step:.3f}")
    lines = log.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines
    assert lines[0] == "train: 1/100 steps (1 %) - loss 1.000"
    assert lines[-1].startswith("train: 100/100 steps (100 %), ") and lines[-1].endswith(" - loss 0.010")
    assert all("steps/s, ETA " in line for line in lines[1:])


def test_a_short_run_prints_no_progress_lines():
    log = io.StringIO()
    with Reporter("degrading", console=Console(file=log, force_terminal=False)) as bar:
        for done in range(1, 11):
            bar(done, 10)
    assert log.getvalue() == ""  # well under Reporter.after seconds


def test_reporter_draws_a_bar_and_no_lines_on_a_terminal():
    screen = io.StringIO()
    with Reporter("fusing", unit="pairs", console=Console(file=screen, force_terminal=True, width=100)) as bar:
        for done in range(1, 21):
            bar(done, 20)
    assert "fusing: " not in screen.getvalue()  # no plain lines, the live bar instead
    assert "\x1b" in screen.getvalue()


def test_terminal_table_wraps_long_values_instead_of_cutting_them():
    screen = io.StringIO()
    value = "a-rather-long-weights-card-name-that-does-not-fit"
    print_table(["name", "weights"], [["m", value]], console=Console(file=screen, force_terminal=True, width=30,
                                                                      color_system=None))
    text = "".join(ch for ch in screen.getvalue() if ch.isalnum() or ch == "-")
    assert value in text and "…" not in screen.getvalue()
