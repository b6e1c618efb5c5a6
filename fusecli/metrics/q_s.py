"""Piella & Heijmans' SSIM-based fusion quality indices Q_S, Q_W and Q_E as Liu's
``metricPeilla.m`` (and MEFB's ``metricsQw.m``) compute them, on Wang's ``ssim_index``.

Inputs as everywhere in :mod:`fusecli.metrics`: ``(H, W)`` / ``(B, 1, H, W)`` gray on 0–255;
outputs ``(B,)`` float64. Images of at least 11×11 (the toolbox returns -Inf below).

Note: the saliency ``λ = σ_A² / (σ_A² + σ_B²)`` is a ratio of round-off terms in 11×11 windows
that are flat in both sources (in MATLAB too), so on images with such regions the value agrees
with the toolbox only as far as those round-off terms do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import register
from ._checks import check_convention, warn_nan
from ._filters import check_window, filter2_same, gauss1d, sep_valid
from .similarity import two_sources

_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _ssim_index(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Wang's ``ssim_index(x, y)`` (11×11 Gaussian σ = 1.5, ``'valid'``, L = 255): returns
    ``(ssim_map, σ_x², σ_y²)``."""
    k = gauss1d(11, 1.5, device=x.device).tolist()
    mx, my = sep_valid(x, k), sep_valid(y, k)
    sxx = sep_valid(x * x, k) - mx * mx
    syy = sep_valid(y * y, k) - my * my
    sxy = sep_valid(x * y, k) - mx * my
    m = ((2 * mx * my + _C1) * (2 * sxy + _C2)) / ((mx * mx + my * my + _C1) * (sxx + syy + _C2))
    return m, sxx, syy


def _piella_parts(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """``(local quality map λ SSIM(F,A) + (1-λ) SSIM(F,B), σ_A², σ_B²)`` with Liu's +0.5 on both
    variances where their sum is exactly 0."""
    _, va, vb = _ssim_index(a, b)
    flat = ((va + vb) == 0).to(va.dtype) * 0.5
    va, vb = va + flat, vb + flat
    lam = va / (va + vb)
    q = lam * _ssim_index(x, a)[0] + (1 - lam) * _ssim_index(x, b)[0]
    return q, va, vb


def _q_w(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    q, va, vb = _piella_parts(x, a, b)
    cw = torch.maximum(va, vb)
    return (cw * q).flatten(1).sum(1) / cw.flatten(1).sum(1)


def _prewitt(x: torch.Tensor) -> torch.Tensor:
    """Edge image ``sqrt(gx² + gy²)`` with Liu's Prewitt kernels, ``filter2 'same'``."""
    k = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=torch.float64, device=x.device)
    gx, gy = filter2_same(x, k), filter2_same(x, k.t().contiguous())
    return torch.sqrt(gx * gx + gy * gy)


def _three(fused, sources, what):
    x, a, b = two_sources(fused, sources, what)
    check_window(x, 11, what)
    return x, a, b


@register(
    "Q_S",
    higher_is_better=True,
    needs="pair",
    description="Piella's fusion quality index Q (mean of the saliency-weighted local SSIM).",
    reference="Piella & Heijmans, ICIP 2003 (Liu metricPeilla sw=1)",
    conventions={"cddfuse": "Wang ssim_index (11×11 Gaussian σ=1.5, valid, L=255); mean of λ SSIM(F,A) + "
                            "(1−λ) SSIM(F,B), λ = σ_A²/(σ_A²+σ_B²) (+0.5 to both where both are 0); same under "
                            "every convention"},
)
def q_s(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``Q_S = mean(λ SSIM(F, A) + (1 − λ) SSIM(F, B))`` over the ``'valid'`` 11×11 windows,
    ``λ = σ_A² / (σ_A² + σ_B²)`` (0.5 where both variances are 0), ``(B,)``, at most 1 (1 when
    F = A = B)."""
    x, a, b = _three(fused, sources, "Q_S")
    return _piella_parts(x, a, b)[0].flatten(1).mean(1)


@register(
    "Q_W",
    higher_is_better=True,
    needs="pair",
    description="Piella's weighted fusion quality index Q_W (MEFB's \"Q_W\" is Piella's Q_E with α = 1).",
    reference="Piella & Heijmans, ICIP 2003 (Liu metricPeilla sw=2; MEFB metricsQw)",
    conventions={
        "cddfuse": "Liu metricPeilla sw=2: Σ c_w (λ SSIM(F,A) + (1−λ) SSIM(F,B)), c_w = max(σ_A², σ_B²)/Σ",
        "mefb": "MEFB metricsQw: the same on Prewitt edge images (filter2 'same'), i.e. Piella's Q_E with α=1",
    },
)
def q_w(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """``Q_W = Σ c_w (λ SSIM(F, A) + (1 − λ) SSIM(F, B))`` with
    ``c_w = max(σ_A², σ_B²) / Σ max(σ_A², σ_B²)``, ``(B,)``, at most 1 (1 when F = A = B).

    ``convention="mefb"`` reproduces MEFB's ``metricsQw``, which computes this on the Prewitt
    edge images ``sqrt(gx² + gy²)`` of F, A, B (Piella's Q_E with α = 1, see :func:`q_e`)."""
    c = check_convention(convention)
    x, a, b = _three(fused, sources, "Q_W")
    if c == "mefb":
        x, a, b = _prewitt(x), _prewitt(a), _prewitt(b)
    return _q_w(x, a, b)


@register(
    "Q_E",
    higher_is_better=True,
    needs="pair",
    description="Piella's edge-dependent fusion quality index Q_E = Q_W^(1−α) · Q_W(edge images)^α.",
    reference="Piella & Heijmans, ICIP 2003 (metricPeilla sw=3, which crashes in Liu's code; MEFB metricsQw)",
    conventions={"cddfuse": "Q_W(F,A,B)^(1−α) · Q_W(F',A',B')^α with Prewitt edge images (filter2 'same'), "
                            "α = 1 (= MEFB's \"Q_W\"); same under every convention"},
    variants=("alpha",),
)
def q_e(fused: Any, sources: Sequence[Any], alpha: float = 1.0) -> torch.Tensor:
    """``Q_E = Q_W(F, A, B)^(1 − α) · Q_W(F', A', B')^α``, ``(B,)``, where ``X'`` is the Prewitt
    edge image ``sqrt(gx² + gy²)`` (kernels ``[1 0 −1]`` in three rows and its transpose,
    ``filter2 'same'``). ``α = 1`` (default, as MEFB's ``metricsQw``) uses the edge images only.
    A negative ``Q_W`` raised to a fractional power is NaN here, with a
    :class:`~fusecli.metrics._checks.MetricWarning` (MATLAB returns a complex number)."""
    x, a, b = _three(fused, sources, "Q_E")
    qe = _q_w(_prewitt(x), _prewitt(a), _prewitt(b))
    if alpha == 1:
        return qe
    return warn_nan(_q_w(x, a, b) ** (1 - alpha) * qe ** alpha, "Q_E",
                    "a negative Q_W raised to a fractional power (MATLAB returns a complex number)")
