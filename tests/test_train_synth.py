"""FRUFN training pieces: pair synthesis, gradient-transfer and IVF losses, ColorNet."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusecli.errors import ConfigError, ShapeError
from fusecli.losses import gradient_transfer_loss, ivf_unsupervised_loss, sobel_gradient, ssim
from fusecli.models.colornet import ColorNet, convert_official
from fusecli.train.synth import focus_masks, gaussian_blur, multi_exposure, multi_focus


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core machine two threads are much slower (spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _textured(b=2, c=3, h=48, w=56, seed=0):
    """Sharp test images: fine random texture plus a bright patch (so that over-exposure clips)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.15 + 0.5 * torch.rand(b, c, h, w, generator=g)
    x[..., : h // 3, : w // 3] = 0.97
    return x


def _laplacian_energy(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(x.mean(1, keepdim=True), k).pow(2)


# --- multi-focus ------------------------------------------------------------------------------------

def test_multi_focus_gt_is_the_sharp_image_and_masks_are_complementary():
    sharp = _textured()
    t = multi_focus(sharp, torch.Generator().manual_seed(1))
    assert torch.equal(t.gt, sharp)
    assert t.near.shape == t.far.shape == sharp.shape and t.mask.shape == (2, 1, 48, 56)
    assert t.near.min() >= 0 and t.near.max() <= 1 and t.far.min() >= 0 and t.far.max() <= 1
    m = t.mask
    # the near image is the sharp image where m = 1, the far image where m = 0 ...
    assert torch.allclose(t.near * (m == 1), sharp * (m == 1)) and (m == 1).any()
    assert torch.allclose(t.far * (m == 0), sharp * (m == 0)) and (m == 0).any()
    # ... and each is the other's defocused complement: near = m*gt + (1-m)*blur, far = (1-m)*gt + m*blur'
    for i in range(2):
        blur_near = gaussian_blur(sharp[i:i + 1], t.params["sigma_near"][i])
        blur_far = gaussian_blur(sharp[i:i + 1], t.params["sigma_far"][i])
        assert torch.allclose(t.near[i:i + 1], m[i:i + 1] * sharp[i:i + 1] + (1 - m[i:i + 1]) * blur_near, atol=1e-6)
        assert torch.allclose(t.far[i:i + 1], (1 - m[i:i + 1]) * sharp[i:i + 1] + m[i:i + 1] * blur_far, atol=1e-6)
    # the in-focus side is the sharper one in each region
    inner = m[..., 1:-1, 1:-1]
    e_near, e_far = _laplacian_energy(t.near), _laplacian_energy(t.far)
    assert (e_near * (inner > 0.99)).sum() > 4 * (e_far * (inner > 0.99)).sum()
    assert (e_far * (inner < 0.01)).sum() > 4 * (e_near * (inner < 0.01)).sum()


def test_focus_masks_are_smooth_blobs():
    masks, params = focus_masks((6, 64, 80), torch.Generator().manual_seed(3))
    assert masks.shape == (6, 1, 64, 80) and masks.min() >= 0 and masks.max() <= 1
    # a blurred step of sigma >= 1 rises by at most 1 / (sigma sqrt(2 pi)) < 0.4 per pixel (binary: 1)
    dy = (masks[..., 1:, :] - masks[..., :-1, :]).abs().max()
    dx = (masks[..., 1:] - masks[..., :-1]).abs().max()
    assert max(dx, dy) < 0.41
    # low-frequency: the in-focus region covers a sizeable, contiguous part, not salt and pepper
    near = masks > 0.5
    frac = near.float().mean(dim=(1, 2, 3))
    assert ((frac > 0.15) & (frac < 0.85)).all()
    boundary = (near[..., 1:, :] != near[..., :-1, :]).float().mean()
    assert boundary < 0.1  # random pixels would give 0.5
    assert all(2 <= c <= 5 for c in params["cells"])


def test_multi_focus_is_reproducible_with_the_seed():
    sharp = _textured()
    a = multi_focus(sharp, torch.Generator().manual_seed(7))
    b = multi_focus(sharp, torch.Generator().manual_seed(7))
    c = multi_focus(sharp, torch.Generator().manual_seed(8))
    assert torch.equal(a.near, b.near) and torch.equal(a.far, b.far) and a.params == b.params
    assert not torch.equal(a.near, c.near)


def test_synthesis_rejects_bad_input():
    with pytest.raises(ShapeError):
        multi_focus(torch.rand(3, 32, 32), torch.Generator())
    with pytest.raises(ShapeError):
        multi_exposure(torch.rand(1, 1, 4, 32), torch.Generator())
    with pytest.raises(ConfigError):
        multi_focus(torch.rand(1, 1, 32, 32), torch.Generator(), blur_sigma=(3.0, 1.0))
    with pytest.raises(ConfigError):
        multi_exposure(torch.rand(1, 1, 32, 32), torch.Generator(), shot=-1)


# --- multi-exposure ---------------------------------------------------------------------------------

def test_multi_exposure_orders_exposures_and_clips():
    gt = _textured(b=4)
    t = multi_exposure(gt, torch.Generator().manual_seed(2))
    assert torch.equal(t.gt, gt)
    for x in (t.under, t.over):
        assert x.shape == gt.shape and x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, torch.round(x * 255) / 255)  # 8-bit levels
    under_mean, gt_mean, over_mean = (x.mean(dim=(1, 2, 3)) for x in (t.under, gt, t.over))
    assert (under_mean < gt_mean).all() and (gt_mean < over_mean).all()
    assert (t.under <= t.over).float().mean() > 0.99  # per pixel too, up to noise
    # highlights saturate in the over-exposed image (the 0.97 patch: 2**0.5 or more times brighter)
    patch = t.over[..., :16, :18]
    assert (patch == 1).float().mean() > 0.9 and (t.under[..., :16, :18] < 1).all()
    assert all(1.0 <= s <= 3.0 for s in t.params["under_stops"])
    assert all(0.5 <= s <= 2.0 for s in t.params["over_stops"])


def test_multi_exposure_is_reproducible_with_the_seed():
    gt = _textured()
    a = multi_exposure(gt, torch.Generator().manual_seed(5))
    b = multi_exposure(gt, torch.Generator().manual_seed(5))
    assert torch.equal(a.under, b.under) and torch.equal(a.over, b.over) and a.params == b.params
    assert not torch.equal(a.under, multi_exposure(gt, torch.Generator().manual_seed(6)).under)


# --- losses -----------------------------------------------------------------------------------------

def _sobel_reference(x: np.ndarray) -> np.ndarray:
    """Independent |Sobel_x| + |Sobel_y| with zero borders (OpenCV correlation)."""
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    ky = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)
    f = lambda k: cv2.filter2D(x.astype(np.float32), -1, k, borderType=cv2.BORDER_CONSTANT)  # noqa: E731
    return np.abs(f(kx)) + np.abs(f(ky))


def test_sobel_gradient_matches_opencv():
    x = torch.rand(2, 2, 13, 17, generator=torch.Generator().manual_seed(0))
    g = sobel_gradient(x)
    for i in range(2):
        for c in range(2):
            np.testing.assert_allclose(g[i, c].numpy(), _sobel_reference(x[i, c].numpy()), atol=1e-5)


def test_gradient_transfer_loss_is_zero_when_the_student_has_the_larger_gradients():
    teacher = _textured(b=2, c=1)
    student = (2.0 * teacher).requires_grad_()  # |grad S| = 2 |grad T| everywhere (Sobel is linear)
    loss = gradient_transfer_loss(student, teacher)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(student.grad) == 0
    # the authors' code form is symmetric, so it does pull the larger student gradients down
    assert gradient_transfer_loss(student, teacher, mode="official").item() > 0


def test_gradient_transfer_loss_transfers_the_missing_gradients():
    teacher = _textured(b=2, c=1)
    flat = torch.zeros_like(teacher, requires_grad=True)  # no structure at all (also at the zero-padded border)
    loss = gradient_transfer_loss(flat, teacher)
    expected = np.mean([_sobel_reference(teacher[i, 0].numpy()) for i in range(2)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    faint = (1e-3 * torch.rand(teacher.shape, generator=torch.Generator().manual_seed(9))).requires_grad_()
    gradient_transfer_loss(faint, teacher).backward()  # the loss pushes faint structure up
    assert faint.grad.abs().sum() > 0
    # half the teacher's contrast: exactly half of its gradient is missing
    half = 0.5 * teacher
    assert gradient_transfer_loss(half, teacher).item() == pytest.approx(expected / 2, rel=1e-5)
    with pytest.raises(ShapeError):
        gradient_transfer_loss(flat, teacher[..., :-1])
    with pytest.raises(ConfigError):
        gradient_transfer_loss(flat, teacher, mode="l2")


def test_gradient_transfer_loss_official_form():
    g = torch.Generator().manual_seed(4)
    s, t = torch.rand(1, 1, 12, 12, generator=g), torch.rand(1, 1, 12, 12, generator=g)
    gs, gt = _sobel_reference(s[0, 0].numpy()), _sobel_reference(t[0, 0].numpy())
    m = np.maximum(gs, gt)
    expected = np.mean(np.abs(gt * m - gs * m))
    assert gradient_transfer_loss(s, t, mode="official").item() == pytest.approx(expected, rel=1e-5)


def test_ivf_unsupervised_loss_terms():
    g = torch.Generator().manual_seed(1)
    vis, ir = torch.rand(2, 1, 24, 24, generator=g), torch.rand(2, 1, 24, 24, generator=g)
    best = torch.maximum(vis, ir)
    loss, logs = ivf_unsupervised_loss(best, vis, ir)
    assert logs["intensity"] == 0.0
    f = (0.5 * (vis + ir)).requires_grad_()
    loss, logs = ivf_unsupervised_loss(f, vis, ir)
    assert logs["intensity"] == pytest.approx((best - f).abs().mean().item(), rel=1e-6)
    grad_max = np.maximum(*[np.stack([_sobel_reference(x[i, 0].numpy()) for i in range(2)]) for x in (vis, ir)])
    f_grad = np.stack([_sobel_reference(f[i, 0].detach().numpy()) for i in range(2)])
    assert logs["texture"] == pytest.approx(np.abs(f_grad - grad_max).mean(), rel=1e-5)
    assert logs["std"] == pytest.approx(float(np.mean([f[i, 0].detach().numpy().std() for i in range(2)])), rel=1e-5)
    assert 0 < logs["structure"] < 1
    ma = np.mean([_sobel_reference(vis[i, 0].numpy()) for i in range(2)])  # batch-mean gradients
    mb = np.mean([_sobel_reference(ir[i, 0].numpy()) for i in range(2)])
    weighted = 1 - (ma * ssim(vis, f).item() + mb * ssim(ir, f).item()) / (ma + mb)
    assert logs["structure"] == pytest.approx(weighted, rel=1e-5)
    total = 20 * logs["intensity"] + 100 * logs["texture"] + 50 * logs["structure"] - 50 * logs["std"]
    assert loss.item() == pytest.approx(total, rel=1e-5)
    loss.backward()
    assert f.grad.abs().sum() > 0


# --- ColorNet ---------------------------------------------------------------------------------------

def test_colornet_shapes_and_errors():
    net = ColorNet().eval()
    y, ca, cb = torch.rand(2, 1, 20, 28), torch.rand(2, 2, 20, 28), torch.rand(2, 2, 20, 28)
    assert net(y, ca, cb).shape == (2, 2, 20, 28)
    rgb = net.colorize(y, ca, cb)
    assert rgb.shape == (2, 3, 20, 28) and rgb.min() >= 0 and rgb.max() <= 1
    with pytest.raises(ShapeError):
        net(y, ca[:, :1], cb)


def test_colornet_convert_official_swaps_opencv_channel_order():
    """A net in the authors' Y, Cr, Cb order gives, after conversion, the same chroma in fusecli's order."""
    torch.manual_seed(0)
    official = ColorNet().eval()
    ours = ColorNet().eval()
    ours.load_state_dict(convert_official(official.state_dict()))
    y, ca, cb = torch.rand(1, 1, 16, 16), torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16)  # ca = (Cb, Cr)
    with torch.no_grad():
        theirs = official.out_conv(official.fuse(official.in_conv(torch.cat((y, ca.flip(1), cb.flip(1)), 1))))
        mine = ours(y, ca, cb)
    torch.testing.assert_close(mine, theirs.flip(1))
