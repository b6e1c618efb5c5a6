"""Degradations: every kind x level on gray/RGB, 8/16-bit; determinism; monotone severity; files,
folders and datasets; errors as one line."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.degrade import (
    LEVELS,
    degrade,
    degrade_path,
    get_kind,
    haze,
    image_rng,
    list_kinds,
    noise,
    parse_kinds,
    stable_hash,
)
from fusecli.degrade.kinds import solve_beta
from fusecli.errors import ConfigError, FusecliError, ImageWriteError, ShapeError, UnknownNameError
from fusecli.io import read_image
from fusecli.losses import ssim

from .conftest import SAMPLES

KINDS = list_kinds()
runner = CliRunner()


def _smooth(channels: int, h: int = 36, w: int = 44, seed: int = 0) -> torch.Tensor:
    """A textured test image in [0.1, 0.9]: a smooth pattern plus some structure."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    rng = np.random.default_rng(seed)
    planes = [np.clip(base + 0.05 * rng.standard_normal((h, w)) + 0.05 * c, 0.1, 0.9) for c in range(channels)]
    return torch.from_numpy(np.stack(planes)[None].astype(np.float32))


def _write_inputs(folder, h=36, w=44):
    """gray 8-bit, RGB 8-bit, gray 16-bit, RGB 16-bit PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    g = (_smooth(1, h, w)[0, 0].numpy())
    rgb = _smooth(3, h, w)[0].numpy().transpose(1, 2, 0)
    files = {
        "gray8.png": np.rint(g * 255).astype(np.uint8),
        "rgb8.png": np.rint(rgb * 255).astype(np.uint8),
        "gray16.png": np.rint(g * 65535 + rng.integers(0, 200, g.shape)).astype(np.uint16),
        "rgb16.png": np.rint(rgb * 65535).astype(np.uint16),
    }
    for name, array in files.items():
        cv2.imwrite(str(folder / name), array[..., ::-1] if array.ndim == 3 else array)
    return files


# --- the functions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_kind_and_level_keeps_shape_dtype_range(kind, channels):
    image = _smooth(channels)
    before = image.clone()
    for level in range(1, 6):
        out = get_kind(kind).fn(image, level, np.random.default_rng(0))
        assert out.shape == image.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, image), f"{kind} level {level} changed nothing"
    assert torch.equal(image, before), "the input was modified"


def test_batches_and_float64_inputs_are_handled():
    batch = torch.cat([_smooth(3), _smooth(3, seed=1)])
    out = degrade(batch.double(), "rain,noise", 3, seed=0, name="x")
    assert out.shape == batch.shape and out.dtype == torch.float32


def test_severity_table_covers_every_kind_and_is_monotone():
    assert set(LEVELS) == set(KINDS)
    for kind, table in LEVELS.items():
        for name, values in table.items():
            assert len(values) == 5, (kind, name)
            diffs = np.diff(values)
            assert np.all(diffs > 0) or np.all(diffs < 0), f"{kind}.{name} is not strictly monotone"


@pytest.mark.parametrize("depth, target_betas", [
    ("uniform", [0.163, 0.357, 0.598, 0.916, 1.273]),
    ("ramp", [0.33, 0.76, 1.34, 2.23, 3.46]),
])
def test_haze_reaches_the_target_mean_transmission(depth, target_betas):
    """White minus black through the same haze is exactly t, so its mean is the level's target."""
    black, white = torch.zeros(1, 1, 60, 50), torch.ones(1, 1, 60, 50)
    for level, transmission in enumerate(LEVELS["haze"]["transmission"], start=1):
        hazy_black = haze(black, level, image_rng(0, "x", "haze"), depth=depth)
        hazy_white = haze(white, level, image_rng(0, "x", "haze"), depth=depth)
        assert float((hazy_white - hazy_black).mean()) == pytest.approx(transmission, abs=2e-3)
        airlight = float(hazy_black.max() / (1 - (hazy_white - hazy_black).min()))
        assert 0.75 <= airlight <= 0.95
    d = np.repeat(np.linspace(1, 0, 200)[:, None], 10, 1) if depth == "ramp" else np.ones((20, 20))
    betas = [solve_beta(d, t) for t in LEVELS["haze"]["transmission"]]
    assert betas == pytest.approx(target_betas, abs=0.02)


def test_haze_ramp_is_far_at_the_top_and_depth_maps_are_used():
    image = torch.zeros(1, 1, 40, 30)
    ramp = haze(image, 3, image_rng(0, "x"), depth="ramp")
    assert float(ramp[0, 0, 0].mean()) > float(ramp[0, 0, -1].mean())  # more haze at the top
    far_left = np.tile(np.linspace(1, 0, 30), (40, 1))
    mapped = haze(image, 3, image_rng(0, "x"), depth=far_left)
    assert float(mapped[0, 0, :, 0].mean()) > float(mapped[0, 0, :, -1].mean())
    inverse = haze(image, 3, image_rng(0, "x"), depth=far_left, inverse_depth=True)
    assert float(inverse[0, 0, :, 0].mean()) < float(inverse[0, 0, :, -1].mean())


# --- determinism -----------------------------------------------------------------------------------

def test_same_seed_same_output_different_seed_or_name_differs():
    image = _smooth(3)
    for kind in KINDS:
        a = degrade(image, kind, 3, seed=7, name="a")
        assert torch.equal(a, degrade(image, kind, 3, seed=7, name="a"))
        if kind not in ("jpeg", "defocus", "contrast"):  # deterministic kinds: no random draw
            assert not torch.equal(a, degrade(image, kind, 3, seed=8, name="a")), kind
            assert not torch.equal(a, degrade(image, kind, 3, seed=7, name="b")), kind


def test_no_global_random_state_is_used_or_changed():
    np.random.seed(123)
    torch.manual_seed(123)
    expected_np, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(123)
    degrade(_smooth(3), ",".join(KINDS), 2, seed=0, name="x")
    assert np.random.rand() == expected_np and torch.equal(torch.rand(1), expected_torch)


def test_stable_hash_and_streams_are_fixed():
    """Pinned values: the random stream of an image must not change across machines or versions."""
    assert stable_hash("0001") == 9445760614356585352  # first 8 bytes of sha256("0001"), little-endian
    assert stable_hash("0001") != stable_hash("0002")
    assert image_rng(0, "0001", "haze", 0).random() == pytest.approx(0.6101219326275615, abs=0)


def test_files_byte_identical_across_runs_and_order_independent(tmp_path):
    _write_inputs(tmp_path / "in")
    first = degrade_path(tmp_path / "in", tmp_path / "a", "haze,noise", 3, seed=5)
    degrade_path(tmp_path / "in", tmp_path / "b", "haze,noise", 3, seed=5)
    degrade_path(tmp_path / "in", tmp_path / "c", "haze,noise", 3, seed=6)
    names = [p.name for p in first.degraded]
    assert len(names) == 4
    # one by one, in reverse order, as separate jobs (sharding)
    for name in reversed(names):
        degrade_path(tmp_path / "in" / name, tmp_path / "d" / name, "haze,noise", 3, seed=5)
    for name in names:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes() == (tmp_path / "d" / name).read_bytes()
        assert a != (tmp_path / "c" / name).read_bytes()


# --- files: bit depth and channels ----------------------------------------------------------------

def test_every_kind_and_level_keeps_bit_depth_and_channels_on_files(tmp_path):
    inputs = _write_inputs(tmp_path / "in")
    for kind in KINDS:
        for level in range(1, 6):
            out = tmp_path / f"{kind}{level}"
            degrade_path(tmp_path / "in", out, kind, level, seed=0)
            for name, array in inputs.items():
                result = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
                assert result.dtype == array.dtype and result.shape == array.shape, (kind, level, name)
    # 16-bit precision is kept (not rounded to 8 bits), except by JPEG
    noisy16 = cv2.imread(str(tmp_path / "noise3" / "gray16.png"), cv2.IMREAD_UNCHANGED)
    assert np.any(noisy16 % 257 != 0)
    jpeg16 = cv2.imread(str(tmp_path / "jpeg3" / "gray16.png"), cv2.IMREAD_UNCHANGED)
    assert np.all(jpeg16 % 257 == 0)


def test_gray_stored_as_rgb_stays_gray(tmp_path):
    gray = np.rint(_smooth(1)[0, 0].numpy() * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), np.dstack([gray] * 3))
    degrade_path(tmp_path / "g.png", tmp_path / "o.png", "rain,noise", 4)
    result = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)
    assert result.ndim == 2


def test_single_file_into_a_folder_and_samples(tmp_path):
    report = degrade_path(SAMPLES / "vis_color.png", tmp_path / "out", "rain", 2)
    assert report.mode == "file" and report.degraded == [tmp_path / "out" / "vis_color.png"]
    image, info = read_image(report.degraded[0])
    assert image.shape == (1, 3, 240, 320) and info.bit_depth == 8
    report = degrade_path(SAMPLES / "ir16.png", tmp_path / "ir.png", "stripe", 3)
    assert read_image(report.degraded[0])[1].bit_depth == 16


def test_dataset_degrades_one_role_and_copies_the_others(tmp_path):
    data = tmp_path / "data"
    _write_inputs(data / "ir")
    _write_inputs(data / "vis")
    report = degrade_path(data, tmp_path / "out", "haze", 2)
    assert report.mode == "dataset" and report.role == "vis"
    assert len(report.degraded) == 4 and len(report.copied) == 4
    for name in ("gray8.png", "rgb16.png"):
        assert (tmp_path / "out" / "ir" / name).read_bytes() == (data / "ir" / name).read_bytes()
        assert (tmp_path / "out" / "vis" / name).read_bytes() != (data / "vis" / name).read_bytes()
    meta = json.loads((tmp_path / "out" / "degrade.json").read_text())
    assert meta["kinds"] == ["haze"] and meta["level"] == 2 and meta["parameters"]["haze"]["transmission"] == 0.70
    report = degrade_path(data, tmp_path / "out_ir", "stripe", 2, role="ir")
    assert report.role == "ir"
    assert (tmp_path / "out_ir" / "vis" / "rgb8.png").read_bytes() == (data / "vis" / "rgb8.png").read_bytes()
    with pytest.raises(ConfigError, match="not a role folder"):
        degrade_path(data, tmp_path / "x", "haze", 2, role="thermal")


def test_depth_maps_by_stem(tmp_path):
    _write_inputs(tmp_path / "in")
    (tmp_path / "depth").mkdir()
    for name in ("gray8", "rgb8", "gray16", "rgb16"):
        far_left = np.tile(np.linspace(255, 0, 44), (36, 1)).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "depth" / f"{name}.png"), far_left)
    degrade_path(tmp_path / "in", tmp_path / "out", "haze", 4, depth=tmp_path / "depth")
    hazy, _ = read_image(tmp_path / "out" / "gray8.png")
    clean, _ = read_image(tmp_path / "in" / "gray8.png")
    diff = (hazy - clean).abs()[0, 0]
    assert float(diff[:, :5].mean()) > float(diff[:, -5:].mean())  # far (left) is hazier
    (tmp_path / "depth" / "rgb16.png").unlink()
    with pytest.raises(ConfigError, match="no depth map for 'rgb16.png'"):
        degrade_path(tmp_path / "in", tmp_path / "out2", "haze", 4, depth=tmp_path / "depth")
    assert not (tmp_path / "out2").exists()  # checked before anything is written


# --- severity is monotone on real images -----------------------------------------------------------

@pytest.mark.slow
def test_severity_is_monotone_on_visible_images(ivf_pairs):
    """On the 42 TNO visible images (without ../shared: the visible sample mirrored to 640x480),
    reduced to a third for speed, SSIM(degraded, clean) falls strictly from level 1 to 5 for every
    kind, image by image (and so on average)."""
    torch.set_num_threads(1)
    images = []
    for pair in ivf_pairs(size=(480, 640)):
        image, _ = read_image(pair.vis)
        images.append((pair.vis.stem, F.avg_pool2d(image, 3)))
    failures = []
    for kind in KINDS:
        scores = np.zeros((len(images), 5))
        for i, (stem, image) in enumerate(images):
            for level in range(1, 6):
                scores[i, level - 1] = float(ssim(degrade(image, kind, level, seed=0, name=stem), image, window=7))
        means = scores.mean(axis=0)
        if not np.all(np.diff(means) < 0):
            failures.append(f"{kind}: mean SSIM {np.round(means, 4)}")
        bad = [images[i][0] for i in range(len(images)) if not np.all(np.diff(scores[i]) < 0)]
        if bad:
            failures.append(f"{kind}: not monotone on {bad}")
    assert not failures, failures


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [0, 6, -1, 2.5, True, "3"])
def test_bad_levels(level):
    with pytest.raises(ConfigError, match="level"):
        degrade(_smooth(1), "noise", level)


def test_bad_arguments():
    with pytest.raises(UnknownNameError, match="Did you mean 'haze'"):
        parse_kinds("hazee")
    with pytest.raises(ConfigError):
        parse_kinds(" , ")
    assert parse_kinds("Blur, motion-blur,ir_lowcontrast") == ("defocus", "motion", "ir-lowcontrast")
    with pytest.raises(ShapeError):
        noise(torch.zeros(1, 2, 8, 8), 1, np.random.default_rng(0))
    with pytest.raises(ShapeError):
        noise(torch.zeros(8, 8), 1, np.random.default_rng(0))
    with pytest.raises(ShapeError, match="float"):
        noise(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="Generator"):
        noise(torch.zeros(1, 1, 8, 8), 1, 0)
    with pytest.raises(ConfigError, match="no option"):
        noise(torch.zeros(1, 1, 8, 8), 1, np.random.default_rng(0), depth="ramp")
    with pytest.raises(ConfigError, match="seed"):
        degrade(torch.zeros(1, 1, 8, 8), "noise", 1, seed=-1)
    with pytest.raises(ConfigError, match="depth"):
        degrade(torch.zeros(1, 1, 8, 8), "haze", 1, depth="fog")
    assert all(issubclass(e, FusecliError) for e in (ConfigError, ShapeError, UnknownNameError))


def test_output_never_overwrites_the_input(tmp_path):
    _write_inputs(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    with pytest.raises(ImageWriteError):
        degrade_path(tmp_path / "in", tmp_path / "in", "noise", 1)
    with pytest.raises(ImageWriteError):
        degrade_path(tmp_path / "in" / "rgb8.png", tmp_path / "in" / "rgb8.png", "noise", 1)
    with pytest.raises(ImageWriteError):
        degrade_path(tmp_path / "in" / "rgb8.png", tmp_path / "in", "noise", 1)  # into its own folder
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before


@pytest.mark.parametrize("args, message", [
    (["--kind", "hazee", "--level", "3"], "Did you mean 'haze'"),
    (["--kind", "haze", "--level", "0"], "level must be 1-5, got 0"),
    (["--kind", "haze", "--level", "6"], "level must be 1-5, got 6"),
    (["--kind", "haze", "--level", "3", "--depth", "DEPTHS"], "no depth map for 'vis_color.png'"),
    (["--kind", "haze", "--level", "3", "--depth", "nowhere"], "--depth 'nowhere'"),
])
def test_cli_bad_input_is_one_red_line(tmp_path, args, message):
    (tmp_path / "DEPTHS").mkdir()
    args = [a.replace("DEPTHS", str(tmp_path / "DEPTHS")) for a in args]
    out = tmp_path / "o.png"
    result = runner.invoke(app, ["degrade", str(SAMPLES / "vis_color.png"), "-o", str(out), *args])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not out.exists()


def test_cli_dataset_and_file(tmp_path):
    data = tmp_path / "data"
    _write_inputs(data / "ir")
    _write_inputs(data / "vis")
    result = runner.invoke(app, ["degrade", str(data), "-o", str(tmp_path / "out"), "--kind", "rain,jpeg",
                                 "--level", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "degraded 4 image(s) of vis/" in result.stderr and "copied 4" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["degrade.json", "ir", "vis"]
    result = runner.invoke(app, ["degrade", str(data), "-o", str(data), "--kind", "rain", "--level", "2"])
    assert result.exit_code == 1 and "is the input" in result.stderr
    result = runner.invoke(app, ["degrade", str(SAMPLES / "ir.png"), "-o", str(tmp_path / "ir.png"),
                                 "--kind", "stripe", "--level", "5", "-q"])
    assert result.exit_code == 0 and result.stderr == "" and (tmp_path / "ir.png").exists()
    striped, clean = read_image(tmp_path / "ir.png")[0], read_image(SAMPLES / "ir.png")[0]
    assert math.isclose(striped.mean().item(), clean.mean().item(), abs_tol=0.05)
