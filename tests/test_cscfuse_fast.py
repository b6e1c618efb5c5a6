"""The fast inference path of CSC-IVF and CSC-MSF (fusecli.models._csc_fast) against the reference
path (``path="reference"``, the module-by-module computation): encoders, decoder, fusion rules, odd
sizes and batches, and the 8-bit outputs users get (at most 1 grey level apart, >= 99.9 % identical)
on the samples, and at TNO's and CAVE's sizes with checkpoints in the official layouts (the
official files on TNO and CAVE with ../shared; else stand-ins: conftest's official_checkpoints,
ivf_pairs and cave_balloons)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusecli import create_model
from fusecli.errors import ConfigError
from fusecli.inference import fuse_tensors
from fusecli.io import read_image
from fusecli.models import _csc_fast
from fusecli.models.cscfuse_ivf import CSCIVF, CSCIVFConfig
from fusecli.models.cscfuse_msf import CSCMSF, CSCMSFConfig
from fusecli.models.layers import box_blur

from .conftest import SAMPLES, randomise_norms, synth_cube


def _pair(h: int, w: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ir = torch.rand(batch, 1, h, w, generator=g)
    vis = box_blur(torch.rand(batch, 1, h, w, generator=g), 3)
    return ir, vis


def _ivf(fusion: str = "saliency", seed: int = 0) -> tuple[CSCIVF, CSCIVF]:
    torch.manual_seed(seed)
    fast = CSCIVF(CSCIVFConfig(fusion=fusion))
    randomise_norms(fast, seed)
    ref = CSCIVF(CSCIVFConfig(fusion=fusion, path="reference"))
    ref.load_state_dict(fast.state_dict())
    return fast.eval(), ref.eval()


def _assert_8bit_close(fast: torch.Tensor, ref: torch.Tensor, identical: float = 0.999) -> None:
    a, b = (fast * 255).round(), (ref * 255).round()
    diff = (a - b).abs()
    assert diff.max() <= 1, f"{int(diff.max())} grey levels apart"
    assert (diff == 0).float().mean() >= identical


def test_path_is_validated():
    with pytest.raises(ConfigError, match="path"):
        CSCIVFConfig(path="quick")
    with pytest.raises(ConfigError, match="path"):
        CSCMSFConfig(path="quick")


@pytest.mark.parametrize("kind", ["base", "detail"])
def test_encoder_chain_equals_the_reference_branch(kind):
    fast, _ = _ivf()
    branch = getattr(fast, kind)
    x = _pair(23, 31)[0][0]
    with torch.no_grad():
        ref = branch(x[None])[0]  # (C, H, W)
        blur = box_blur(x[None], 11)[0]
        first = _csc_fast.fold_first(branch.units[0].enc.weight, branch.units[0].act, branch.units[0].norm)
        units = [_csc_fast.fold_dcu(u) for u in branch.units[1:]]
        planar = torch.empty_like(ref)
        rows = _csc_fast.run_chain(blur if kind == "base" else x - blur, x, first, units, planar=planar, block=64)
    assert torch.allclose(rows.t().reshape(ref.shape), ref, atol=1e-4 * ref.abs().max().item())
    assert torch.equal(planar, rows.t().reshape(ref.shape))


@pytest.mark.parametrize("shape", [(37, 53), (12, 12), (6, 9)])
def test_one_pass_decoder_equals_two_decoder_passes(shape):
    fast, _ = _ivf()
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 64, *shape, generator=g), torch.randn(2, 64, *shape, generator=g)
    with torch.no_grad():
        expected = fast.decoder(2 * a) + fast.decoder(2 * b)
        got = fast._decode_affine(2 * (a + b))
    assert torch.allclose(got, expected, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("fusion", ["saliency", "l1", "average", "add"])
def test_fast_forward_equals_reference_for_every_rule_and_batches(fusion):
    fast, ref = _ivf(fusion)
    ir, vis = _pair(41, 57, batch=2)
    with torch.inference_mode():
        assert fast.uses_fast_path(ir) and not ref.uses_fast_path(ir)
        a, b = fast(ir, vis), ref(ir, vis)
    assert torch.allclose(a, b, atol=2e-4)
    _assert_8bit_close(a, b)


def test_training_and_autograd_take_the_reference_path():
    fast, ref = _ivf()
    ir, vis = _pair(16, 20)
    assert not fast.uses_fast_path(ir)  # grad enabled
    with torch.no_grad():
        assert fast.uses_fast_path(ir)
        assert not fast.uses_fast_path(ir.double())
        fast.train()
        assert not fast.uses_fast_path(ir)


def test_run_parallel_keeps_order_threads_and_inference_mode():
    threads = torch.get_num_threads()
    with torch.inference_mode():
        out = _csc_fast.run_parallel([lambda i=i: (i, torch.is_inference_mode_enabled(), torch.get_num_threads())
                                      for i in range(5)])
    assert [o[0] for o in out] == list(range(5))
    assert all(o[1] for o in out) and all(o[2] == 1 for o in out)
    assert torch.get_num_threads() == threads


@pytest.mark.slow
def test_samples_fuse_the_same_in_8_bits():
    ir, _ = read_image(SAMPLES / "ir.png")
    vis, _ = read_image(SAMPLES / "vis.png")
    fast = create_model("cscfuse-ivf")
    ref = create_model("cscfuse-ivf", path="reference")
    _assert_8bit_close(fuse_tensors(fast, [ir, vis]), fuse_tensors(ref, [ir, vis]))


@pytest.mark.slow
def test_official_layout_checkpoint_fuses_the_same_in_8_bits_at_tno_size(official_checkpoints, ivf_pairs):
    """The official CSC-IVF files on TNO pair 01 (576x768); else the shipped weights in their layout
    on the samples mirrored to that size."""
    (pair,) = ivf_pairs("01", size=(576, 768))
    ir, _ = read_image(pair.ir)
    vis, _ = read_image(pair.vis)
    checkpoint = official_checkpoints / "cscfuse" / "CSC-IVF"
    fast = create_model("cscfuse-ivf", checkpoint=checkpoint)
    ref = create_model("cscfuse-ivf", checkpoint=checkpoint, path="reference")
    _assert_8bit_close(fuse_tensors(fast, [ir, vis]), fuse_tensors(ref, [ir, vis]))


# --- CSC-MSF -----------------------------------------------------------------------------------------

def _msf(seed: int = 0, **config) -> tuple[CSCMSF, CSCMSF]:
    torch.manual_seed(seed)
    fast = CSCMSF(CSCMSFConfig(channels=32, **config))
    randomise_norms(fast, seed)
    ref = CSCMSF(CSCMSFConfig(channels=32, path="reference", **config))
    ref.load_state_dict(fast.state_dict())
    return fast.eval(), ref.eval()


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("height", [61, 9])
def test_msf_backbone_in_bands_equals_the_whole_image(parts, height):
    fast, _ = _msf()
    x = torch.rand(31, height, 23, generator=torch.Generator().manual_seed(4))
    bb = fast.cube_backbone
    with torch.no_grad():
        folded = (_csc_fast.fold_first(bb.conv0.weight, bb.act0), [_csc_fast.fold_dcu(u) for u in bb.units])
        whole = _csc_fast.run_chain(x, x, *folded)
        jobs, finish = _csc_fast.split_chain(x, x, *folded, parts=parts)
        for job in reversed(jobs):  # the bands are independent
            job()
        assert torch.equal(finish(), whole)


@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("lr_size, guide_size", [((9, 14), (18, 28)), ((11, 7), (23, 15)), ((40, 24), (80, 48))])
def test_msf_fast_forward_equals_reference(radius, lr_size, guide_size):
    fast, ref = _msf(radius=radius)
    g = torch.Generator().manual_seed(3)
    guide = torch.rand(2, 3, *guide_size, generator=g)
    cube = torch.rand(2, 31, *lr_size, generator=g)
    with torch.inference_mode():
        assert fast.uses_fast_path(cube)
        a, b = fast(cube, guide), ref(cube, guide)
    assert torch.allclose(a, b, atol=1e-4 * b.abs().max().item())


def test_msf_box_sums_of_bands_equal_the_window_sums_inside_the_image():
    from fusecli.models.cscfuse_msf import _box_sum_

    g = torch.Generator().manual_seed(0)
    x = torch.rand(13, 9, 5, generator=g)  # (rows, w, C)
    for radius in (1, 2, 3):
        k = 2 * radius + 1  # zero padding + a divisor of 1: the sum over the window's pixels in the image
        sums = F.avg_pool2d(x.permute(2, 0, 1)[None], k, stride=1, padding=radius, divisor_override=1)
        sums = sums[0].permute(1, 2, 0)
        for y0, y1 in ((0, 13), (0, 4), (4, 9), (9, 13)):
            r0, r1 = max(y0 - radius, 0), min(y1 + radius, 13)
            out = torch.empty(y1 - y0, 9, 5)
            got = _box_sum_(x[r0:r1], radius, y0 - r0, r1 - y1, out, torch.empty_like(out))
            assert torch.allclose(got, sums[y0:y1], atol=1e-5)


def test_msf_synthetic_cube_from_the_samples_is_the_same_in_8_bits():
    rgb, _ = read_image(SAMPLES / "vis_color.png")
    guide = rgb[..., :200, :240].contiguous()
    cube = synth_cube(torch.nn.functional.avg_pool2d(guide, 2))
    fast, ref = _msf()
    with torch.inference_mode():
        _assert_8bit_close(fast(cube, guide).clamp(0, 1), ref(cube, guide).clamp(0, 1))


@pytest.mark.slow
def test_cave_crop_with_an_official_layout_checkpoint_is_the_same_in_8_bits(official_checkpoints, cave_balloons):
    """The official CSC-MSF file on a 256x256 crop of CAVE's balloons; else seeded weights in its
    layout on the stand-in scene made from the colour sample."""
    from fusecli.io import read_cube

    full, _ = read_cube(cave_balloons)
    rgb, _ = read_image(cave_balloons / "balloons_RGB.bmp")
    guide = rgb[..., 128:384, 128:384].contiguous()
    cube = torch.nn.functional.avg_pool2d(full[..., 128:384, 128:384], 2)
    checkpoint = official_checkpoints / "cscfuse" / "CSC-MSF"
    fast = create_model("cscfuse-msf", checkpoint=checkpoint)
    ref = create_model("cscfuse-msf", checkpoint=checkpoint, path="reference")
    with torch.inference_mode():
        _assert_8bit_close(fast(cube, guide).clamp(0, 1), ref(cube, guide).clamp(0, 1))
