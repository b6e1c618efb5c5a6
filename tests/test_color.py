"""Tests of fusecli.color: full-range BT.601 YCbCr (Y, Cb, Cr order, chroma offset 0.5)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fusecli.color import merge_luma, rgb_to_y, rgb_to_ycbcr, split_luma, ycbcr_to_rgb
from fusecli.errors import ShapeError


def _random_rgb(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 20, generator=torch.Generator().manual_seed(seed))


def _pixel(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float32).reshape(1, 3, 1, 1)


def test_round_trip_is_exact():
    rgb = _random_rgb()
    assert (ycbcr_to_rgb(rgb_to_ycbcr(rgb)) - rgb).abs().max() < 1e-5


def test_round_trip_from_ycbcr_side():
    ycbcr = rgb_to_ycbcr(_random_rgb(seed=1))
    assert (rgb_to_ycbcr(ycbcr_to_rgb(ycbcr)) - ycbcr).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("rgb", "ycbcr"),
    [
        ((1.0, 1.0, 1.0), (1.0, 0.5, 0.5)),
        ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5)),
        ((0.4, 0.4, 0.4), (0.4, 0.5, 0.5)),
        ((1.0, 0.0, 0.0), (0.299, 0.5 - 0.299 / 1.772, 1.0)),
        ((0.0, 1.0, 0.0), (0.587, 0.5 - 0.587 / 1.772, 0.5 - 0.587 / 1.402)),
        ((0.0, 0.0, 1.0), (0.114, 1.0, 0.5 - 0.114 / 1.402)),
    ],
    ids=["white", "black", "gray", "red", "green", "blue"],
)
def test_known_values(rgb, ycbcr):
    converted = rgb_to_ycbcr(_pixel(*rgb)).flatten()
    assert torch.allclose(converted, torch.tensor(ycbcr), atol=1e-6)
    assert torch.allclose(ycbcr_to_rgb(_pixel(*ycbcr)).flatten(), torch.tensor(rgb), atol=1e-6)


def test_agrees_with_opencv_after_reordering():
    rgb = _random_rgb(batch=1, seed=2)
    as_hwc = rgb[0].permute(1, 2, 0).numpy()
    ycrcb = cv2.cvtColor(as_hwc, cv2.COLOR_RGB2YCrCb)  # OpenCV order: Y, Cr, Cb
    expected = torch.from_numpy(ycrcb[:, :, [0, 2, 1]]).permute(2, 0, 1)[None]

    converted = rgb_to_ycbcr(rgb)

    assert (converted[:, 0] - expected[:, 0]).abs().max() < 1e-5
    # OpenCV rounds the chroma scales 1/1.772 and 1/1.402 to 0.564 and 0.713; the largest
    # difference that causes is 0.886 * (0.564 - 1/1.772) < 3e-4. A swapped Cb/Cr is off by ~0.1.
    assert (converted[:, 1:] - expected[:, 1:]).abs().max() < 3e-4


def test_rgb_to_y_is_the_luma_channel():
    rgb = _random_rgb()
    y = rgb_to_y(rgb)
    assert y.shape == (2, 1, 16, 20)
    assert torch.equal(y, rgb_to_ycbcr(rgb)[:, :1])


def test_rgb_to_y_passes_gradients():
    rgb = _random_rgb().requires_grad_()
    rgb_to_y(rgb).sum().backward()
    expected = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1).expand_as(rgb)
    assert torch.allclose(rgb.grad, expected)


def test_conversion_keeps_dtype():
    rgb = _random_rgb().double()
    assert rgb_to_ycbcr(rgb).dtype == torch.float64
    assert (ycbcr_to_rgb(rgb_to_ycbcr(rgb)) - rgb).abs().max() < 1e-12


def test_ycbcr_to_rgb_does_not_clamp():
    out_of_gamut = _pixel(1.0, 0.5, 1.0)  # bright luma with strong red chroma
    assert ycbcr_to_rgb(out_of_gamut).max() > 1.0


def test_split_merge_gray_is_unchanged():
    gray = torch.rand(2, 1, 16, 20)
    y, cbcr = split_luma(gray)
    assert cbcr is None and y is gray
    assert merge_luma(y, cbcr) is gray


def test_split_merge_colour_round_trip():
    rgb = _random_rgb(seed=3)
    y, cbcr = split_luma(rgb)
    assert y.shape == (2, 1, 16, 20) and cbcr.shape == (2, 2, 16, 20)
    assert (merge_luma(y, cbcr) - rgb).abs().max() < 1e-5


def test_merge_luma_clamps_to_unit_range():
    rgb = _random_rgb(seed=4)
    _, cbcr = split_luma(rgb)
    merged = merge_luma(torch.ones(2, 1, 16, 20), cbcr)  # a fused luma brighter than the source
    assert merged.min() >= 0.0 and merged.max() <= 1.0
    assert ycbcr_to_rgb(torch.cat([torch.ones(2, 1, 16, 20), cbcr], 1)).max() > 1.0


@pytest.mark.parametrize(
    "function", [rgb_to_ycbcr, ycbcr_to_rgb, rgb_to_y, split_luma], ids=lambda f: f.__name__
)
@pytest.mark.parametrize(
    "bad",
    [torch.rand(1, 2, 8, 8), torch.rand(3, 8, 8), np.random.rand(1, 3, 8, 8)],
    ids=["2-channel", "3-D", "ndarray"],
)
def test_wrong_input_raises_shape_error(function, bad):
    with pytest.raises(ShapeError, match="expected"):
        function(bad)


def test_merge_luma_rejects_mismatched_sizes():
    with pytest.raises(ShapeError):
        merge_luma(torch.rand(1, 1, 8, 8), torch.rand(1, 2, 8, 9))
    with pytest.raises(ShapeError):
        merge_luma(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8))
    with pytest.raises(ShapeError):
        merge_luma(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 8))
