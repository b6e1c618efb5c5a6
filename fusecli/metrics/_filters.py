"""Window filters shared by the windowed metrics, as MATLAB's ``filter2`` / ``conv2`` / ``imfilter``
compute them, in torch on ``(B, 1, H, W)`` float64 batches.

Gaussian and box windows are separable, so they are applied as two 1-D passes (the result equals
the 2-D ``filter2`` to round-off, ~1e-15 relative, and is ~N/2 times faster for an N×N window).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: F401

from ..errors import ShapeError


def gauss1d(size: int, sigma: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)``, shape ``(size,)``.

    ``outer(g, g)`` equals the normalised 2-D kernel (MATLAB also zeroes values below
    ``eps * max``; that never happens for the sizes used here: size <= 6 sigma + 1 ... 5 sigma).
    """
    r = (size - 1) / 2.0
    x = torch.arange(size, dtype=torch.float64, device=device) - r
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def box1d(size: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """1-D factor of the normalised ``size × size`` uniform window, shape ``(size,)``."""
    return torch.full((size,), 1.0 / size, dtype=dtype, device=device)


def check_window(x: torch.Tensor, size: int, what: str) -> None:
    """Raise :class:`ShapeError` when ``x`` (``(B, 1, H, W)``) is smaller than a ``size`` window."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ShapeError(
            f"{what} needs images of at least {size}×{size} pixels (its window), got {h}×{w}; "
            "use larger images or another metric."
        )


def _taps(k: torch.Tensor | list[float]) -> list[float]:
    return [float(v) for v in (k.tolist() if isinstance(k, torch.Tensor) else k)]


def shift_valid_1d(x: torch.Tensor, k: torch.Tensor | list[float], dim: int) -> torch.Tensor:
    """``'valid'`` correlation of ``x`` with the 1-D ``k`` along ``dim`` (-1 or -2), computed as a
    sum of shifted slices (``sum_i k_i x[i : i + L]``), which on the CPU is ~20× faster than
    ``conv2d`` in float64 and gives the same values to round-off."""
    taps = _taps(k)
    n = len(taps)
    length = x.shape[dim] - n + 1
    out = x.narrow(dim, 0, length) * taps[0]
    for i in range(1, n):
        if taps[i] != 0.0:
            out.add_(x.narrow(dim, i, length), alpha=taps[i])
    return out


def sep_valid(x: torch.Tensor, k: torch.Tensor | list[float]) -> torch.Tensor:
    """``filter2(outer(k, k), x, 'valid')`` for a 1-D ``k``: ``(B, C, H, W)`` ->
    ``(B, C, H-n+1, W-n+1)`` (vertical pass first, then horizontal)."""
    return shift_valid_1d(shift_valid_1d(x, k, -2), k, -1)


def sep_same(x: torch.Tensor, k: torch.Tensor, mode: str = "constant") -> torch.Tensor:
    """Same-size separable filter with ``mode`` ``"constant"`` (zero: ``filter2 'same'``),
    ``"replicate"`` (``imfilter(..., 'replicate')``) or ``"reflect"``-like symmetric."""
    n = k.numel()
    lo = (n - 1) // 2
    hi = n - 1 - lo
    return sep_valid(pad(x, (lo, hi, lo, hi), mode), k)


def pad(x: torch.Tensor, p: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Pad the last two dims by ``(left, right, top, bottom)``; ``mode`` ``"constant"`` (zeros),
    ``"replicate"`` or ``"symmetric"`` (MATLAB's: the edge sample is repeated)."""
    if mode == "constant":
        return F.pad(x, p)
    if mode == "replicate":
        return F.pad(x, p, mode="replicate")
    if mode == "symmetric":
        left, right, top, bottom = p
        parts = [x[..., :, :left].flip(-1), x, x[..., :, x.shape[-1] - right:].flip(-1)]
        x = torch.cat(parts, dim=-1)
        parts = [x[..., :top, :].flip(-2), x, x[..., x.shape[-2] - bottom:, :].flip(-2)]
        return torch.cat(parts, dim=-2)
    raise ValueError(mode)


def filter2_valid(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """MATLAB ``filter2(h, x, 'valid')`` (correlation) for a small 2-D ``h``, as a sum of shifted
    slices (zero taps skipped)."""
    kh, kw = h.shape
    oh, ow = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    out = None
    for i, row in enumerate(h.tolist()):
        for j, v in enumerate(row):
            if v == 0.0:
                continue
            term = x[..., i:i + oh, j:j + ow]
            out = term * v if out is None else out.add_(term, alpha=v)
    return out if out is not None else torch.zeros_like(x[..., :oh, :ow])


def filter2_same(x: torch.Tensor, h: torch.Tensor, mode: str = "constant") -> torch.Tensor:
    """MATLAB ``filter2(h, x, 'same')`` (correlation, zero padding) for a 2-D ``h``;
    ``mode="replicate"`` gives ``imfilter(x, h, 'replicate')``."""
    kh, kw = h.shape
    # MATLAB centres an even kernel at floor((k+1)/2): pad (k-1)//2 before, k//2 after
    top, left = (kh - 1) // 2, (kw - 1) // 2
    return filter2_valid(pad(x, (left, kw - 1 - left, top, kh - 1 - top), mode), h)


def conv2_same(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """MATLAB ``conv2(x, h, 'same')`` (true convolution, zero padding)."""
    kh, kw = h.shape
    hf = torch.flip(h, dims=(0, 1))
    # conv2 'same' keeps the central part of the full convolution, starting at floor(k/2)
    top, left = kh // 2, kw // 2
    return filter2_valid(pad(x, (kw - 1 - left, left, kh - 1 - top, top), "constant"), hf)


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` elementwise, NaN where ``den == 0`` (so callers decide what a 0/0 means)."""
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)),
                       torch.full_like(num, math.nan))
