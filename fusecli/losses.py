"""Training losses shared by the models' recipes.

All take (B, 1, H, W) float32 tensors in [0, 1] and return a scalar tensor (mean over the batch).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .errors import ShapeError


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window and reflect borders.

    Args:
        x, y: (B, 1, H, W) tensors in [0, 1] (data range 1: C1 = 0.01², C2 = 0.03²).
        window: side of the Gaussian window (kornia's training losses of AUIF/CSCFuse use 3).
        sigma: its standard deviation.

    Returns:
        Scalar tensor, the mean SSIM over pixels and batch (differentiable).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ShapeError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    c = x.shape[1]
    w = _gaussian_window(window, sigma).to(x).expand(c, 1, window, window)
    r = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (r, r, r, r), mode="reflect"), w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


def ssim_loss(x: torch.Tensor, y: torch.Tensor, *, window: int = 11) -> torch.Tensor:
    """kornia's (old) SSIM loss, ``(1 - SSIM) / 2``, in [0, 1]."""
    return (1 - ssim(x, y, window=window)) / 2
