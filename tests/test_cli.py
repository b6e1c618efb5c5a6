"""The command line, end to end: fuse on the samples, models, errors as one red line."""

from __future__ import annotations

import subprocess
import sys

import cv2
import pytest
from typer.testing import CliRunner

from fusecli.cli import app

from .conftest import SAMPLES

runner = CliRunner()


def test_help_lists_commands_and_fuse_options():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("fuse", "models", "train"):
        assert command in result.output
    result = runner.invoke(app, ["fuse", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--model", "--checkpoint", "--device", "--tile", "--overlap", "--gray",
                   "--bit-depth", "auif-fusion", "default: auto"):
        assert option in result.output


def test_fuse_samples_with_shipped_weights(tmp_path):
    out = tmp_path / "fused.png"
    result = runner.invoke(app, ["fuse", str(SAMPLES / "ir.png"), str(SAMPLES / "vis_color.png"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert image.shape == (240, 320, 3)


def test_fuse_with_official_checkpoint_folder(auif_official_layout, tmp_path):
    out = tmp_path / "fused.png"
    result = runner.invoke(app, ["fuse", str(SAMPLES / "ir.png"), str(SAMPLES / "vis.png"), "-o", str(out), "-m", "auif",
                                 "--checkpoint", str(auif_official_layout), "--device", "cpu", "--tile", "128"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (240, 320)


def test_models_lists_auif():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "auif" in result.output and "ir-vis" in result.output and "11,631" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["missing.png", str(SAMPLES / "vis.png")], "missing.png"),
    ([str(SAMPLES / "ir.png"), str(SAMPLES / "vis.png"), "--model", "aiuf"], "Did you mean 'auif'"),
    ([str(SAMPLES / "ir.png"), str(SAMPLES / "vis.png"), "--device", "tpu"], "unknown device"),
    ([str(SAMPLES / "ir.png"), str(SAMPLES / "vis.png"), "--checkpoint", "nowhere.pth"], "does not exist"),
    ([str(SAMPLES / "ir.png"), str(SAMPLES / "README.md")], "README.md"),
])
def test_bad_input_gives_one_red_line_and_nonzero_exit(tmp_path, args, message):
    """Run the real console script: no traceback, one line on stderr, exit code 1."""
    out = tmp_path / "o.png"
    proc = subprocess.run([sys.executable, "-m", "fusecli", "fuse", *args, "-o", str(out)],
                          capture_output=True, text=True, env={"COLUMNS": "300", "PATH": ""})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert not out.exists()
