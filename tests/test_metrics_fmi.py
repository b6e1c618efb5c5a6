"""FMI (Haghighat fast-FMI, fmi.m) in its four feature variants, against a loop-by-loop numpy
transcription of fmi.m written here, hand-computed windows, and properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fusecli.errors import ConfigError, ShapeError
from fusecli.metrics import evaluate_arrays, get_metric
from fusecli.metrics.fmi import dct2, fmi_core, matlab_edge_sobel, matlab_gradient_x

from .conftest import SAMPLES, fusion_triplet

ndimage = pytest.importorskip("scipy.ndimage")
scipy_fft = pytest.importorskip("scipy.fft")


# ------------------------------------------------------------------ fmi.m, transcribed loop by loop
def edge_ref(x):
    op = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float) / 8
    by = ndimage.correlate(x, op, mode="nearest")
    bx = ndimage.correlate(x, op.T, mode="nearest")
    b = bx * bx + by * by
    cutoff = 4 * b.sum() / b.size
    bx, by = abs(bx), abs(by)
    m, n = b.shape
    e = np.zeros((m, n))
    eps = np.finfo(float).eps
    for r in range(m):
        for c in range(n):
            b1 = True if c - 1 < 0 else b[r, c - 1] <= b[r, c]
            b2 = True if c + 1 >= n else b[r, c] > b[r, c + 1]
            b3 = True if r - 1 < 0 else b[r - 1, c] <= b[r, c]
            b4 = True if r + 1 >= m else b[r, c] > b[r + 1, c]
            e[r, c] = (b[r, c] > cutoff) and ((bx[r, c] >= by[r, c] - eps * 100 and b1 and b2) or
                                              (by[r, c] >= bx[r, c] - eps * 100 and b3 and b4))
    return e

def feat_ref(x, feature):
    x = np.asarray(x, float)
    if feature == "none": return x
    if feature == "edge": return edge_ref(x)
    if feature == "dct": return scipy_fft.dctn(x, norm="ortho")
    if feature == "gradient": return np.gradient(x, axis=1)
    raise ValueError

def _branch(sSub, fSub, w):
    """one source branch of fmi.m; returns (fmi, fSub after normalisation)."""
    if np.all(sSub == fSub):
        return 1.0, fSub
    l = (2 * w + 1) ** 2
    def nrm(v):
        mx, mn = v.max(), v.min()
        return np.ones_like(v) if mx == mn else (v - mn) / (mx - mn)
    sSub = nrm(sSub); fSub = nrm(fSub)
    sPdf = sSub.flatten(order="F") / sSub.sum(); fPdf = fSub.flatten(order="F") / fSub.sum()
    sCdf = np.zeros(l); fCdf = np.zeros(l); sCdf[0] = sPdf[0]; fCdf[0] = fPdf[0]
    for i in range(1, l):
        sCdf[i] = sPdf[i] + sCdf[i - 1]; fCdf[i] = fPdf[i] + fCdf[i - 1]
    sT = sPdf - sPdf.mean(); fT = fPdf - fPdf.mean()
    c = 0.0 if np.sum(sT * fT) == 0 else np.sum(sT * fT) / np.sqrt(np.sum(sT * sT) * np.sum(fT * fT))
    idx = np.arange(1, l + 1)
    sSd = np.sqrt(max(np.sum(idx**2 * sPdf) - np.sum(idx * sPdf) ** 2, 0))
    fSd = np.sqrt(max(np.sum(idx**2 * fPdf) - np.sum(idx * fPdf) ** 2, 0))
    def H(p):
        return 0.0 if p == 0 else float(-p * np.log2(abs(p)))
    je = 0.0
    if c >= 0:
        U = lambda x, y: 0.5 * (x + y - abs(x - y))
        if c == 0 or sSd == 0 or fSd == 0: phi = 0.0
        else:
            cov = sum(U(fCdf[i], sCdf[j]) - fCdf[i] * sCdf[j] for i in range(l) for j in range(l))
            phi = c / (cov / (fSd * sSd))
    else:
        U = lambda x, y: 0.5 * (x + y - 1 + abs(x + y - 1))
        if sSd == 0 or fSd == 0: phi = 0.0
        else:
            cov = sum(U(fCdf[i], sCdf[j]) - fCdf[i] * sCdf[j] for i in range(l) for j in range(l))
            phi = c / (cov / (fSd * sSd))
    for i in range(l):
        for j in range(l):
            v = U(fCdf[i], sCdf[j])
            if i > 0: v -= U(fCdf[i - 1], sCdf[j])
            if j > 0: v -= U(fCdf[i], sCdf[j - 1])
            if i > 0 and j > 0: v += U(fCdf[i - 1], sCdf[j - 1])
            je += H(phi * v + (1 - phi) * fPdf[i] * sPdf[j])
    hs = sum(H(p) for p in sPdf); hf = sum(H(p) for p in fPdf)
    mi = hs + hf - je
    return (0.0 if mi == 0 else 2 * mi / (hs + hf)), fSub

def fmi_ref(a, b, f, feature="edge", w=3):
    A, B, F = (feat_ref(t, feature) for t in (a, b, f))
    w = w // 2
    m, n = A.shape
    out = np.ones((m - 2 * w, n - 2 * w))
    for p in range(w, m - w):
        for q in range(w, n - w):
            aS = A[p - w:p + w + 1, q - w:q + w + 1]; bS = B[p - w:p + w + 1, q - w:q + w + 1]
            fS = F[p - w:p + w + 1, q - w:q + w + 1]
            qa, fS = _branch(aS, fS, w)
            qb, _ = _branch(bS, fS, w)
            out[p - w, q - w] = (qa + qb) / 2
    return out.mean()


def _t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float64))[None, None]


# ------------------------------------------------------------------ features


def test_features_match_matlab_definitions():
    f, a, b = fusion_triplet(13, 17, seed=1, fused_noise=5)
    np.testing.assert_array_equal(matlab_edge_sobel(_t(a))[0, 0].numpy(), edge_ref(a))
    np.testing.assert_array_equal(matlab_edge_sobel(_t(f))[0, 0].numpy(), edge_ref(f))
    np.testing.assert_allclose(dct2(_t(a))[0, 0].numpy(), scipy_fft.dctn(a, norm="ortho"), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(matlab_gradient_x(_t(a))[0, 0].numpy(), np.gradient(a, axis=1))


def test_edge_of_a_step_is_one_thin_line():
    x = np.zeros((6, 16))
    x[:, 8:] = 200.0
    e = matlab_edge_sobel(_t(x))[0, 0].numpy()
    # b is 100² on columns 7 and 8, 0 elsewhere; cutoff = 4·mean(b) = 5000; on the two-pixel plateau
    # thinning keeps the right one (b(r, c-1) <= b(r, c) > b(r, c+1) holds on column 8 only)
    assert e.sum() == 6 and e[:, 8].all()
    np.testing.assert_array_equal(e, edge_ref(x))


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("feature", ["none", "edge", "dct", "gradient"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_loop_transcription(feature, seed):
    f, a, b = fusion_triplet(9, 12, seed=seed, fused_noise=8)
    f[2:5, 3:7] = a[2:5, 3:7]  # some windows equal to A's
    b[0:3, 0:4] = 77.0  # a constant patch (all-ones normalised windows)
    got = float(fmi_core(f, [a, b], feature)[0])
    assert got == pytest.approx(fmi_ref(a, b, f, feature), abs=1e-12)


def test_matches_loop_transcription_on_an_image_crop():
    from fusecli.metrics.report import load_gray

    a = load_gray(SAMPLES / "ir.png").astype(float)[200:216, 300:318]
    b = load_gray(SAMPLES / "vis.png").astype(float)[200:216, 300:318]
    f = np.round((a + b) / 2)
    for feature in ("none", "edge", "dct", "gradient"):
        assert float(fmi_core(f, [a, b], feature)[0]) == pytest.approx(fmi_ref(a, b, f, feature), abs=1e-12)


def test_hand_computed_windows():
    # one 3×3 window. F = A = B: every branch takes "windows equal" -> 1
    a = np.arange(9.0).reshape(3, 3)
    assert float(fmi_core(a, [a, a], "none")[0]) == 1.0
    # A an affine copy of F (positive gain): normalised windows equal, c = 1, the comonotone joint is the
    # diagonal, phi = 1 -> MI = H -> 2H / 2H = 1
    assert float(fmi_core(a, [2 * a + 1, 2 * a + 1], "none")[0]) == pytest.approx(1.0, abs=1e-12)
    # one-hot windows at different positions: c = -1/8, zero spread -> theta = 0, joint = product of two
    # point masses -> H_joint = H_A = H_F = 0 -> MI = 0 -> 0
    f = np.zeros((3, 3)); f[0, 0] = 10
    s = np.zeros((3, 3)); s[2, 1] = 10
    assert float(fmi_core(f, [s, s], "none")[0]) == 0.0
    # constant source: uniform PDF, c = 0 -> phi = 0 -> joint = product -> MI = 0
    assert float(fmi_core(f, [np.full((3, 3), 5.0)] * 2, "none")[0]) == pytest.approx(0.0, abs=1e-12)


def test_quirk_b_compared_with_normalised_f():
    # A differs from F, so the A branch normalises F's window; B equals that normalised window, so
    # fmi.m's B branch says "windows equal" -> 1 although raw B != F
    f = np.array([[0.0, 10, 20], [30, 40, 50], [60, 70, 80]])
    a = np.array([[5.0, 0, 7], [1, 9, 2], [8, 3, 4]])
    b = f / 80.0
    got = float(fmi_core(f, [a, b], "none")[0])
    expected = fmi_ref(a, b, f, "none")
    assert got == pytest.approx(expected, abs=1e-12)
    q_a = fmi_ref(a, a, f, "none")  # both branches = fmi_AF (A != F)
    assert got == pytest.approx((q_a + 1.0) / 2, abs=1e-12)


# ------------------------------------------------------------------ properties


def test_range_symmetry_identity_and_batch():
    f, a, b = fusion_triplet(14, 15, seed=4, fused_noise=6)
    for feature in ("none", "edge", "dct", "gradient"):
        v = float(fmi_core(f, [a, b], feature)[0])
        assert 0.0 <= v <= 1.0
        swapped = float(fmi_core(f, [b, a], feature)[0])
        if feature == "edge":
            # binary edge windows often equal the normalised F window: fmi.m's B-branch quirk makes
            # the metric depend on the source order, as in MATLAB
            assert swapped == pytest.approx(fmi_ref(b, a, f, feature), abs=1e-12)
        else:  # symmetric when no raw B window equals a normalised F window
            assert swapped == pytest.approx(v, abs=1e-12)
        assert float(fmi_core(a, [a, a], feature)[0]) == 1.0
    batch = torch.stack([_t(f)[0], _t(a)[0]])
    got = fmi_core(batch, [a, b], "dct")
    assert got[0].item() == pytest.approx(float(fmi_core(f, [a, b], "dct")[0]), abs=1e-14)
    assert got[1].item() == pytest.approx(float(fmi_core(a, [a, b], "dct")[0]), abs=1e-14)


def test_constant_images_are_finite():
    c = np.full((6, 7), 100.0)
    _, a, b = fusion_triplet(6, 7, seed=5, fused_noise=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN, so no MetricWarning
        for feature in ("none", "edge", "dct", "gradient"):
            assert float(fmi_core(c, [c, c], feature)[0]) == 1.0
            v = float(fmi_core(c, [a, b], feature)[0])
            assert np.isfinite(v) and 0 <= v + 1e-15 <= 1 + 1e-15
            if feature != "dct":  # the DCT of a constant is round-off outside DC (in MATLAB too)
                assert v == pytest.approx(fmi_ref(a, b, c, feature), abs=1e-12)


def test_registry_and_conventions():
    f, a, b = fusion_triplet(10, 11, seed=6, fused_noise=4)
    edge = float(fmi_core(f, [a, b], "edge")[0])
    pix = float(fmi_core(f, [a, b], "none")[0])
    for conv in ("cddfuse", "vifb", "mefb"):
        vals = evaluate_arrays(f, [a, b], names=["FMI", "FMI_pixel"], convention=conv)
        assert vals["FMI"] == edge and vals["FMI_pixel"] == pix
    # Tang's column "FMI_pixel" is fmi.m's default, edge features
    assert evaluate_arrays(f, [a, b], names=["FMI_pixel"], convention="matlab")["FMI_pixel"] == edge
    for name in ("FMI", "FMI_pixel", "FMI_dct", "FMI_gradient"):
        spec = get_metric(name)
        assert spec.higher_is_better and spec.needs == "pair"


def test_errors():
    with pytest.raises(ShapeError, match="at least 3×3"):
        fmi_core(np.zeros((2, 9)), [np.zeros((2, 9))] * 2, "none")
    with pytest.raises(ShapeError):
        fmi_core(np.zeros((5, 5)), [np.zeros((5, 6)), np.zeros((5, 5))], "none")
    with pytest.raises(ConfigError, match="wavelet"):
        fmi_core(np.zeros((5, 5)), [np.zeros((5, 5))] * 2, "wavelet")
