"""The Swin-V2 layer (Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR
2022) as Swin2SR's ``BasicLayer`` writes it (without down-sampling): the reference formulation of
FRUFN's global-local transformation and mask generator.

Written from the papers' definitions; parameter and buffer names follow the reference
implementations so official checkpoints load. Tokens are (B, H*W, C) in row-major pixel order.
:mod:`fusecli.models.swin_fast` computes the same layer faster (same parameters, results equal to
float rounding); this module is its test oracle.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError

__all__ = ["shifted_window_mask", "WindowAttentionV2", "SwinV2Mlp", "SwinV2Block", "SwinV2Layer"]


def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Additive attention mask of shifted-window attention (Swin), (nW, ws*ws, ws*ws).

    After a cyclic shift by ``-shift``, tokens in one window that came from different image regions
    must not attend to each other: their entry is -100, all others 0. ``h`` and ``w`` must be
    multiples of ``ws``.
    """
    region = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            region[:, hs, wsl, :] = cnt
            cnt += 1
    ids = _window_partition(region, ws).squeeze(-1)  # (nW, ws*ws)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttentionV2(nn.Module):
    """Swin-V2 window attention (Liu et al., CVPR 2022): scaled cosine attention with a learned
    per-head temperature (``logit_scale``, clamped at log 100), a continuous relative position bias
    from a 2-layer MLP on log-spaced coordinates (``16 * sigmoid``), q and v biases (no k bias).

    Shapes: (B*nW, N, C) tokens of N = ws*ws pixels -> same; ``mask`` (nW, N, N) or None.
    """

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"Swin-V2: dim {dim} is not divisible by {heads} heads")
        if window < 2:
            raise ConfigError(f"Swin-V2: window must be at least 2, got {window}")
        self.dim, self.window, self.heads = dim, window, heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, heads, bias=False))
        # log-spaced relative coordinates: (1, 2w-1, 2w-1, 2), scaled to [-8, 8], sign*log2(|.|+1)/3
        rel = torch.arange(-(window - 1), window, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(rel, rel, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
        table = table / (window - 1) * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
        self.register_buffer("relative_coords_table", table)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relc = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", relc[..., 0] * (2 * window - 1) + relc[..., 1])
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) continuous relative position bias, in (0, 16)."""
        n = self.window * self.window
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
        bias = table[self.relative_position_index.reshape(-1)].view(n, n, self.heads).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias).reshape(bw, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        attn = (F.normalize(q, dim=-1) * scale) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn + self.position_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(bw, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinV2Mlp(nn.Module):
    """Linear C -> hidden, GELU, Linear hidden -> C (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinV2Block(nn.Module):
    """One Swin-V2 block with res-post-norm: ``x + norm1(attn(x))``, then ``x + norm2(mlp(x))``.

    Odd blocks shift the windows cyclically by ``window // 2``. Shifted blocks keep a persistent
    ``attn_mask`` buffer for ``reference_size`` (Swin2SR's ``input_resolution``, so checkpoints
    that store it load strict) and compute masks for other sizes on first use, cached per
    (H, W, device).

    Shapes: tokens (B, H*W, C) with ``hw = (H, W)``, H and W multiples of ``window``.
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float,
                 reference_size: int = 128):
        super().__init__()
        self.window, self.shift = window, shift
        if shift:
            self.register_buffer("attn_mask", shifted_window_mask(reference_size, reference_size, window, shift))
            self._reference = (reference_size, reference_size)
        else:
            self.attn_mask = None
        self._mask_cache: dict[tuple, torch.Tensor] = {}
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionV2(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinV2Mlp(dim, int(dim * mlp_ratio))

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        if not self.shift:
            return None
        if (h, w) == self._reference and self.attn_mask.device == device:
            return self.attn_mask
        key = (h, w, str(device))
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = shifted_window_mask(h, w, self.window, self.shift).to(device)
            self._mask_cache[key] = mask
        return mask

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        y = x.view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_window_partition(y, self.window), self._mask(h, w, x.device))
        y = _window_reverse(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.norm1(y.reshape(b, h * w, c))
        return x + self.norm2(self.mlp(x))


class SwinV2Layer(nn.Module):
    """``depth`` Swin-V2 blocks alternating plain and shifted windows (Swin2SR ``BasicLayer``
    without down-sampling). Keys ``blocks.{i}.*``.

    Shapes: tokens (B, H*W, C), ``hw = (H, W)`` multiples of ``window`` -> (B, H*W, C).
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float,
                 reference_size: int = 128):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinV2Block(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, reference_size)
            for i in range(depth))

    def check_size(self, hw: tuple[int, int]) -> None:
        """Raise ShapeError unless ``hw = (H, W)`` are multiples of the window."""
        if hw[0] % self.window or hw[1] % self.window:
            raise ShapeError(f"Swin-V2 layer: feature size {hw[1]}x{hw[0]} is not a multiple of the "
                             f"window {self.window}; pad the input first")

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        self.check_size(hw)
        for blk in self.blocks:
            x = blk(x, hw)
        return x
