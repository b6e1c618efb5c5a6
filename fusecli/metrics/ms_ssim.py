"""MS-SSIM, Wang, Simoncelli & Bovik's multi-scale SSIM (Asilomar 2003), as fusion papers compute it.

Reference followed: ``pytorch_msssim.ms_ssim`` (VainF/pytorch-msssim, the implementation fusion
repositories import; the same definition as piq ``multi_scale_ssim`` and pyiqa ``ms_ssim`` up to the
down-sampling padding), with ``data_range = 255``:

* 5 scales, weights ``[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]``; at each scale an 11×11 Gaussian
  window, σ = 1.5 (separable, ``'valid'``), K = (0.01, 0.03), population statistics;
* contrast-structure ``cs`` (mean of ``(2σ_xy + C2) / (σ_x² + σ_y² + C2)``) at scales 1–4 and the full
  SSIM at scale 5, each clamped at 0 (``relu``) and combined as ``Π cs_l^{w_l} · ssim_5^{w_5}``;
* between scales a 2×2 average pooling (``avg_pool2d(kernel 2, padding = (H % 2, W % 2))``,
  zero padding counted in the average, as pytorch_msssim does);
* the fused image against each source: ``(MS-SSIM(F, A) + MS-SSIM(F, B)) / 2`` (the fusion papers'
  usual combination; ``combine="sum"`` for the sum some report). Tang's "MS_SSIM" column is
  MEF-MS-SSIM instead, which ``convention="matlab"`` reproduces under this name.

Like pytorch_msssim, images must be larger than 160 pixels on the shorter side (four
down-samplings of an 11×11 window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from . import register
from ._checks import as_gray_255, as_sources_255, check_convention, warn_nan
from ._filters import sep_valid
from .mef_ssim import mef_ms_ssim
from .similarity import two_sources

#: Wang et al.'s scale weights.
WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN = 11


def _window(device) -> torch.Tensor:
    """pytorch_msssim's ``_fspecial_gauss_1d(11, 1.5)``: computed in float32 (its default dtype),
    then used in float64: agreement with it to ~1e-15 instead of up to ~3e-5 relative."""
    coords = torch.arange(_WIN, dtype=torch.float32) - _WIN // 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    return (g / g.sum()).to(torch.float64).to(device)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, k: torch.Tensor, c1: float, c2: float):
    mx, my = sep_valid(x, k), sep_valid(y, k)
    sxx = sep_valid(x * x, k) - mx * mx
    syy = sep_valid(y * y, k) - my * my
    sxy = sep_valid(x * y, k) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return ssim.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim_pair(x: Any, y: Any, *, data_range: float = 255.0) -> torch.Tensor:
    """``pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False)`` for gray images,
    ``(B,)`` float64 in ``[0, 1]``; 1 iff ``x == y``, symmetric in ``x, y``.

    Args:
        x, y: ``(H, W)`` / ``(1, H, W)`` / ``(B, 1, H, W)`` on 0–255, same size, ``min(H, W) > 160``.

    Raises:
        ShapeError: a side of 160 pixels or less, or images of different sizes.
    """
    a = as_gray_255(x, "image 1")
    b = as_sources_255([y], a)[0]
    need = (_WIN - 1) * 2 ** (len(WEIGHTS) - 1)
    if min(a.shape[-2:]) <= need:
        raise ShapeError(f"MS-SSIM needs images larger than {need} pixels on the shorter side (5 scales of an "
                         f"11×11 window), got {a.shape[-2]}×{a.shape[-1]}.")
    k = _window(a.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    terms = []
    for level in range(len(WEIGHTS)):
        ssim, cs = _ssim_cs(a, b, k, c1, c2)
        if level < len(WEIGHTS) - 1:
            terms.append(torch.relu(cs))
            pad = (a.shape[-2] % 2, a.shape[-1] % 2)
            a = F.avg_pool2d(a, kernel_size=2, padding=pad)
            b = F.avg_pool2d(b, kernel_size=2, padding=pad)
    terms.append(torch.relu(ssim))
    w = torch.tensor(WEIGHTS, dtype=torch.float64, device=a.device)
    return torch.prod(torch.stack(terms, 1) ** w, dim=1)


@register(
    "MS-SSIM",
    higher_is_better=True,
    needs="pair",
    description="Wang's multi-scale SSIM (5 scales) of the fused image with each source, averaged.",
    reference="Wang, Simoncelli & Bovik, Asilomar 2003 (pytorch_msssim.ms_ssim, data_range 255)",
    conventions={"cddfuse": "(MS-SSIM(F,A)+MS-SSIM(F,B))/2, pytorch_msssim: 5 scales, weights 0.0448 0.2856 "
                            "0.3001 0.2363 0.1333, Gaussian 11/1.5 valid, K=(0.01,0.03), L=255, relu'd cs/ssim, "
                            "2×2 avg-pool (zero pad on odd sides); min side > 160 (none of the four toolboxes "
                            "has Wang's MS-SSIM)",
                 "matlab": "Tang's column MS_SSIM: analysis_ms_ssim([A, B], F) = MEF-MS-SSIM (3 scales, "
                           "images of at least 44×44), not Wang's MS-SSIM"},
    variants=("combine",),
)
def ms_ssim(fused: Any, sources: Sequence[Any], convention: str = "cddfuse", *, combine: str = "mean") -> torch.Tensor:
    """``(MS-SSIM(F, A) + MS-SSIM(F, B)) / 2`` (``combine="mean"``) or the sum (``"sum"``), ``(B,)``.
    See :func:`ms_ssim_pair`. Under ``convention="matlab"``: what Tang's toolbox reports as MS_SSIM,
    the MEF-MS-SSIM of F against the stack [A, B] (:func:`fusecli.metrics.mef_ssim.mef_ms_ssim`)."""
    if combine not in ("mean", "sum"):
        raise ConfigError(f"combine must be 'mean' or 'sum', got {combine!r}.")
    x, a, b = two_sources(fused, sources, "MS-SSIM")
    if check_convention(convention) == "matlab":
        return mef_ms_ssim(x, [a, b])
    s = ms_ssim_pair(x, a) + ms_ssim_pair(x, b)
    return warn_nan(s / 2 if combine == "mean" else s, "MS-SSIM", "undefined SSIM statistics")
