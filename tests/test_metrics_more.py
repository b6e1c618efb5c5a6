"""NMI, CE, EI, UIQI: independent numpy / scipy formulations, hand values, properties, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusecli.errors import ShapeError
from fusecli.metrics import get_metric
from fusecli.metrics._checks import MetricWarning
from fusecli.metrics.statistics import ei
from fusecli.metrics.information import ce, nmi
from fusecli.metrics.structural import uiqi, uiqi_pair

from .conftest import fusion_triplet

ndimage = pytest.importorskip("scipy.ndimage")


def _images(h=30, w=34, seed=3):
    return fusion_triplet(h, w, seed=seed, fused_noise=4)


F, A, B = _images()


def np_normalize1(x):
    x = x.astype(float)
    if x.max() == 0 and x.min() == 0:
        return x
    return np.floor((x - x.min()) / (x.max() - x.min()) * 255 + 0.5)


def np_nmi(f, a, b):
    def mi_parts(x, y):
        h = np.zeros((256, 256))
        for u, v in zip(x.astype(int).ravel(), y.astype(int).ravel()):
            h[u, v] += 1
        h /= h.sum()
        mx, my = h.sum(1), h.sum(0)
        ent = lambda p: -np.sum(p * np.log2(p + (p == 0)))  # noqa: E731
        return ent(mx) + ent(my) - ent(h), ent(mx), ent(my)

    f, a, b = np_normalize1(f), np_normalize1(a), np_normalize1(b)
    ia, ha, hf = mi_parts(a, f)
    ib, hb, hf2 = mi_parts(b, f)
    return 2 * (ia / (ha + hf) + ib / (hb + hf2))


def np_ce(f, a, b):
    def kl(x, y):
        px = np.bincount(x.astype(int).ravel(), minlength=256) / x.size
        py = np.bincount(y.astype(int).ravel(), minlength=256) / y.size
        r = 0.0
        for k in range(256):
            if px[k] != 0 and py[k] != 0:
                r += px[k] * math.log2(px[k] / py[k])
        return r

    return (kl(a, f) + kl(b, f)) / 2


def np_uiqi(x, y, n=8):
    x, y = x.astype(float), y.astype(float)
    qs = []
    for i in range(x.shape[0] - n + 1):
        for j in range(x.shape[1] - n + 1):
            u, v = x[i:i + n, j:j + n].ravel(), y[i:i + n, j:j + n].ravel()
            mu, mv = u.mean(), v.mean()
            su, sv, suv = u.var(), v.var(), ((u - mu) * (v - mv)).mean()
            if su + sv == 0:
                qs.append(1.0 if mu * mu + mv * mv == 0 else 2 * mu * mv / (mu * mu + mv * mv))
            else:
                qs.append(4 * suv * mu * mv / ((su + sv) * (mu * mu + mv * mv)))
    return float(np.mean(qs))


# ---------------------------------------------------------------- agreement


def test_nmi_matches_liu_formulation():
    a = A * 0.6 + 40  # not spanning 0..255
    assert nmi(F, [a, B]).item() == pytest.approx(np_nmi(F, a, B), rel=1e-12)


def test_ce_matches_loop():
    assert ce(F, [A, B]).item() == pytest.approx(np_ce(F, A, B), rel=1e-12, abs=1e-15)


def test_ei_matches_ndimage_replicate():
    s = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    gy = ndimage.correlate(F, s, mode="nearest")
    gx = ndimage.correlate(F, s.T, mode="nearest")
    assert ei(F).item() == pytest.approx(np.sqrt(gx**2 + gy**2).mean(), rel=1e-12)


def test_uiqi_matches_per_window_statistics():
    assert uiqi_pair(A, F).item() == pytest.approx(np_uiqi(A, F), rel=1e-10)
    want = (np_uiqi(A, F) + np_uiqi(B, F)) / 2
    assert uiqi(F, [A, B]).item() == pytest.approx(want, rel=1e-10)
    assert uiqi(F, [A, B], combine="sum").item() == pytest.approx(2 * want, rel=1e-10)


# ---------------------------------------------------------------- hand values and properties


def test_identities():
    assert uiqi_pair(A, A).item() == 1.0
    assert uiqi(A, [A, A]).item() == 1.0
    assert nmi(A, [A, A]).item() == pytest.approx(2.0, rel=1e-14)  # MI(X,X) = H(X)
    assert ce(A, [A, A]).item() == 0.0


def test_hand_values():
    f = np.zeros((8, 8))
    f[:, 4:] = 255
    half = f.copy()
    q = np.zeros((8, 8))
    q[:, 6:] = 255  # p = (3/4, 1/4)
    # CE: KL((3/4, 1/4) || (1/2, 1/2)) = 3/4 log2(3/2) + 1/4 log2(1/2)
    kl = 0.75 * math.log2(1.5) + 0.25 * math.log2(0.5)
    assert ce(half, [q, half]).item() == pytest.approx(kl / 2, abs=1e-15)
    # EI of a vertical step 0 | 255: Sobel gx = 4 * 255 on the two columns next to the step
    step = np.zeros((6, 6))
    step[:, 3:] = 255
    assert ei(step).item() == pytest.approx(2 * 6 * 4 * 255 / 36, rel=1e-14)
    # UIQI of a constant window pair: 2 m_x m_y / (m_x^2 + m_y^2)
    assert uiqi_pair(np.full((8, 8), 10.0), np.full((8, 8), 20.0)).item() == pytest.approx(0.8)
    assert uiqi_pair(np.zeros((8, 8)), np.zeros((8, 8))).item() == 1.0


def test_symmetric_in_sources():
    for fn in (nmi, ce, uiqi):
        assert fn(F, [A, B]).item() == pytest.approx(fn(F, [B, A]).item(), rel=1e-12)
    assert uiqi_pair(A, F).item() == pytest.approx(uiqi_pair(F, A).item(), rel=1e-12)


def test_edge_cases():
    c = np.full((16, 16), 40.0)
    with pytest.warns(MetricWarning, match="NMI"):
        assert math.isnan(nmi(c, [A[:16, :16], B[:16, :16]]).item())
    assert ei(c).item() == 0.0
    with pytest.raises(ShapeError, match="8×8"):
        uiqi(np.zeros((7, 20)), [np.zeros((7, 20))] * 2)
    with pytest.raises(ShapeError, match="same size"):
        ce(F, [A, B[:-1]])


def test_metadata():
    assert get_metric("CE").higher_is_better is False
    assert get_metric("EI").needs == "fused"
    assert get_metric("UIQI").variants == ("mean", "sum")


# ---------------------------------------------------------------- TE, Q_NCIE (MEFB)

from fusecli.metrics.information import q_ncie, te  # noqa: E402


def np_joint(x, y):
    h = np.zeros((256, 256))
    np.add.at(h, (x.astype(int).ravel(), y.astype(int).ravel()), 1)
    return h / h.sum()


def np_tsallis_as_coded(x, y, q):
    h = np_joint(x, y)
    m1, m2 = h.sum(0), h.sum(1)  # MATLAB sum(h), sum(h')
    r = 0.0
    for i in range(256):
        for j in range(256):
            buff = m1[i] * m2[j]
            if buff != 0:
                r += h[i, j] ** q / buff ** (q - 1)
    return (1 - r) / (1 - q)


def np_ncc(x, y):
    h = np_joint(x, y)
    ent = lambda p: -np.sum(p * np.log2(p + (p == 0))) / 8  # noqa: E731
    return ent(h.sum(0)) + ent(h.sum(1)) - ent(h)


def test_te_matches_coded_loops():
    a = A * 0.7 + 30
    f, a1, b1 = np_normalize1(F), np_normalize1(a), np_normalize1(B)
    want = np_tsallis_as_coded(a1, f, 1.85) + np_tsallis_as_coded(b1, f, 1.85)
    assert te(F, [a, B]).item() == pytest.approx(want, rel=1e-12)


def test_q_ncie_matches_numpy_eig():
    f, a, b = np_normalize1(F), np_normalize1(A), np_normalize1(B)
    nab, naf, nbf = np_ncc(a, b), np_ncc(a, f), np_ncc(b, f)
    r = np.linalg.eigvals(np.array([[1, nab, naf], [nab, 1, nbf], [naf, nbf, 1]])).real
    want = 1 + np.sum(r / 3 * np.log2(r / 3)) / 8
    assert q_ncie(F, [A, B]).item() == pytest.approx(want, rel=1e-12)


def test_te_q_ncie_properties():
    assert te(F, [A, B]).item() == pytest.approx(te(F, [B, A]).item(), rel=1e-12)
    assert q_ncie(F, [A, B]).item() == pytest.approx(q_ncie(F, [B, A]).item(), rel=1e-12)
    # two-level image, F = A = B: h diagonal (1/2, 1/2); coded marginals give sum = 2 (1/2)^q / (1/4)^(q-1)
    g = np.zeros((8, 8))
    g[:, 4:] = 255
    q = 1.85
    one = (1 - 2 * 0.5**q / 0.25 ** (q - 1)) / (1 - q)
    assert te(g, [g, g]).item() == pytest.approx(2 * one, rel=1e-12)
    # F = A = B two-level: NCC(X, X) = H(X) / 8 = 1/8, eigenvalues of R: 1 + 2/8, 1 - 1/8, 1 - 1/8
    r = np.array([1.25, 0.875, 0.875]) / 3
    assert q_ncie(g, [g, g]).item() == pytest.approx(1 + np.sum(r * np.log(r)) / math.log(256), rel=1e-12)
    c = np.full((16, 16), 40.0)
    with pytest.warns(MetricWarning, match="TE"):
        assert math.isnan(te(c, [A[:16, :16], B[:16, :16]]).item())


# ---------------------------------------------------------------- Q_Y, Q_C (MEFB, Liu)

from fusecli.metrics.structural import q_c, q_y  # noqa: E402


def np_ssim_yang(x, y):
    r = 3
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    w = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2))
    w /= w.sum()
    f2 = lambda v: ndimage.correlate(v, w)[r:-r, r:-r]  # noqa: E731  filter2 'valid'
    mx, my = f2(x), f2(y)
    sx, sy, sxy = f2(x * x) - mx**2, f2(y * y) - my**2, f2(x * y) - mx * my
    c = 2e-16
    return ((2 * mx * my + c) * (2 * sxy + c)) / ((mx**2 + my**2 + c) * (sx + sy + c)), sx, sy, sxy


def np_qy(f, a, b):
    s_ab, va, vb, _ = np_ssim_yang(a, b)
    s_af, s_bf = np_ssim_yang(a, f)[0], np_ssim_yang(b, f)[0]
    binm = s_ab >= 0.75
    lam = va / (va + vb)
    q = np.where(binm, lam * s_af + (1 - lam) * s_bf, np.fmax(s_af, s_bf))
    return q[~np.isnan(q)].mean()


def np_qc(f, a, b):
    s_af, _, _, c_af = np_ssim_yang(a, f)
    s_bf, _, _, c_bf = np_ssim_yang(b, f)
    mu = c_af / (c_af + c_bf)
    sim = mu * s_af + (1 - mu) * s_bf
    sim[mu < 0] = 0
    sim[mu > 1] = 1
    return sim[~np.isnan(sim)].mean()


def test_q_y_q_c_match_numpy_on_textured_images():
    # textured images (no flat 7×7 window): the C = 2e-16 maps are well conditioned
    f, a, b = (v + np.random.default_rng(1).normal(0, 1, v.shape) for v in (F, A, B))
    assert q_y(f, [a, b]).item() == pytest.approx(np_qy(f, a, b), rel=1e-9)
    assert q_c(f, [a, b]).item() == pytest.approx(np_qc(f, a, b), rel=1e-9)


def test_q_y_q_c_properties():
    f, a, b = (v + np.random.default_rng(2).normal(0, 1, v.shape) for v in (F, A, B))
    # F = A = B: every SSIM is 1, so both metrics are 1
    assert q_y(a, [a, a]).item() == pytest.approx(1.0, abs=1e-9)
    assert q_c(a, [a, a]).item() == pytest.approx(1.0, abs=1e-9)
    assert q_y(f, [a, b]).item() == pytest.approx(q_y(f, [b, a]).item(), rel=1e-9)
    # Q_C is not symmetric: mu < 0 gives 0 but (1 - mu) > 1 gives 1 when the sources swap
    with pytest.raises(ShapeError, match="11×11"):
        q_y(np.zeros((10, 30)), [np.zeros((10, 30))] * 2)
