"""CSC-MSF (cscfuse-msf): strict loading, the fast guided filter against the official box-filter
formulation, cube I/O round trips (.npy, multi-page TIFF, folder of band PNGs), super-resolution of
cubes synthesised from RGB images with a smooth spectral basis, the CLI, and the errors. Shapes
(non-square included: the official square-only bug is fixed) are test_models_registry's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from fusecli import create_model
from fusecli.cli import app
from fusecli.errors import CheckpointError, ImageReadError, ImageWriteError, ShapeError
from fusecli.inference import fuse_cube_files, fuse_images
from fusecli.io import read_cube, read_image, write_cube, write_image
from fusecli.models.cscfuse_msf import CSCMSF, CSCMSFConfig, convert_official, fast_guided_upsample

from .conftest import SAMPLES, synth_cube


@pytest.fixture(scope="module")
def rgb_crop() -> torch.Tensor:
    rgb, _ = read_image(SAMPLES / "vis_color.png")
    return rgb[..., 100:164, 150:222].contiguous()  # 72 x 64: the guide of a 36 x 32 cube


def test_official_layout_loads_strict(official_checkpoints):
    """The authors' best_net.pth (../shared; else seeded weights in its layout) loads strict."""
    from fusecli.models._weights import load_state_dict

    state, _ = load_state_dict(official_checkpoints / "cscfuse" / "CSC-MSF" / "best_net.pth")
    assert sum(v.numel() for v in state.values() if v.dtype == torch.float32) == 627_968
    model = CSCMSF()
    result = model.load_state_dict(convert_official(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.config.channels == 256 and len(model.cube_backbone.units) == 3
    assert convert_official(model.state_dict()).keys() == model.state_dict().keys()


def test_fast_guided_filter_equals_the_official_box_filter():
    """The official FastGuidedFilter: BoxFilter by cumsums divided by its count map N."""
    def box(x, r):  # official diff_x / diff_y on cumsums
        def diff(t, dim):
            t = t.transpose(dim, -1)
            left, mid = t[..., r:2 * r + 1], t[..., 2 * r + 1:] - t[..., :-2 * r - 1]
            right = t[..., -1:] - t[..., -2 * r - 1:-r - 1]
            return torch.cat([left, mid, right], -1).transpose(dim, -1)
        return diff(diff(x.cumsum(2), 2).cumsum(3), 3)

    g = torch.Generator().manual_seed(1)
    lx, ly, hx = torch.rand(1, 4, 9, 11, generator=g), torch.rand(1, 4, 9, 11, generator=g), \
        torch.rand(1, 4, 18, 22, generator=g)
    n = box(torch.ones(1, 1, 9, 11), 1)
    mx, my = box(lx, 1) / n, box(ly, 1) / n
    a = (box(lx * ly, 1) / n - mx * my) / (box(lx * lx, 1) / n - mx * mx + 1e-4)
    b = my - a * mx
    up = lambda t: F.interpolate(t, (18, 22), mode="bilinear", align_corners=True)  # noqa: E731
    expected = up(a) * hx + up(b)
    assert (fast_guided_upsample(lx, ly, hx, 1, 1e-4) - expected).abs().max() < 1e-4


def test_synthetic_cube_is_super_resolved(official_csc_msf, rgb_crop):
    """The authors' trained weights (no stand-in: none are shipped) super-resolve a cube made from
    the colour sample at least as well as the bilinear upsampling they start from."""
    cube = synth_cube(rgb_crop)
    low = cube[..., ::2, ::2]  # the authors' reduction: nearest, every other pixel
    with torch.no_grad():
        out = official_csc_msf(low, rgb_crop).clamp(0, 1)
    assert out.shape == cube.shape and out.min() >= 0 and out.max() <= 1
    # downsampled back, the output matches the input cube closely
    assert (out[..., ::2, ::2] - low).abs().mean() < 0.02
    assert (F.avg_pool2d(out, 2) - F.avg_pool2d(cube, 2)).abs().mean() < 0.02
    # and it is at least as close to the true cube as the bilinear upsampling it starts from
    base = F.interpolate(low, size=cube.shape[-2:], mode="bilinear", align_corners=True)
    assert ((out - cube) ** 2).mean() <= ((base - cube) ** 2).mean()


@pytest.mark.parametrize("layout", ["chw", "hwc"])
@pytest.mark.parametrize("dtype", ["float32", "uint16", "uint8"])
def test_npy_round_trip_keeps_type_and_layout(tmp_path, layout, dtype):
    g = torch.Generator().manual_seed(2)
    cube = torch.rand(1, 31, 33, 40, generator=g)
    array = cube[0].numpy()
    if dtype != "float32":
        array = np.rint(array * (255 if dtype == "uint8" else 65535)).astype(dtype)
    stored = array if layout == "chw" else array.transpose(1, 2, 0)
    np.save(tmp_path / "in.npy", stored)
    read, info = read_cube(tmp_path / "in.npy")
    assert (info.format, info.layout, info.dtype, info.bands, info.height, info.width) == \
        ("npy", layout, dtype, 31, 33, 40)
    write_cube(tmp_path / "out.npy", read, like=info)
    again = np.load(tmp_path / "out.npy")
    assert again.dtype == stored.dtype and again.shape == stored.shape
    assert np.array_equal(again, stored) if dtype != "float32" else np.allclose(again, stored)


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_tiff_and_folder_round_trips(tmp_path, dtype):
    g = torch.Generator().manual_seed(3)
    cube = torch.rand(1, 12, 9, 7, generator=g)
    if dtype == "uint16":
        cube = torch.round(cube * 65535) / 65535
    like = read_cube(_save_npy(tmp_path / "src.npy", cube, dtype))[1]
    write_cube(tmp_path / "c.tif", cube, like=like)
    read, info = read_cube(tmp_path / "c.tif")
    assert (info.format, info.dtype, info.bands) == ("tiff", dtype, 12)
    assert (read - cube).abs().max() < 1e-6
    write_cube(tmp_path / "bands", cube, like=like)  # a folder: 16-bit PNGs
    names = sorted(p.name for p in (tmp_path / "bands").iterdir())
    assert names[0] == "bands_01.png" and len(names) == 12
    read, info = read_cube(tmp_path / "bands")
    assert (info.format, info.dtype) == ("folder", "uint16")
    assert (read - cube).abs().max() <= 0.5 / 65535 + 1e-7
    write_cube(tmp_path / "bands", cube[:, :3], like=like)  # an existing folder is replaced whole
    assert len(list((tmp_path / "bands").iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def _save_npy(path, cube, dtype):
    array = cube[0].numpy()
    if dtype == "uint16":
        array = np.rint(array * 65535).astype(np.uint16)
    np.save(path, array)
    return path


def test_folder_bands_natural_order_and_colour_images_skipped(tmp_path):
    for i in (1, 2, 10):  # band_10 after band_2
        write_image(tmp_path / f"band_{i}.png", torch.full((1, 1, 4, 5), i / 10), bit_depth=16)
    write_image(tmp_path / "scene_RGB.png", torch.rand(1, 3, 4, 5))  # CAVE keeps its RGB image here
    cube, info = read_cube(tmp_path)
    assert info.band_names == ("band_1.png", "band_2.png", "band_10.png")
    assert torch.allclose(cube[0, :, 0, 0], torch.tensor([0.1, 0.2, 1.0]), atol=1e-4)


def test_cube_errors(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_cube(tmp_path / "missing.npy")
    np.save(tmp_path / "big.npy", np.full((3, 4, 5), 2.0, np.float32))
    with pytest.raises(ImageReadError, match=r"\[0, 1\]"):
        read_cube(tmp_path / "big.npy")
    np.save(tmp_path / "nan.npy", np.full((3, 4, 5), np.nan, np.float32))
    with pytest.raises(ImageReadError, match="NaN"):
        read_cube(tmp_path / "nan.npy")
    (tmp_path / "x.mat").write_bytes(b"MATLAB")
    with pytest.raises(ImageReadError, match="unknown format"):
        read_cube(tmp_path / "x.mat")
    np.save(tmp_path / "odd.npy", np.zeros((20, 5, 30), np.float32))
    with pytest.raises(ImageReadError, match="band axis"):
        read_cube(tmp_path / "odd.npy")
    with pytest.raises(ImageWriteError, match="cube is a .npy"):
        write_cube(tmp_path / "out.png", torch.rand(1, 3, 4, 4))
    np.save(tmp_path / "in.npy", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(ImageWriteError, match="inputs"):
        write_cube(tmp_path / "in.npy", torch.rand(1, 3, 4, 5), protect=[tmp_path / "in.npy"])
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_image(folder / "a_1.png", torch.rand(1, 1, 4, 5))
    write_image(folder / "a_2.png", torch.rand(1, 1, 4, 6))
    with pytest.raises(ImageReadError, match="a_2.png"):
        read_cube(folder)


def test_model_input_errors():
    model = CSCMSF().eval()  # the official architecture; its weights do not matter here
    with pytest.raises(ShapeError, match="31"):
        model(torch.rand(1, 30, 8, 8), torch.rand(1, 3, 16, 16))
    with pytest.raises(ShapeError, match="2x the cube"):
        model(torch.rand(1, 31, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ShapeError, match="RGB"):
        model(torch.rand(1, 31, 8, 8), torch.rand(1, 1, 16, 16))
    with pytest.raises(Exception, match="cube"):
        fuse_images(model, [torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)])
    with pytest.raises(CheckpointError, match="no default weights"):
        create_model("cscfuse-msf")


def test_fuse_cube_files_and_cli(rgb_crop, tmp_path):
    cube = synth_cube(rgb_crop)
    low = cube[..., ::2, ::2]
    np.save(tmp_path / "low.npy", low[0].permute(1, 2, 0).numpy())  # (H, W, C): written back the same way
    write_image(tmp_path / "guide.png", rgb_crop)
    torch.manual_seed(0)  # a checkpoint of the official architecture (the official file is in ../shared)
    torch.save(CSCMSF().state_dict(), tmp_path / "best_net.pth")
    model = create_model("cscfuse-msf", checkpoint=tmp_path / "best_net.pth")
    result = fuse_cube_files(model, tmp_path / "low.npy", tmp_path / "guide.png", tmp_path / "lib.npy")
    assert (result.channels, result.width, result.height) == (31, 72, 64)
    assert np.load(tmp_path / "lib.npy").shape == (64, 72, 31)
    runner = CliRunner()
    result = runner.invoke(app, ["fuse", "-m", "cscfuse-msf", "-c", str(tmp_path / "best_net.pth"),
                                 str(tmp_path / "low.npy"), str(tmp_path / "guide.png"), "-o",
                                 str(tmp_path / "cli.tif")])
    assert result.exit_code == 0, result.output
    assert "31-band cube" in result.output
    out, info = read_cube(tmp_path / "cli.tif")
    assert out.shape == (1, 31, 64, 72) and info.dtype == "float32"
    assert (out - torch.from_numpy(np.load(tmp_path / "lib.npy")).permute(2, 0, 1)).abs().max() < 1e-6
    result = runner.invoke(app, ["fuse", "-m", "cscfuse-msf", "-c", str(tmp_path / "best_net.pth"),
                                 str(tmp_path / "low.npy"), "-o", str(tmp_path / "y.npy")])
    assert result.exit_code == 1 and "fuses 2 images" in result.output


def test_config_is_validated():
    with pytest.raises(Exception, match="radius"):
        CSCMSFConfig(radius=0)


def test_cave_folder_reads_as_31_bands(cave_balloons):
    """A CAVE scene folder (../shared's balloons_ms, else one in its layout): 31 16-bit bands in name
    order, its RGB image left out (the pixel values of the real one: test_shared_data)."""
    cube, info = read_cube(cave_balloons)
    assert (info.bands, info.height, info.width, info.dtype) == (31, 512, 512, "uint16")
    assert info.band_names[0] == "balloons_ms_01.png" and info.band_names[-1] == "balloons_ms_31.png"
    assert 0 <= cube.min() and cube.max() <= 1
