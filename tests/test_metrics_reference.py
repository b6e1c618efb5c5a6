"""UIQI, RMSE, Q_G, Q_C / Q_Y against loop-by-loop numpy transcriptions of their reference .m files
(Wang & Bovik's img_qi.m, VIFB's metricsRmse.m, Liu's metricXydeas.m and metricCvejic.m /
metricYang.m), on images with flat, zero and saturated regions and sizes that are not multiples
of the windows."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from fusecli.metrics import evaluate_arrays, get_metric, list_metrics
from fusecli.metrics.similarity import qabf, q_g, rmse
from fusecli.metrics.structural import q_c, q_y, uiqi, uiqi_pair

from .conftest import fusion_triplet


def _flat_triplet(h: int = 45, w: int = 53, seed: int = 0):
    """(F, A, B) on 0..255 integers with windows of every kind: textured, zero in both sources,
    saturated (255) in one, constant in one or both (equal and different constants), a constant
    next to zeros; F = max(A, B) keeps the flat regions."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w)).astype(float)
    b = np.clip(rng.normal(120, 40, (h, w)), 0, 255).round()
    a[:18, :20] = 0
    b[:18, :20] = 0  # zero in both
    a[4:30, 24:44] = 255  # saturated in A only
    b[12:40, 30:50] = 90  # constant in B; overlaps A's saturated block (both flat, different values)
    a[28:, :16] = 77
    b[28:, :16] = 77  # equal constants
    b[26:, 4:10] = 0  # zero next to A's constant
    return np.maximum(a, b), a, b


# ---------------------------------------------------------------- UIQI: img_qi.m

def img_qi_loops(img1: np.ndarray, img2: np.ndarray, block: int = 8) -> float:
    """img_qi.m (Wang & Bovik, LIVE 2001) window by window: the window sums of img1, img2, their
    squares and product; numerator 4 (N s12 - s1 s2) s1 s2, denominator1 N (s11 + s22) - s1² - s2²,
    denominator = denominator1 (s1² + s2²); Q = 1 by default, 2 s1 s2 / (s1² + s2²) where
    denominator1 == 0 and s1² + s2² != 0, numerator / denominator where denominator != 0; mean."""
    n = block * block
    rows, cols = img1.shape[0] - block + 1, img1.shape[1] - block + 1
    total = 0.0
    for i in range(rows):
        for j in range(cols):
            s1 = s2 = s11 = s22 = s12 = 0.0
            for u in range(i, i + block):
                for v in range(j, j + block):
                    x, y = float(img1[u, v]), float(img2[u, v])
                    s1 += x
                    s2 += y
                    s11 += x * x
                    s22 += y * y
                    s12 += x * y
            mul = s1 * s2
            sq = s1 * s1 + s2 * s2
            num = 4 * (n * s12 - mul) * mul
            den1 = n * (s11 + s22) - sq
            den = den1 * sq
            q = 1.0
            if den1 == 0 and sq != 0:
                q = 2 * mul / sq
            if den != 0:
                q = num / den
            total += q
    return total / (rows * cols)


def test_uiqi_equals_img_qi_on_images_with_flat_regions():
    f, a, b = _flat_triplet()
    for x, y in ((a, f), (b, f), (a, b)):
        assert uiqi_pair(x, y).item() == pytest.approx(img_qi_loops(x, y), rel=1e-12, abs=1e-15)
    want = (img_qi_loops(a, f) + img_qi_loops(b, f)) / 2
    assert uiqi(f, [a, b]).item() == pytest.approx(want, rel=1e-12)
    assert evaluate_arrays(f, [a, b], names="UIQI")["UIQI"] == pytest.approx(want, rel=1e-12)


def test_uiqi_flat_window_cases():
    # one 8x8 window of each kind, so the map has one value
    z, c10, c20 = np.zeros((8, 8)), np.full((8, 8), 10.0), np.full((8, 8), 20.0)
    ramp = np.arange(64.0).reshape(8, 8)
    assert uiqi_pair(z, z).item() == 1.0  # both sums 0
    assert uiqi_pair(c10, c20).item() == pytest.approx(0.8)  # both flat: 2 m_x m_y / (m_x² + m_y²)
    assert uiqi_pair(z, c20).item() == 0.0  # flat, one of them 0
    assert uiqi_pair(c10, ramp).item() == 0.0  # flat against textured: no covariance
    assert uiqi_pair(c10, c10).item() == 1.0
    sat = np.full((8, 8), 255.0)
    sat[0, 0] = 254
    assert uiqi_pair(sat, sat).item() == 1.0
    assert uiqi_pair(sat, ramp).item() == pytest.approx(img_qi_loops(sat, ramp), rel=1e-12)


def _gray(*paths) -> list[np.ndarray]:
    """Image files as 0..255 float gray arrays."""
    cv2 = pytest.importorskip("cv2")
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(float) for p in paths]


def test_uiqi_equals_img_qi_on_an_ivf_crop_with_the_max_rule(ivf_pairs):
    """A loop check on a real crop, F = max(A, B): TNO 34 (else the samples)."""
    (pair,) = ivf_pairs("34")
    a, b = _gray(pair.ir, pair.vis)
    f = np.maximum(a, b)
    crop = (slice(100, 140), slice(200, 250))
    assert uiqi_pair(a[crop], f[crop]).item() == pytest.approx(img_qi_loops(a[crop], f[crop]), rel=1e-12)


def test_issue_13_figures_on_tno(tno_dir):
    """Regressions on TNO files (one test: one skip without ../shared).

    img_qi.m averaged over the sources gives 0.538 on TNO 34 with F = max(A, B) (Q(A,F) = 0.525,
    Q(B,F) = 0.551). The 0.95 quoted in issue 13 comes from a modified img_qi.m ('same' zero
    padding and σ_x σ_y in place of σ_xy, i.e. without the correlation term).

    Issue 13's figures on TNO 05 with F = (A + B) / 2: Q_G 0.3748, Qabf 0.3613."""
    a, b = _gray(tno_dir / "ir" / "34.png", tno_dir / "vis" / "34.png")
    f = np.maximum(a, b)
    assert uiqi_pair(a, f).item() == pytest.approx(0.52543, abs=1e-5)
    assert uiqi_pair(b, f).item() == pytest.approx(0.55120, abs=1e-5)
    assert uiqi(f, [a, b]).item() == pytest.approx(0.53831, abs=1e-5)
    a, b = _gray(tno_dir / "ir" / "05.png", tno_dir / "vis" / "05.png")
    f = (a + b) / 2
    assert q_g(f, [a, b]).item() == pytest.approx(0.37478, abs=5e-5)
    assert qabf(f, [a, b]).item() == pytest.approx(0.36131, abs=5e-5)


# ---------------------------------------------------------------- RMSE: VIFB metricsRmse.m

def metrics_rmse_loops(img1: np.ndarray, img2: np.ndarray, fused: np.ndarray) -> float:
    """VIFB metricsRmse.m: (mse(img1, F) + mse(img2, F)) / 2 with its helper
    mse(a, b) = sqrt(sum((a - b).^2)) / (m n)."""
    def helper(x, y):
        m, n = x.shape
        acc = 0.0
        for i in range(m):
            for j in range(n):
                acc += (float(x[i, j]) - float(y[i, j])) ** 2
        return math.sqrt(acc) / (m * n)

    return (helper(img1, fused) + helper(img2, fused)) / 2


def test_rmse_equals_vifb():
    for f, a, b in (_flat_triplet(), fusion_triplet(31, 37, seed=5, fused_noise=6)):
        want = metrics_rmse_loops(a, b, f)
        assert rmse(f, [a, b]).item() == pytest.approx(want, rel=1e-12)
        for conv in ("cddfuse", "matlab", "vifb", "mefb"):
            assert evaluate_arrays(f, [a, b], names="RMSE", convention=conv)["RMSE"] == pytest.approx(want, rel=1e-12)
        textbook = (np.sqrt(np.mean((f - a) ** 2)) + np.sqrt(np.mean((f - b) ** 2))) / 2
        assert rmse(f, [a, b], form="textbook").item() == pytest.approx(textbook, rel=1e-12)


def test_rmse_hand_values_and_metadata():
    z = np.zeros((10, 20))
    one = np.full((10, 20), 3.0)
    # ||F - A||_2 = 3 sqrt(200); divided by 200 pixels; B = F contributes 0
    assert rmse(one, [z, one]).item() == pytest.approx(3 * math.sqrt(200) / 200 / 2, rel=1e-14)
    assert rmse(one, [z, one], form="textbook").item() == pytest.approx(1.5, rel=1e-14)
    assert rmse(one, [one, one]).item() == 0.0
    spec = get_metric("rmse")
    assert spec.name == "RMSE" and spec.higher_is_better is False and spec.needs == "pair"
    assert "RMSE" in list_metrics() and "Q_G" in list_metrics()
    with pytest.raises(KeyError, match="textbook"):
        rmse(one, [z, one], form="banana")


# ---------------------------------------------------------------- Q_G: Liu metricXydeas.m

def _filter2_same_loops(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """MATLAB filter2(h, x, 'same') for a 3x3 h: correlation with zero padding, pixel by pixel."""
    m, n = x.shape
    out = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            acc = 0.0
            for u in range(3):
                for v in range(3):
                    r, c = i + u - 1, j + v - 1
                    if 0 <= r < m and 0 <= c < n:
                        acc += h[u, v] * x[r, c]
            out[i, j] = acc
    return out


def metric_xydeas(img1: np.ndarray, img2: np.ndarray, fuse: np.ndarray) -> float:
    """Liu's metricXydeas.m transcribed statement by statement (MATLAB arrays -> numpy)."""
    flt1 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    flt2 = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float)

    def grad(x):
        gx = _filter2_same_loops(flt1, x)
        gy = _filter2_same_loops(flt2, x)
        g = np.sqrt(gx * gx + gy * gy)
        gx = gx + (gx == 0) * 0.00001
        return g, np.arctan(gy / gx)

    fuse_g, fuse_a = grad(fuse)
    img1_g, img1_a = grad(img1)
    img2_g, img2_a = grad(img2)

    bimap = img1_g > fuse_g
    img1_g = img1_g + (img1_g == 0) * 0.00001
    buffer1 = fuse_g / img1_g
    fuse_g = fuse_g + (fuse_g == 0) * 0.00001
    buffer2 = img1_g / fuse_g
    gaf = bimap * buffer1 + (1 - bimap) * buffer2
    aaf = np.abs(np.abs(img1_a - fuse_a) - np.pi / 2) * 2 / np.pi

    bimap = img2_g > fuse_g
    img2_g = img2_g + (img2_g == 0) * 0.00001
    buffer1 = fuse_g / img2_g
    fuse_g = fuse_g + (fuse_g == 0) * 0.00001
    buffer2 = img2_g / fuse_g
    gbf = bimap * buffer1 + (1 - bimap) * buffer2
    abf = np.abs(np.abs(img2_a - fuse_a) - np.pi / 2) * 2 / np.pi

    gama1 = gama2 = 1.0
    k1, k2 = -10.0, -20.0
    delta1, delta2 = 0.5, 0.75
    qaf = gama1 / (1 + np.exp(k1 * (gaf - delta1))) * (gama2 / (1 + np.exp(k2 * (aaf - delta2))))
    qbf = gama1 / (1 + np.exp(k1 * (gbf - delta1))) * (gama2 / (1 + np.exp(k2 * (abf - delta2))))
    wa, wb = img1_g, img2_g  # L = 1
    return float(np.mean((qaf * wa + qbf * wb) / (wa + wb)))


def test_q_g_equals_metric_xydeas():
    for f, a, b in (_flat_triplet(33, 41), fusion_triplet(30, 34, seed=7, fused_noise=5)):
        assert q_g(f, [a, b]).item() == pytest.approx(metric_xydeas(a, b, f), rel=1e-12)
        mean_rule = (a + b) / 2
        assert q_g(mean_rule, [a, b]).item() == pytest.approx(metric_xydeas(a, b, mean_rule), rel=1e-12)


def test_q_g_properties():
    f, a, b = fusion_triplet(30, 34, seed=8, fused_noise=5)
    assert q_g(a, [a, a]).item() == pytest.approx(1 / (1 + math.exp(-5)) / (1 + math.exp(-5)), rel=1e-12)
    assert q_g(f, [a, b]).item() != pytest.approx(qabf(f, [a, b]).item(), abs=1e-3)  # a different metric
    spec = get_metric("q_g")
    assert spec.higher_is_better and spec.needs == "pair"


def test_q_g_equals_metric_xydeas_on_an_ivf_crop_with_the_mean_rule(ivf_pairs):
    """A loop check on a real crop, F = (A + B) / 2: TNO 05 (else the samples; issue 13's figures on
    the whole of TNO 05: test_issue_13_figures_on_tno)."""
    (pair,) = ivf_pairs("05")
    a, b = _gray(pair.ir, pair.vis)
    f = (a + b) / 2
    crop = (slice(60, 110), slice(100, 160))
    assert q_g(f[crop], [a[crop], b[crop]]).item() == pytest.approx(
        metric_xydeas(a[crop], b[crop], f[crop]), rel=1e-12)


# ---------------------------------------------------------------- Q_C, Q_Y: metricCvejic.m / metricYang.m

def _fspecial_gaussian(n: int = 7, sigma: float = 1.5) -> np.ndarray:
    r = (n - 1) / 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return h / h.sum()


def ssim_yang_exact(img1: np.ndarray, img2: np.ndarray):
    """ssim_yang of metricCvejic.m / metricYang.m (7x7 fspecial Gaussian σ 1.5, filter2 'valid',
    C1 = C2 = 2e-16) with every window statistic computed window by window in exact rational
    arithmetic (the window normalised to sum exactly 1) and then rounded once to float64.

    The .m file's statistics are E[xy] - E[x]E[y]: exactly 0 where an image is constant over the
    window, in floating point a round-off residue of either sign whose value depends on the
    summation order (MATLAB's filter2 included); the metrics then divide such residues. The exact
    arithmetic is the .m file's definition without that noise. Images: multiples of 1/2 on 0..255.
    """
    ratios = [Fraction(float(v)) for v in _fspecial_gaussian().ravel()]
    scale = math.lcm(*(r.denominator for r in ratios))
    w = [int(r * scale) for r in ratios]  # integer weights; the window is w / sum(w) exactly
    s = sum(w)
    x2, y2 = (np.asarray(v, float) * 2 for v in (img1, img2))  # integers
    assert np.all(x2 == np.round(x2)) and np.all(y2 == np.round(y2))
    rows, cols = img1.shape[0] - 6, img1.shape[1] - 6
    mu1, mu2, s11, s22, s12 = (np.zeros((rows, cols)) for _ in range(5))
    for i in range(rows):
        for j in range(cols):
            t1 = t2 = t11 = t22 = t12 = 0
            for k in range(49):
                u, v = i + k // 7, j + k % 7
                x, y = int(x2[u, v]), int(y2[u, v])
                t1 += w[k] * x
                t2 += w[k] * y
                t11 += w[k] * x * x
                t22 += w[k] * y * y
                t12 += w[k] * x * y
            # E[x] = t1 / (2 s), E[xy] - E[x]E[y] = (s t12 - t1 t2) / (4 s^2): int / int rounds once
            mu1[i, j], mu2[i, j] = t1 / (2 * s), t2 / (2 * s)
            s11[i, j] = (s * t11 - t1 * t1) / (4 * s * s)
            s22[i, j] = (s * t22 - t2 * t2) / (4 * s * s)
            s12[i, j] = (s * t12 - t1 * t2) / (4 * s * s)
    c = 2e-16
    ssim_map = ((2 * mu1 * mu2 + c) * (2 * s12 + c)) / ((mu1 * mu1 + mu2 * mu2 + c) * (s11 + s22 + c))
    return ssim_map, s11, s22, s12


def metric_cvejic_exact(im1, im2, fim) -> float:
    """metricCvejic.m, sw = 2, as MEFB's metricsQc.m calls it (NaN pixels left out of the mean)."""
    ssim_map2, _, _, sigma_xf = ssim_yang_exact(im1, fim)
    ssim_map3, _, _, sigma_yf = ssim_yang_exact(im2, fim)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim_xyf = sigma_xf / (sigma_xf + sigma_yf)
    sim = sim_xyf * ssim_map2 + (1 - sim_xyf) * ssim_map3
    sim[sim_xyf < 0] = 0
    sim[sim_xyf > 1] = 1
    return float(sim[~np.isnan(sim)].mean())


def metric_yang_exact(im1, im2, fim) -> float:
    """metricYang.m as MEFB's metricsQy.m calls it (NaN pixels left out of the mean)."""
    ssim_map1, sigma1_sq1, sigma2_sq1, _ = ssim_yang_exact(im1, im2)
    ssim_map2 = ssim_yang_exact(im1, fim)[0]
    ssim_map3 = ssim_yang_exact(im2, fim)[0]
    bin_map = ssim_map1 >= 0.75
    with np.errstate(divide="ignore", invalid="ignore"):
        ramda = sigma1_sq1 / (sigma1_sq1 + sigma2_sq1)
    q1 = (ramda * ssim_map2 + (1 - ramda) * ssim_map3) * bin_map  # NaN .* 0 stays NaN
    q2 = np.fmax(ssim_map2, ssim_map3) * ~bin_map  # MATLAB's max ignores NaN
    q = q1 + q2
    return float(q[~np.isnan(q)].mean())


def test_q_c_q_y_equal_the_m_files_on_flat_regions():
    """Windows constant in one source (its covariance with F is exactly 0: μ = 0, or NaN where F is
    constant too) used to give a round-off-signed μ, and μ < 0 zeroes the pixel."""
    f, a, b = _flat_triplet(29, 37, seed=1)
    assert q_c(f, [a, b]).item() == pytest.approx(metric_cvejic_exact(a, b, f), rel=1e-10)
    assert q_y(f, [a, b]).item() == pytest.approx(metric_yang_exact(a, b, f), rel=1e-10)
    mean_rule = (a + b) / 2
    assert q_c(mean_rule, [a, b]).item() == pytest.approx(metric_cvejic_exact(a, b, mean_rule), rel=1e-10)


def test_q_c_on_an_ivf_crop_with_flat_windows(ivf_pairs):
    """TNO 05 with F = max(A, B) has windows constant in a source and in F (its IR saturates on a
    hot target): full size, the round-off-signed value was 8.9e-4 above the exact one, on this
    crop 0.025. Without ../shared: the samples with the IR's gain raised 1.5x, so that the warm
    people and car saturate the same way, on a crop around them."""
    (pair,) = ivf_pairs("05")
    a, b = _gray(pair.ir, pair.vis)
    if pair.source == "samples":
        a, crop = np.minimum(a * 1.5, 255).round(), (slice(120, 161), slice(222, 269))
    else:
        crop = (slice(70, 111), slice(170, 217))
    a, b = a[crop], b[crop]
    f = np.maximum(a, b)
    windows = [np.lib.stride_tricks.sliding_window_view(x, (7, 7)) for x in (a, f)]
    flat = [w.max(axis=(2, 3)) == w.min(axis=(2, 3)) for w in windows]
    assert (flat[0] & flat[1]).any()  # the case this test is about
    assert q_c(f, [a, b]).item() == pytest.approx(metric_cvejic_exact(a, b, f), rel=1e-10)
