"""LGDE (DeRUN's local gradient direction entropy): the map, the registered metric and the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from fusecli.errors import ConfigError, ShapeError
from fusecli.losses import lgde_loss
from fusecli.metrics import evaluate_arrays, get_metric
from fusecli.metrics.lgde import lgde_map


def _impulse() -> torch.Tensor:
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1.0
    return x


def _np_lgde(img: np.ndarray, bins: int = 8, flat: float = 0.5 / 255) -> np.ndarray:
    """Straightforward numpy/scipy LGDE: Sobel on the reflected image, per-pixel loops over the
    3×3 and dilated 5×5 blocks with np.pad(mode='reflect')."""
    p = np.pad(img, 1, mode="reflect")
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    gx = ndimage.correlate(p, kx)[1:-1, 1:-1]
    gy = ndimage.correlate(p, kx.T)[1:-1, 1:-1]
    directed = np.hypot(gx, gy) > flat
    b = np.mod(np.round(np.arctan2(gy, gx) / (2 * np.pi / bins)), bins).astype(int)
    b[~directed] = -1
    h, w = img.shape
    out = np.zeros((h, w))
    for dil in (1, 2):
        bp = np.pad(b, dil, mode="reflect")
        for i in range(h):
            for j in range(w):
                block = bp[i:i + 2 * dil + 1:dil, j:j + 2 * dil + 1:dil].ravel()
                block = block[block >= 0]
                if block.size:
                    pr = np.bincount(block, minlength=bins) / block.size
                    pr = pr[pr > 0]
                    out[i, j] += 0.5 * float(-(pr * np.log2(pr)).sum())
    return out


def test_hand_computed_impulse():
    m = lgde_map(_impulse())[0, 0]
    # centre: its 8 neighbours point at it from 8 distinct directions -> 3 bits; its dilated block is flat
    assert m[2, 2].item() == pytest.approx(1.5, abs=1e-12)
    # (1, 1): 3×3 block has 3 directed pixels in 3 bins; dilated block (reflected) has bins 1×4, 3×2, 7×2, 5×1
    e5 = -(4 / 9 * math.log2(4 / 9) + 2 * (2 / 9) * math.log2(2 / 9) + 1 / 9 * math.log2(1 / 9))
    assert m[1, 1].item() == pytest.approx((math.log2(3) + e5) / 2, abs=1e-12)
    # the outer ring is flat, but its dilated blocks reach the directed ring
    assert torch.all(m >= 0) and torch.all(m <= 3)


def test_matches_numpy_formulation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 11)).astype(float) / 255
    img[:, :4] = 0.3  # a flat region (zero gradients)
    ours = lgde_map(torch.from_numpy(img)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours, _np_lgde(img), atol=1e-12)


def test_constant_image_is_zero_not_nan():
    m = lgde_map(torch.full((2, 1, 6, 7), 0.4))
    assert torch.isfinite(m).all() and float(m.abs().max()) == 0.0
    assert evaluate_arrays(np.full((8, 8), 90.0), names=["LGDE"])["LGDE"] == 0.0


def test_soft_converges_to_hard_monotonically():
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.integers(0, 256, (2, 1, 16, 16)) / 255.0)
    hard = lgde_map(img)
    errs = [float((lgde_map(img, softness=s) - hard).abs().mean()) for s in (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 1e-3, 3e-4, 1e-4)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-4 and errs[0] > 0.1


def test_loss_gradients_flow_and_are_finite():
    rng = np.random.default_rng(2)
    v = torch.from_numpy(rng.random((2, 1, 12, 12))).float()
    x = torch.full((2, 1, 12, 12), 0.5)
    x[:, :, 3:9, 3:9] = 0.8  # flat areas (no direction) next to edges
    x.requires_grad_(True)
    loss = lgde_loss(x, v)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # identical inputs: zero loss
    assert lgde_loss(v, v).item() == 0.0
    # float32 in, float32 out
    assert lgde_map(v).dtype == torch.float32


def test_metric_registered_lower_is_better_and_scale():
    spec = get_metric("lgde")
    assert spec.needs == "fused" and spec.higher_is_better is False
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (10, 12)).astype(float)
    got = evaluate_arrays(img, names=["LGDE"])["LGDE"]
    assert got == pytest.approx(_np_lgde(img / 255).mean(), abs=1e-12)


def test_errors():
    with pytest.raises(ShapeError, match="3×3"):
        lgde_map(torch.zeros(1, 1, 2, 5))
    with pytest.raises(ShapeError, match=r"\(B, 1, H, W\)"):
        lgde_map(torch.zeros(4, 4))
    with pytest.raises(ConfigError, match="softness"):
        lgde_map(torch.zeros(1, 1, 4, 4), softness=-1)
    with pytest.raises(ShapeError, match="one shape"):
        lgde_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 5, 4))
