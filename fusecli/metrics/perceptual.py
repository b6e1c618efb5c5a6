"""Human-perception-based fusion metrics of Liu's toolbox as VIFB / MEFB run them: Chen & Blum's
Q_CB (``metricsQcb``) and Chen & Varshney's Q_CV (``metricsQcv``).

Inputs as everywhere in :mod:`fusecli.metrics`: ``(H, W)`` / ``(B, 1, H, W)`` gray on 0–255;
outputs ``(B,)`` float64. Both filter in the frequency domain (MATLAB ``fft2`` / ``ifft2``, the
result kept complex as in MATLAB) and both start from Liu's ``normalize1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from . import register
from ._checks import check_convention, warn_nan
from ._filters import filter2_same, sep_same
from .information import normalize1
from .similarity import round_half_away, two_sources


def normalize1_mefb(x: torch.Tensor) -> torch.Tensor:
    """``normalize1(im2double(uint8))`` as MEFB runs it: ``round((x/255 − min/255) / (max/255 −
    min/255) · 255)`` (the same as :func:`normalize1` except where the extra divisions move a
    value across a .5 tie); unchanged if all zero, NaN if a non-zero constant."""
    f = x.flatten(1) / 255.0
    mn = f.min(dim=1, keepdim=True).values
    mx = f.max(dim=1, keepdim=True).values
    out = round_half_away((f - mn) / (mx - mn) * 255)
    zero = (mx == 0) & (mn == 0)
    return torch.where(zero, x.flatten(1), out).reshape(x.shape)


def _radius(h: int, w: int, su: float, sv: float, device) -> torch.Tensor:
    """``r = sqrt(u² + v²)`` with ``[u, v] = freqspace([h w], 'meshgrid')`` scaled by ``(su, sv)``,
    already ``ifftshift``-ed (so it multiplies an unshifted ``fft2``), shape ``(h, w)``."""
    fu = (torch.arange(w, dtype=torch.float64, device=device) - w // 2) * (2.0 / w) * su
    fv = (torch.arange(h, dtype=torch.float64, device=device) - h // 2) * (2.0 / h) * sv
    r = torch.sqrt(fu[None, :] ** 2 + fv[:, None] ** 2)
    return torch.fft.ifftshift(r, dim=(-2, -1))


def _freq_filter(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``ifft2(ifftshift(fftshift(fft2(x)) .* S))`` with ``s = ifftshift(S)``: complex128."""
    return torch.fft.ifft2(torch.fft.fft2(x.to(torch.complex128)) * s)


def _gauss_unnorm(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``filter2(G, x, 'same')`` with Liu's 31×31 **unnormalised** Gaussian
    ``exp(−(x²+y²)/2σ²)/(2πσ²)`` (separable); real or complex ``x``."""
    t = torch.arange(-15, 16, dtype=torch.float64, device=x.device)
    k = torch.exp(-t * t / (2 * sigma * sigma)) / math.sqrt(2 * math.pi * sigma * sigma)
    if x.is_complex():
        return torch.complex(sep_same(x.real.contiguous(), k), sep_same(x.imag.contiguous(), k))
    return sep_same(x, k)


def _masked_contrast(x: torch.Tensor) -> torch.Tensor:
    c = torch.abs(_gauss_unnorm(x, 2.0) / _gauss_unnorm(x, 4.0) - 1)
    return c ** 3 / (c ** 2 + 1e-4)


@register(
    "Q_CB",
    higher_is_better=True,
    needs="pair",
    description="Chen & Blum's perceptual contrast-preservation fusion metric.",
    reference="Chen & Blum, Image Vis. Comput. 27(10), 2009 (VIFB/MEFB metricsQcb, Liu metricChenBlum)",
    conventions={
        "cddfuse": "as vifb (no Q_CB in the CDDFuse Evaluator)",
        "matlab": "as vifb (no Q_CB in Tang's toolbox)",
        "vifb": "normalize1 of 0–255 images, DoG CSF (f0=15.3870, f1=1.3456, a=0.7622, freqspace·(W,H)/30), "
                "abs(G₂∗X/G₄∗X − 1) with unnormalised 31×31 Gaussians, C'=C³/(C²+1e-4), mean of λ-weighted min/max",
        "mefb": "as vifb but normalize1 after im2double (÷255 first), as MEFB passes uint8: .5 ties may round "
                "the other way",
    },
)
def q_cb(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """``Q_CB = mean(λ_A Q_AF + λ_B Q_BF)``, ``(B,)`` in ``[0, 1]``.

    Each image is min–max normalised to 0..255 and rounded (``normalize1``; ``"mefb"``: after
    dividing by 255, as MEFB does), filtered with the DoG contrast-sensitivity function
    ``S(r) = exp(−(r/15.3870)²) − 0.7622 exp(−(r/1.3456)²)`` in the frequency domain; local
    contrast ``C = |(G₂ ∗ X)/(G₄ ∗ X) − 1|`` (unnormalised 31×31 Gaussians, zero padding, on the
    complex filtered image as MATLAB keeps it), masked ``C' = C³/(C² + 1e-4)``;
    ``Q_XF = min(C'_X, C'_F)/max(C'_X, C'_F)``, ``λ_A = C'_A²/(C'_A² + C'_B²)``.

    NaN with a :class:`~fusecli.metrics._checks.MetricWarning` where MATLAB gives NaN: an image
    that is constant (``normalize1`` or the contrast divides 0 by 0) or a pixel where exactly
    one of ``C'_X``, ``C'_F`` is 0 (MATLAB's ``Inf·0``).
    """
    c = check_convention(convention)
    x, a, b = two_sources(fused, sources, "Q_CB")
    norm = normalize1_mefb if c == "mefb" else normalize1
    h, w = x.shape[-2:]
    r = _radius(h, w, w / 30.0, h / 30.0, x.device)
    s = torch.exp(-(r / 15.3870) ** 2) - 0.7622 * torch.exp(-(r / 1.3456) ** 2)
    ca, cb_, cf = (_masked_contrast(_freq_filter(norm(v), s)) for v in (a, b, x))

    def pres(cx: torch.Tensor) -> torch.Tensor:  # MATLAB's mask arithmetic, NaN/Inf included
        m = (cx < cf).to(cx.dtype)
        return (cx / cf) * m + (cf / cx) * (1 - m)

    den = ca * ca + cb_ * cb_
    q = (ca * ca) / den * pres(ca) + (cb_ * cb_) / den * pres(cb_)
    return warn_nan(q.flatten(1).mean(1), "Q_CB",
                    "a constant image, or pixels where exactly one contrast is 0 (0/0 or Inf·0 as in MATLAB)")


def _blocks(x: torch.Tensor, size: int = 16) -> torch.Tensor:
    """``blkproc`` blocks: zero-pad bottom/right to a multiple of ``size``; returns
    ``(B, nblocks, size*size)``."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % size, 0, (-h) % size))
    bsz = x.shape[0]
    t = x.reshape(bsz, x.shape[-2] // size, size, x.shape[-1] // size, size)
    return t.permute(0, 1, 3, 2, 4).reshape(bsz, -1, size * size)


@register(
    "Q_CV",
    higher_is_better=False,
    needs="pair",
    description="Chen & Varshney's regional human-perception fusion metric (a weighted distortion).",
    reference="Chen & Varshney, Inf. Fusion 8(2), 2007 (VIFB/MEFB metricsQcv, Liu metricChen)",
    conventions={"vifb": "normalize1; Sobel filter2 'same' magnitude; 16×16 blkproc blocks (zero-padded), "
                         "λ = Σ G⁵; D = mean((CSF∗(X−F))²), Mannos–Sakrison CSF, freqspace·(W,H)/8; real part "
                         "of Σ(λ_A D_A + λ_B D_B)/Σ(λ_A + λ_B); same under every convention"},
)
def q_cv(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``Q_CV = Σ_blocks (λ_A D_A + λ_B D_B) / Σ_blocks (λ_A + λ_B)``, ``(B,)``, >= 0 for real
    images in practice, lower is better (0 when F = A = B).

    Images are ``normalize1``-ed; ``λ_X`` = sum of ``G_X⁵`` over each 16×16 block (Sobel
    magnitude by ``filter2 'same'``; blocks zero-padded at the bottom/right as ``blkproc``
    does); ``D_X`` = mean over the block (padding included, i.e. divided by 256) of the square
    of ``X − F`` filtered by the Mannos–Sakrison CSF ``2.6 (0.0192 + 0.144 r) exp(−(0.144 r)^1.1)``
    in the frequency domain. MATLAB squares the complex filtered values (``x.^2``, not ``|x|²``)
    and returns a complex number; this is its real part.

    NaN with a :class:`~fusecli.metrics._checks.MetricWarning` when neither source has any
    gradient (``Σ λ = 0``) or an image is a non-zero constant (``normalize1``'s 0/0).
    """
    x, a, b = two_sources(fused, sources, "Q_CV")
    xn, an, bn = normalize1(x), normalize1(a), normalize1(b)
    k1 = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64, device=x.device)
    h, w = x.shape[-2:]
    r = _radius(h, w, w / 8.0, h / 8.0, x.device)
    csf = 2.6 * (0.0192 + 0.144 * r) * torch.exp(-((0.144 * r) ** 1.1))
    num = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    den = torch.zeros_like(num)
    for s in (an, bn):
        gx, gy = filter2_same(s, k1), filter2_same(s, k1.t().contiguous())
        lam = _blocks(torch.sqrt(gx * gx + gy * gy) ** 5).sum(-1)
        d = _freq_filter(s - xn, csf)
        dd = _blocks(d.real ** 2 - d.imag ** 2).sum(-1) / 256.0  # Re(mean2(d.^2))
        num = num + (lam * dd).sum(-1)
        den = den + lam.sum(-1)
    return warn_nan(num / den, "Q_CV", "neither source has a gradient, or an image is a non-zero constant")
