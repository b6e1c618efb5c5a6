"""Tiling and padding in the inference core."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusecli.errors import ConfigError
from fusecli.inference import fuse_tensors
from fusecli.models import FusionModel, ModelSpec
from fusecli.tiling import tiled


def _blur(ts):
    """A 7x7 local function of two inputs (receptive radius 3)."""
    k = torch.arange(49, dtype=torch.float32).reshape(1, 1, 7, 7) / 49**2
    return F.conv2d(F.pad(ts[0] + 2 * ts[1], (3, 3, 3, 3), mode="reflect"), k)


@pytest.mark.parametrize("shape, tile, overlap", [((57, 83), 16, 4), ((64, 64), 32, 8), ((20, 30), 64, 8),
                                                  ((101, 37), 24, 0)])
def test_tiled_equals_untiled_for_local_functions(shape, tile, overlap):
    a, b = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    whole = _blur([a, b])
    tiles = tiled(_blur, [a, b], tile=tile, overlap=overlap, context=3)
    assert tiles.shape == whole.shape
    assert torch.allclose(tiles, whole, atol=1e-6)


def test_blending_weights_sum_to_one():
    x = torch.rand(1, 1, 70, 90)
    out = tiled(lambda ts: torch.ones_like(ts[0]), [x], tile=25, overlap=10, context=0)
    assert torch.allclose(out, torch.ones_like(out))


def test_tile_must_exceed_overlap():
    with pytest.raises(ConfigError, match="--tile"):
        tiled(_blur, [torch.rand(1, 1, 40, 40)] * 2, tile=8, overlap=8, context=3)


class _NeedsMultipleOf8(FusionModel):
    """A toy model that only accepts sizes divisible by 8 (like FRUFN's mask generator)."""

    spec = ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=8, min_size=8,
                     receptive_radius=None, tileable=True)

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))

    def forward(self, a, b):
        assert a.shape[-1] % 8 == 0 and a.shape[-2] % 8 == 0
        return self.w * a + (1 - self.w) * b


def test_inputs_are_padded_to_the_model_multiple_and_cropped_back():
    model = _NeedsMultipleOf8().eval()
    a, b = torch.rand(1, 1, 37, 45), torch.rand(1, 1, 37, 45)
    out = fuse_tensors(model, [a, b])
    assert out.shape == (1, 1, 37, 45)
    assert torch.allclose(out, 0.5 * a + 0.5 * b)
    out = fuse_tensors(model, [a, b], tile=16, overlap=4)
    assert torch.allclose(out, 0.5 * a + 0.5 * b, atol=1e-6)
