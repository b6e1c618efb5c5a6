"""Feature mutual information (FMI), Haghighat's fast-FMI, as ``fmi.m`` computes it.

Reference followed: M. Haghighat's ``fmi.m`` (fast-FMI, Haghighat & Razian, AICT 2014; FMI:
Haghighat, Aghagolzadeh & Seyedarabi, Comput. Electr. Eng. 37(5), 2011) as shipped, unchanged, in
MEFB ``metrics/metricsFMI.m`` (``FMI(ima, imb, imf, feature, w)``) and in Linfeng Tang's toolbox
``analysis_fmi.m``; see docs/metrics.md.

What it computes, for ``w = 3`` (the default window of every toolbox):

1. Feature images of A, B and F: ``"none"`` (the pixels), ``"edge"`` (MATLAB ``edge(X)``: Sobel,
   automatic threshold, thinning; binary, see :func:`matlab_edge_sobel`), ``"dct"`` (``dct2(X)``,
   the orthonormal 2-D DCT-II of the whole image) or ``"gradient"`` (MATLAB ``gradient(X)`` with
   one output: the **horizontal** derivative only — central differences, one-sided at the left and
   right columns).
2. For every 3×3 window of the valid region and each source S in (A, B): if the S and F windows are
   equal, ``fmi_SF = 1``. Otherwise each window is min–max normalised (a constant window becomes
   all ones), divided by its sum (a PDF over the nine pixels, **column-major** order), its CDF taken
   by cumulative sum; ``c`` = Pearson correlation of the two PDFs; the joint PDF is Nelsen's
   construction from the Fréchet bounds of the two CDFs — upper bound ``min(F_i, S_j)`` with weight
   ``φ = c / corr_up`` when ``c >= 0`` (``φ = 0`` if ``c = 0`` or either PDF has zero spread over the
   pixel index), lower bound ``max(F_i + S_j − 1, 0)`` with ``θ = c / corr_lo`` when ``c < 0`` — mixed
   with the product of the marginals; joint and marginal entropies in bits (the joint one keeps
   MATLAB's ``real(-p .* log2(p))``, i.e. ``-p log2 |p|`` for the negative joint "probabilities"
   that ``φ > 1`` produces); ``fmi_SF = 2 MI / (H_S + H_F)`` (0 where MI = 0).
3. Map value ``(fmi_AF + fmi_BF) / 2``; FMI = mean of the map.

Quirk kept on purpose: the F window normalised in the A branch is reused in the B branch, so the
B branch's "windows equal" test compares the raw B window with the *normalised* F window (unless the
A branch found A = F and normalised nothing). On binary edge maps this matters.

All arithmetic is vectorised over every window at once (in chunks), in float64; ~7 ms per pixel in
the MATLAB original becomes well under a microsecond per pixel. FMI is scale-invariant (each window
is min–max normalised, ``edge``'s threshold is relative), so Tang's ``im2double`` inputs and MEFB's
0–255 inputs give the same values; fusecli takes 0–255 as everywhere.

Not implemented: ``"wavelet"`` (Tang's ``FMI_w``), which needs MATLAB's 102-tap discrete Meyer
filter (PyWavelets' ``dmey`` has 62 taps and gives other numbers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError, ShapeError
from . import register
from ._checks import check_convention, warn_nan
from ._filters import filter2_same
from .similarity import two_sources

#: Feature extractions of ``fmi.m`` that fusecli implements.
FEATURES: tuple[str, ...] = ("none", "edge", "dct", "gradient")

_EPS = 2.0**-52  # MATLAB eps
_CHUNK = 16384  # windows per vectorised chunk (both branches: 32768 rows)


# ------------------------------------------------------------------ features


def matlab_edge_sobel(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``edge(X)`` (default method ``'sobel'``, automatic threshold, ``'both'`` directions,
    thinning) of each image of a ``(B, 1, H, W)`` float64 batch; returns 0/1 float64, same shape.

    As in MATLAB's ``edge.m`` (portable code path): ``bx = imfilter(X, fspecial('sobel')'/8,
    'replicate')``, ``by = imfilter(X, fspecial('sobel')/8, 'replicate')``, ``b = bx² + by²``,
    ``cutoff = 4 · mean(b)``; a pixel is an edge where ``b > cutoff`` and either
    ``|bx| >= |by| − 100 eps`` and ``b`` is a horizontal local maximum (``b(r, c−1) <= b(r, c) >
    b(r, c+1)``) or ``|by| >= |bx| − 100 eps`` and ``b`` is a vertical one (``b(r−1, c) <= b(r, c) >
    b(r+1, c)``), a neighbour outside the image counting as satisfied.
    """
    sob = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=torch.float64, device=x.device) / 8
    by = filter2_same(x, sob, mode="replicate")
    bx = filter2_same(x, sob.t().contiguous(), mode="replicate")
    b = bx * bx + by * by
    cutoff = 4.0 * b.flatten(1).sum(1) / b[0].numel()
    bx, by = bx.abs(), by.abs()
    inf = torch.full_like(b[..., :, :1], -math.inf)
    left = torch.cat([inf, b[..., :, :-1]], dim=-1)  # b(r, c-1), -inf outside
    right = torch.cat([b[..., :, 1:], inf], dim=-1)
    inf_r = torch.full_like(b[..., :1, :], -math.inf)
    up = torch.cat([inf_r, b[..., :-1, :]], dim=-2)
    down = torch.cat([b[..., 1:, :], inf_r], dim=-2)
    horiz = (bx >= by - _EPS * 100) & (left <= b) & (b > right)
    vert = (by >= bx - _EPS * 100) & (up <= b) & (b > down)
    e = (b > cutoff.view(-1, 1, 1, 1)) & (horiz | vert)
    return e.to(torch.float64)


@functools.lru_cache(maxsize=16)
def _dct_matrix(n: int, device: str) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``dct2``: orthonormal 2-D DCT-II of each ``(H, W)`` image (= ``scipy.fft.dctn(x,
    norm='ortho')``), as ``D_H x D_Wᵀ`` matrix products, float64."""
    dh = _dct_matrix(x.shape[-2], str(x.device))
    dw = _dct_matrix(x.shape[-1], str(x.device))
    return dh @ x @ dw.t()


def matlab_gradient_x(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``gradient(X)`` with one output: the derivative along columns (x), central
    differences ``(X(:, j+1) − X(:, j−1)) / 2`` inside, one-sided at the first and last column."""
    g = torch.empty_like(x)
    g[..., 1:-1] = (x[..., 2:] - x[..., :-2]) / 2
    g[..., 0] = x[..., 1] - x[..., 0]
    g[..., -1] = x[..., -1] - x[..., -2]
    return g


def feature_map(x: torch.Tensor, feature: str) -> torch.Tensor:
    """The feature image ``fmi.m`` builds from ``x`` (``(B, 1, H, W)`` float64) for ``feature``."""
    if feature == "none":
        return x
    if feature == "edge":
        return matlab_edge_sobel(x)
    if feature == "dct":
        return dct2(x)
    if feature == "gradient":
        return matlab_gradient_x(x)
    raise ConfigError(f"unknown FMI feature {feature!r}; choose one of {', '.join(FEATURES)} "
                      "('wavelet' needs MATLAB's dmey filter and is not implemented).")


# ------------------------------------------------------------------ windows


def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """All ``w``×``w`` windows of the valid region, column-major inside a window (MATLAB ``(:)``):
    ``(B, 1, H, W)`` -> ``(B * (H-w+1) * (W-w+1), w*w)``, windows in row-major order of centres."""
    h, wd = x.shape[-2] - w + 1, x.shape[-1] - w + 1
    cols = [x[:, 0, i:i + h, j:j + wd] for j in range(w) for i in range(w)]  # j outer: column-major
    return torch.stack(cols, dim=-1).reshape(-1, w * w)


def _minmax(v: torch.Tensor) -> torch.Tensor:
    """Per row: ``(v - min) / (max - min)``, all ones where the row is constant."""
    lo = v.min(dim=1, keepdim=True).values
    hi = v.max(dim=1, keepdim=True).values
    rng = hi - lo
    const = rng == 0
    return torch.where(const, torch.ones_like(v), (v - lo) / torch.where(const, torch.ones_like(rng), rng))


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """``sum over p != 0 of real(-p log2 p)`` along the last dim, i.e. ``-p log2 |p|`` (MATLAB's
    ``real`` of the complex log of a negative ``p``)."""
    return torch.special.xlogy(p, p.abs()).sum(-1) * (-1.0 / math.log(2.0))


def _g_bits(p: torch.Tensor) -> torch.Tensor:
    """Elementwise ``real(-p log2 p)`` (0 at 0)."""
    return torch.special.xlogy(p, p.abs()) * (-1.0 / math.log(2.0))


def _nfmi(s_raw: torch.Tensor, f_cmp: torch.Tensor, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Normalised FMI of each window pair: ``s_raw`` / ``f_cmp`` the windows compared for equality,
    ``s`` / ``f`` the min–max normalised windows, all ``(n, l)``; returns ``(n,)``."""
    n, l = s.shape
    sp = s / s.sum(1, keepdim=True)
    fp = f / f.sum(1, keepdim=True)
    sc = torch.cumsum(sp, 1)
    fc = torch.cumsum(fp, 1)
    st = sp - sp.mean(1, keepdim=True)
    ft = fp - fp.mean(1, keepdim=True)
    num = (st * ft).sum(1)
    den = torch.sqrt((st * st).sum(1) * (ft * ft).sum(1))
    c = torch.where(num == 0, torch.zeros_like(num), num / torch.where(num == 0, torch.ones_like(den), den))
    idx = torch.arange(1, l + 1, dtype=s.dtype, device=s.device)
    s_sd = torch.sqrt(((idx * idx * sp).sum(1) - (idx * sp).sum(1) ** 2).clamp_min(0))
    f_sd = torch.sqrt(((idx * idx * fp).sum(1) - (idx * fp).sum(1) ** 2).clamp_min(0))

    # Nelsen's joint PDF from the Fréchet bound of the two CDFs (rows: F index i, columns: S index
    # j): upper bound min(F_i, S_j) for c >= 0, lower bound max(F_i + S_j - 1, 0) for c < 0. The 2-D
    # difference of the bound (fmi.m's jpdfUp / jpdfLo) is the overlap length J_ij of [F_{i-1}, F_i]
    # with [S_{j-1}, S_j] (upper) or with [1 - S_j, 1 - S_{j-1}] (lower). At most 2l + 1 of the l²
    # overlaps are non-zero: they are the elementary intervals between the merged, sorted cut
    # points of both sides. So, with P_ij = f_i s_j and g(x) = -x log2|x|,
    #   H_joint = sum_ij g((1 - phi) P_ij) + sum_{J_ij != 0} [g(phi J_ij + (1 - phi) P_ij) - g((1 - phi) P_ij)]
    # where the first sum has a closed form: l² -> ~2l terms per window. Equal to fmi.m's 81-term
    # sum to round-off (~1e-16).
    up = c >= 0
    zero = torch.zeros_like(fc[:, :1])
    v_cut = torch.cat([zero, fc], 1)  # F side: v_0 = 0 < v_1 = F_1 ... v_l = F_l
    s_cut = torch.cat([zero, sc], 1)
    u_cut = torch.where(up[:, None], s_cut, 1 - s_cut.flip(1))  # S side, ascending
    vals, order = torch.sort(torch.cat([v_cut, u_cut], 1), dim=1, stable=True)
    is_v = (order <= l).to(s.dtype)
    n_v = torch.cumsum(is_v, 1)[:, :-1]  # cut points of each side passed before each elementary interval
    n_u = torch.arange(1, 2 * l + 2, dtype=s.dtype, device=s.device) - n_v
    length = vals[:, 1:] - vals[:, :-1]
    valid = (n_v >= 1) & (n_v <= l) & (n_u >= 1) & (n_u <= l) & (length > 0)
    i = n_v.long().clamp(1, l) - 1  # 0-based F index
    m = n_u.long().clamp(1, l) - 1
    j = torch.where(up[:, None], m, l - 1 - m)  # 0-based S index (the lower side runs backwards)
    jlen = torch.where(valid, length, torch.zeros_like(length))
    pij = torch.gather(fp, 1, i) * torch.gather(sp, 1, j)
    # sum_ij of the bound = sum over the overlaps of J times the number of (i', j') >= (i, j)
    bsum = (jlen * (l - i).to(s.dtype) * (l - j).to(s.dtype)).sum(1)
    cov = bsum - fc.sum(1) * sc.sum(1)
    sd = f_sd * s_sd
    degenerate = (s_sd == 0) | (f_sd == 0) | (up & (c == 0))
    corr = cov / torch.where(degenerate, torch.ones_like(sd), sd)
    weight = torch.where(degenerate, torch.zeros_like(c), c / torch.where(degenerate, torch.ones_like(corr), corr))
    h_s = _entropy_bits(sp)
    h_f = _entropy_bits(fp)
    vw = 1 - weight
    base = vw * (h_f * sp.sum(1) + h_s * fp.sum(1)) - torch.special.xlogy(vw, vw.abs()) / math.log(2.0) * fp.sum(1) * sp.sum(1)
    wv, vv = weight[:, None], vw[:, None]
    corr_terms = torch.where(valid, _g_bits(wv * jlen + vv * pij) - _g_bits(vv * pij), torch.zeros_like(pij))
    h_joint = base + corr_terms.sum(1)
    mi = h_s + h_f - h_joint
    nf = torch.where(mi == 0, torch.zeros_like(mi), 2 * mi / torch.where(mi == 0, torch.ones_like(mi), h_s + h_f))
    equal = (s_raw == f_cmp).all(1)
    return torch.where(equal, torch.ones_like(nf), nf)


def fmi_map(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor, w: int = 3) -> torch.Tensor:
    """``fmi_map`` of ``fmi.m`` for three **feature** images ``(B, 1, H, W)`` float64:
    ``(fmi_AF + fmi_BF) / 2`` per ``w``×``w`` window, ``(B, H-2r, W-2r)`` with ``r = w // 2``."""
    r = w // 2
    w = 2 * r + 1
    nb, _, h, wd = f.shape
    wa, wb, wf = _windows(a, w), _windows(b, w), _windows(f, w)
    out = torch.empty(wa.shape[0], dtype=torch.float64, device=f.device)
    for i in range(0, wa.shape[0], _CHUNK):
        sl = slice(i, i + _CHUNK)
        fa_raw, a_raw, b_raw = wf[sl], wa[sl], wb[sl]
        fn = _minmax(fa_raw)
        eq_a = (a_raw == fa_raw).all(1, keepdim=True)
        f_for_b = torch.where(eq_a, fa_raw, fn)  # quirk: B is compared with the A branch's normalised F
        k = a_raw.shape[0]
        # both branches in one pass, only on the windows that are not "equal" (fmi = 1 there; on
        # binary edge maps that is most of them)
        s_raw = torch.cat([a_raw, b_raw])
        f_cmp = torch.cat([fa_raw, f_for_b])
        todo = ~(s_raw == f_cmp).all(1)
        q = torch.ones(2 * k, dtype=torch.float64, device=f.device)
        if bool(todo.any()):
            s_t, f_t = s_raw[todo], f_cmp[todo]
            q[todo] = _nfmi(s_t, f_t, _minmax(s_t), torch.cat([fn, fn])[todo])
        out[sl] = (q[:k] + q[k:]) / 2
    return out.view(nb, h - 2 * r, wd - 2 * r)


def fmi_core(fused: Any, sources: Sequence[Any], feature: str = "edge", w: int = 3) -> torch.Tensor:
    """FMI of ``fused`` against ``sources = [A, B]`` with ``feature`` extraction, ``(B,)`` in
    ``[0, 1]`` (1 for F = A = B). Images at least ``w``×``w`` (3×3).

    Raises:
        ShapeError: images smaller than the window, or of different sizes.
        ConfigError: an unknown ``feature``.
    """
    if feature not in FEATURES:
        raise ConfigError(f"unknown FMI feature {feature!r}; choose one of {', '.join(FEATURES)} "
                          "('wavelet' needs MATLAB's dmey filter and is not implemented).")
    if int(w) != w or w < 3 or w % 2 == 0:
        raise ConfigError(f"FMI window w must be an odd integer >= 3, got {w!r}.")
    x, a, b = two_sources(fused, sources, "FMI")
    h, wd = x.shape[-2:]
    if h < w or wd < w:
        raise ShapeError(f"FMI needs images of at least {w}×{w} pixels (its sliding window), got {h}×{wd}.")
    fa, fb, ff = (feature_map(t, feature) for t in (a, b, x))
    m = fmi_map(fa, fb, ff, w)
    return warn_nan(m.flatten(1).mean(1), f"FMI ({feature})", "a degenerate window made the joint PDF undefined")


_REF = ("Haghighat, Aghagolzadeh & Seyedarabi, Comput. Electr. Eng. 37(5), 2011; fast-FMI: Haghighat & "
        "Razian, AICT 2014 (fmi.m as in MEFB metricsFMI.m / Tang analysis_fmi.m)")
_HOW = "fmi.m w=3: {feat}; per 3×3 window min–max normalised PDFs, Nelsen/Fréchet joint PDF, 2·MI/(H_S+H_F), " \
       "mean over the map of (fmi_AF+fmi_BF)/2"


@register(
    "FMI",
    higher_is_better=True,
    needs="pair",
    description="Feature mutual information (Haghighat fast-FMI) on MATLAB edge() maps: fmi.m's default "
                "feature, what MEFB's 'FMI' and Tang's 'FMI_pixel' column report.",
    reference=_REF,
    conventions={"cddfuse": _HOW.format(feat="edge features = MATLAB edge(X) (Sobel, auto threshold, thinning)")},
    variants=("feature",),
)
def fmi(fused: Any, sources: Sequence[Any], *, feature: str = "edge") -> torch.Tensor:
    """FMI with ``fmi.m``'s default ``'edge'`` features (MEFB "FMI", Tang "FMI_pixel"); ``(B,)``.
    ``feature`` picks another extraction (``"none"``, ``"dct"``, ``"gradient"``). See :func:`fmi_core`."""
    return fmi_core(fused, sources, feature)


@register(
    "FMI_pixel",
    higher_is_better=True,
    needs="pair",
    description="Feature mutual information on the raw pixels (fmi.m feature 'none').",
    reference=_REF,
    conventions={
        "cddfuse": _HOW.format(feat="raw pixels ('none')"),
        "matlab": "Tang's column FMI_pixel, i.e. analysis_fmi(A, B, F) with no feature argument: fmi.m's "
                  "default 'edge' features (= FMI), not the pixels",
    },
)
def fmi_pixel(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """FMI on raw pixels (``feature='none'``), or, under ``convention="matlab"``, what Tang's
    toolbox reports under the name FMI_pixel (edge features). ``(B,)`` in ``[0, 1]``."""
    c = check_convention(convention)
    return fmi_core(fused, sources, "edge" if c == "matlab" else "none")


@register(
    "FMI_dct",
    higher_is_better=True,
    needs="pair",
    description="Feature mutual information on dct2 coefficients (Tang's FMI_dct).",
    reference=_REF,
    conventions={"cddfuse": _HOW.format(feat="features = dct2(X), the orthonormal 2-D DCT of the whole image")},
)
def fmi_dct(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """FMI with ``feature='dct'`` (``dct2`` of each whole image), ``(B,)`` in ``[0, 1]``."""
    return fmi_core(fused, sources, "dct")


@register(
    "FMI_gradient",
    higher_is_better=True,
    needs="pair",
    description="Feature mutual information on MATLAB gradient(X): the horizontal derivative only.",
    reference=_REF,
    conventions={"cddfuse": _HOW.format(feat="features = gradient(X) with one output, the x-derivative "
                                              "(central differences, one-sided at the borders)")},
)
def fmi_gradient(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """FMI with ``feature='gradient'`` (``fmi.m`` keeps only ``gradient``'s first output, the
    x-derivative), ``(B,)`` in ``[0, 1]``."""
    return fmi_core(fused, sources, "gradient")
