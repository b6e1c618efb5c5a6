"""Library and packaging niceties: NumPy images through fuse_images, `fusecli models --json`,
shell completion, the PEP 561 marker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import fusecli
from fusecli import create_model, fuse_images
from fusecli.cli import app
from fusecli.errors import ConfigError, ShapeError
from fusecli.io import quantize, read_image
from fusecli.models import list_models, model_summary

from .conftest import SAMPLES

runner = CliRunner()


@pytest.fixture(scope="module")
def auif():
    return create_model("auif")


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_uint8_arrays_in_give_what_the_cli_writes(auif, tmp_path):
    ir, vis = _rgb(SAMPLES / "ir.png"), _rgb(SAMPLES / "vis_color.png")
    fused = fuse_images(auif, [ir, vis])
    assert isinstance(fused, np.ndarray) and fused.dtype == np.uint8 and fused.shape == (240, 320, 3)
    out = tmp_path / "cli.png"
    result = runner.invoke(app, ["fuse", str(SAMPLES / "ir.png"), str(SAMPLES / "vis_color.png"), "-o", str(out),
                                 "-m", "auif", "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(fused, _rgb(out))


def test_uint16_and_float_arrays_keep_their_kind(auif):
    ir, vis = _rgb(SAMPLES / "ir.png"), _rgb(SAMPLES / "vis.png")
    tensors = [read_image(SAMPLES / "ir.png")[0], read_image(SAMPLES / "vis.png")[0]]
    reference = fuse_images(auif, tensors)
    wide = fuse_images(auif, [ir.astype(np.uint16) * 257, vis.astype(np.uint16) * 257])
    assert wide.dtype == np.uint16 and wide.shape == (240, 320)
    assert np.array_equal(wide, quantize(reference, 16))
    unit = fuse_images(auif, [ir.astype(np.float64) / 255, (vis.astype(np.float32) / 255)[:, :, None]])
    assert unit.dtype == np.float32 and unit.shape == (240, 320) and 0 <= unit.min() and unit.max() <= 1
    assert np.abs(unit - reference[0, 0].numpy()).max() < 1e-5
    mixed = fuse_images(auif, [ir.astype(np.uint16) * 257, vis])  # the widest kind wins
    assert mixed.dtype == np.uint16


def test_tensors_in_still_give_tensors(auif):
    tensors = [read_image(SAMPLES / "ir.png")[0], read_image(SAMPLES / "vis.png")[0]]
    assert isinstance(fuse_images(auif, tensors), torch.Tensor)


@pytest.mark.parametrize("images, error, message", [
    (lambda ir: [ir, torch.zeros(1, 1, 240, 320)], ConfigError, "not a mix"),
    (lambda ir: [ir, ir.astype(np.float32)], ConfigError, "[0, 1]"),
    (lambda ir: [ir, ir.astype(np.int32)], ConfigError, "uint8, uint16 or float"),
    (lambda ir: [ir, np.zeros((240, 320, 4), np.uint8)], ShapeError, "(H, W, C)"),
    (lambda ir: [ir, np.full((240, 320), np.nan, np.float32)], ConfigError, "NaN"),
])
def test_bad_arrays_are_refused_with_a_reason(auif, images, error, message):
    with pytest.raises(error, match=re.escape(message)):
        fuse_images(auif, images(_rgb(SAMPLES / "ir.png")))


def test_models_json_lists_every_model():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [entry.name for entry in list_models()]
    for row, entry in zip(rows, list_models()):
        assert row == json.loads(json.dumps(model_summary(entry)))
        assert set(row) == {"name", "tasks", "parameters", "default_weights", "needs_weights", "paper"}


def test_shell_completion_is_offered_and_completes_commands():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--install-completion" in result.output
    completion = runner.invoke(app, [], prog_name="fusecli", env={"_FUSECLI_COMPLETE": "complete_bash",
                                                                  "COMP_WORDS": "fusecli mo", "COMP_CWORD": "1"})
    assert completion.exit_code == 0 and completion.output.split() == ["models"]


def test_package_ships_its_type_marker():
    package = Path(fusecli.__file__).parent
    assert (package / "py.typed").is_file()
    pyproject = package.parent / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout")
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    assert "py.typed" in tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["fusecli"]
