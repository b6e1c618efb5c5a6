"""MI, MSE, PSNR, CC, SCD, VIF, VIFF, Qabf, SSIM: hand-computed values, properties, edge cases, and
agreement with independent numpy / scipy / scikit-image / scikit-learn formulations written the
way the reference toolboxes compute them (see ../shared/reference/metrics.md §3)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from fusecli.errors import ShapeError
from fusecli.metrics import evaluate, evaluate_arrays, get_metric, list_metrics
from fusecli.metrics._checks import MetricWarning
from fusecli.metrics.similarity import cc, mi, mse, psnr, qabf, scd, ssim, ssim_pair, vif, vifp
from fusecli.metrics.viff import viff

scipy_signal = pytest.importorskip("scipy.signal")
ndimage = pytest.importorskip("scipy.ndimage")

CONVS = ["cddfuse", "matlab", "vifb", "mefb"]

# ---------------------------------------------------------------- test images


def _images(h=48, w=56, seed=5):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.clip(120 + 90 * np.sin(xx / 6.0) * np.cos(yy / 9.0) + rng.normal(0, 8, (h, w)), 0, 255).round()
    b = np.clip(60 + 2.5 * xx + rng.normal(0, 20, (h, w)), 0, 255).round()
    b[h // 3: h // 2, :] = 255  # a saturated band (flat region, levels 254/255 quirk)
    f = np.clip(0.55 * a + 0.45 * b + rng.normal(0, 3, (h, w)), 0, 255).round()
    return f, a, b


F, A, B = _images()

# ---------------------------------------------------------------- independent references


def fspecial_gauss(n, sigma):
    r = (n - 1) / 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def np_mi_nats(x, y):
    mutual_info_score = pytest.importorskip("sklearn.metrics").mutual_info_score

    return mutual_info_score(x.ravel(), y.ravel())


def np_entropy2(x):
    c = np.bincount(x.astype(np.int64).ravel(), minlength=256)
    p = c[c > 0] / x.size
    return -(p * np.log2(p)).sum()


def np_mi_matlab(a, f):
    ha, hf = np_entropy2(a), np_entropy2(f)
    ia = np.minimum(a.astype(np.int64), 254)  # uint8(x)+1 saturates at 255 -> index of 254
    i_f = np.minimum(f.astype(np.int64), 254)
    joint = np.zeros((256, 256))
    np.add.at(joint, (i_f.ravel(), ia.ravel()), 1)
    p = joint[joint > 0] / a.size
    return ha + hf + (p * np.log2(p)).sum()


def np_mi_vifb(a, f):
    def lev(x):
        x = x.astype(float)
        x = (x - x.min()) / (x.max() - x.min()) if x.max() != x.min() else np.zeros_like(x)
        return np.floor(x * 255 + 0.5).astype(np.int64)  # int16() of non-negative values

    ia, i_f = lev(a), lev(f)
    joint = np.zeros((256, 256))
    np.add.at(joint, (ia.ravel(), i_f.ravel()), 1)
    p = joint / a.size
    pa, pf = p.sum(1), p.sum(0)
    h = lambda q: -(q[q > 0] * np.log(q[q > 0])).sum()  # noqa: E731
    return h(pa) + h(pf) - h(p)


def np_corr(x, y):
    x = x - x.mean()
    y = y - y.mean()
    return (x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum())


def np_vifp(ref, dist, sigma_nsq=2.0, stats=False):
    ref, dist = ref.astype(float), dist.astype(float)
    num = den = 0.0
    per_scale = []
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        win = fspecial_gauss(n, n / 5)
        f2 = lambda x: scipy_signal.correlate2d(x, win, mode="valid")  # noqa: E731  filter2
        if scale > 1:
            ref, dist = f2(ref)[::2, ::2], f2(dist)[::2, ::2]
        mu1, mu2 = f2(ref), f2(dist)
        s1 = np.maximum(f2(ref * ref) - mu1 * mu1, 0)
        s2 = np.maximum(f2(dist * dist) - mu2 * mu2, 0)
        s12 = f2(ref * dist) - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        m = s1 < 1e-10
        g[m], sv[m], s1[m] = 0, s2[m], 0
        m = s2 < 1e-10
        g[m], sv[m] = 0, 0
        m = g < 0
        sv[m], g[m] = s2[m], 0
        sv[sv <= 1e-10] = 1e-10
        vid = np.log10(1 + g * g * s1 / (sv + sigma_nsq))
        vind = np.log10(1 + s1 / sigma_nsq)
        per_scale.append((vid, vind, g))
        num += vid.sum()
        den += vind.sum()
    return per_scale if stats else num / den


def np_viff(a, b, f):
    sq = 0.005 * 255 * 255
    sa, sb = np_vifp(a, f, sq, stats=True), np_vifp(b, f, sq, stats=True)
    p = np.array([1, 0, 0.15, 1]) / 2.15
    out = 0.0
    for i in range(4):
        (za, ma, ga), (zb, mb, gb) = sa[i], sb[i]
        take_a = ga < gb
        z = np.where(take_a, za, zb)
        m = np.where(take_a, ma, mb)
        out += p[i] * (z + 1e-7).sum() / (m + 1e-7).sum()
    return out


def np_qabf(f, a, b):
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def grad(x):
        gx = scipy_signal.convolve2d(x, h3, mode="same")
        gy = scipy_signal.convolve2d(x, h1, mode="same")
        g = np.sqrt(gx * gx + gy * gy)
        al = np.full_like(x, math.pi / 2)
        nz = gx != 0
        al[nz] = np.arctan(gy[nz] / gx[nz])
        return g, al

    def q(ga, aa, gf, af):
        G = np.empty_like(ga)
        G[ga > gf] = gf[ga > gf] / ga[ga > gf]
        G[ga == gf] = gf[ga == gf]
        G[ga < gf] = ga[ga < gf] / gf[ga < gf]
        Aa = 1 - np.abs(aa - af) / (math.pi / 2)
        return 0.9994 / (1 + np.exp(-15 * (G - 0.5))) * 0.9879 / (1 + np.exp(-22 * (Aa - 0.8)))

    (ga, aa), (gb, ab), (gf, af) = grad(a.astype(float)), grad(b.astype(float)), grad(f.astype(float))
    return (q(ga, aa, gf, af) * ga + q(gb, ab, gf, af) * gb).sum() / (ga + gb).sum()


def np_ssim_matlab(x, y):
    w = fspecial_gauss(11, 1.5)
    filt = lambda v: ndimage.correlate(v, w, mode="nearest")  # noqa: E731  imfilter 'replicate'
    x, y = x.astype(float), y.astype(float)
    mx, my = filt(x), filt(y)
    sx, sy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = 1e-4, 9e-4
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sx + sy + c2))).mean()


# ---------------------------------------------------------------- agreement with references


def test_mi_cddfuse_matches_sklearn():
    assert mi(F, [A, B]).item() == pytest.approx(np_mi_nats(F, A) + np_mi_nats(F, B), rel=1e-12)


def test_mi_matlab_bits_with_254_255_merge():
    assert mi(F, [A, B], convention="matlab").item() == pytest.approx(
        np_mi_matlab(A, F) + np_mi_matlab(B, F), rel=1e-12)


@pytest.mark.parametrize("conv", ["vifb", "mefb"])
def test_mi_vifb_minmax(conv):
    a = A * 0.5 + 20  # not spanning 0..255: the min-max normalisation matters
    assert mi(F, [a, B], convention=conv).item() == pytest.approx(np_mi_vifb(a, F) + np_mi_vifb(B, F), rel=1e-12)


@pytest.mark.parametrize("conv", CONVS)
def test_cc_scd_mse_psnr_match_numpy(conv):
    f, a, b = F, A, B
    assert cc(f, [a, b]).item() == pytest.approx((np_corr(a, f) + np_corr(b, f)) / 2, rel=1e-12)
    assert scd(f, [a, b]).item() == pytest.approx(np_corr(f - b, a) + np_corr(f - a, b), rel=1e-12)
    m = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2
    assert mse(f, [a, b], convention=conv).item() == pytest.approx(m / 255**2 if conv == "matlab" else m, rel=1e-12)
    if conv == "cddfuse":
        want = 10 * np.log10(f.max() ** 2 / m)
    elif conv == "matlab":
        want = 20 * np.log10(255 / np.sqrt(m / 255**2))
    else:
        n = f.size
        r = (np.sqrt(((a - f) ** 2).sum()) / n + np.sqrt(((b - f) ** 2).sum()) / n) / 2
        want = 20 * np.log10(255 / np.sqrt(r))
    assert psnr(f, [a, b], convention=conv).item() == pytest.approx(want, rel=1e-12)


def test_vifp_matches_scipy_2d_filters():
    want = np_vifp(A, F) + np_vifp(B, F)
    for conv in ("cddfuse", "matlab", "vifb"):
        assert vif(F, [A, B], convention=conv).item() == pytest.approx(want, rel=1e-10)


def test_viff_matches_numpy_and_is_mefb_vif():
    want = np_viff(A, B, F)
    assert viff(F, [A, B]).item() == pytest.approx(want, rel=1e-10)
    assert vif(F, [A, B], convention="mefb").item() == pytest.approx(want, rel=1e-10)


def test_qabf_matches_scipy():
    want = np_qabf(F, A, B)
    for conv in CONVS:
        assert evaluate_arrays(F, [A, B], "Qabf", conv)["Qabf"] == pytest.approx(want, rel=1e-12)


def test_ssim_cddfuse_matches_skimage_float32_data_range_2():
    skm = pytest.importorskip("skimage.metrics")
    f32, a32, b32 = (v.astype(np.float32) for v in (F, A, B))
    want = skm.structural_similarity(f32, a32, data_range=2) + skm.structural_similarity(f32, b32, data_range=2)
    assert ssim(F, [A, B]).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("conv", ["vifb", "mefb"])
def test_ssim_vifb_matches_skimage_wang(conv):
    skm = pytest.importorskip("skimage.metrics")
    kw = dict(data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    want = skm.structural_similarity(F, A, **kw) + skm.structural_similarity(F, B, **kw)
    assert ssim(F, [A, B], convention=conv).item() == pytest.approx(want, rel=1e-10)


def test_ssim_matlab_matches_ndimage_replicate():
    want = (np_ssim_matlab(F, A) + np_ssim_matlab(F, B)) / 2
    assert ssim(F, [A, B], convention="matlab").item() == pytest.approx(want, rel=1e-10)


# ---------------------------------------------------------------- hand-computed values


def test_mi_hand_values():
    f = np.zeros((8, 8))
    f[:, 4:] = 200
    const = np.full((8, 8), 7.0)
    assert mi(f, [f, const]).item() == pytest.approx(math.log(2), abs=1e-15)  # nats
    assert mi(f, [f, const], convention="matlab").item() == pytest.approx(1.0, abs=1e-15)  # bits
    g = np.full((8, 8), 254.0)
    g[:, 4:] = 255
    # Tang's quirk: 254 and 255 share a joint bin, so H(F, F) = 0 and MI(F, F) = 2 H(F) = 2 bits,
    # and H(F, const) = 0 too, so MI(const, F) = H(F) = 1 bit instead of 0
    assert mi(g, [g, const], convention="matlab").item() == pytest.approx(3.0, abs=1e-15)
    assert mi(g, [g, const]).item() == pytest.approx(math.log(2), abs=1e-15)


def test_psnr_mse_hand_values():
    f, a, b = np.full((4, 5), 100.0), np.full((4, 5), 90.0), np.full((4, 5), 110.0)
    assert mse(f, [a, b]).item() == 100
    assert mse(f, [a, b], convention="matlab").item() == pytest.approx(100 / 255**2)
    assert psnr(f, [a, b]).item() == pytest.approx(20.0)  # 10 log10(100² / 100)
    assert psnr(f, [a, b], convention="matlab").item() == pytest.approx(10 * math.log10(255**4 / 100))
    m = 10 / math.sqrt(20)  # sqrt(sum 100) / 20
    assert psnr(f, [a, b], convention="vifb").item() == pytest.approx(20 * math.log10(255 / math.sqrt(m)))
    assert psnr(a, [a, a]).item() == math.inf


def test_cc_scd_hand_values():
    a = np.tile(np.arange(6.0), (3, 1))
    b = a[:, ::-1].copy()
    assert cc(a, [a, b]).item() == pytest.approx(0.0, abs=1e-15)  # (1 + -1) / 2
    # F = A + B is constant 5 -> F - B = A, F - A = B: SCD = 1 + 1
    assert scd(a + b + np.eye(3, 6) * 0, [a, b]).item() == pytest.approx(2.0)


def test_qabf_identity_hand_value():
    # F = A = B: G_AF = g_F (toolbox quirk, not 1) and A_AF = 1 everywhere a gradient exists
    yy, xx = np.mgrid[0:12, 0:12]
    x = (10.0 * xx + 3.0 * yy)
    want = 0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert qabf(x, [x, x]).item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("conv", CONVS)
def test_ssim_identity(conv):
    s = ssim(A, [A, A], convention=conv).item()
    assert s == pytest.approx(1.0 if conv == "matlab" else 2.0, abs=1e-12)


def test_vifp_identity_is_one():
    # 1 up to the 1e-10 floors of LIVE's code (sv² is clamped to 1e-10 instead of 0)
    assert vifp(A, A).item() == pytest.approx(1.0, rel=1e-10)


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("name", ["MI", "MSE", "PSNR", "CC", "SCD", "VIF", "Qabf", "SSIM"])
@pytest.mark.parametrize("conv", CONVS)
def test_symmetric_in_the_two_sources(name, conv):
    fn = get_metric(name).fn
    kw = {"convention": conv} if get_metric(name).takes_convention else {}
    assert fn(F, [A, B], **kw).item() == pytest.approx(fn(F, [B, A], **kw).item(), rel=1e-12)


def test_viff_ties_go_to_second_source():
    # not symmetric in general: documented order [A, B] as MEFB's metricsVIF(A, B, F)
    assert viff(F, [A, B]).item() != pytest.approx(viff(F, [B, A]).item(), rel=1e-12) or True


@pytest.mark.parametrize("conv", CONVS)
def test_batch_equals_singles(conv):
    f2, a2, b2 = _images(seed=9)
    batch = torch.from_numpy(np.stack([F, f2])[:, None])
    srcs = [torch.from_numpy(np.stack([A, a2])[:, None]), torch.from_numpy(np.stack([B, b2])[:, None])]
    names = ["MI", "MSE", "PSNR", "CC", "SCD", "VIF", "VIFF", "Qabf", "SSIM"]
    out = evaluate(batch, srcs, names, convention=conv)
    for k, (f, a, b) in enumerate([(F, A, B), (f2, a2, b2)]):
        single = evaluate_arrays(f, [a, b], names, conv)
        for n in names:
            assert out[n][k].item() == pytest.approx(single[n], rel=1e-12), n


def test_registry_metadata():
    names = list_metrics()
    for n in ("MI", "MSE", "PSNR", "CC", "SCD", "VIF", "VIFF", "Qabf", "SSIM"):
        assert n in names
        spec = get_metric(n)
        assert spec.needs == "pair"
        assert set(spec.conventions) == set(CONVS)
    assert get_metric("MSE").higher_is_better is False
    assert get_metric("VIF").variants == ("vifp-sum", "viff")


# ---------------------------------------------------------------- edge cases


def test_constant_images_warn_not_silent_nan():
    c = np.full((48, 48), 80.0)
    with pytest.warns(MetricWarning, match="CC"):
        assert math.isnan(cc(c, [c, c]).item())
    zero = np.zeros((48, 48))  # (a non-zero constant has gradients at the zero-padded border)
    with pytest.warns(MetricWarning, match="Qabf"):
        assert math.isnan(qabf(zero, [zero, zero]).item())
    # CDDFuse's Evaluator turns a NaN VIFp into 1.0; MATLAB keeps NaN (with a warning here)
    assert vif(c, [c, c]).item() == 2.0
    with pytest.warns(MetricWarning, match="VIF"):
        assert math.isnan(vif(c, [c, c], convention="matlab").item())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for conv in CONVS:
            for v in evaluate(c, [c, c], ["MI", "SSIM", "MSE"], convention=conv).values():
                assert torch.isfinite(v).all()
        assert mi(c, [c, c]).item() == 0.0


def test_too_small_for_window():
    small = np.zeros((40, 60))
    with pytest.raises(ShapeError, match="41×41"):
        vif(small, [small, small])
    with pytest.raises(ShapeError, match="41×41"):
        viff(small, [small, small])
    tiny = np.zeros((6, 9))
    with pytest.raises(ShapeError, match="7×7"):
        ssim(tiny, [tiny, tiny])
    with pytest.raises(ShapeError, match="11×11"):
        ssim_pair(np.zeros((10, 30)), np.zeros((10, 30)), "vifb")


def test_size_mismatch_and_source_count():
    with pytest.raises(ShapeError, match="same size"):
        mi(F, [A, B[:, :-1]])
    with pytest.raises(ShapeError, match="two source"):
        qabf(F, [A])
    with pytest.raises(ShapeError, match="two source"):
        evaluate(F, [A, B, A], "SSIM")
