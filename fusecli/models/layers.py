"""Layers shared by more than one model (a layer moves here only once two models use it).

* :func:`box_blur`: the kornia ``BoxBlur`` with reflect border; AUIF initialises its base encoder
  with it, CSC-IVF splits its input into base (blur) and detail (input - blur) with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["box_blur"]


def box_blur(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean filter of ``size x size`` with reflect border (kornia ``BoxBlur``).

    Computed as running sums (a column mean, then a row mean: ``2 * size`` instead of ``size**2``
    additions per pixel); equal to the dense kernel up to float rounding.

    Args:
        x: (B, C, H, W) tensor; H and W must exceed ``size // 2``.
        size: odd filter size.

    Returns:
        (B, C, H, W) tensor, same dtype and device.
    """
    r = size // 2
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    return F.avg_pool2d(F.avg_pool2d(padded, (size, 1), stride=1), (1, size), stride=1)
