"""Q_P (Zhao et al. phase-congruency metric, Liu's metricZhao.m + myphasecong3.m) against a
line-by-line numpy transcription of the MATLAB code written here, plus properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusecli.errors import ShapeError
from fusecli.metrics import evaluate_arrays, get_metric
from fusecli.metrics._checks import MetricWarning
from fusecli.metrics.q_p import phase_congruency, q_p

from .conftest import SAMPLES, fusion_triplet

signal = pytest.importorskip("scipy.signal")


# ------------------------------------------------------------------ myphasecong3.m in numpy


def np_lowpass(rows, cols, cutoff=0.45, n=15):
    x = (np.ones((rows, 1)) * np.arange(1, cols + 1) - (cols // 2 + 1)) / cols
    y = (np.arange(1, rows + 1)[:, None] * np.ones((1, cols)) - (rows // 2 + 1)) / rows
    return np.fft.fftshift(1.0 / (1.0 + (np.sqrt(x**2 + y**2) / cutoff) ** (2 * n)))


def np_phasecong(im, nscale=4, norient=6, min_wl=3, mult=2.1, sigma_onf=0.55, dtheta_on_sigma=1.2,
                 k=2.0, cut_off=0.5, g=10):
    eps = 1e-4
    theta_sigma = math.pi / norient / dtheta_on_sigma
    rows, cols = im.shape
    imagefft = np.fft.fft2(im)
    zero = np.zeros((rows, cols))
    total_energy, total_sum_an = zero.copy(), zero.copy()
    covx2, covy2, covxy = zero.copy(), zero.copy(), zero.copy()
    xr = (np.arange(-(cols - 1) / 2, (cols - 1) / 2 + 1) / (cols - 1)) if cols % 2 else np.arange(-cols / 2, cols / 2) / cols
    yr = (np.arange(-(rows - 1) / 2, (rows - 1) / 2 + 1) / (rows - 1)) if rows % 2 else np.arange(-rows / 2, rows / 2) / rows
    x, y = np.meshgrid(xr, yr)
    radius = np.sqrt(x**2 + y**2)
    radius[rows // 2, cols // 2] = 1
    theta = np.arctan2(-y, x)
    radius = np.fft.ifftshift(radius)
    theta = np.fft.ifftshift(theta)
    sint, cost = np.sin(theta), np.cos(theta)
    lp = np_lowpass(rows, cols)
    log_gabor = []
    for s in range(nscale):
        fo = 1.0 / (min_wl * mult**s)
        lg = np.exp(-(np.log(radius / fo)) ** 2 / (2 * math.log(sigma_onf) ** 2)) * lp
        lg[0, 0] = 0
        log_gabor.append(lg)
    for o in range(norient):
        angl = o * math.pi / norient
        ds = sint * math.cos(angl) - cost * math.sin(angl)
        dc = cost * math.cos(angl) + sint * math.sin(angl)
        spread = np.exp(-np.abs(np.arctan2(ds, dc)) ** 2 / (2 * theta_sigma**2))
        sum_e, sum_o, sum_an, energy = zero.copy(), zero.copy(), zero.copy(), zero.copy()
        eo, ifft_filters = [], []
        for s in range(nscale):
            filt = log_gabor[s] * spread
            ifft_filters.append(np.real(np.fft.ifft2(filt)) * math.sqrt(rows * cols))
            eo.append(np.fft.ifft2(imagefft * filt))
            an = np.abs(eo[s])
            sum_an += an
            sum_e += eo[s].real
            sum_o += eo[s].imag
            if s == 0:
                em_n = np.sum(filt**2)
                max_an = an
            else:
                max_an = np.maximum(max_an, an)
        x_energy = np.sqrt(sum_e**2 + sum_o**2) + eps
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        for s in range(nscale):
            e, od = eo[s].real, eo[s].imag
            energy += e * mean_e + od * mean_o - np.abs(e * mean_o - od * mean_e)
        median_e2n = np.median(np.abs(eo[0]).ravel() ** 2)
        noise_power = (-median_e2n / math.log(0.5)) / em_n
        est_sum_an2 = sum(f**2 for f in ifft_filters)
        est_sum_aiaj = zero.copy()
        for si in range(nscale - 1):
            for sj in range(si + 1, nscale):
                est_sum_aiaj += ifft_filters[si] * ifft_filters[sj]
        e2 = 2 * noise_power * est_sum_an2.sum() + 4 * noise_power * est_sum_aiaj.sum()
        tau = math.sqrt(e2 / 2)
        t = (tau * math.sqrt(math.pi / 2) + k * math.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
        energy = np.maximum(energy - t, zero)
        width = sum_an / (max_an + eps) / nscale
        weight = 1.0 / (1 + np.exp((cut_off - width) * g))
        total_sum_an += sum_an
        total_energy += weight * energy
        pc = weight * energy / sum_an
        covx, covy = pc * math.cos(angl), pc * math.sin(angl)
        covx2 += covx**2
        covy2 += covy**2
        covxy += covx * covy
    pcong = total_energy / (total_sum_an + eps)
    covx2, covy2, covxy = covx2 / (norient / 2), covy2 / (norient / 2), covxy / norient
    denom = np.sqrt(covxy**2 + (covx2 - covy2) ** 2) + eps
    return pcong, (covy2 + covx2 + denom) / 2, (covy2 + covx2 - denom) / 2


def np_corr(im1, im2, im_max, imf, m1, m2, m3):
    g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5**2))
    win = np.outer(g, g)
    win /= win.sum()

    def f2(x):
        return signal.correlate2d(x, win, mode="same")

    c = 1e-4
    im1, im2, im_max = m1 * im1, m2 * im2, m3 * im_max
    muf = f2(imf)
    sf = f2(imf * imf) - muf**2
    res = []
    for im, m in ((im1, m1), (im2, m2), (im_max, m3)):
        mu = f2(im)
        s2 = f2(im * im) - mu**2
        sxf = f2(im * imf) - mu * muf
        r = np.zeros_like(im)
        r[m] = (sxf[m] + c) / (np.sqrt(np.abs(s2[m] * sf[m])) + c)
        res.append(r)
    return np.max(np.stack(res), axis=0).sum() / m3.sum()


def np_qp(a, b, f):
    pc1, big1, sm1 = np_phasecong(a)
    pc2, big2, sm2 = np_phasecong(b)
    pcf, bigf, smf = np_phasecong(f)
    mask = pc1 > pc2
    pcm = mask * pc1 + ~mask * pc2
    bigm = mask * big1 + ~mask * big2
    smm = mask * sm1 + ~mask * sm2
    m1, m2, m3 = pc1 > 0.1, pc2 > 0.1, pcm > 0.1
    return (np_corr(pc1, pc2, pcm, pcf, m1, m2, m3) * np_corr(big1, big2, bigm, bigf, m1, m2, m3)
            * np_corr(sm1, sm2, smm, smf, m1, m2, m3))


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("shape", [(24, 30), (25, 31), (17, 16)])
def test_phase_congruency_matches_transcription(shape):
    _, a, _ = fusion_triplet(*shape, seed=2, fused_noise=0)
    pc, big, small = phase_congruency(torch.from_numpy(a)[None, None])
    rpc, rbig, rsmall = np_phasecong(a)
    np.testing.assert_allclose(pc[0, 0].numpy(), rpc, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(big[0, 0].numpy(), rbig, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(small[0, 0].numpy(), rsmall, rtol=1e-9, atol=1e-12)
    assert float(pc.min()) >= 0 and float(pc.max()) <= 1


@pytest.mark.parametrize("seed", [0, 3])
def test_qp_matches_transcription(seed):
    f, a, b = fusion_triplet(26, 29, seed=seed, fused_noise=6)
    assert float(q_p(f, [a, b])[0]) == pytest.approx(np_qp(a, b, f), rel=1e-9)


def test_qp_on_an_image_crop():
    from fusecli.metrics.report import load_gray

    a = load_gray(SAMPLES / "ir.png").astype(float)[100:164, 200:280]
    b = load_gray(SAMPLES / "vis.png").astype(float)[100:164, 200:280]
    f = np.round((a + b) / 2)
    assert float(q_p(f, [a, b])[0]) == pytest.approx(np_qp(a, b, f), rel=1e-9)


def test_hand_computed_lowpass_and_grid():
    # lowpassfilter on a 4×5 grid: x = (j - 3)/5, y = (i - 3)/4 (1-based), then fftshift
    rows, cols = 4, 5
    x = (np.arange(1, 6) - 3) / 5.0
    y = (np.arange(1, 5) - 3) / 4.0
    r = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2)
    expected = np.roll(1 / (1 + (r / 0.45) ** 30), (2, 2), axis=(0, 1))
    np.testing.assert_allclose(np_lowpass(rows, cols), expected, rtol=1e-15)
    from fusecli.metrics.q_p import _filters

    filt = _filters(rows, cols, "cpu")[0]
    # the zero-frequency tap of every filter is 0 (the "radius fudge" undone)
    assert float(filt[:, :, 0, 0].abs().max()) == 0.0


def test_properties():
    f, a, b = fusion_triplet(30, 32, seed=5, fused_noise=4)
    v = float(q_p(f, [a, b])[0])
    assert 0 < v < 1
    # symmetric in the sources (the max selection and the max over k are)
    assert float(q_p(f, [b, a])[0]) == pytest.approx(v, rel=1e-12)
    # F = A = B: the masked source maps against the unmasked fused map give < 1 (as in MATLAB),
    # but it beats any other fused image
    same = float(q_p(a, [a, a])[0])
    assert v < same <= 1.0
    # batch = one by one
    batch = torch.from_numpy(np.stack([f, a]))[:, None]
    got = q_p(batch, [a, b])
    assert got[1].item() == pytest.approx(float(q_p(a, [a, b])[0]), rel=1e-12)
    assert evaluate_arrays(f, [a, b], names=["Q_P"], convention="mefb")["Q_P"] == pytest.approx(v, rel=1e-12)
    assert get_metric("q_p").higher_is_better


def test_constant_image_warns_nan():
    c = np.full((16, 16), 80.0)
    with pytest.warns(MetricWarning, match="Q_P"):
        v = float(q_p(c, [c, c])[0])
    assert math.isnan(v)
    _, a, b = fusion_triplet(16, 16, seed=1, fused_noise=0)
    with pytest.warns(MetricWarning):
        assert math.isnan(float(q_p(c, [a, b])[0]))  # the fused image's PC is 0/0, as in MATLAB


def test_errors():
    with pytest.raises(ShapeError, match="11×11"):
        q_p(np.zeros((10, 30)), [np.zeros((10, 30))] * 2)
    with pytest.raises(ShapeError):
        q_p(np.zeros((12, 12)), [np.zeros((12, 13)), np.zeros((12, 12))])
