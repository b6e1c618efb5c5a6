"""Wang & Bovik's universal image quality index (UIQI, Q0) as ``img_qi.m`` computes it.

Inputs as everywhere in :mod:`fusecli.metrics`: ``(H, W)`` / ``(B, 1, H, W)`` gray on 0–255;
outputs ``(B,)`` float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from . import register
from ._checks import as_gray_255, as_sources_255, warn_nan
from ._filters import check_window, gauss1d, sep_valid
from .similarity import two_sources


def uiqi_pair(x: Any, y: Any, block: int = 8) -> torch.Tensor:
    """``img_qi(x, y)``: mean over all ``block``×``block`` sliding windows (``'valid'``) of
    ``Q = 4 s_xy m_x m_y / ((s_x^2 + s_y^2)(m_x^2 + m_y^2))`` computed from window sums; where
    ``s_x^2 + s_y^2 = 0`` but ``m_x^2 + m_y^2 != 0``: ``Q = 2 m_x m_y / (m_x^2 + m_y^2)``; where
    both are 0: ``Q = 1``. ``(B,)`` in ``[-1, 1]``, 1 iff ``x == y``. Symmetric in ``x, y``.

    Raises:
        ShapeError: images smaller than ``block``×``block`` or of different sizes.
    """
    a = as_gray_255(x, "image 1")
    b = as_sources_255([y], a)[0]
    check_window(a, block, "UIQI")
    n = float(block * block)
    ones = [1.0] * block
    sa, sb = sep_valid(a, ones), sep_valid(b, ones)
    saa, sbb, sab = sep_valid(a * a, ones), sep_valid(b * b, ones), sep_valid(a * b, ones)
    mul = sa * sb
    sq = sa * sa + sb * sb
    num = 4 * (n * sab - mul) * mul
    den1 = n * (saa + sbb) - sq
    den = den1 * sq
    q = torch.ones_like(den)
    flat = (den1 == 0) & (sq != 0)
    q = torch.where(flat, 2 * mul / torch.where(flat, sq, torch.ones_like(sq)), q)
    ok = den != 0
    q = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), q)
    return q.flatten(1).mean(1)


@register(
    "UIQI",
    higher_is_better=True,
    needs="pair",
    description="Universal image quality index Q0, mean of Q(A,F) and Q(B,F) (8×8 sliding windows).",
    reference="Wang & Bovik, IEEE SPL 9(3), 2002 (img_qi.m)",
    conventions={"cddfuse": "(Q0(A,F) + Q0(B,F))/2, img_qi.m 8×8 sliding 'valid' windows; same under every "
                            "convention (fusion papers do not document the combination; the sum is 2×)"},
    variants=("mean", "sum"),
)
def uiqi(fused: Any, sources: Sequence[Any], combine: str = "mean") -> torch.Tensor:
    """``(Q0(A, F) + Q0(B, F)) / 2`` (``combine="mean"``) or the sum (``"sum"``), ``(B,)``; see
    :func:`uiqi_pair`. Images of at least 8×8."""
    x, a, b = two_sources(fused, sources, "UIQI")
    s = uiqi_pair(a, x) + uiqi_pair(b, x)
    return s if combine == "sum" else s / 2


def flat_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """Where ``x`` (``(B, 1, H, W)``) is constant over a ``size``×``size`` window, as a
    ``'valid'`` bool map ``(B, 1, H-size+1, W-size+1)``."""
    return F.max_pool2d(x, size, stride=1) == -F.max_pool2d(-x, size, stride=1)


def _ssim_yang(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Liu's ``ssim_yang``: 7×7 Gaussian (σ = 1.5) ``'valid'`` SSIM map with C1 = C2 = 2e-16;
    returns ``(map, var_x, var_y, cov_xy)``.

    The local (co)variances are ``E[xy] - E[x]E[y]``; in a window where ``x`` (or ``y``) is
    constant they are exactly 0 and are set so: computed, they are round-off residues of either
    sign (``~1e-12``), and the metrics built on them divide such residues (Q_C's
    ``σ_AF / (σ_AF + σ_BF)`` and its ``< 0`` test, Q_Y's ``λ``), which made the value depend on
    the summation order of the window sums (up to 9e-4 on full-size TNO images)."""
    k = gauss1d(7, 1.5).tolist()
    mx, my = sep_valid(x, k), sep_valid(y, k)
    fx, fy = flat_windows(x, 7), flat_windows(y, 7)
    zero = torch.zeros((), dtype=mx.dtype, device=mx.device)
    sxx = torch.where(fx, zero, sep_valid(x * x, k) - mx * mx)
    syy = torch.where(fy, zero, sep_valid(y * y, k) - my * my)
    sxy = torch.where(fx | fy, zero, sep_valid(x * y, k) - mx * my)
    c = 2e-16
    m = ((2 * mx * my + c) * (2 * sxy + c)) / ((mx * mx + my * my + c) * (sxx + syy + c))
    return m, sxx, syy, sxy


def _nanmean(v: torch.Tensor) -> torch.Tensor:
    v = v.flatten(1)
    ok = ~torch.isnan(v)
    return torch.where(ok, v, torch.zeros_like(v)).sum(1) / ok.sum(1)


@register(
    "Q_Y",
    higher_is_better=True,
    needs="pair",
    description="Yang et al.'s SSIM-based fusion metric.",
    reference="Yang, Zhang, Wang & Liu, Inf. Fusion 9(2), 2008 (MEFB metricsQy, Liu metricYang)",
    conventions={"mefb": "7×7 Gaussian σ=1.5 'valid' SSIM maps, C=2e-16; λ-weighted where SSIM(A,B) ≥ 0.75 "
                         "else max; mean over non-NaN; same under every convention"},
)
def q_y(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """Where ``SSIM(A, B) >= 0.75``: ``λ SSIM(A, F) + (1 - λ) SSIM(B, F)`` with
    ``λ = σ_A² / (σ_A² + σ_B²)``, elsewhere ``max(SSIM(A, F), SSIM(B, F))``; mean over the
    non-NaN pixels of the map, ``(B,)``, about 0..1. Images of at least 11×11 (the toolbox
    returns -Inf below). Windows constant in an image have exactly zero (co)variances (see
    :func:`_ssim_yang`): the value is the .m file's in exact arithmetic, where MATLAB's carries
    round-off residues."""
    x, a, b = two_sources(fused, sources, "Q_Y")
    check_window(x, 11, "Q_Y")
    s_ab, va, vb, _ = _ssim_yang(a, b)
    s_af = _ssim_yang(a, x)[0]
    s_bf = _ssim_yang(b, x)[0]
    binm = (s_ab >= 0.75).to(s_ab.dtype)
    lam = va / (va + vb)
    q1 = (lam * s_af + (1 - lam) * s_bf) * binm  # NaN propagates as in MATLAB (NaN .* 0 = NaN)
    q2 = torch.fmax(s_af, s_bf) * (1 - binm)  # MATLAB max ignores NaN
    return warn_nan(_nanmean(q1 + q2), "Q_Y", "every pixel of the map is NaN (flat images)")


@register(
    "Q_C",
    higher_is_better=True,
    needs="pair",
    description="Cvejic et al.'s covariance-weighted SSIM fusion metric.",
    reference="Cvejic, Loza, Bull & Canagarajah, Int. J. Signal Process. 2(3), 2005 (MEFB metricsQc)",
    conventions={"mefb": "μ = σ_AF/(σ_AF+σ_BF) from 7×7 Gaussian windows, μ·SSIM(A,F)+(1−μ)·SSIM(B,F), 0 where "
                         "μ<0, 1 where μ>1, mean over non-NaN; same under every convention"},
)
def q_c(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``μ SSIM(A, F) + (1 - μ) SSIM(B, F)`` with ``μ = σ_AF / (σ_AF + σ_BF)``, set to 0 where
    ``μ < 0`` and to 1 where ``μ > 1``; mean over the non-NaN pixels, ``(B,)``. Images of at
    least 11×11. Windows constant in an image have exactly zero (co)variances (see
    :func:`_ssim_yang`): ``μ = 0`` where only a source is constant, NaN (left out) where F is;
    the value is the .m file's in exact arithmetic, where MATLAB's carries round-off residues
    whose sign decides ``μ < 0``."""
    x, a, b = two_sources(fused, sources, "Q_C")
    check_window(x, 11, "Q_C")
    s_af, _, _, c_af = _ssim_yang(a, x)
    s_bf, _, _, c_bf = _ssim_yang(b, x)
    mu = c_af / (c_af + c_bf)
    sim = mu * s_af + (1 - mu) * s_bf
    sim = torch.where(mu < 0, torch.zeros_like(sim), sim)
    sim = torch.where(mu > 1, torch.ones_like(sim), sim)
    return warn_nan(_nanmean(sim), "Q_C", "every pixel of the map is NaN (flat images)")
