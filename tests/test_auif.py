"""AUIF: official checkpoint loading, the fast operator against the official two-convolution one,
determinism and the shipped weights (shapes, small inputs, tiling, the converter: test_models_registry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusecli import create_model
from fusecli.errors import CheckpointError
from fusecli.inference import fuse_tensors
from fusecli.io import quantize, read_image
from fusecli.models._weights import load_state_dict
from fusecli.models.auif import AUIF, AUIFConfig, Stage, convert_official, normalized_laplacian


def _ramp_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    smooth = 0.5 + 0.3 * torch.sin(6 * xx) * torch.cos(4 * yy)
    return (smooth + 0.15 * torch.rand(h, w, generator=g)).clamp(0, 1)[None, None]


def test_official_layout_loads_strict(official_checkpoints):
    """The authors' three files (../shared; else the shipped weights written in their layout) load
    strict through convert_official."""
    state, _ = load_state_dict(official_checkpoints / "auif")
    assert len(state) == 186  # 2 encoders x 10 layers x 9 tensors + 6 decoder tensors
    model = AUIF()
    result = model.load_state_dict(convert_official(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_adjoint_kernel_is_the_adjoint_of_the_operator():
    """<K x, z> == <x, K^T z> for the zero-padded operator and the rot180/transposed kernel."""
    torch.manual_seed(0)
    stage = Stage(filters=8)
    x, z = torch.randn(1, 1, 12, 15), torch.randn(1, 8, 12, 15)
    kx = F.conv2d(x, stage.kernel, padding=1)
    ktz = F.conv2d(z, stage._adjoint_kernel(), padding=1)
    assert torch.allclose((kx * z).sum(), (x * ktz).sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("grad", [True, False], ids=["autograd-conv", "inference-shifts"])
@pytest.mark.parametrize("shape", [(3, 3), (3, 17), (10, 13), (37, 64), (65, 31)])
def test_composed_operator_equals_direct(shape, grad):
    """The composed single-channel kernels with exact borders compute the official K^T K."""
    torch.manual_seed(1)
    stage = Stage()
    x = torch.rand(2, 1, *shape)
    with torch.set_grad_enabled(grad):
        direct, composed = stage.gram_direct(x), stage.gram_composed(x)
    assert torch.allclose(direct, composed, rtol=1e-5, atol=1e-4 * direct.abs().max().item())


def test_composed_gradients_equal_direct():
    torch.manual_seed(2)
    stage = Stage()
    x = torch.rand(1, 1, 20, 23)
    g_direct = torch.autograd.grad(stage.gram_direct(x).square().sum(), stage.kernel)[0]
    g_comp = torch.autograd.grad(stage.gram_composed(x).square().sum(), stage.kernel)[0]
    assert torch.allclose(g_direct, g_comp, rtol=1e-4, atol=1e-3 * g_direct.abs().max().item())


def test_laplacian_matches_dense_kernel():
    """The running-sum Laplacian equals kornia's normalised 19x19 kernel applied densely."""
    x = _ramp_image(40, 50)
    k = torch.ones(19, 19)
    k[9, 9] = 1 - 361
    k = k / k.abs().sum()
    dense = F.conv2d(F.pad(x, (9, 9, 9, 9), mode="reflect"), k[None, None])
    assert torch.allclose(normalized_laplacian(x, 19), dense, atol=1e-6)


@pytest.mark.slow
def test_fast_path_matches_the_direct_operator_in_8_bits(shipped_auif):
    """Composed vs direct (the authors' two-convolution) operator on the samples, after the authors'
    round-to-uint8: at most 1 grey level apart, >= 99.9 % of pixels identical."""
    from .conftest import SAMPLES

    ir, _ = read_image(SAMPLES / "ir.png")
    vis, _ = read_image(SAMPLES / "vis.png")
    direct = create_model("auif", operator="direct")
    with torch.inference_mode():
        a = quantize(shipped_auif(ir, vis)).astype(int)
        b = quantize(direct(ir, vis)).astype(int)
    assert np.abs(a - b).max() <= 1
    assert (a == b).mean() >= 0.999


def test_fusion_is_deterministic(shipped_auif):
    ir, vis = _ramp_image(90, 120, 4), _ramp_image(90, 120, 5)
    a = quantize(fuse_tensors(shipped_auif, [ir, vis]))
    b = quantize(fuse_tensors(shipped_auif, [ir, vis]))
    assert a.tobytes() == b.tobytes()


def test_fused_image_takes_from_both_sources(shipped_auif):
    """A bright IR target on a dark visible scene must show up in the fused image."""
    vis = _ramp_image(64, 64, 6) * 0.3
    ir = torch.full((1, 1, 64, 64), 0.2)
    ir[..., 24:40, 24:40] = 0.95
    out = fuse_tensors(shipped_auif, [ir, vis])
    assert out[..., 28:36, 28:36].mean() > out[..., :10, :10].mean() + 0.2
    assert (out - ir).abs().mean() > 0.01  # not just a copy of the IR image


def test_wrong_checkpoint_names_the_keys(tmp_path):
    torch.save({"conv1.0.kernel": torch.zeros(32, 1, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing") as info:
        create_model("auif", checkpoint=tmp_path / "bad.pth")
    assert "conv1.0.kernel" in str(info.value) or "base.0.kernel" in str(info.value)


def _official_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fusecli's AUIF keys in the official files' layout (base.* -> conv1.*, detail.* -> conv2.*)."""
    renamed = {"base": "conv1", "detail": "conv2", "decoder": "decoder"}
    return {renamed[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in state.items()}


def test_wrong_shape_is_reported(shipped_auif, tmp_path):
    state = _official_layout(shipped_auif.state_dict())
    state["conv1.0.kernel"] = torch.zeros(32, 1, 3, 3)
    torch.save(state, tmp_path / "auif.pth")
    with pytest.raises(CheckpointError, match=r"wrong shape: base.0.kernel \(32, 1, 3, 3\)"):
        create_model("auif", checkpoint=tmp_path / "auif.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        create_model("auif", checkpoint=tmp_path / "x.pth")


def test_config_is_validated():
    with pytest.raises(Exception, match="fusion"):
        AUIFConfig(fusion="max")


def test_calibrated_sum_rule_adds_the_decoder_logits():
    """With calibrate_sum_offset, Sum fusion is exactly logit(ir) + logit(vis) of the decoder."""
    import dataclasses

    from fusecli.models.auif import calibrate_sum_offset

    torch.manual_seed(3)
    model = AUIF().double().eval()
    bn = model.decoder[2]
    with torch.no_grad():
        bn.running_mean.fill_(0.7)
        bn.running_var.fill_(0.4)
        bn.bias.fill_(-0.3)
    offset = calibrate_sum_offset(model)
    assert offset != 0
    calibrated = AUIF(dataclasses.replace(model.config, sum_offset=offset)).double().eval()
    calibrated.load_state_dict(model.state_dict())
    ir, vis = _ramp_image(30, 40, 7).double(), _ramp_image(30, 40, 8).double()
    with torch.no_grad():
        fused = calibrated(ir, vis)
        expected = torch.sigmoid(torch.logit(model.reconstruct(ir)) + torch.logit(model.reconstruct(vis)))
    assert torch.allclose(fused, expected, atol=1e-9)


def test_shipped_weights_load_verified_and_fuse():
    model = create_model("auif")
    assert "auif.roadscene" in model.weights_info
    assert model.config.sum_offset != 0
    ir, vis = _ramp_image(40, 50, 9), _ramp_image(40, 50, 10)
    out = fuse_tensors(model, [ir, vis])
    assert out.shape == (1, 1, 40, 50) and 0.05 < out.mean() < 0.95


def test_corrupt_shipped_weights_are_refused(tmp_path, monkeypatch):
    from fusecli.models._weights import weights_dir

    for f in weights_dir().iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    blob = tmp_path / "auif.roadscene.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    monkeypatch.setenv("FUSECLI_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="sha256"):
        create_model("auif")


def test_card_from_training_loads_with_checkpoint_option(tmp_path):
    from fusecli.models._weights import weights_dir

    for f in weights_dir().iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    model = create_model("auif", checkpoint=tmp_path / "auif.roadscene.yaml")
    assert model.config.sum_offset == create_model("auif").config.sum_offset
