"""CSC-IVF (cscfuse-ivf): official checkpoint loading (the folder loader's stem prefixes), the DCU
update, auto-encoder reconstruction, the fusion rules and their NaN guards, shapes and tiling; the
torch saliency rule and guided filter against the official NumPy/OpenCV formulation (kept below as
the reference, with He et al.'s guided filter from tests/guided_reference.py in place of
ximgproc's); strict loading of all five official CSCFuse files."""

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
from fusecli.models.cscfuse_ivf import (DCU, CSCIVF, CSCIVFConfig, convert_official, histogram_saliency, l1_attention,
                                    saliency_weights)
from fusecli.models.layers import SoftThreshold, box_mean, guided_filter

from .guided_reference import guided_filter as reference_guided_filter

cv2 = pytest.importorskip("cv2")


# --- the official saliency rule in NumPy/OpenCV (fusecli's implementation before it moved to torch) ---

_DISTANCE = np.abs(np.arange(256, dtype=np.float64)[:, None] - np.arange(256, dtype=np.float64)[None, :])


def _np_normalise(x):
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, np.float32(1)), np.float32(0)).astype(np.float32)


def _np_histogram_saliency(norm):
    c = norm.shape[0]
    q = (norm * 255).astype(np.int64).reshape(c, -1)
    hist = np.bincount((q + 256 * np.arange(c)[:, None]).ravel(), minlength=256 * c).reshape(c, 256)
    return np.take_along_axis((hist / q.shape[1]) @ _DISTANCE, q, axis=1).reshape(norm.shape)


def _np_saliency_weights(ir, vis, radius=45, eps=0.01):
    """(C, H, W) float32 -> (w_ir, w_vis): the official saliency_weight, one channel at a time."""
    n_vis, n_ir = _np_normalise(vis), _np_normalise(ir)
    s_vis, s_ir = _np_histogram_saliency(n_vis) + 1e-12, _np_histogram_saliency(n_ir) + 1e-12
    p_vis, p_ir = (s_vis / (s_vis + s_ir)).astype(np.float32), (s_ir / (s_vis + s_ir)).astype(np.float32)
    w_vis = np.stack([reference_guided_filter(n_vis[c], p_vis[c], radius, eps) for c in range(len(n_vis))])
    w_ir = np.stack([reference_guided_filter(n_ir[c], p_ir[c], radius, eps) for c in range(len(n_ir))])
    w_vis, w_ir = w_vis + np.float32(1e-12), w_ir + np.float32(1e-12)
    return w_ir / (w_vis + w_ir), w_vis / (w_vis + w_ir)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_official_layout_loads_strict(official_checkpoints):
    """The authors' CSC-IVF folder (../shared; else the shipped weights in its layout) loads strict."""
    state, info = load_state_dict(official_checkpoints / "cscfuse" / "CSC-IVF")
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


def test_autoencoder_reconstructs_ivf_images(official_checkpoints, ivf_pairs):
    """decoder(base(x), detail(x)) ~ x, >= 25 dB, with the official weights on TNO 01 and 17 (else
    the shipped ones, loaded from the official layout, on the samples)."""
    model = create_model("cscfuse-ivf", checkpoint=official_checkpoints / "cscfuse" / "CSC-IVF")
    for pair in ivf_pairs("01", "17"):
        for path in (pair.ir, pair.vis):
            img, _ = read_image(path)
            h, w = img.shape[-2:]
            crop = img[..., h // 2 - 80:h // 2 + 80, w // 2 - 100:w // 2 + 100]  # away from the frame
            with torch.no_grad():
                rec = model.reconstruct(crop)
            assert _psnr(rec, crop) >= 25, (pair.source, path.name)


@pytest.mark.parametrize("fusion", ["saliency", "l1", "average", "add"])
def test_every_fusion_rule_fuses_odd_sizes(fusion):
    model = create_model("cscfuse-ivf", fusion=fusion)  # the shipped weights
    g = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(1, 1, 37, 53, generator=g), torch.rand(1, 1, 37, 53, generator=g)
    out = fuse_tensors(model, [ir, vis])
    assert out.shape == (1, 1, 37, 53)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_saliency_weights_sum_to_one_and_survive_constant_channels():
    rng = np.random.default_rng(0)
    ir = torch.from_numpy(rng.random((2, 3, 30, 40), dtype=np.float32))
    vis = torch.from_numpy(rng.random((2, 3, 30, 40), dtype=np.float32))
    ir[:, 1] = 0.7  # constant channel: the official min-max normalisation divides by zero here
    vis[:, 2] = -3.0
    w_ir, w_vis = saliency_weights(ir, vis)
    assert torch.isfinite(w_ir).all() and torch.isfinite(w_vis).all()
    assert torch.allclose(w_ir + w_vis, torch.ones(()), atol=1e-5)
    assert (w_ir >= -1e-3).all() and (w_vis >= -1e-3).all()
    # a constant channel has no saliency (it normalises to zeros): its weight goes to the other source
    assert (w_ir[:, 1] < 1e-3).all() and (w_ir[:, 2] > 1 - 1e-3).all()


@pytest.mark.parametrize("shape", [(4, 37, 53), (3, 61, 90), (2, 5, 7)])
def test_torch_saliency_equals_the_numpy_opencv_reference(shape):
    rng = np.random.default_rng(sum(shape))
    ir = rng.standard_normal(shape).astype(np.float32)
    vis = (rng.random(shape) ** 3).astype(np.float32)
    ir[0] = 0.25  # a constant channel (the reference's guard)
    ref_ir, ref_vis = _np_saliency_weights(ir, vis)
    # a batch of two pairs, the second one different: each sample's weights are its own
    w_ir, w_vis = saliency_weights(torch.from_numpy(np.stack([ir, -ir])), torch.from_numpy(np.stack([vis, vis])))
    w_torch = saliency_weights(torch.from_numpy(ir)[None], torch.from_numpy(vis)[None], impl="torch")[0]
    assert np.abs(w_torch[0].numpy() - ref_ir).max() < 1e-5  # the all-torch path (as on CUDA)
    assert np.abs(w_ir[0].numpy() - ref_ir).max() < 1e-5
    assert np.abs(w_vis[0].numpy() - ref_vis).max() < 1e-5
    assert np.abs(w_ir[1].numpy() - _np_saliency_weights(-ir, vis)[0]).max() < 1e-5
    norm = torch.from_numpy(_np_normalise(vis))[None]
    assert np.abs(histogram_saliency(norm)[0].numpy() - _np_histogram_saliency(_np_normalise(vis))).max() < 1e-4


def test_guided_filter_and_box_mean_equal_opencv():
    rng = np.random.default_rng(3)
    guide, src = rng.random((2, 3, 40, 70), dtype=np.float32)
    ref = np.stack([reference_guided_filter(guide[c], src[c], 45, 0.01) for c in range(3)])
    g, p = torch.from_numpy(guide)[None], torch.from_numpy(src)[None]
    for impl in ("torch", "opencv", "auto"):  # torch: batched over channels (the CUDA path)
        assert np.abs(guided_filter(g, p, 45, 0.01, impl=impl)[0].numpy() - ref).max() < 1e-5
    # a one-channel guide serves every channel
    one = guided_filter(g[:, :1], p, 45, 0.01, impl="torch")[0].numpy()
    assert np.abs(one[2] - reference_guided_filter(guide[0], src[2], 45, 0.01)).max() < 1e-5
    # the box filter: OpenCV's BORDER_REFLECT for any radius (here larger than the image)
    box_ref = np.stack([cv2.boxFilter(src[c], -1, (91, 91), borderType=cv2.BORDER_REFLECT) for c in range(3)])
    assert np.abs(box_mean(p, 45, impl="torch")[0].numpy() - box_ref).max() < 1e-5
    assert np.abs(box_mean(p, 45, impl="opencv")[0].numpy() - box_ref).max() < 1e-5
    x = p.clone().requires_grad_(True)  # under autograd "auto" takes the differentiable torch path
    assert np.abs(box_mean(x, 45).detach()[0].numpy() - box_ref).max() < 1e-5
    # "clip": the mean over the pixels of the window inside the image
    small = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert box_mean(small, 1, "clip")[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)


def test_soft_threshold_clamp():
    sst = SoftThreshold(2, init=-0.1)
    x = torch.tensor([-1.0, -0.05, 0.05, 1.0]).view(1, 1, 2, 2).expand(1, 2, 2, 2)
    assert torch.allclose(sst(x), x + 0.1 * x.sign())  # unclamped negative threshold widens
    sst.clamp = True
    assert torch.equal(sst(x), x)  # clamped at 0: the identity


def test_l1_attention_guards_zero_activity():
    a, b = torch.zeros(1, 4, 5, 6), torch.zeros(1, 4, 5, 6)
    b[..., 0, 0] = 1.0
    fused = l1_attention(a, b)
    assert torch.isfinite(fused).all()
    assert fused[..., 0, 0].eq(1).all()  # where only b is active, b wins


def test_constant_images_give_finite_output():
    ir, vis = torch.full((1, 1, 24, 30), 0.5), torch.zeros(1, 1, 24, 30)
    out = fuse_tensors(create_model("cscfuse-ivf"), [ir, vis])
    assert torch.isfinite(out).all()


def test_tiled_equals_untiled_for_local_rules():
    model = create_model("cscfuse-ivf", fusion="l1")  # the shipped weights
    assert model.receptive_radius == 24
    g = torch.Generator().manual_seed(2)
    ir, vis = torch.rand(1, 1, 61, 75, generator=g), torch.rand(1, 1, 61, 75, generator=g)
    whole = fuse_tensors(model, [ir, vis])
    tiles = fuse_tensors(model, [ir, vis], tile=32, overlap=0)
    assert (whole - tiles).abs().max() < 1 / 255
    # the saliency rule is global: no finite radius (tiling falls back to `overlap` pixels of context)
    assert create_model("cscfuse-ivf").receptive_radius is None


def test_wrong_checkpoint_is_refused(shipped_auif, tmp_path):
    # AUIF's base encoder in the official AUIF layout (TCSVT_Encoder_Base.model: conv1.*)
    torch.save({"conv1." + k[5:]: v for k, v in shipped_auif.state_dict().items() if k.startswith("base.")},
               tmp_path / "TCSVT_Encoder_Base.model")
    with pytest.raises(CheckpointError, match="not a CSC-IVF key"):
        create_model("cscfuse-ivf", checkpoint=tmp_path / "TCSVT_Encoder_Base.model")
    torch.save({"decode_last.1.weight": torch.zeros(32, 64, 3, 3)}, tmp_path / "dec.pth")
    with pytest.raises(CheckpointError, match="missing"):
        create_model("cscfuse-ivf", checkpoint=tmp_path / "dec.pth")
    with pytest.raises(CheckpointError, match="no default weights"):
        create_model("cscfuse-msf")  # no shipped weights: the user must pass --checkpoint


def test_shipped_weights_load_with_their_card():
    model = create_model("cscfuse-ivf")
    assert model.weights_info.startswith("cscfuse-ivf.roadscene (sha256 ")


def test_config_is_validated():
    with pytest.raises(ConfigError, match="fusion"):
        CSCIVFConfig(fusion="max")
    with pytest.raises(ConfigError):
        CSCIVFConfig(blur_size=10)


def test_all_five_official_cscfuse_files_load_strict(official_checkpoints):
    """The five official CSCFuse files (../shared; else the shipped IVF/MEF and seeded MSF weights in
    their layouts) load strict, each only into its own network."""
    official_cscfuse_dir = official_checkpoints / "cscfuse"
    ivf = create_model("cscfuse-ivf", checkpoint=official_cscfuse_dir / "CSC-IVF")
    assert all(n in ivf.weights_info for n in ("LISTA_Base_Train.model", "LISTA_Detail_Train.model",
                                                "LISTA_Decoder.model"))
    for name, folder in (("cscfuse-mef", "CSC-MEF"), ("cscfuse-msf", "CSC-MSF")):
        model = create_model(name, checkpoint=official_cscfuse_dir / folder / "best_net.pth")
        state, _ = load_state_dict(official_cscfuse_dir / folder / "best_net.pth")
        assert len(model.state_dict()) == len(state)  # every official tensor has a place, none is invented
    # one network's file in another network: a clear error naming the layout
    with pytest.raises(CheckpointError, match="not a CSC-IVF key"):
        create_model("cscfuse-ivf", checkpoint=official_cscfuse_dir / "CSC-MEF")
    with pytest.raises(CheckpointError, match="not a CSC-MSF key"):
        create_model("cscfuse-msf", checkpoint=official_cscfuse_dir / "CSC-MEF" / "best_net.pth")
    with pytest.raises(CheckpointError, match="not a CSC-MEF key"):
        create_model("cscfuse-mef", checkpoint=official_cscfuse_dir / "CSC-MSF" / "best_net.pth")
