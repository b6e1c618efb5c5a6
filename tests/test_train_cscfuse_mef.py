"""CSC-MEF training: the MEF-MS-SSIM training objective (against a loop-by-loop reference), the halo
loss, the paper's halo-weight ramp, recipe options, and a tiny run that raises MEF-MS-SSIM."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fusecli import create_model
from fusecli.cli import app
from fusecli.errors import ConfigError, ShapeError
from fusecli.losses import halo_loss, mef_msssim_lum
from fusecli.train import RECIPES, TrainConfig, parse_options, train


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reference_lcs(x, ys, sigma=11 / 6, win=11, sg=0.2, sl=0.2):
    """MEF-Net's ``_mef_ssim(..., is_lum=True, full=True)`` pixel by pixel, in numpy float64.

    x: (H, W); ys: (K, H, W); zero padding; returns (mean l, mean cs)."""
    k, h, w = ys.shape
    g = np.exp(-((np.arange(win) - win // 2) ** 2) / (2 * sigma**2))
    g = np.outer(g, g) / np.outer(g, g).sum()
    r = win // 2
    xp = np.pad(x, r)
    yp = np.pad(ys, ((0, 0), (r, r), (r, r)))
    mu_y = np.zeros((k, h, w))
    var_y = np.zeros((k, h, w))
    cov = np.zeros((k, h, w))
    mu_x = np.zeros((h, w))
    var_x = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            px = xp[i:i + win, j:j + win]
            mu_x[i, j] = (g * px).sum()
            var_x[i, j] = (g * px * px).sum() - mu_x[i, j] ** 2
            for kk in range(k):
                py = yp[kk, i:i + win, j:j + win]
                mu_y[kk, i, j] = (g * py).sum()
                var_y[kk, i, j] = (g * py * py).sum() - mu_y[kk, i, j] ** 2
                cov[kk, i, j] = (g * px * py).sum() - mu_x[i, j] * mu_y[kk, i, j]
    c1, c2 = 0.01**2, 0.03**2
    cs_seq = (2 * cov + c2) / (var_x[None] + var_y + c2)
    best = var_y.argmax(0)
    cs = np.take_along_axis(cs_seq, best[None], 0)[0]
    lg = np.exp(-((mu_y.reshape(k, -1).mean(1) - 0.5) ** 2) / (2 * sg**2))[:, None, None]
    ll = np.exp(-((mu_y - 0.5) ** 2) / (2 * sl**2))
    wgt = lg * ll
    mu_d = (wgt * mu_y).sum(0) / wgt.sum(0)
    lum = (2 * mu_x * mu_d + c1) / (mu_x**2 + mu_d**2 + c1)
    return lum.mean(), cs.mean()


def _stack(h=44, w=48, seed=0):
    """A scene and two exposures of it (dark and bright, clipped), plus a fused guess."""
    rng = np.random.default_rng(seed)
    scene = cv2.GaussianBlur(rng.random((h, w)), (5, 5), 0)
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    under = np.clip(0.35 * scene, 0, 1)
    over = np.clip(2.2 * scene, 0, 1)
    return scene, np.stack([under, over])


def test_mef_msssim_matches_a_pixel_loop_reference_at_one_and_three_scales():
    scene, ys = _stack()
    fused = 0.5 * (ys[0] + ys[1]) ** 0.9
    t = lambda a: torch.from_numpy(a)[None].double()  # noqa: E731
    x, y = t(fused)[None][0][None], t(ys)
    x = x.reshape(1, 1, *fused.shape)
    lum, cs = _reference_lcs(fused, ys)
    got = mef_msssim_lum(x, y, betas=(1.0,))
    assert got.item() == pytest.approx(lum * cs, rel=1e-9)
    # three scales, each a 2x2 average pool of the one before
    betas = (0.0710, 0.4530, 0.4760)
    xs, yss, ls, css = fused, ys, [], []
    for level in range(3):
        if level:
            xs = xs.reshape(xs.shape[0] // 2, 2, xs.shape[1] // 2, 2).mean((1, 3))
            yss = yss.reshape(2, yss.shape[1] // 2, 2, yss.shape[2] // 2, 2).mean((2, 4))
        a, b = _reference_lcs(xs, yss)
        ls.append(a)
        css.append(b)
    want = ls[-1] ** betas[-1] * math.prod(c**bb for c, bb in zip(css, betas))
    assert mef_msssim_lum(x, y).item() == pytest.approx(want, rel=1e-9)


def test_mef_msssim_properties():
    scene, ys = _stack(64, 64)
    y = torch.from_numpy(ys).float()[None]
    one = y[:, :1]
    assert mef_msssim_lum(one, one).item() == pytest.approx(1.0, abs=1e-5)  # K = 1, identical
    good = torch.from_numpy(scene).float()[None, None]
    flat = torch.full_like(good, 0.5)
    s_good, s_flat = mef_msssim_lum(good, y).item(), mef_msssim_lum(flat, y).item()
    assert s_good <= 1 and s_good > s_flat + 0.3  # structure of the scene beats a flat grey
    fused = good.clone().requires_grad_(True)
    mef_msssim_lum(fused, y).sum().backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    # batch entries are independent
    both = mef_msssim_lum(torch.cat([good, flat]), torch.cat([y, y]))
    assert both[0].item() == pytest.approx(s_good, rel=1e-5) and both[1].item() == pytest.approx(s_flat, rel=1e-5)
    with pytest.raises(ShapeError):
        mef_msssim_lum(good[..., :40, :40], y[..., :40, :40])  # 3 scales need 44 px
    with pytest.raises(ShapeError):
        mef_msssim_lum(good, y[..., :32])


def test_halo_loss_values():
    y = torch.zeros(1, 1, 6, 7)
    assert halo_loss(y + 0.8).item() < 1e-6  # a bright constant image has no edge, not even at the border
    ramp = torch.arange(7.0).expand(1, 1, 6, 7) / 10  # d/dx = 0.1: Sobel x = 8 * 0.1, Sobel y = 0
    assert halo_loss(ramp).item() == pytest.approx(0.8, rel=1e-6)
    with pytest.raises(ShapeError):
        halo_loss(torch.zeros(1, 1, 2, 5))


def test_recipe_loss_ramps_the_halo_weight_as_the_paper():
    recipe = RECIPES["cscfuse-mef"]
    assert recipe.options == {"halo_max": 10.0, "halo_ramp": 0.25} and recipe.lr == 5e-4 and recipe.epochs == 50
    model = create_model("cscfuse-mef", weights=None)
    _, ys = _stack(64, 64)
    batch = tuple(torch.from_numpy(ys[k]).float()[None, None] for k in range(2))
    weights = [recipe.loss(model, batch, step=i, halo_max=10.0, halo_ramp=0.25)[1]["halo_weight"]
               for i in (1, 2, 5, 41, 42, 1000)]
    assert weights == [0.0, 0.25, 1.0, 10.0, 10.0, 10.0]  # min(0.25 (i - 1), 10)
    loss, logs = recipe.loss(model, batch, step=9, halo_max=10.0, halo_ramp=0.25)
    assert loss.item() == pytest.approx(-logs["mef_msssim"] + 2.0 * logs["halo"], rel=1e-5)


def test_options_are_parsed_and_checked(tmp_path):
    assert parse_options(["halo_max=0", " halo_ramp = 0.5"]) == {"halo_max": 0.0, "halo_ramp": 0.5}
    for bad in ("halo_max", "=3", "halo_max=ten"):
        with pytest.raises(ConfigError, match="KEY=NUMBER"):
            parse_options([bad])
    with pytest.raises(ConfigError, match="no option"):
        train(TrainConfig(model="cscfuse-mef", data=(str(tmp_path),), out=str(tmp_path / "o"),
                          options={"halo_weight": 1.0}))


def _write_mef(root, n=3, size=(72, 80), seed=0):
    rng = np.random.default_rng(seed)
    for role in ("under", "over"):
        (root / role).mkdir(parents=True)
    for i in range(n):
        scene = cv2.GaussianBlur(rng.random(size), (5, 5), 0)
        scene = (scene - scene.min()) / (scene.max() - scene.min())
        rgb = np.stack([scene, scene ** 1.2, scene ** 0.8], -1)
        for role, gain in (("under", 0.3), ("over", 2.5)):
            img = np.clip(gain * rgb, 0, 1)
            cv2.imwrite(str(root / role / f"s{i}.png"), np.rint(img[..., ::-1] * 255).astype(np.uint8))
    return root


def test_tiny_run_raises_mef_msssim_and_writes_the_card(tmp_path, one_thread):
    data = _write_mef(tmp_path / "stack")
    config = TrainConfig(model="cscfuse-mef", data=(str(data),), out=str(tmp_path / "run"), epochs=12,
                         steps_per_epoch=2, batch_size=2, crop=48, lr=5e-3, options={"halo_max": 0.0})
    final = train(config)
    card = yaml.safe_load(final.with_suffix(".yaml").read_text())
    history = card["training"]["history"]
    assert card["training"]["options"] == {"halo_max": 0.0, "halo_ramp": 0.25}
    assert card["inputs"] == ["under", "over"] and card["training"]["pairs"] == 3
    first, last = history[0]["mef_msssim"], history[-1]["mef_msssim"]
    assert last > first + 0.01, (first, last)
    model = create_model("cscfuse-mef", checkpoint=str(final))  # the trained file loads for inference
    assert not model.training


def test_cli_rejects_an_unknown_option_in_one_line(tmp_path):
    data = _write_mef(tmp_path / "stack", n=1)
    result = CliRunner().invoke(app, ["train", "cscfuse-mef", "--data", str(data), "-o", str(tmp_path / "o"),
                                      "--option", "halo=1", "--device", "cpu"])
    assert result.exit_code != 0 and "no option halo" in result.output
    assert "Traceback" not in result.output


def test_shipped_weights_reproduce_their_held_out_score(mefb_dir, one_thread):
    """weights/cscfuse-mef.mefb (the default) on the held-out MEFB scene Chair: the MEF-SSIM that
    benchmarks/mef_baseline.py measured for the card (0.9314; mean over the 20 held-out scenes 0.950)."""
    from fusecli import fuse_images, read_image
    from fusecli.color import rgb_to_y
    from fusecli.io import quantize
    from fusecli.metrics.mef_ssim import mef_ssim
    from fusecli.train.splits import mefb_split

    assert "Chair" in mefb_split()[1]  # held out: never seen in training
    model = create_model("cscfuse-mef")
    assert model.weights_info.startswith("cscfuse-mef.mefb")
    under, over = (read_image(next((mefb_dir / role).glob("Chair.*")))[0] for role in ("under", "over"))
    fused = quantize(fuse_images(model, [under, over]), 8)

    def luma255(u8):
        return rgb_to_y(torch.from_numpy(u8.astype(np.float32) / 255).permute(2, 0, 1)[None]).double() * 255

    sources = [luma255(quantize(x, 8)) for x in (under, over)]
    assert mef_ssim(luma255(fused), sources).item() == pytest.approx(0.9314, abs=2e-3)
