"""The classical rules as models, and the ir-vis default (auif-fusion): its model, recipe and CLI use."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fusecli import create_model, fuse_images, read_image
from fusecli.cli import app
from fusecli.errors import CheckpointError
from fusecli.models.auif_fusion import AUIFFusion, AUIFFusionConfig, transfer_detail, warm_start_from_auif
from fusecli.models.classical import _BINOMIAL, _blur, _expand, _reduce, collapse_pyramid, laplacian_pyramid, usable_levels
from fusecli.models._weights import find_card
from fusecli.train import darken, intensity_gradient_loss

from .conftest import SAMPLES

KERNEL = torch.tensor(_BINOMIAL)


# --- classical rules ------------------------------------------------------------------------------

def test_average_and_max_are_the_per_pixel_rules():
    a, b = torch.rand(2, 1, 13, 17), torch.rand(2, 1, 13, 17)
    assert torch.equal(create_model("average")(a, b), (a + b) / 2)
    assert torch.equal(create_model("max")(a, b), torch.maximum(a, b))


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 37, 53), (1, 1, 5, 200)])
def test_laplacian_pyramid_collapses_back_to_the_image(shape):
    x = torch.rand(shape)
    levels = usable_levels(shape[-2], shape[-1], 4)
    pyramid = laplacian_pyramid(x, levels, KERNEL)
    assert len(pyramid) == levels + 1
    assert torch.allclose(collapse_pyramid(pyramid, KERNEL), x, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 37, 50), (1, 3, 48, 64), (1, 1, 9, 8)])
def test_pyramid_steps_equal_their_definitions(shape):
    """REDUCE = blur, keep every second pixel; EXPAND = zeros between samples, blur, x4 (Burt & Adelson).
    The fast forms compute only the kept / non-zero taps: the same values (float64: exactly)."""
    x, k = torch.rand(shape, dtype=torch.float64), KERNEL.double()
    small = _blur(x, k)[..., ::2, ::2]
    assert torch.equal(_reduce(x, k), small)
    up = small.new_zeros(*small.shape[:2], 2 * small.shape[-2], 2 * small.shape[-1])
    up[..., ::2, ::2] = small
    assert torch.allclose(_expand(small, shape[-2:], k), 4 * _blur(up, k)[..., :shape[-2], :shape[-1]], atol=1e-15)


def test_levels_shrink_for_small_images():
    assert usable_levels(480, 640, 4) == 4
    assert usable_levels(40, 640, 4) == 2  # 40 -> 20 -> 10; a third halving would leave 5 < 8
    assert usable_levels(10, 10, 4) == 0


def test_laplacian_fusion_of_an_image_with_itself_is_the_image():
    x = torch.rand(1, 1, 48, 64)
    assert torch.allclose(create_model("laplacian")(x, x), x, atol=1e-5)


def test_laplacian_fusion_keeps_the_stronger_detail_of_each_source():
    """Fine texture present in one source only survives at nearly full contrast (average halves it)."""
    xx = torch.arange(96.0).expand(96, 96)
    textured = 0.5 + 0.3 * torch.sign(torch.sin(xx * 1.3))[None, None]
    flat = torch.full_like(textured, 0.5)
    inner = (..., slice(16, -16), slice(16, -16))
    lap = create_model("laplacian")(textured, flat)[inner]
    avg = create_model("average")(textured, flat)[inner]
    assert (lap - 0.5).abs().mean() > 0.8 * 0.3
    assert (avg - 0.5).abs().mean() == pytest.approx(0.15, abs=1e-3)


# --- auif-fusion ----------------------------------------------------------------------------------

def test_untrained_network_is_the_per_pixel_average():
    """The default output ("sources"): the untrained fusion step is the classical average rule."""
    model = AUIFFusion().eval()
    warm_start_from_auif(model, find_card("auif.roadscene").load_state_dict())
    ir, vis = torch.rand(1, 1, 40, 44), torch.rand(1, 1, 40, 44)
    with torch.no_grad():
        assert torch.allclose(model.network(ir, vis), (ir + vis) / 2, atol=1e-6)
    assert not hasattr(model, "decoder")  # the sources are fused directly


def test_untrained_decoder_variant_averages_bases_and_adds_details():
    model = AUIFFusion(AUIFFusionConfig(output="decoder", detail_levels=0)).eval()
    warm_start_from_auif(model, find_card("auif.roadscene").load_state_dict())
    ir, vis = torch.rand(1, 1, 40, 44), torch.rand(1, 1, 40, 44)
    with torch.no_grad():
        base, detail = model.encode(torch.cat([ir, vis]))
        expect = model.decoder((base[:1] + base[1:]) / 2 + detail[:1] + detail[1:])
        assert torch.allclose(model(ir, vis), expect, atol=1e-5)


def test_where_the_step_chooses_one_source_its_pixels_pass_unchanged():
    model = AUIFFusion(AUIFFusionConfig(detail_levels=0)).eval()
    with torch.no_grad():
        model.fusion.net[-1].bias.copy_(torch.tensor([30.0, 0.0, 0.0]))  # w = 1, no detail: the ir image
    ir, vis = torch.rand(1, 1, 40, 44), torch.rand(1, 1, 40, 44)
    with torch.no_grad():
        assert torch.allclose(model(ir, vis), ir, atol=1e-6)


def test_warm_start_takes_the_auto_encoder_and_leaves_only_the_fusion_step():
    model = AUIFFusion()
    state = find_card("auif.roadscene").load_state_dict()
    fresh = warm_start_from_auif(model, state)
    assert fresh and all(k.startswith("fusion.") for k in fresh)
    assert torch.equal(model.state_dict()["base.3.kernel"], state["base.3.kernel"])
    with pytest.raises(CheckpointError, match="warm start"):
        warm_start_from_auif(model, {"conv.weight": torch.zeros(1)})


def test_training_mode_keeps_batchnorm_statistics():
    model = AUIFFusion(AUIFFusionConfig(output="decoder")).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert model.fusion.training
    before = bns[0].running_mean.clone()
    model(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)).mean().backward()
    assert torch.equal(bns[0].running_mean, before)
    # that every trainable parameter of the default model gets a gradient: test_models_registry


def test_auif_fusion_tiles_exactly_within_its_receptive_radius():
    torch.manual_seed(0)
    model = AUIFFusion(AUIFFusionConfig(detail_levels=0)).eval()
    warm_start_from_auif(model, find_card("auif.roadscene").load_state_dict())
    with torch.no_grad():
        model.fusion.net[-1].weight.normal_(0, 0.1)  # a non-trivial fusion step
        model.fusion.net[-1].bias.copy_(torch.tensor([0.3, 0.5, 0.5]))
    ir, vis = torch.rand(1, 1, 150, 170), torch.rand(1, 1, 150, 170)
    from fusecli.inference import fuse_tensors
    whole = fuse_tensors(model, [ir, vis])
    tiles = fuse_tensors(model, [ir, vis], tile=64)
    assert (whole - tiles).abs().max() < 1e-5


def test_detail_transfer_of_the_average_is_the_laplacian_rule():
    """With the average as the network's output, the detail step gives exactly the ``laplacian`` rule."""
    a, b = torch.rand(1, 1, 96, 120), torch.rand(1, 1, 96, 120)
    out = transfer_detail((a + b) / 2, a, b, 4, KERNEL)
    assert torch.allclose(out, create_model("laplacian")(a, b), atol=1e-5)
    assert torch.allclose(transfer_detail(a, a, a, 3, KERNEL), a, atol=1e-5)


def test_the_default_model_is_auif_fusion_with_its_shipped_weights(tmp_path):
    from fusecli.models import DEFAULT_MODEL
    assert DEFAULT_MODEL == "auif-fusion"
    assert create_model("auif-fusion").weights_info.startswith("auif-fusion.roadscene (sha256 ")
    out = tmp_path / "f.png"
    result = CliRunner().invoke(app, ["fuse", str(SAMPLES / "ir.png"), str(SAMPLES / "vis_color.png"), "-o", str(out),
                                      "-d", "cpu"])
    assert result.exit_code == 0, result.output
    fused, _ = read_image(out)
    expect = fuse_images(create_model("auif-fusion"), [read_image(SAMPLES / "ir.png")[0],
                                                         read_image(SAMPLES / "vis_color.png")[0]])
    assert (fused - expect).abs().max() <= 1 / 255 + 1e-6


def test_a_dark_pair_is_not_fused_darker_than_its_sources():
    """The night failure of AUIF's Sum rule: dark visible, dim infrared. The default keeps (about) the
    brighter source's level and the warm target."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(128.0), indexing="ij")
    vis = (0.06 + 0.03 * torch.rand(1, 1, 96, 128, generator=g)).clamp(0, 1)           # ~15/255, near black
    ir = (0.10 + 0.5 * torch.exp(-((yy - 48) ** 2 + (xx - 64) ** 2) / 200))[None, None]  # a warm target
    with torch.no_grad():
        fused = create_model("auif-fusion")(ir, vis)
    assert fused.mean() >= max(ir.mean(), vis.mean()) - 2 / 255
    assert fused[0, 0, 48, 64] > 0.5  # the target stays bright


# --- the recipe -----------------------------------------------------------------------------------

def test_darken_changes_only_the_chosen_samples_and_only_darkens():
    vis = torch.rand(64, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = darken(vis, p=0.5, generator=g)
    changed = (out != vis).flatten(1).any(1)
    assert 16 < int(changed.sum()) < 48
    assert (out <= vis + 1e-7).all()
    assert out[changed].mean() < 0.5 * vis[changed].mean()
    assert torch.equal(darken(vis, p=0.0), vis)


def test_intensity_gradient_loss_is_zero_for_the_max_of_a_source_and_its_copy():
    a = torch.rand(2, 1, 16, 16)
    loss, logs = intensity_gradient_loss(a, a, a * 0.5)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    worse, _ = intensity_gradient_loss(a * 0.5, a, a * 0.5)
    assert worse.item() > 0.05


def _write_ivf(root, n=3, size=(40, 48)):
    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (5, 5), 0))
        cv2.imwrite(str(root / "vis" / f"{i:02d}.png"), cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (3, 3), 0))
    return root


def test_cli_trains_auif_fusion_from_an_auto_encoder(tmp_path):
    data = _write_ivf(tmp_path / "ivf")
    out = tmp_path / "run"
    args = ["train", "auif-fusion", "--data", str(data), "-o", str(out), "--epochs", "2", "--steps-per-epoch", "2",
            "--batch-size", "2", "--crop", "24", "-d", "cpu", "--init", str(find_card("auif.roadscene").path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = yaml.safe_load((out / "auif-fusion.yaml").read_text())
    assert card["training"]["init"]["weights"].startswith(str(find_card("auif.roadscene").path))
    assert card["training"]["options"] == {"intensity": 1.0, "gradient": 4.0, "dark_p": 0.5}
    model = create_model("auif-fusion", checkpoint=out / "auif-fusion.yaml")
    trained = model.state_dict()
    assert not torch.equal(trained["fusion.net.7.weight"], torch.zeros_like(trained["fusion.net.7.weight"]))
    bad = CliRunner().invoke(app, ["train", "auif-fusion", "--data", str(data), "-o", str(tmp_path / "r2"),
                                   "--crop", "24", "--init", str(SAMPLES / "ir.png"), "-d", "cpu"])
    assert bad.exit_code == 1 and "not a readable" in bad.output
