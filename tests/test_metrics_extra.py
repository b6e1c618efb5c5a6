"""Nabf, Q_CB, Q_CV, Piella Q_S/Q_W/Q_E, MEF-SSIM: independent numpy / scipy formulations,
hand values, properties and edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from fusecli.errors import ShapeError
from fusecli.metrics import evaluate, get_metric

from .conftest import fusion_triplet

ndimage = pytest.importorskip("scipy.ndimage")


def _images(h=30, w=34, seed=5):
    return fusion_triplet(h, w, seed=seed, fused_noise=12)


F, A, B = _images()


def _close(got, want, rel=1e-9):
    assert got == pytest.approx(want, rel=rel, abs=1e-12)


# ------------------------------------------------------------------ Nabf


def np_nabf(f, a, b):
    """Loop-by-loop translation of analysis_nabf.m's arithmetic (numpy)."""
    def sobel(x):
        xe = np.pad(x, 1, mode="reflect")  # per_extn_im_fn: mirror without repeating the edge
        kv = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8.0
        gv = ndimage.correlate(xe, kv, mode="constant")[1:-1, 1:-1]
        gh = ndimage.correlate(xe, kv.T, mode="constant")[1:-1, 1:-1]
        g = np.hypot(gv, gh)
        with np.errstate(divide="ignore", invalid="ignore"):
            ang = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
        return g, ang

    ga, aa = sobel(a)
    gb, ab = sobel(b)
    gf, af = sobel(f)

    def q(gs, as_):
        r = np.zeros_like(gs)
        for idx in np.ndindex(gs.shape):
            if gs[idx] == 0 or gf[idx] == 0:
                r[idx] = 0
            elif gs[idx] > gf[idx]:
                r[idx] = gf[idx] / gs[idx]
            else:
                r[idx] = gs[idx] / gf[idx]
        al = np.abs(np.abs(as_ - af) - np.pi / 2) * 2 / np.pi
        return np.sqrt(0.9999 / (1 + np.exp(-19 * (r - 0.5))) * 0.9995 / (1 + np.exp(-22 * (al - 0.5))))

    qa, qb = q(ga, aa), q(gb, ab)
    wa = np.where(ga >= 2, ga ** 1.5, 0.001)
    wb = np.where(gb >= 2, gb ** 1.5, 0.001)
    na = (gf > ga) & (gf > gb)
    return np.sum(na * ((1 - qa) * wa + (1 - qb) * wb)) / np.sum(wa + wb)


def test_nabf_matches_numpy_both_orders():
    nabf = get_metric("Nabf").fn
    _close(float(nabf(F, [A, B])[0]), np_nabf(F, A, B))
    _close(float(nabf(F, [A, B], convention="matlab")[0]), np_nabf(A, B, F))
    _close(float(nabf(F, [A, B], convention="matlab", order="intended")[0]), np_nabf(F, A, B))
    assert float(nabf(F, [A, B])[0]) > 0


def test_nabf_properties():
    nabf = get_metric("Nabf").fn
    assert not get_metric("Nabf").higher_is_better
    # F = a source: F's gradient never exceeds that source's -> no artefacts
    assert float(nabf(A, [A, B])[0]) == 0.0
    # symmetric in the sources
    _close(float(nabf(F, [B, A])[0]), float(nabf(F, [A, B])[0]))
    # constant images: no gradient anywhere -> 0, not NaN
    z = np.zeros((5, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(nabf(z + 7, [z, z])[0]) == 0.0
    # a noisy F on flat sources: every pixel with a gradient is an artefact; hand value:
    # sources flat -> w = 0.001 everywhere, Q_SF = sqrt(Q_g(0) Q_α(A)), so Nabf = mean(na * (1 - Q))
    f = np.zeros((4, 4))
    f[1, 1] = 8.0
    got = float(nabf(f, [z[:4, :4], z[:4, :4]])[0])
    assert got == pytest.approx(np_nabf(f, z[:4, :4], z[:4, :4]), rel=1e-12)
    assert 0 < got < 1
    # batched = per image
    fb = np.stack([F, A])[:, None]
    out = nabf(fb, [A, B])
    assert out.shape == (2,) and out.dtype == torch.float64
    _close(float(out[0]), np_nabf(F, A, B))


def test_nabf_errors():
    nabf = get_metric("Nabf").fn
    with pytest.raises(ShapeError):
        nabf(F, [A])
    with pytest.raises(Exception):
        nabf(F, [A, B], order="sideways")


# ------------------------------------------------------------------ Q_CB, Q_CV


def np_normalize1(x, mefb=False):
    x = x.astype(float)
    if x.max() == 0 and x.min() == 0:
        return x
    if mefb:
        x = x / 255.0
    v = (x - x.min()) / (x.max() - x.min()) * 255
    return np.sign(v) * np.floor(np.abs(v) + 0.5)  # MATLAB round


def np_freqspace(h, w):
    f1 = (np.arange(h) - h // 2) * (2.0 / h)
    f2 = (np.arange(w) - w // 2) * (2.0 / w)
    u, v = np.meshgrid(f2, f1)
    return u, v


def np_freqfilter(x, s):
    return np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(x)) * s))


def np_qcb(f, a, b, mefb=False):
    h, w = f.shape
    u, v = np_freqspace(h, w)
    r = np.sqrt((u * w / 30) ** 2 + (v * h / 30) ** 2)
    s = np.exp(-(r / 15.3870) ** 2) - 0.7622 * np.exp(-(r / 1.3456) ** 2)
    yy, xx = np.mgrid[-15:16, -15:16]

    def filt(z, sigma):
        g = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)
        return (ndimage.correlate(z.real, g, mode="constant")
                + 1j * ndimage.correlate(z.imag, g, mode="constant"))

    def cp(x):
        z = np_freqfilter(np_normalize1(x, mefb), s)
        c = np.abs(filt(z, 2) / filt(z, 4) - 1)
        return c ** 3 / (c ** 2 + 1e-4)

    c1, c2, cf = cp(a), cp(b), cp(f)
    q1 = np.where(c1 < cf, c1 / cf, cf / c1)
    q2 = np.where(c2 < cf, c2 / cf, cf / c2)
    lam = c1 ** 2 / (c1 ** 2 + c2 ** 2)
    return np.mean(lam * q1 + (1 - lam) * q2)


def np_qcv(f, a, b):
    f, a, b = np_normalize1(f), np_normalize1(a), np_normalize1(b)
    h, w = f.shape
    u, v = np_freqspace(h, w)
    r = np.sqrt((u * w / 8) ** 2 + (v * h / 8) ** 2)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-(0.144 * r) ** 1.1)
    k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    num = den = 0.0
    for s in (a, b):
        g = np.hypot(ndimage.correlate(s, k, mode="constant"), ndimage.correlate(s, k.T, mode="constant"))
        d = np_freqfilter(s - f, csf)
        for i in range(0, h, 16):
            for j in range(0, w, 16):
                lam = np.sum(g[i:i + 16, j:j + 16] ** 5)
                dd = np.sum(d[i:i + 16, j:j + 16] ** 2) / 256.0  # zero padding counts in mean2
                num += lam * dd.real
                den += lam
    return num / den


@pytest.mark.parametrize("shape", [(30, 34), (33, 27)])  # even and odd sizes (freqspace / fftshift)
def test_qcb_qcv_match_numpy(shape):
    f, a, b = _images(*shape, seed=11)
    qcb, qcv = get_metric("Q_CB").fn, get_metric("Q_CV").fn
    _close(float(qcb(f, [a, b])[0]), np_qcb(f, a, b), rel=1e-9)
    _close(float(qcb(f, [a, b], convention="mefb")[0]), np_qcb(f, a, b, mefb=True), rel=1e-9)
    _close(float(qcv(f, [a, b])[0]), np_qcv(f, a, b), rel=1e-9)


def test_qcb_qcv_properties():
    qcb, qcv = get_metric("Q_CB").fn, get_metric("Q_CV").fn
    assert get_metric("Q_CB").higher_is_better and not get_metric("Q_CV").higher_is_better
    # F = A = B: perfect
    _close(float(qcb(A, [A, A])[0]), 1.0, rel=1e-12)
    assert float(qcv(A, [A, A])[0]) == 0.0
    # symmetric in the sources
    _close(float(qcb(F, [B, A])[0]), float(qcb(F, [A, B])[0]), rel=1e-12)
    _close(float(qcv(F, [B, A])[0]), float(qcv(F, [A, B])[0]), rel=1e-12)
    # Q_CB in [0, 1]; Q_CV grows with the distortion
    assert 0 < float(qcb(F, [A, B])[0]) < 1
    noisy = np.clip(F + np.random.default_rng(0).normal(0, 40, F.shape), 0, 255)
    assert float(qcv(noisy, [A, B])[0]) > float(qcv(F, [A, B])[0])
    # the normalize1 step makes both invariant to an affine change of F's range
    _close(float(qcv(F * 0.5 + 10, [A, B])[0]), float(qcv(F, [A, B])[0]), rel=1e-9)
    # batch = per image
    out = qcb(np.stack([F, A])[:, None], [A, B])
    assert out.shape == (2,) and out.dtype == torch.float64
    _close(float(out[0]), float(qcb(F, [A, B])[0]), rel=1e-12)


def test_qcb_qcv_constant_images_warn():
    from fusecli.metrics._checks import MetricWarning

    z = np.full((20, 20), 9.0)
    with pytest.warns(MetricWarning):
        assert math.isnan(float(get_metric("Q_CB").fn(z, [A[:20, :20], B[:20, :20]])[0]))
    with pytest.warns(MetricWarning):
        assert math.isnan(float(get_metric("Q_CV").fn(F[:20, :20], [z * 0, z * 0])[0]))


# ------------------------------------------------------------------ Piella Q_S / Q_W / Q_E


def _gauss2d(size=11, sigma=1.5):
    r = (size - 1) / 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return g / g.sum()


def _valid(x, k):
    n = k.shape[0] // 2
    return ndimage.correlate(x, k, mode="constant")[n:x.shape[0] - n, n:x.shape[1] - n]


def np_ssim_index(x, y):
    g = _gauss2d()
    mx, my = _valid(x, g), _valid(y, g)
    sx = _valid(x * x, g) - mx ** 2
    sy = _valid(y * y, g) - my ** 2
    sxy = _valid(x * y, g) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sx + sy + c2)), sx, sy


def np_piella(f, a, b, sw):
    def parts(f, a, b):
        _, va, vb = np_ssim_index(a, b)
        t = np.where(va + vb == 0, 0.5, 0.0)
        va, vb = va + t, vb + t
        lam = va / (va + vb)
        return lam * np_ssim_index(f, a)[0] + (1 - lam) * np_ssim_index(f, b)[0], np.maximum(va, vb)

    def edge(x):
        k = np.array([[1, 0, -1]] * 3, float)
        return np.hypot(ndimage.correlate(x, k, mode="constant"), ndimage.correlate(x, k.T, mode="constant"))

    if sw == 3:
        f, a, b = edge(f), edge(a), edge(b)
    q, cw = parts(f, a, b)
    return q.mean() if sw == 1 else np.sum(cw * q) / np.sum(cw)


def test_piella_match_numpy():
    qs, qw, qe = get_metric("Q_S").fn, get_metric("Q_W").fn, get_metric("Q_E").fn
    _close(float(qs(F, [A, B])[0]), np_piella(F, A, B, 1), rel=1e-9)
    _close(float(qw(F, [A, B])[0]), np_piella(F, A, B, 2), rel=1e-9)
    _close(float(qw(F, [A, B], convention="mefb")[0]), np_piella(F, A, B, 3), rel=1e-9)
    _close(float(qe(F, [A, B])[0]), np_piella(F, A, B, 3), rel=1e-9)
    want = np_piella(F, A, B, 2) ** 0.5 * np_piella(F, A, B, 3) ** 0.5
    _close(float(qe(F, [A, B], alpha=0.5)[0]), want, rel=1e-9)


def test_piella_properties_and_edges():
    qs, qw, qe = get_metric("Q_S").fn, get_metric("Q_W").fn, get_metric("Q_E").fn
    for fn in (qs, qw, qe):
        _close(float(fn(A, [A, A])[0]), 1.0, rel=1e-12)  # Q(X, X, X) = 1
        _close(float(fn(F, [B, A])[0]), float(fn(F, [A, B])[0]), rel=1e-9)  # symmetric
        assert float(fn(F, [A, B])[0]) < 1
        with pytest.raises(ShapeError, match="11"):
            fn(F[:10, :20], [A[:10, :20], B[:10, :20]])
    # flat sources: both variances 0 -> λ = 0.5 (the +0.5 rule), no NaN, no warning
    z = np.zeros((12, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in (qs, qw, qe):
            assert math.isfinite(float(fn(F[:12, :12], [z, z])[0]))
        # hand value: F = A = B = 0 -> SSIM maps are C1 C2 / (C1 C2) = 1
        assert float(qs(z, [z, z])[0]) == 1.0


# ------------------------------------------------------------------ MEF-SSIM


def np_mef_ssim(seq, f):
    """Position-by-position translation of mef_ssim.m (numpy)."""
    eps = np.finfo(float).eps
    seq = [s.astype(float) for s in seq]
    f = f.astype(float)
    g = _gauss2d()
    box = np.ones((11, 11)) / 121
    mus = [_valid(s, box) for s in seq]
    eds = [np.sqrt(np.maximum(121 * (_valid(s * s, box) - m * m), 0)) + 0.001 for s, m in zip(seq, mus)]
    hv, wv = mus[0].shape
    q = np.zeros((hv, wv))
    for i in range(hv):
        for j in range(wv):
            blocks = [s[i:i + 11, j:j + 11] for s in seq]
            mu = [m[i, j] for m in mus]
            ed = np.array([e[i, j] for e in eds])
            den = sum(np.linalg.norm(b - m) for b, m in zip(blocks, mu))
            tot = sum(blocks)
            r = (np.linalg.norm(tot - tot.mean()) + eps) / (den + eps)
            r = 1 - eps if r > 1 else (eps if r < 0 else r)
            p = min(np.tan(np.pi / 2 * r), 10)
            w = (ed / 11) ** p + eps
            w = w / w.sum()
            rb = sum(wk * (b - m) / e for wk, b, m, e in zip(w, blocks, mu, ed))
            if np.linalg.norm(rb) > 0:
                rb = rb / np.linalg.norm(rb) * ed.max()
            fb = f[i:i + 11, j:j + 11]
            m1, m2 = np.sum(g * rb), np.sum(g * fb)
            s1, s2 = np.sum(g * (rb - m1) ** 2), np.sum(g * (fb - m2) ** 2)
            s12 = np.sum(g * (rb - m1) * (fb - m2))
            q[i, j] = (2 * s12 + (0.03 * 255) ** 2) / (s1 + s2 + (0.03 * 255) ** 2)
    return q.mean()


def np_mef_ms_ssim(seq, f):
    def down(x):
        xp = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
        return ((xp[:-1, :-1] + xp[1:, :-1] + xp[:-1, 1:] + xp[1:, 1:]) / 4)[::2, ::2]

    w = np.array([0.0448, 0.2856, 0.3001])
    w = w / w.sum()
    qs = []
    for lev in range(3):
        if lev:
            seq, f = [down(s) for s in seq], down(f)
        qs.append(np_mef_ssim(seq, f))
    return np.prod(np.array(qs) ** w)


def test_mef_ssim_matches_numpy():
    mef = get_metric("MEF-SSIM").fn
    f, a, b = F[:17, :19], A[:17, :19], B[:17, :19]
    _close(float(mef(f, [a, b])[0]), np_mef_ssim([a, b], f), rel=1e-9)
    c = np.clip(a * 0.6 + 60, 0, 255).round()  # K = 3 sources
    _close(float(mef(f, [a, b, c])[0]), np_mef_ssim([a, b, c], f), rel=1e-9)
    f, a, b = _images(45, 47, seed=2)  # odd sizes: the symmetric padding of the downsampling matters
    want = np_mef_ms_ssim([a, b], f)
    _close(float(get_metric("MEF-MS-SSIM").fn(f, [a, b])[0]), want, rel=1e-9)
    _close(float(mef(f, [a, b], convention="mefb")[0]), want, rel=1e-9)


def test_mef_ssim_properties_and_edges():
    spec = get_metric("MEF-SSIM")
    assert spec.needs == "sources" and spec.higher_is_better
    mef = spec.fn
    # F = the only source (or all sources equal): structure identical, only the +0.001 in c_k
    assert float(mef(A, [A])[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(mef(A, [A, A])[0]) == pytest.approx(1.0, abs=1e-6)
    # source order does not matter; a worse F scores lower
    _close(float(mef(F, [B, A])[0]), float(mef(F, [A, B])[0]), rel=1e-12)
    noisy = np.clip(F + np.random.default_rng(1).normal(0, 40, F.shape), 0, 255)
    assert float(mef(noisy, [A, B])[0]) < float(mef(F, [A, B])[0]) < 1
    # constant images: C > 0, so a finite value, no warning; all flat -> exactly 1
    z = np.full((12, 13), 80.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(mef(z, [z, z * 0])[0]) == pytest.approx(1.0, abs=1e-9)
    # via evaluate with an exposure stack of 3 sources
    out = evaluate(F, [A, B, F], names=["MEF-SSIM"])
    _close(float(out["MEF-SSIM"][0]), float(mef(F, [A, B, F])[0]), rel=1e-12)
    with pytest.raises(ShapeError, match="11"):
        mef(F[:10, :], [A[:10, :], B[:10, :]])
    with pytest.raises(ShapeError, match="44"):
        get_metric("MEF-MS-SSIM").fn(F, [A, B])
    with pytest.raises(ShapeError):
        mef(F, [])


def test_negative_scores_with_fractional_powers_warn():
    from fusecli.metrics._checks import MetricWarning

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 50, 52, dtype=torch.float64, generator=g) * 255
    s = [torch.rand(2, 1, 50, 52, dtype=torch.float64, generator=g) * 255,
         torch.rand(50, 52, dtype=torch.float64, generator=g) * 255]
    with pytest.warns(MetricWarning, match="MEF-MS-SSIM"):
        out = get_metric("MEF-MS-SSIM").fn(x, s)
    assert torch.isnan(out).any()
    assert torch.isfinite(get_metric("MEF-SSIM").fn(x, s)).all()  # single scale: never NaN
