"""CSC-MEF (cscfuse-mef): strict loading of the official checkpoint, the network against an
independent re-statement of the official ``train_forward`` (its own YCbCr constants), the fusion
rules (softmax weights, |C - 0.5| chroma weights), K = 2, 3, 4 exposures, the colour path of
``fuse_images`` / ``fusecli fuse`` / ``fusecli batch``, the stretch, and the errors."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from fusecli import create_model
from fusecli.cli import app
from fusecli.errors import CheckpointError, ConfigError, ShapeError
from fusecli.inference import fuse_images, stretch
from fusecli.io import read_image, write_image
from fusecli.models.cscfuse_mef import CSCMEF, CSCMEFConfig, convert_official, fuse_chroma
from fusecli.models._weights import weights_dir
from fusecli.models.layers import DCU
from fusecli.train.splits import MEFB_SCENES, mefb_split

from .conftest import SAMPLES


def _exposures(k: int, h: int = 24, w: int = 31, seed: int = 0) -> list[torch.Tensor]:
    """K exposures of one random colour scene: gains from dark to bright, clipped."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.rand(1, 3, h, w, generator=g)
    gains = torch.linspace(0.3, 2.5, k)
    return [(scene * gain).clamp(0, 1) for gain in gains]


@pytest.fixture(scope="module")
def csc_mef() -> CSCMEF:
    """CSC-MEF with its shipped weights (weights/cscfuse-mef.mefb; the official architecture)."""
    return create_model("cscfuse-mef")


def _official_forward(model: CSCMEF, exposures: list[torch.Tensor]) -> torch.Tensor:
    """The official ``CSC_Fusion_MEF.forward(img, 'test')`` written out with its own constants."""
    def rgb2ycbcr(img):
        r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
        return (0.299 * r + 0.587 * g + 0.114 * b, 0.5 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                0.5 + 0.5 * r - 0.418688 * g - 0.081312 * b)

    net = model.weight_net
    ys, cbs, crs, logits = [], [], [], []
    for img in exposures:
        y, cb, cr = rgb2ycbcr(img)
        code = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), net.head.weight)
        code = net.head_norm(code)
        code = code.sign() * F.relu(code.abs() - net.head_act.theta)
        for unit in net.units:
            dec = F.conv2d(F.pad(code, (1, 1, 1, 1), mode="reflect"), unit.dec.weight)
            code = code + F.conv2d(F.pad(y - dec, (1, 1, 1, 1), mode="reflect"), unit.enc.weight)
            code = unit.norm(code)
            code = code.sign() * F.relu(code.abs() - unit.act.theta)
        logits.append(F.conv2d(code, net.tail.weight))
        ys.append(y), cbs.append(cb), crs.append(cr)
    w = torch.softmax(torch.cat(logits, 1), 1)
    yf = (w * torch.cat(ys, 1)).sum(1, keepdim=True)
    cb, cr = torch.cat(cbs, 1), torch.cat(crs, 1)
    wb = ((cb - 0.5).abs() + 1e-8) / ((cb - 0.5).abs() + 1e-8).sum(1, keepdim=True)
    wr = ((cr - 0.5).abs() + 1e-8) / ((cr - 0.5).abs() + 1e-8).sum(1, keepdim=True)
    cbf, crf = (wb * cb).sum(1, keepdim=True), (wr * cr).sum(1, keepdim=True)
    rgb = torch.cat([yf + (crf - 0.5) * 1.402, yf - (cbf - 0.5) * 0.344136 - (crf - 0.5) * 0.714136,
                     yf + (cbf - 0.5) * 1.772], 1)
    return rgb.clamp(0, 1)


def test_official_layout_loads_strict(official_checkpoints):
    """The authors' best_net.pth (../shared; else the shipped weights in its layout) loads strict."""
    from fusecli.models._weights import load_state_dict

    state, _ = load_state_dict(official_checkpoints / "cscfuse" / "CSC-MEF" / "best_net.pth")
    assert "main.5.conv2d.weight" in state and "main.3.activation.theta" in state
    model = CSCMEF()
    result = model.load_state_dict(convert_official(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(model.weight_net.units) == 2  # num_blocks = 4: conv, 2 DCUs, 1x1 conv
    # fusecli's own keys pass through unchanged (a saved fusecli model reloads)
    assert convert_official(model.state_dict()).keys() == model.state_dict().keys()


def test_network_equals_the_official_forward(csc_mef):
    exposures = _exposures(3, seed=1)
    with torch.no_grad():
        ours = csc_mef.blend(*exposures).clamp(0, 1)
        ref = _official_forward(csc_mef, exposures)
    assert (ours - ref).abs().max() < 1e-4  # BT.601 chroma constants rounded differently: ~1e-6


@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_exposures(csc_mef, k):
    exposures = _exposures(k, seed=k)
    with torch.no_grad():
        w = csc_mef.weight_maps(*exposures)
        out = csc_mef(*exposures)
    assert w.shape == (1, k, 24, 31)
    assert torch.allclose(w.sum(1), torch.ones(()), atol=1e-5) and (w >= 0).all()
    assert out.shape == (1, 3, 24, 31) and out.min() >= 0 and out.max() <= 1
    # the stretch maps the 0.5 % / 99.5 % quantiles onto 0 and 1
    assert out.min() == 0 and out.max() == 1
    # the order of the exposures does not matter
    with torch.no_grad():
        shuffled = csc_mef(*exposures[::-1])
    assert (shuffled - out).abs().max() < 1e-5


def test_batch_of_scenes_equals_one_by_one(csc_mef):
    a, b = _exposures(2, seed=5), _exposures(2, seed=6)
    with torch.no_grad():
        both = csc_mef.blend(*(torch.cat([x, y]) for x, y in zip(a, b)))
        assert (both[1:] - csc_mef.blend(*b)).abs().max() < 1e-5


def test_chroma_rule_weights_and_grey_inputs():
    cb = torch.tensor([0.5, 0.9, 0.3]).view(1, 3, 1, 1)  # |C - 0.5| = 0, 0.4, 0.2
    expected = (0.4 * 0.9 + 0.2 * 0.3 + 1e-8 * 1.7) / (0.6 + 3e-8)
    assert fuse_chroma(cb).item() == pytest.approx(expected, rel=1e-6)
    # grey exposures: every chroma is 0.5 -> equal weights, no NaN, grey output
    grey = torch.full((1, 4, 5, 6), 0.5)
    assert torch.equal(fuse_chroma(grey), torch.full((1, 1, 5, 6), 0.5))
    model = CSCMEF(CSCMEFConfig(stretch=False)).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 8, 9), torch.ones(1, 3, 8, 9), torch.full((1, 1, 8, 9), 0.5))
    assert torch.isfinite(out).all()
    assert (out[:, 0] - out[:, 1]).abs().max() < 1e-5 and (out[:, 1] - out[:, 2]).abs().max() < 1e-5


def test_constant_exposures_give_finite_output(csc_mef):
    with torch.no_grad():
        out = csc_mef(torch.zeros(1, 3, 10, 12), torch.ones(1, 3, 10, 12))
    assert torch.isfinite(out).all()  # a constant image: the stretch leaves it as it is


def test_mef_dcu_is_one_ista_step():
    torch.manual_seed(0)
    unit = DCU(6, "sst", sst_init=1e-3).eval()
    y, code = torch.rand(1, 1, 9, 10), torch.randn(1, 6, 9, 10)
    with torch.no_grad():
        dec = F.conv2d(F.pad(code, (1, 1, 1, 1), mode="reflect"), unit.dec.weight)
        z = unit.norm(code + F.conv2d(F.pad(y - dec, (1, 1, 1, 1), mode="reflect"), unit.enc.weight))
        assert torch.allclose(unit(y, code), z.sign() * (z.abs() - 1e-3).clamp_min(0), atol=1e-6)


def test_stretch_handles_large_images_and_matches_quantile():
    g = torch.Generator().manual_seed(0)
    small = torch.rand(2, 3, 40, 50, generator=g)
    qs = torch.quantile(small.flatten(1), torch.tensor([0.005, 0.995]), dim=1)
    expected = ((small - qs[0].view(-1, 1, 1, 1)) / (qs[1] - qs[0]).view(-1, 1, 1, 1)).clamp(0, 1)
    assert (stretch(small) - expected).abs().max() < 1e-5
    big = torch.rand(1, 3, 2400, 2400, generator=g)  # 17 million values: torch.quantile refuses these
    out = stretch(big)
    assert out.shape == big.shape and out.min() == 0 and out.max() == 1


def test_fuse_images_colour_path_and_gray_option(csc_mef):
    under, over = _exposures(2, seed=3)
    fused = fuse_images(csc_mef, [under, over])
    assert fused.shape == (1, 3, 24, 31)
    with torch.no_grad():
        assert torch.equal(fused, csc_mef(under, over))  # the model's own colour, untouched
    gray = fuse_images(csc_mef, [under, over], gray=True)
    assert gray.shape == (1, 1, 24, 31)
    # gray sources are repeated to RGB
    assert fuse_images(csc_mef, [under[:, :1], over[:, :1]]).shape == (1, 3, 24, 31)


def test_errors(csc_mef):
    with pytest.raises(ShapeError, match="2 or more"):
        fuse_images(csc_mef, [_exposures(2)[0]])
    with pytest.raises(ShapeError, match="differ"):
        csc_mef(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ConfigError, match="tiles"):
        fuse_images(csc_mef, _exposures(2, 40, 40), tile=16, overlap=4)
    with pytest.raises(ConfigError, match="blocks"):
        CSCMEFConfig(blocks=2)
    with pytest.raises(CheckpointError, match="not a CSC-MEF key"):
        create_model("cscfuse-mef", checkpoint=weights_dir() / "cscfuse-ivf.roadscene.safetensors")
    with pytest.raises(CheckpointError, match="no default weights"):
        create_model("cscfuse-msf")  # (cscfuse-mef ships cscfuse-mef.mefb)


def test_cli_fuses_k_files_and_refuses_k_for_pair_models(tmp_path):
    paths = []
    for i, x in enumerate(_exposures(3, 30, 36, seed=7)):
        paths.append(tmp_path / f"e{i}.png")
        write_image(paths[-1], x)
    runner = CliRunner()
    out = tmp_path / "fused.png"
    result = runner.invoke(app, ["fuse", "-m", "cscfuse-mef", *map(str, paths), "-o", str(out)])
    assert result.exit_code == 0, result.output
    image, info = read_image(out)
    assert info.channels == 3 and (info.width, info.height) == (36, 30)
    result = runner.invoke(app, ["fuse", "-m", "cscfuse-ivf", *map(str, paths), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "fuses 2 images" in result.output
    assert not (tmp_path / "x.png").exists()


def test_batch_on_an_under_over_dataset(csc_mef, tmp_path):
    from fusecli.batch import run_batch

    data = tmp_path / "mef"
    for role in ("under", "over"):
        (data / role).mkdir(parents=True)
    scene, _ = read_image(SAMPLES / "vis_color.png")
    for stem, (y, x) in (("Chair", (0, 0)), ("Arno", (150, 200))):  # two crops, a dark and a bright exposure
        crop = scene[..., y:y + 48, x:x + 64]
        write_image(data / "under" / f"{stem}.png", crop * 0.35)
        write_image(data / "over" / f"{stem}.png", (crop * 2.2).clamp(0, 1))
    result = run_batch(data, tmp_path / "out", "cscfuse-mef", device="cpu", workers=1)
    assert result.ok and result.roles == ("under", "over") and result.counts["fused"] == 2
    fused, info = read_image(tmp_path / "out" / "Chair.png")
    assert info.channels == 3
    # byte-identical to fuse_images on the same pair (the single code path)
    under, _ = read_image(data / "under" / "Chair.png")
    over, _ = read_image(data / "over" / "Chair.png")
    from fusecli.io import quantize
    assert (quantize(fuse_images(csc_mef, [under, over])) == quantize(fused)).all()
    shutil.rmtree(tmp_path / "out")


def test_mefb_split_is_fixed():
    """80 training and 20 held-out scenes of MEFB_SCENES (that they are the release's file stems:
    test_shared_data)."""
    train, test = mefb_split()
    assert len(train) == 80 and len(test) == 20 and not set(train) & set(test)
    assert test[:3] == ["Arno", "Bathtub", "Chair"]
    # a copy with a scene missing keeps the other 19 held out, and extra scenes go to training
    train2, test2 = mefb_split([s for s in MEFB_SCENES if s != "Arno"] + ["mine"])
    assert test2 == test[1:] and "mine" in train2
