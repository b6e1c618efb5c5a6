"""MS-SSIM (Wang 2003, as pytorch_msssim computes it) and Q_SF (Zheng's rSFe, Liu's metricZheng.m)
against straightforward numpy formulations written here, hand-computed values, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusecli.errors import ShapeError
from fusecli.metrics import evaluate_arrays, get_metric
from fusecli.metrics._checks import MetricWarning
from fusecli.metrics.ms_ssim import WEIGHTS, ms_ssim, ms_ssim_pair
from fusecli.metrics.q_sf import q_sf

from .conftest import fusion_triplet

signal = pytest.importorskip("scipy.signal")

# ------------------------------------------------------------------ MS-SSIM


def _np_window():
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    return g / g.sum()


def np_ms_ssim(x, y, L=255.0):
    g = _np_window()
    w2 = np.outer(g, g)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2

    def filt(v):
        return signal.correlate2d(v, w2, mode="valid")

    def pool(v):  # avg_pool2d(2, padding=(H % 2, W % 2)): zero pad both sides, floor output, /4
        ph, pw = v.shape[0] % 2, v.shape[1] % 2
        v = np.pad(v, ((ph, ph), (pw, pw)))
        h, w = v.shape[0] // 2 * 2, v.shape[1] // 2 * 2
        v = v[:h, :w]
        return (v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]) / 4

    vals = []
    for level in range(5):
        mx, my = filt(x), filt(y)
        sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        ssim = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs
        if level < 4:
            vals.append(max(cs.mean(), 0.0))
            x, y = pool(x), pool(y)
        else:
            vals.append(max(ssim.mean(), 0.0))
    return float(np.prod(np.array(vals) ** np.array(WEIGHTS)))


def _pair(h=177, w=190, seed=0):
    f, a, b = fusion_triplet(h, w, seed=seed, fused_noise=6)
    return f, a, b


def test_ms_ssim_matches_numpy(monkeypatch):
    f, a, b = _pair()
    # fusecli uses pytorch_msssim's float32-rounded Gaussian taps (their sum is 1 only to ~1e-7,
    # which moves MS-SSIM by up to ~3e-5 relative); against the exact float64 window it agrees to round-off
    for s in (a, b):
        assert float(ms_ssim_pair(f, s)[0]) == pytest.approx(np_ms_ssim(f, s), rel=1e-4)
    import fusecli.metrics.ms_ssim as mod

    monkeypatch.setattr(mod, "_window", lambda device: torch.from_numpy(_np_window()).to(device))
    for s in (a, b):
        assert float(ms_ssim_pair(f, s)[0]) == pytest.approx(np_ms_ssim(f, s), rel=1e-10)
    got = float(ms_ssim(f, [a, b])[0])
    assert got == pytest.approx((np_ms_ssim(f, a) + np_ms_ssim(f, b)) / 2, rel=1e-10)
    assert float(ms_ssim(f, [a, b], combine="sum")[0]) == pytest.approx(2 * got, rel=1e-12)


def test_ms_ssim_matches_pytorch_msssim_when_installed():
    pm = pytest.importorskip("pytorch_msssim")
    f, a, _ = _pair(161, 200, seed=2)
    ref = pm.ms_ssim(torch.from_numpy(f)[None, None], torch.from_numpy(a)[None, None], data_range=255,
                     size_average=False)
    assert float(ms_ssim_pair(f, a)[0]) == pytest.approx(float(ref[0]), rel=1e-10)


def test_ms_ssim_hand_computed_constants():
    # 176 = 11·16: every pooling is exact on constants. With a window whose taps sum to S (2-D) the
    # local statistics are μ = aS, σ_x² = a²S(1 − S), σ_xy = abS(1 − S); with S = 1 exactly σ = 0,
    # cs = C2/C2 = 1 at every scale and MS-SSIM = ((2ab + C1)/(a² + b² + C1))^0.1333. fusecli, like
    # pytorch_msssim, uses float32-rounded taps, so S = 1 ± ~1e-7 and cs deviates from 1 by ~1e-6.
    import fusecli.metrics.ms_ssim as mod

    a, b = 100.0, 140.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = float(mod._window("cpu").sum()) ** 2
    v = s * (1 - s)
    cs = (2 * a * b * v + c2) / ((a * a + b * b) * v + c2)
    lum = (2 * a * b * s * s + c1) / ((a * a + b * b) * s * s + c1)
    got = float(ms_ssim_pair(np.full((176, 176), a), np.full((176, 176), b))[0])
    assert got == pytest.approx(cs ** sum(WEIGHTS) * lum ** WEIGHTS[-1], rel=1e-9)
    assert got == pytest.approx(((2 * a * b + c1) / (a * a + b * b + c1)) ** WEIGHTS[-1], rel=1e-5)


def test_ms_ssim_properties():
    f, a, b = _pair(165, 170, seed=4)
    assert float(ms_ssim_pair(a, a)[0]) == pytest.approx(1.0, abs=1e-12)
    assert float(ms_ssim_pair(f, a)[0]) == pytest.approx(float(ms_ssim_pair(a, f)[0]), rel=1e-12)
    v = evaluate_arrays(f, [a, b], names=["MS-SSIM"])["MS-SSIM"]
    assert 0 < v < 1 and get_metric("ms-ssim").higher_is_better
    # Tang's toolbox calls MEF-MS-SSIM "MS_SSIM": --convention matlab reproduces it
    tang = evaluate_arrays(f, [a, b], names=["MS-SSIM"], convention="matlab")["MS-SSIM"]
    assert tang == evaluate_arrays(f, [a, b], names=["MEF-MS-SSIM"])["MEF-MS-SSIM"] and tang != v
    with pytest.raises(ShapeError, match="160"):
        ms_ssim_pair(np.zeros((160, 300)), np.zeros((160, 300)))
    with pytest.raises(ShapeError):
        ms_ssim(np.zeros((170, 170)), [np.zeros((170, 171)), np.zeros((170, 170))])


# ------------------------------------------------------------------ Q_SF

WD = math.sqrt(2) / 2


def np_qsf(f, a, b):
    """metricZheng.m with its loops (sf2 / grad cases 3 and 4) written out."""
    h, w = f.shape

    def sf(im):
        rf = np.sum((im[:, :-1] - im[:, 1:]) ** 2) / (h * w)
        cf = np.sum((im[:-1, :] - im[1:, :]) ** 2) / (h * w)
        md = sum((im[i, j] - im[i - 1, j - 1]) ** 2 for i in range(1, h) for j in range(1, w))
        sd = sum((im[i, j] - im[i - 1, j + 1]) ** 2 for j in range(w - 1) for i in range(1, h))
        return math.sqrt(rf + cf + WD * md / (h * w) + WD * sd / (h * w))

    def g(d1, d2):
        return np.maximum(np.abs(d1), np.abs(d2)) ** 2

    r = (np.sum(g(a[:, :-1] - a[:, 1:], b[:, :-1] - b[:, 1:])) + np.sum(g(a[:-1] - a[1:], b[:-1] - b[1:]))) / (h * w)
    md = sum(max(abs(a[i, j] - a[i - 1, j - 1]), abs(b[i, j] - b[i - 1, j - 1])) ** 2 for i in range(1, h) for j in range(1, w))
    sd = sum(max(abs(a[i, j] - a[i - 1, j + 1]), abs(b[i, j] - b[i - 1, j + 1])) ** 2 for j in range(w - 1) for i in range(1, h))
    sfr = math.sqrt(r + WD * md / (h * w) + WD * sd / (h * w))
    return (sf(f) - sfr) / sfr


def test_qsf_hand_computed():
    a = np.array([[0.0, 2], [0, 2]])
    b = np.array([[0.0, 0], [4, 4]])
    f = (a + b) / 2  # [[0, 1], [2, 3]]
    # SF_F² = (1+1)/4 + (4+4)/4 + √2/2·(9 + 1)/4 ; SF_R² = (4+4)/4 + (16+16)/4 + √2/2·(16 + 16)/4
    expected = math.sqrt(2.5 + 2.5 * WD) / math.sqrt(10 + 8 * WD) - 1
    assert float(q_sf(f, [a, b])[0]) == pytest.approx(expected, rel=1e-14)
    assert float(q_sf(a, [a, np.zeros((2, 2))])[0]) == 0.0  # F = A, B flat: SF_R = SF_F


def test_qsf_matches_numpy_and_properties():
    f, a, b = fusion_triplet(13, 17, seed=7, fused_noise=5)
    v = float(q_sf(f, [a, b])[0])
    assert v == pytest.approx(np_qsf(f, a, b), rel=1e-12)
    assert float(q_sf(f, [b, a])[0]) == pytest.approx(v, rel=1e-14)  # symmetric
    assert -1 <= v < 0  # an average is smoother than the max-gradient reference
    spec = get_metric("Q_SF")
    assert spec.target == 0.0
    with pytest.warns(MetricWarning, match="Q_SF"):
        assert math.isnan(float(q_sf(f, [np.full((13, 17), 9.0)] * 2)[0]))
    with pytest.raises(ShapeError):
        q_sf(f, [a, b[:, :-1]])
