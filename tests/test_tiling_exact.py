"""Tiled AUIF fusion is bit-identical to untiled fusion on the CPU (README: "exact for AUIF")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusecli import create_model
from fusecli.inference import fuse_tensors
from fusecli.tiling import tiled

from .conftest import SAMPLES, mirrored


def _gray(path) -> torch.Tensor:
    cv2 = pytest.importorskip("cv2")
    if not path.exists():
        pytest.skip(f"{path} is not here")
    im = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return torch.from_numpy(im.astype(np.float32) / 255)[None, None]


@pytest.fixture(scope="module")
def auif():
    return create_model("auif")  # the shipped weights


def _assert_same_bytes(whole: torch.Tensor, tiles: torch.Tensor) -> None:
    assert tiles.shape == whole.shape
    differing = int((whole != tiles).sum())
    assert differing == 0, f"{differing} of {whole.numel()} samples differ"
    u8 = lambda t: (t * 255).round().to(torch.uint8).numpy().tobytes()  # noqa: E731
    assert u8(whole) == u8(tiles)


@pytest.mark.parametrize("tile, overlap", [(256, 32), (100, 32), (77, 0), (33, 8)])
def test_tiled_auif_is_bit_identical_on_the_samples(auif, tile, overlap):
    ir, vis = _gray(SAMPLES / "ir.png"), _gray(SAMPLES / "vis.png")
    _assert_same_bytes(fuse_tensors(auif, [ir, vis]), fuse_tensors(auif, [ir, vis], tile=tile, overlap=overlap))


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["sum", "l1", "average"])
def test_tiled_auif_is_bit_identical_on_a_full_size_pair(fusion):
    """576×768 (TNO's size; the samples, mirrored to fill it): 256-pixel tiles cut it at non-multiples
    of the SIMD width and of the tile."""
    ir, vis = (mirrored(_gray(SAMPLES / f"{name}.png"), 576, 768) for name in ("ir", "vis"))
    model = create_model("auif") if fusion == "sum" else create_model("auif", fusion=fusion)
    _assert_same_bytes(fuse_tensors(model, [ir, vis]), fuse_tensors(model, [ir, vis], tile=256))


@pytest.mark.slow
def test_tiled_auif_is_bit_identical_with_two_threads(auif):
    """Two threads split the element-wise loops into chunks, each with its own scalar tail."""
    ir, vis = _gray(SAMPLES / "ir.png")[..., :100, :130], _gray(SAMPLES / "vis.png")[..., :100, :130]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _assert_same_bytes(fuse_tensors(auif, [ir, vis]), fuse_tensors(auif, [ir, vis], tile=45))
    finally:
        torch.set_num_threads(before)


def test_blending_is_what_was_not_exact(auif):
    """Why tiles are copied, not blended, for a model with an exact context: ramp blending of two
    equal values is not exact in float32 (the old --tile 256 output differed in 1 ulp on 7 % of the
    TNO 01 samples, and in one grey level on a few)."""
    ir, vis = _gray(SAMPLES / "ir.png"), _gray(SAMPLES / "vis.png")
    with torch.inference_mode():
        whole = auif(ir, vis)
        blended = tiled(lambda ts: auif(*ts), [ir, vis], tile=100, overlap=32, context=auif.receptive_radius)
    assert (blended != whole).any()
    assert (blended - whole).abs().max() < 1e-6


def test_forward_is_its_local_part_then_its_pointwise_head(auif):
    ir, vis = _gray(SAMPLES / "ir.png")[..., :64, :80], _gray(SAMPLES / "vis.png")[..., :64, :80]
    with torch.inference_mode():
        assert torch.equal(auif(ir, vis), auif.forward_pointwise(auif.forward_local(ir, vis)))
    assert auif.receptive_radius == 30
    assert create_model("auif", fusion="l1").receptive_radius == 31  # + the 3x3 activity window
