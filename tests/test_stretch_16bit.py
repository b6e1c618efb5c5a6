"""16-bit sources: raw thermal counts that use a small part of 0..65535 are stretched by default
(one note on stderr), ``--no-stretch-16bit`` keeps the raw values, ``--stretch-16bit`` stretches every
16-bit source; ``fuse`` and ``batch`` do the same."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.color import rgb_to_y
from fusecli.inference import prepare_16bit
from fusecli.io import ImageInfo, read_image
from fusecli.losses import ssim

from .conftest import SAMPLES

runner = CliRunner()


def _info(bit_depth: int) -> ImageInfo:
    return ImageInfo(Path("x.png"), bit_depth, 1, 1, True, 8, 8)


def test_the_default_stretch_rule():
    ramp = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    raw14 = ramp * (16383 / 65535)  # 14-bit counts: a quarter of the range
    full = ramp  # a 16-bit image that uses its range
    flat = torch.full((1, 1, 8, 8), 0.1)
    out, note = prepare_16bit(raw14, _info(16))
    assert note and "x.png" in note and out.max() == 1 and out.min() == 0
    assert prepare_16bit(full, _info(16)) == (full, None)
    assert prepare_16bit(flat, _info(16)) == (flat, None)  # nothing to stretch
    assert prepare_16bit(raw14, _info(8)) == (raw14, None)  # 8-bit: never
    assert prepare_16bit(raw14, _info(16), False) == (raw14, None)  # --no-stretch-16bit
    forced, note = prepare_16bit(full[:, :, :, :4] * 0.9 + 0.05, _info(16), True)  # --stretch-16bit: always
    assert note is None and forced.max() == 1


def test_raw_16bit_thermal_fuses_like_its_8bit_version(tmp_path):
    out = tmp_path / "out"
    result16 = runner.invoke(app, ["fuse", str(SAMPLES / "ir16.png"), str(SAMPLES / "vis_color.png"),
                                   "-o", str(out / "16.png")])
    assert result16.exit_code == 0, result16.output
    notes = [line for line in result16.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "ir16.png" in notes[0] and "--no-stretch-16bit" in notes[0]
    assert runner.invoke(app, ["fuse", str(SAMPLES / "ir.png"), str(SAMPLES / "vis_color.png"),
                               "-o", str(out / "8.png")]).exit_code == 0
    raw = runner.invoke(app, ["fuse", str(SAMPLES / "ir16.png"), str(SAMPLES / "vis_color.png"),
                              "-o", str(out / "raw.png"), "--no-stretch-16bit"])
    assert raw.exit_code == 0 and "note:" not in raw.output
    legacy = runner.invoke(app, ["fuse", str(SAMPLES / "ir16.png"), str(SAMPLES / "vis_color.png"),
                                 "-o", str(out / "legacy.png"), "--stretch-16bit"])
    assert legacy.exit_code == 0 and "note:" not in legacy.output
    assert (out / "legacy.png").read_bytes() == (out / "16.png").read_bytes()

    def luma(name: str) -> torch.Tensor:
        return rgb_to_y(read_image(out / name)[0])

    assert float(ssim(luma("16.png"), luma("8.png"))) >= 0.9
    assert float(ssim(luma("raw.png"), luma("8.png"))) < 0.8  # unstretched, the targets vanish


def test_batch_stretches_like_fuse_and_says_so_once(tmp_path):
    data = tmp_path / "data"
    for role, name in (("ir", "ir16.png"), ("vis", "vis_color.png")):
        (data / role).mkdir(parents=True)
        for stem in ("0001", "0002"):
            (data / role / f"{stem}.png").write_bytes((SAMPLES / name).read_bytes())
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "2 16-bit source(s) of 2 pair(s)" in notes[0]
    fused = runner.invoke(app, ["fuse", str(SAMPLES / "ir16.png"), str(SAMPLES / "vis_color.png"),
                                "-o", str(tmp_path / "one.png")])
    assert fused.exit_code == 0
    assert (tmp_path / "out" / "0001.png").read_bytes() == (tmp_path / "one.png").read_bytes()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["options"]["stretch_16bit"] == "auto"
    assert manifest["pairs"][0]["stretched"] == ["ir/0001.png"]
    # the raw behaviour is another setting: refused into the same folder without --overwrite
    raw = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), "--no-stretch-16bit"])
    assert raw.exit_code == 1 and "stretch_16bit" in raw.output
