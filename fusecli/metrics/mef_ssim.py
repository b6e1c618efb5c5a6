"""Ma, Zeng & Wang's MEF-SSIM and MEF-MS-SSIM (``mef_ssim.m`` / ``mef_ms_ssim.m``, used by MEFB
and Tang's toolbox): a fused image against **any number** of source images (e.g. an exposure
stack; ``needs="sources"``).

Inputs as everywhere in :mod:`fusecli.metrics`: ``(H, W)`` / ``(B, 1, H, W)`` gray on 0–255;
outputs ``(B,)`` float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ShapeError
from . import register
from ._checks import as_gray_255, as_sources_255, check_convention, warn_nan
from ._filters import box1d, check_window, filter2_same, gauss1d, sep_valid

_EPS = 2.220446049250313e-16  # MATLAB eps
_WIN = 11
_MS_WEIGHTS = (0.0448, 0.2856, 0.3001)


def _stack(fused: Any, sources: Sequence[Any], what: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = as_gray_255(fused, "fused")
    if isinstance(sources, (torch.Tensor, np.ndarray)):
        raise ShapeError(f"{what}: sources must be a list of images (e.g. an exposure stack), not a single array.")
    return x, as_sources_255(sources, x)


def _mef_ssim_map_mean(x: torch.Tensor, srcs: list[torch.Tensor], k: float = 0.03) -> torch.Tensor:
    """``mean2(qMap)`` of ``mef_ssim(srcs, x)`` for ``(B, 1, H, W)`` float64 tensors, ``(B,)``.

    Works on explicit 11×11 patches (``unfold``), in bands of rows to bound the memory."""
    n = _WIN * _WIN
    box = box1d(_WIN, device=x.device).tolist()
    mus, eds = [], []
    for s in srcs:
        mu = sep_valid(s, box)
        var = sep_valid(s * s, box) - mu * mu
        mus.append(mu)
        eds.append(torch.sqrt(torch.clamp(n * var, min=0)) + 0.001)
    mu = torch.cat(mus, 1)  # (B, K, h', w')
    ed = torch.cat(eds, 1)
    bsz, kk, hv, wv = mu.shape
    g = torch.outer(*(2 * [gauss1d(_WIN, 1.5, device=x.device)])).reshape(1, n, 1)
    c = (k * 255) ** 2
    stack = torch.cat([*srcs, x], 1)  # (B, K+1, H, W)
    rows = max(1, 4_000_000 // max(1, n * wv * bsz * (kk + 1)))
    out = torch.zeros(bsz, dtype=torch.float64, device=x.device)
    for r0 in range(0, hv, rows):
        r1 = min(hv, r0 + rows)
        band = stack[:, :, r0:r1 + _WIN - 1]
        p = F.unfold(band, _WIN).reshape(bsz, kk + 1, n, -1)  # (B, K+1, 121, L)
        ps, pf = p[:, :kk], p[:, kk]
        m = mu[:, :, r0:r1].flatten(2)[:, :, None]  # (B, K, 1, L)
        e = ed[:, :, r0:r1].flatten(2)  # (B, K, L)
        dev = ps - m
        den = torch.linalg.vector_norm(dev, dim=2).sum(1)
        tot = ps.sum(1)
        num = torch.linalg.vector_norm(tot - tot.mean(1, keepdim=True), dim=1)
        rr = (num + _EPS) / (den + _EPS)
        rr = torch.where(rr > 1, torch.full_like(rr, 1 - _EPS), rr)
        rr = torch.where(rr < 0, torch.full_like(rr, _EPS), rr)
        pw = torch.clamp(torch.tan(math.pi / 2 * rr), max=10.0)
        w = (e / _WIN) ** pw[:, None] + _EPS
        w = w / w.sum(1, keepdim=True)
        u = (w[:, :, None] * dev / e[:, :, None]).sum(1)  # (B, 121, L)
        un = torch.linalg.vector_norm(u, dim=1, keepdim=True)
        emax = e.max(1).values[:, None]
        u = torch.where(un > 0, u / torch.where(un > 0, un, torch.ones_like(un)) * emax, u)
        m1, m2 = (g * u).sum(1, keepdim=True), (g * pf).sum(1, keepdim=True)
        d1, d2 = u - m1, pf - m2
        q = (2 * (g * d1 * d2).sum(1) + c) / ((g * d1 * d1).sum(1) + (g * d2 * d2).sum(1) + c)
        out = out + q.sum(1)
    return out / (hv * wv)


def _down(x: torch.Tensor) -> torch.Tensor:
    """``imfilter(x, ones(2)/4, 'symmetric', 'same')`` then ``(1:2:end, 1:2:end)``."""
    k = torch.full((2, 2), 0.25, dtype=torch.float64, device=x.device)
    return filter2_same(x, k, mode="symmetric")[..., ::2, ::2]


def mef_ms_ssim_levels(fused: Any, sources: Sequence[Any], levels: int = 3) -> torch.Tensor:
    """Per-scale MEF-SSIM scores ``Q_l`` of ``mef_ms_ssim``, ``(B, levels)``: scale 1 is the
    input, each next scale a 2×2 box filter (symmetric padding) keeping every other pixel.

    Raises:
        ShapeError: ``min(H, W) / 2^(levels−1) < 11`` (the toolbox returns -Inf).
    """
    x, srcs = _stack(fused, sources, "MEF-MS-SSIM")
    h, w = x.shape[-2:]
    if min(h, w) / 2 ** (levels - 1) < _WIN:
        raise ShapeError(f"MEF-MS-SSIM with {levels} scales needs images of at least {_WIN * 2 ** (levels - 1)} "
                         f"pixels on the short side, got {h}×{w}; use larger images or MEF-SSIM.")
    qs = []
    for lev in range(levels):
        if lev:
            x, srcs = _down(x), [_down(s) for s in srcs]
        qs.append(_mef_ssim_map_mean(x, srcs))
    return torch.stack(qs, 1)


def _ms(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    q = mef_ms_ssim_levels(fused, sources, 3)
    wts = torch.tensor(_MS_WEIGHTS, dtype=torch.float64, device=q.device)
    return warn_nan(torch.prod(q ** (wts / wts.sum()), dim=1), "MEF-MS-SSIM",
                    "a scale's MEF-SSIM is negative (F unrelated to the sources); MATLAB returns a complex number")


@register(
    "MEF-SSIM",
    higher_is_better=True,
    needs="sources",
    description="Ma et al.'s MEF-SSIM of F against K >= 1 sources (structure consistency with a desired patch).",
    reference="Ma, Zeng & Wang, IEEE TIP 24(11), 2015 (mef_ssim.m; MEFB metricsMEF_SSIM)",
    conventions={
        "cddfuse": "mef_ssim.m: 11×11 patches (valid), c_k = √(121σ_k²)+0.001, p = tan(πR/2) ≤ 10, "
                   "w_k ∝ (c_k/11)^p, desired patch of norm max c_k, Gaussian 11/1.5 structure term, "
                   "C=(0.03·255)², mean of the map",
        "mefb": "MEFB metricsMEF_SSIM reports the 3-scale mef_ms_ssim (= MEF-MS-SSIM)",
    },
)
def mef_ssim(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """MEF-SSIM of ``fused`` against ``sources`` (a list of K >= 1 images), ``(B,)``, at most 1.

    For every 11×11 patch position (``'valid'``): source means ``μ_k`` and signal strengths
    ``c_k = sqrt(max(121 σ_k², 0)) + 0.001`` (uniform window); consistency
    ``R = ‖Σ_k x_k − mean‖ / Σ_k ‖x_k − μ_k‖`` (``eps``-guarded, clipped into ``(0, 1)``),
    ``p = min(tan(πR/2), 10)``; weights ``w_k ∝ (c_k/11)^p + eps``; desired structure
    ``Σ_k w_k (x_k − μ_k)/c_k`` rescaled to norm ``max_k c_k``; local score
    ``(2σ_{ŝF} + C)/(σ_ŝ² + σ_F² + C)`` with an 11×11 Gaussian (σ = 1.5), ``C = (0.03·255)²``;
    MEF-SSIM is the mean of the map. ``convention="mefb"`` returns :func:`mef_ms_ssim` (what
    MEFB's ``metricsMEF_SSIM`` reports). Single-scale: never NaN (``C > 0``); ``"mefb"``: see
    :func:`mef_ms_ssim`.

    Raises:
        ShapeError: images smaller than 11×11 (44×44 for ``"mefb"``), no sources.
    """
    c = check_convention(convention)
    if c == "mefb":
        return _ms(fused, sources)
    x, srcs = _stack(fused, sources, "MEF-SSIM")
    check_window(x, _WIN, "MEF-SSIM")
    return _mef_ssim_map_mean(x, srcs)


@register(
    "MEF-MS-SSIM",
    higher_is_better=True,
    needs="sources",
    description="Three-scale MEF-SSIM, Π Q_l^{w_l}, w = [0.0448, 0.2856, 0.3001]/Σ.",
    reference="Ma, Zeng & Wang, IEEE TIP 24(11), 2015 (mef_ms_ssim.m)",
    conventions={"cddfuse": "mef_ms_ssim.m: MEF-SSIM at 3 scales (2×2 box, symmetric padding, keep odd rows/"
                            "columns), Π Q_l^{w_l}, w = [0.0448 0.2856 0.3001]/Σ; same under every convention"},
)
def mef_ms_ssim(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``Π_l Q_l^{w_l}`` over 3 scales (see :func:`mef_ms_ssim_levels`), weights
    ``[0.0448, 0.2856, 0.3001]`` normalised to sum 1, ``(B,)``, at most 1. A negative scale
    score (F unrelated to the sources) raised to its fractional weight is NaN here, with a
    :class:`~fusecli.metrics._checks.MetricWarning` (MATLAB returns a complex number). Images of at least
    44×44 pixels."""
    return _ms(fused, sources)
