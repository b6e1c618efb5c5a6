"""The colour pipeline and file-to-file fusion: colour kept, gray in gray out, errors lose nothing."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch

from fusecli.color import rgb_to_ycbcr
from fusecli.errors import ConfigError, DeviceError, ImageWriteError, ShapeError
from fusecli.inference import fuse_files, fuse_images, resolve_device, stretch
from fusecli.io import read_image
from fusecli.models import FusionModel, ModelSpec
from fusecli.train.data import load_luma

from .conftest import SAMPLES


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_colour_visible_keeps_its_chroma(shipped_auif):
    ir, _ = read_image(SAMPLES / "ir.png")
    vis, info = read_image(SAMPLES / "vis_color.png")
    assert info.channels == 3
    fused = fuse_images(shipped_auif, [ir, vis])
    assert fused.shape == vis.shape
    f_ycc, v_ycc = rgb_to_ycbcr(fused), rgb_to_ycbcr(vis)
    # where the RGB result was not clipped, Cb/Cr are the visible image's
    unclipped = ((fused > 0.002) & (fused < 0.998)).all(dim=1, keepdim=True).expand(-1, 2, -1, -1)
    assert unclipped.float().mean() > 0.5
    diff = (f_ycc[:, 1:] - v_ycc[:, 1:]).abs()[unclipped]
    assert diff.max() < 1e-4
    # and the luminance is the fused one, not the visible one
    assert (f_ycc[:, :1] - v_ycc[:, :1]).abs().mean() > 0.01


def test_gray_in_gray_out_and_forced_gray(shipped_auif, tmp_path):
    out = fuse_files(shipped_auif, [SAMPLES / "ir.png", SAMPLES / "vis.png"], tmp_path / "g.png")
    assert out.channels == 1
    assert cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    out = fuse_files(shipped_auif, [SAMPLES / "ir.png", SAMPLES / "vis_color.png"], tmp_path / "c.png", gray=True)
    assert out.channels == 1


def test_colour_output_luminance_matches_gray_output(shipped_auif, tmp_path):
    """vis.png is the luma of vis_color.png: fused colour and fused gray agree in luminance."""
    fuse_files(shipped_auif, [SAMPLES / "ir.png", SAMPLES / "vis.png"], tmp_path / "g.png")
    fuse_files(shipped_auif, [SAMPLES / "ir.png", SAMPLES / "vis_color.png"], tmp_path / "c.png")
    gray = cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED).astype(float)
    colour = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED).astype(float)
    luma = 0.299 * colour[..., 2] + 0.587 * colour[..., 1] + 0.114 * colour[..., 0]
    assert np.median(np.abs(luma - gray)) <= 1.0


def test_sixteen_bit_in_and_out(shipped_auif, tmp_path):
    ir16, info = read_image(SAMPLES / "ir16.png")
    assert info.bit_depth == 16
    fuse_files(shipped_auif, [SAMPLES / "ir16.png", SAMPLES / "vis.png"], tmp_path / "f16.png", bit_depth=16)
    out = cv2.imread(str(tmp_path / "f16.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.max() > 255


def test_size_mismatch_names_both_files(shipped_auif, tmp_path):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 120), np.uint8))
    with pytest.raises(ShapeError, match=r"ir.png 320x240, small.png 120x100"):
        fuse_files(shipped_auif, [SAMPLES / "ir.png", small], tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


def test_output_never_overwrites_an_input(shipped_auif, tmp_path):
    ir, vis = tmp_path / "ir.png", tmp_path / "vis.png"
    ir.write_bytes((SAMPLES / "ir.png").read_bytes())
    vis.write_bytes((SAMPLES / "vis.png").read_bytes())
    before = _sha(vis)
    with pytest.raises(ImageWriteError):
        fuse_files(shipped_auif, [ir, vis], tmp_path / "." / "vis.png")
    assert _sha(vis) == before


def test_existing_output_survives_a_failed_run(shipped_auif, tmp_path):
    out = tmp_path / "fused.png"
    out.write_bytes(b"previous result")
    with pytest.raises(ConfigError):
        fuse_files(shipped_auif, [SAMPLES / "ir.png", SAMPLES / "vis.png"], out, bit_depth=12)
    with pytest.raises(ImageWriteError):
        fuse_files(shipped_auif, [SAMPLES / "ir.png", SAMPLES / "vis.png"], tmp_path / "f.jpg", bit_depth=16)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.png"]


def test_wrong_number_of_inputs(shipped_auif, tmp_path):
    with pytest.raises(ShapeError, match="fuses 2 images"):
        fuse_files(shipped_auif, [SAMPLES / "ir.png"], tmp_path / "o.png")


def test_training_sees_the_same_luminance_as_inference():
    image, _ = read_image(SAMPLES / "vis_color.png")
    y_infer = rgb_to_ycbcr(image)[:, :1]
    assert torch.equal(load_luma(SAMPLES / "vis_color.png"), y_infer[0])


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA"):
            resolve_device("cuda:0")


def test_stretch_16bit_uses_the_full_range_of_raw_thermal(shipped_auif, tmp_path):
    ir16, info = read_image(SAMPLES / "ir16.png")
    assert info.bit_depth == 16 and ir16.max() < 0.25  # 14-bit counts fill a quarter of the range
    stretched = stretch(ir16)
    assert stretched.min() == 0 and stretched.max() == 1
    assert torch.equal(stretch(torch.full((1, 1, 8, 8), 0.3)), torch.full((1, 1, 8, 8), 0.3))
    plain = fuse_files(shipped_auif, [SAMPLES / "ir16.png", SAMPLES / "vis.png"], tmp_path / "a.png",
                       stretch_16bit=False)
    fuse_files(shipped_auif, [SAMPLES / "ir16.png", SAMPLES / "vis.png"], tmp_path / "b.png", stretch_16bit=True)
    a = cv2.imread(str(tmp_path / "a.png"), 0).astype(float)
    b = cv2.imread(str(tmp_path / "b.png"), 0).astype(float)
    assert plain.channels == 1 and b.std() > a.std() + 5  # the warm targets stand out
    assert plain.notes == ()
    # the default stretches this source (it uses under half of 0..65535) and says so once
    auto = fuse_files(shipped_auif, [SAMPLES / "ir16.png", SAMPLES / "vis.png"], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert len(auto.notes) == 1 and "ir16.png" in auto.notes[0] and "--no-stretch-16bit" in auto.notes[0]


class _Raises(FusionModel):
    """A one-parameter 'model' whose forward raises the given error."""

    spec = ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1, min_size=1,
                     receptive_radius=None, tileable=True)

    def __init__(self, error: Exception):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.error = error

    def forward(self, *sources):
        raise self.error


def test_out_of_memory_becomes_one_actionable_error_and_other_errors_pass():
    from fusecli.inference import fuse_tensors

    pair = [torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)]
    for error in (torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("DefaultCPUAllocator: can't allocate memory")):
        with pytest.raises(DeviceError, match="out of memory .* 8x8 image: use --tile"):
            fuse_tensors(_Raises(error), pair)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug is not reported as memory
        fuse_tensors(_Raises(RuntimeError("shape mismatch")), pair)
