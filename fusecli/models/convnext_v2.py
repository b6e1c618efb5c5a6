"""The ConvNeXt-V2 block (Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked
Autoencoders", CVPR 2023), as FRUFN's mask generator and ColorNet use it.

Written from the paper's definition; parameter names follow the reference implementation
(``dwconv``, ``norm``, ``pwconv1``, ``grn.gamma`` / ``grn.beta``, ``pwconv2``) so official
checkpoints load.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GRN", "ConvNeXtV2Block"]


class GRN(nn.Module):
    """Global response normalisation of ConvNeXt-V2 on channels-last (B, H, W, C) tensors."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """``fast``: the same formula as one pass, ``x * (gamma * nx + 1) + beta``, with the norm
        as a sum of squares (equal to float rounding)."""
        if fast:
            gx = x.square().sum(dim=(1, 2), keepdim=True).sqrt()
            nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
            return torch.addcmul(self.beta, x, torch.addcmul(torch.ones_like(nx), self.gamma, nx))
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """ConvNeXt-V2 block (Woo et al., CVPR 2023): depthwise 7x7 conv, LayerNorm (eps 1e-6),
    Linear C->4C, GELU, GRN, Linear 4C->C, plus the input.

    Shapes: (B, C, H, W) -> (B, C, H, W) (zero padding 3, any H, W >= 1).
    """

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expansion * dim)
        self.act = nn.GELU()
        self.grn = GRN(expansion * dim)
        self.pwconv2 = nn.Linear(expansion * dim, dim)

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """``fast``: GRN in one pass (:meth:`GRN.forward`); for channels-last ``x`` no copies."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y))), fast))
        if fast:
            return y.permute(0, 3, 1, 2).add_(x)  # = x + y, in the fresh output's (channels-last) memory
        return x + y.permute(0, 3, 1, 2)
