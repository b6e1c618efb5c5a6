"""Tests of fusecli.io: reading and writing images without losing or corrupting pixels."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import fusecli.io as fio
from fusecli.errors import ImageReadError, ImageWriteError, ShapeError
from fusecli.io import IMAGE_EXTENSIONS, list_images, quantize, read_image, write_image

H, W = 24, 40  # not square, so a swapped height/width shows up


def _save(path: Path, array: np.ndarray, params: tuple[int, ...] = ()) -> Path:
    """Write ``array`` (OpenCV channel order) with OpenCV, independently of fusecli."""
    ok, encoded = cv2.imencode(path.suffix, array, list(params))
    assert ok
    encoded.tofile(path)
    return path


def _random(shape: tuple[int, ...], bit_depth: int, seed: int = 0) -> np.ndarray:
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def _as_uint(image: torch.Tensor, bit_depth: int) -> np.ndarray:
    """(1, C, H, W) tensor in [0, 1] -> (H, W, C) integers; checks the scaling is exact."""
    scaled = image[0].permute(1, 2, 0).numpy() * (255 if bit_depth == 8 else 65535)
    assert np.array_equal(scaled, np.round(scaled)), "read_image scaling is not exact"
    return scaled.astype(np.int64)


def _smooth_rgb() -> np.ndarray:
    """A smooth colour image (RGB, uint8) that JPEG compresses almost losslessly."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack(
        [xx * 255 // (W - 1), yy * 255 // (H - 1), np.full((H, W), 90)], axis=-1
    ).astype(np.uint8)


LOSSLESS = [(".png", 8), (".png", 16), (".tif", 8), (".tif", 16), (".tiff", 16), (".bmp", 8)]


# --- read_image ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("extension", "bit_depth"), LOSSLESS)
@pytest.mark.parametrize("colour", [False, True], ids=["gray", "rgb"])
def test_read_lossless_formats_exactly(tmp_path, extension, bit_depth, colour):
    rgb = _random((H, W, 3) if colour else (H, W), bit_depth)
    on_disk = rgb[:, :, ::-1] if colour else rgb
    path = _save(tmp_path / f"image{extension}", np.ascontiguousarray(on_disk))

    image, info = read_image(path)

    assert image.dtype == torch.float32
    assert image.shape == (1, 3 if colour else 1, H, W)
    assert 0.0 <= image.min() and image.max() <= 1.0
    expected = rgb if colour else rgb[:, :, np.newaxis]
    assert np.array_equal(_as_uint(image, bit_depth), expected)
    assert (info.bit_depth, info.channels, info.is_gray) == (bit_depth, image.shape[1], not colour)
    assert (info.height, info.width, info.path) == (H, W, path)


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "rgb"])
@pytest.mark.parametrize("extension", [".jpg", ".jpeg"])
def test_read_jpeg_close_to_original(tmp_path, extension, colour):
    rgb = _smooth_rgb()
    original = rgb if colour else rgb[:, :, 0]
    on_disk = np.ascontiguousarray(rgb[:, :, ::-1]) if colour else original
    path = _save(tmp_path / f"image{extension}", on_disk, (cv2.IMWRITE_JPEG_QUALITY, 100))

    image, info = read_image(path)

    assert image.shape == (1, 3 if colour else 1, H, W)
    assert info.bit_depth == 8 and info.is_gray is not colour
    expected = original.reshape(H, W, -1).astype(np.int64)
    assert np.abs(_as_uint(image, 8) - expected).max() <= 6


@pytest.mark.parametrize("extension", [".png", ".tif"])
def test_16bit_thermal_ramp_keeps_all_14_bits(tmp_path, extension):
    ramp = np.tile(np.linspace(0, 16383, W).round().astype(np.uint16), (H, 1))
    path = _save(tmp_path / f"thermal{extension}", ramp)

    image, info = read_image(path)

    assert info.bit_depth == 16
    assert torch.equal(image[0, 0] * 65535, torch.from_numpy(ramp.astype(np.float32)))
    assert image.max() * 65535 == 16383  # values above 255 survive: no 8-bit truncation


@pytest.mark.filterwarnings("ignore:.*tifffile backend is deprecated:DeprecationWarning")
def test_16bit_tiff_written_by_imageio(tmp_path):
    original = _random((H, W), 16, seed=3)
    path = tmp_path / "pillow.tif"
    iio.imwrite(path, original)

    image, info = read_image(path)

    assert info.bit_depth == 16
    assert np.array_equal(_as_uint(image, 16)[:, :, 0], original)


def test_rgba_alpha_is_dropped(tmp_path):
    rgb = _random((H, W, 3), 8, seed=1)
    alpha = _random((H, W, 1), 8, seed=2)
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], axis=-1)
    path = _save(tmp_path / "rgba.png", np.ascontiguousarray(bgra))

    image, info = read_image(path)

    assert image.shape == (1, 3, H, W)
    assert (info.stored_channels, info.channels) == (4, 3)
    assert np.array_equal(_as_uint(image, 8), rgb)


def test_gray_plus_alpha_is_gray(tmp_path):
    gray_alpha = _random((H, W, 2), 8, seed=4)
    path = tmp_path / "la.png"
    iio.imwrite(path, gray_alpha)

    image, info = read_image(path)

    assert image.shape == (1, 1, H, W) and info.is_gray
    assert np.array_equal(_as_uint(image, 8)[:, :, 0], gray_alpha[:, :, 0])


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_gray_stored_as_rgb_collapses_to_one_channel(tmp_path, bit_depth):
    gray = _random((H, W), bit_depth)
    path = _save(tmp_path / "gray_rgb.png", np.stack([gray] * 3, axis=-1))

    image, info = read_image(path)

    assert image.shape == (1, 1, H, W)
    assert info.is_gray and info.stored_channels == 3 and info.channels == 1
    assert np.array_equal(_as_uint(image, bit_depth)[:, :, 0], gray)


def test_almost_gray_rgb_stays_colour(tmp_path):
    rgb = np.full((H, W, 3), 100, np.uint8)
    rgb[5, 7, 2] = 101  # one sample differs: the image is colour
    path = _save(tmp_path / "almost.png", rgb)

    image, info = read_image(path)

    assert image.shape == (1, 3, H, W) and not info.is_gray


def test_channels_come_back_in_rgb_order(tmp_path):
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[:, :, 2] = 255  # red, in OpenCV's BGR order
    path = _save(tmp_path / "red.png", bgr)

    image, _ = read_image(path)

    assert image[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_falls_back_to_imageio_when_opencv_cannot_decode(tmp_path, monkeypatch):
    rgb = _random((H, W, 3), 8, seed=5)
    path = _save(tmp_path / "colour.png", np.ascontiguousarray(rgb[:, :, ::-1]))
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)

    image, info = read_image(path)

    assert info.channels == 3
    assert np.array_equal(_as_uint(image, 8), rgb)  # still RGB, not swapped


def test_reads_non_ascii_path(tmp_path):
    gray = _random((H, W), 8)
    folder = tmp_path / "données 画像"
    folder.mkdir()
    path = _save(folder / "läufer.png", gray)

    image, _ = read_image(path)

    assert np.array_equal(_as_uint(image, 8)[:, :, 0], gray)


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.png"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.png"
    path.touch()
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\nsecond line\n")
    return path


def _float_tiff(tmp_path: Path) -> Path:
    return _save(tmp_path / "float.tif", np.random.default_rng(0).random((H, W), dtype=np.float32))


@pytest.mark.filterwarnings("ignore:.*plugin is deprecated:DeprecationWarning")  # imageio probing
@pytest.mark.parametrize("make", [_missing, _directory, _empty, _text, _float_tiff])
def test_unreadable_inputs_raise_one_line_error_naming_the_file(tmp_path, make):
    path = make(tmp_path)

    with pytest.raises(ImageReadError) as caught:
        read_image(path)

    message = str(caught.value)
    assert "\n" not in message
    assert path.name in message


def test_float_tiff_error_names_the_dtype(tmp_path):
    with pytest.raises(ImageReadError, match="float32"):
        read_image(_float_tiff(tmp_path))


# --- quantize ------------------------------------------------------------------------------------


def test_quantize_rounds_and_clips():
    values = torch.tensor([[-0.5, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 3.0]])
    assert quantize(values, 8).tolist() == [[0, 0, 0, 1, 255, 255]]
    assert quantize(values, 8).dtype == np.uint8
    assert quantize(values, 16).dtype == np.uint16


def test_quantize_inverts_read_scaling_for_every_16bit_value():
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    as_float = torch.from_numpy(levels.astype(np.float32) / np.float32(65535))
    assert np.array_equal(quantize(as_float, 16), levels)


def test_quantize_layouts():
    rgb = torch.rand(1, 3, H, W)
    assert quantize(rgb, 8).shape == (H, W, 3)
    assert np.array_equal(quantize(rgb, 8)[..., 0], quantize(rgb[0, 0], 8))  # R stays first
    assert quantize(torch.rand(1, 1, H, W), 8).shape == (H, W)
    assert quantize(np.random.rand(H, W), 8).shape == (H, W)
    with pytest.raises(ShapeError):
        quantize(torch.rand(2, 3, H, W), 8)
    with pytest.raises(ShapeError):
        quantize(torch.rand(1, 2, H, W), 8)


# --- write_image ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("extension", "bit_depth"), LOSSLESS)
@pytest.mark.parametrize("channels", [1, 3])
def test_write_then_read_is_lossless(tmp_path, extension, bit_depth, channels):
    levels = _random((1, channels, H, W), bit_depth)
    image = torch.from_numpy(levels.astype(np.float32) / (255 if bit_depth == 8 else 65535))

    written = write_image(tmp_path / f"out{extension}", image, bit_depth=bit_depth)
    again, info = read_image(written)

    assert written == tmp_path / f"out{extension}"
    assert info.bit_depth == bit_depth and again.shape == image.shape
    assert torch.equal(again, image)


@pytest.mark.parametrize("extension", [".jpg", ".jpeg"])
def test_write_jpeg_close_to_original(tmp_path, extension):
    image = torch.from_numpy(_smooth_rgb()).permute(2, 0, 1)[None].float() / 255

    again, _ = read_image(write_image(tmp_path / f"out{extension}", image))

    error = (again - image).abs()  # OpenCV's default JPEG quality is 95, with chroma subsampling
    assert error.max() <= 10 / 255 and error.mean() <= 2 / 255


def test_write_accepts_chw_and_hw_arrays(tmp_path):
    gray = np.random.default_rng(0).random((H, W))
    again, _ = read_image(write_image(tmp_path / "hw.png", gray))
    assert np.array_equal(_as_uint(again, 8)[:, :, 0], quantize(gray, 8))

    rgb = torch.rand(3, H, W)
    again, _ = read_image(write_image(tmp_path / "chw.png", rgb))
    assert np.array_equal(_as_uint(again, 8), quantize(rgb, 8))


@pytest.mark.parametrize("extension", [".jpg", ".jpeg", ".JPG", ".bmp"])
def test_16bit_into_8bit_only_format_is_refused(tmp_path, extension):
    with pytest.raises(ImageWriteError, match=r"\.png or \.tif"):
        write_image(tmp_path / f"out{extension}", torch.rand(1, 1, H, W), bit_depth=16)
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension_is_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ImageWriteError) as caught:
        write_image(tmp_path / "out.gif", torch.rand(1, 1, H, W))
    assert all(extension in str(caught.value) for extension in IMAGE_EXTENSIONS)
    assert list(tmp_path.iterdir()) == []


def test_extension_is_case_insensitive(tmp_path):
    image = torch.rand(1, 3, H, W)
    again, _ = read_image(write_image(tmp_path / "OUT.PNG", image))
    assert np.array_equal(_as_uint(again, 8), quantize(image, 8))


def _same_name(path: Path) -> Path:
    return path


def _other_spelling(path: Path) -> Path:
    return path.parent / "sub" / ".." / path.name


def _symlink(path: Path) -> Path:
    link = path.parent / "link.png"
    link.symlink_to(path)
    return link


@pytest.mark.parametrize("alias", [_same_name, _other_spelling, _symlink])
def test_never_overwrites_a_protected_input(tmp_path, alias):
    (tmp_path / "sub").mkdir()
    source = _save(tmp_path / "input.png", _random((H, W), 8))
    before = source.read_bytes()

    with pytest.raises(ImageWriteError, match="input"):
        write_image(alias(source), torch.zeros(1, 1, H, W), protect=[tmp_path / "x.png", source])

    assert source.read_bytes() == before


def test_protected_path_that_does_not_exist_yet_is_refused(tmp_path):
    planned = tmp_path / "sub" / ".." / "planned.png"
    with pytest.raises(ImageWriteError):
        write_image(tmp_path / "planned.png", torch.zeros(1, 1, H, W), protect=[planned])
    assert list(tmp_path.iterdir()) == []


def test_successful_write_leaves_no_temporary_file(tmp_path):
    write_image(tmp_path / "out.png", torch.rand(1, 3, H, W))
    write_image(tmp_path / "out.png", torch.rand(1, 3, H, W))  # replaces the first one
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_failed_encoding_keeps_existing_target(tmp_path, monkeypatch):
    target = write_image(tmp_path / "out.png", torch.rand(1, 1, H, W))
    before = target.read_bytes()
    monkeypatch.setattr(cv2, "imencode", lambda *args, **kwargs: (False, None))

    with pytest.raises(ImageWriteError):
        write_image(target, torch.rand(1, 1, H, W))

    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_failure_after_temporary_file_removes_it(tmp_path, monkeypatch):
    target = write_image(tmp_path / "out.png", torch.rand(1, 1, H, W))
    before = target.read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fio.os, "replace", fail)

    with pytest.raises(ImageWriteError, match="No space left"):
        write_image(target, torch.rand(1, 1, H, W))

    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_missing_parent_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "out.tif"
    write_image(target, torch.rand(1, 1, H, W), bit_depth=16)
    assert read_image(target)[1].bit_depth == 16


def test_unwritable_destination_raises_one_line_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")

    with pytest.raises(ImageWriteError) as caught:
        write_image(blocker / "out.png", torch.rand(1, 1, H, W))

    assert "\n" not in str(caught.value) and "out.png" in str(caught.value)


def test_written_file_has_normal_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        target = write_image(tmp_path / "out.png", torch.rand(1, 1, H, W))
    finally:
        os.umask(old_umask)
    assert target.stat().st_mode & 0o777 == 0o644


# --- list_images ---------------------------------------------------------------------------------


def test_list_images_filters_and_sorts(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.tiff", "notes.txt", ".hidden.png", "d.bmp.txt"]:
        (tmp_path / name).touch()
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "folder.png" / "nested.png").touch()

    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg", "c.tiff"]


def test_list_images_of_missing_folder_raises(tmp_path):
    with pytest.raises(ImageReadError, match="missing"):
        list_images(tmp_path / "missing")
