"""CSC-IVF (cscfuse-ivf): official checkpoint loading (the folder loader's stem prefixes), the DCU
update, auto-encoder reconstruction, the fusion rules and their NaN guards, shapes and tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusecli import create_model
from fusecli.errors import CheckpointError, ConfigError
from fusecli.inference import fuse_tensors
from fusecli.io import read_image
from fusecli.models._weights import load_state_dict
from fusecli.models.cscfuse import DCU, CSCIVF, CSCIVFConfig, convert_official, l1_attention, saliency_weights


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_official_checkpoint_loads_strict(official_csc_ivf_dir):
    state, info = load_state_dict(official_csc_ivf_dir)
    # base and detail files share their key names: the loader prefixes every key with its file stem
    assert "LISTA_Base_Train/convLayer0.norm.weight" in state
    assert "LISTA_Detail_Train/convLayer0.norm.weight" in state
    assert "LISTA_Decoder/decode_last.1.weight" in state
    assert len(state) == 64 + 64 + 18
    model = CSCIVF()
    result = model.load_state_dict(convert_official(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert "LISTA_Detail_Train.model" in info


def test_folder_loader_prefixes_only_on_collision(tmp_path):
    disjoint, clash, same_stem = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (disjoint, clash, same_stem):
        d.mkdir()
    torch.save({"x": torch.zeros(1)}, disjoint / "one.pt")
    torch.save({"y": torch.ones(1)}, disjoint / "two.pt")
    assert sorted(load_state_dict(disjoint)[0]) == ["x", "y"]
    torch.save({"x": torch.zeros(1)}, clash / "one.pt")
    torch.save({"x": torch.ones(1), "y": torch.ones(1)}, clash / "two.pt")
    state = load_state_dict(clash)[0]
    assert sorted(state) == ["one/x", "two/x", "two/y"]
    assert state["two/x"].item() == 1
    torch.save({"x": torch.zeros(1)}, same_stem / "one.pt")
    torch.save({"x": torch.ones(1)}, same_stem / "one.pth")
    with pytest.raises(CheckpointError, match="more than one file"):
        load_state_dict(same_stem)


def test_dcu_update_is_one_ista_step():
    torch.manual_seed(0)
    unit = DCU(8, "sst").eval()
    with torch.no_grad():
        unit.norm.running_mean.uniform_(-0.1, 0.1)
        unit.norm.running_var.uniform_(0.5, 2)
        unit.act.theta.fill_(0.05)
        data, code = torch.rand(2, 1, 11, 13), torch.randn(2, 8, 11, 13)
        dec = F.conv2d(F.pad(code, (1, 1, 1, 1), mode="reflect"), unit.dec.weight)
        y = unit.norm(code + F.conv2d(F.pad(data - dec, (1, 1, 1, 1), mode="reflect"), unit.enc.weight))
        expected = y.sign() * (y.abs() - 0.05).clamp_min(0)
        assert torch.allclose(unit(data, code), expected, atol=1e-6)
        # a None code is a zero code (the decoder of zeros contributes nothing)
        assert torch.allclose(unit(data, None), unit(data, torch.zeros_like(code)), atol=1e-6)


@pytest.mark.parametrize("name", ["01.png", "17.png"])
def test_autoencoder_reconstructs_tno(official_csc_ivf, tno_dir, name):
    for source in ("ir", "vis"):
        img, _ = read_image(tno_dir / source / name)
        h, w = img.shape[-2:]
        crop = img[..., h // 2 - 80:h // 2 + 80, w // 2 - 100:w // 2 + 100]  # away from the frame
        with torch.no_grad():
            rec = official_csc_ivf.reconstruct(crop)
        assert _psnr(rec, crop) >= 25


@pytest.mark.parametrize("fusion", ["saliency", "l1", "average", "add"])
def test_every_fusion_rule_fuses_odd_sizes(official_csc_ivf_dir, fusion):
    model = create_model("cscfuse-ivf", checkpoint=official_csc_ivf_dir, fusion=fusion)
    g = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(1, 1, 37, 53, generator=g), torch.rand(1, 1, 37, 53, generator=g)
    out = fuse_tensors(model, [ir, vis])
    assert out.shape == (1, 1, 37, 53)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_saliency_weights_sum_to_one_and_survive_constant_channels():
    rng = np.random.default_rng(0)
    ir = rng.random((3, 30, 40), dtype=np.float32)
    vis = rng.random((3, 30, 40), dtype=np.float32)
    ir[1] = 0.7  # constant channel: the official min-max normalisation divides by zero here
    vis[2] = -3.0
    w_ir, w_vis = saliency_weights(ir, vis)
    assert np.isfinite(w_ir).all() and np.isfinite(w_vis).all()
    assert np.allclose(w_ir + w_vis, 1, atol=1e-5)
    assert (w_ir >= -1e-3).all() and (w_vis >= -1e-3).all()


def test_l1_attention_guards_zero_activity():
    a, b = torch.zeros(1, 4, 5, 6), torch.zeros(1, 4, 5, 6)
    b[..., 0, 0] = 1.0
    fused = l1_attention(a, b)
    assert torch.isfinite(fused).all()
    assert fused[..., 0, 0].eq(1).all()  # where only b is active, b wins


def test_constant_images_give_finite_output(official_csc_ivf):
    ir, vis = torch.full((1, 1, 24, 30), 0.5), torch.zeros(1, 1, 24, 30)
    out = fuse_tensors(official_csc_ivf, [ir, vis])
    assert torch.isfinite(out).all()


def test_tiled_equals_untiled_for_local_rules(official_csc_ivf_dir):
    model = create_model("cscfuse-ivf", checkpoint=official_csc_ivf_dir, fusion="l1")
    assert model.receptive_radius == 24
    g = torch.Generator().manual_seed(2)
    ir, vis = torch.rand(1, 1, 61, 75, generator=g), torch.rand(1, 1, 61, 75, generator=g)
    whole = fuse_tensors(model, [ir, vis])
    tiles = fuse_tensors(model, [ir, vis], tile=32, overlap=0)
    assert (whole - tiles).abs().max() < 1 / 255
    # the saliency rule is global: no finite radius (tiling falls back to `overlap` pixels of context)
    assert create_model("cscfuse-ivf", checkpoint=official_csc_ivf_dir).receptive_radius is None


def test_wrong_checkpoint_is_refused(official_auif_dir, tmp_path):
    with pytest.raises(CheckpointError, match="not a CSC-IVF key"):
        create_model("cscfuse-ivf", checkpoint=official_auif_dir)
    torch.save({"decode_last.1.weight": torch.zeros(32, 64, 3, 3)}, tmp_path / "dec.pth")
    with pytest.raises(CheckpointError, match="missing"):
        create_model("cscfuse-ivf", checkpoint=tmp_path / "dec.pth")
    with pytest.raises(CheckpointError, match="no default weights"):
        create_model("cscfuse-ivf")


def test_config_is_validated():
    with pytest.raises(ConfigError, match="fusion"):
        CSCIVFConfig(fusion="max")
    with pytest.raises(ConfigError):
        CSCIVFConfig(blur_size=10)
