"""Fused-image-only statistics: entropy (EN), standard deviation (SD), spatial frequency (SF)
and average gradient (AG). All higher-is-better.

Each function takes one fused image or batch — ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)``,
torch or numpy, gray on the 0–255 scale (see :func:`fusecli.metrics._checks.as_gray_255`) — and
returns a ``(B,)`` ``float64`` tensor on the input's device. ``convention`` picks the
normalisation of a toolbox where they differ (``"cddfuse"``, ``"matlab"``, ``"vifb"``).
"""

from __future__ import annotations

from typing import Any

import torch

from . import register
from ._checks import as_gray_255, check_convention


@register(
    "EN",
    higher_is_better=True,
    needs="fused",
    description="Shannon entropy (bits) of the 256-bin gray histogram.",
    reference="Roberts et al., J. Appl. Remote Sens. 2(1) 023522, 2008; CDDFuse / VIFB toolboxes",
    conventions={"cddfuse": "256-bin histogram of round(F), log2 (all toolboxes agree)"},
)
def en(fused: Any) -> torch.Tensor:
    """Entropy ``EN = -sum_{p_i>0} p_i log2 p_i`` of the 256-bin histogram, in bits (0..8).

    Values are rounded to integers (half to even, like ``numpy.round``) and clamped to 0..255
    before counting; ``p_i = count_i / (H W)``.
    """
    x = as_gray_255(fused, "fused")
    b = x.shape[0]
    idx = x.round().clamp_(0, 255).to(torch.int64).reshape(b, -1)
    counts = torch.zeros(b, 256, dtype=torch.float64, device=x.device)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    p = counts / idx.shape[1]
    plogp = torch.where(p > 0, p * torch.log2(p.clamp_min(1e-300)), torch.zeros_like(p))
    return -plogp.sum(dim=1)


@register(
    "SD",
    higher_is_better=True,
    needs="fused",
    description="Standard deviation of the gray levels (contrast).",
    reference="Rao, Meas. Sci. Technol. 8(4) 355, 1997; CDDFuse / VIFB toolboxes",
    conventions={"cddfuse": "population SD (all toolboxes agree)"},
)
def sd(fused: Any) -> torch.Tensor:
    """Population standard deviation ``sqrt(sum (F - mean F)^2 / (H W))``."""
    x = as_gray_255(fused, "fused")
    return x.flatten(1).std(dim=1, correction=0)


@register(
    "SF",
    higher_is_better=True,
    needs="fused",
    description="Spatial frequency: RMS of horizontal and vertical first differences.",
    reference="Eskicioglu & Fisher, IEEE Trans. Commun. 43(12), 1995; CDDFuse / VIFB toolboxes",
    conventions={"cddfuse": "sqrt(mean row diff² + mean column diff²)",
                 "matlab": "as cddfuse",
                 "vifb": "sums of squared differences divided by H·W",
                 "mefb": "as vifb"},
)
def sf(fused: Any, convention: str = "cddfuse") -> torch.Tensor:
    """Spatial frequency ``SF = sqrt(RF^2 + CF^2)``.

    ``RF^2`` is the sum of the squared horizontal differences ``F(i,j) - F(i,j-1)`` and ``CF^2``
    that of the vertical ones, each divided by its number of terms — ``H (W-1)`` and
    ``(H-1) W`` — for ``"cddfuse"`` and ``"matlab"``, or both divided by ``H W`` for ``"vifb"``
    and ``"mefb"``.
    """
    c = check_convention(convention)
    x = as_gray_255(fused, "fused")
    h, w = x.shape[-2:]
    rf = (x[..., :, 1:] - x[..., :, :-1]).square().sum(dim=(1, 2, 3))
    cf = (x[..., 1:, :] - x[..., :-1, :]).square().sum(dim=(1, 2, 3))
    if c in ("vifb", "mefb"):
        return torch.sqrt((rf + cf) / (h * w))
    return torch.sqrt(rf / (h * (w - 1)) + cf / ((h - 1) * w))


@register(
    "AG",
    higher_is_better=True,
    needs="fused",
    description="Average gradient magnitude (sharpness).",
    reference="Cui et al., Opt. Commun. 341, 2015; CDDFuse / VIFB toolboxes",
    conventions={"cddfuse": "mean of sqrt((gx²+gy²)/2) over H·W",
                 "matlab": "sum over (H−1)(W−1)",
                 "vifb": "sum over (H−1)(W−1)",
                 "mefb": "sum over (H−1)(W−1)"},
)
def ag(fused: Any, convention: str = "cddfuse") -> torch.Tensor:
    """Average gradient ``sum s / N`` with ``s = sqrt((gx^2 + gy^2) / 2)``.

    ``gx, gy`` are MATLAB's ``gradient(F)`` (= ``numpy.gradient``): central differences
    ``(f(k+1) - f(k-1)) / 2`` inside, one-sided differences on the first / last column and row.
    ``N = H W`` for ``"cddfuse"`` (the mean), ``N = (H-1)(W-1)`` for ``"matlab"``, ``"vifb"``
    and ``"mefb"``.
    """
    c = check_convention(convention)
    x = as_gray_255(fused, "fused")
    h, w = x.shape[-2:]
    gy, gx = torch.gradient(x, dim=(2, 3))
    s = torch.sqrt((gx.square() + gy.square()) / 2).sum(dim=(1, 2, 3))
    n = h * w if c == "cddfuse" else (h - 1) * (w - 1)
    return s / n


_SOBEL = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=torch.float64)


@register(
    "EI",
    higher_is_better=True,
    needs="fused",
    description="Edge intensity: mean Sobel gradient magnitude.",
    reference="Rajalingam & Priya, Int. J. Eng. Sci. Invention 2(3), 2018 (VIFB/MEFB metricsEdge_intensity)",
    conventions={"vifb": "mean of sqrt(gx²+gy²), fspecial('sobel') and its transpose, imfilter 'replicate'; "
                         "same under every convention"},
)
def ei(fused: Any) -> torch.Tensor:
    """Mean over all pixels of ``sqrt(gx^2 + gy^2)``, ``gx, gy`` the Sobel responses
    (``fspecial('sobel')`` and its transpose, correlation with replicated borders), ``(B,)``,
    ``>= 0`` (0 for a constant image)."""
    from ._filters import filter2_same

    x = as_gray_255(fused, "fused")
    gy = filter2_same(x, _SOBEL.to(x.device), mode="replicate")
    gx = filter2_same(x, _SOBEL.t().contiguous().to(x.device), mode="replicate")
    return torch.sqrt(gx * gx + gy * gy).flatten(1).mean(1)
