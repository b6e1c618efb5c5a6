"""FRUFN: fusion-rule unfolding network (Wang, Deng, Cao, Vivone, IEEE TPAMI 2026).

Paper: W. Wang, L.-J. Deng, Q. Cao, G. Vivone, "A General Image Fusion Approach Exploiting Gradient
Transfer Learning and Fusion Rule Unfolding", IEEE TPAMI 2026, doi:10.1109/TPAMI.2026.3655694.
Official code: github.com/wwhappylife/FRUFN @ 8bbc1eeb (``ufnet_image.py``, ``UF_Net``); the FRUFN weights it lists are not public.

What is unrolled
----------------
The classical fusion rule ``F = M * F1 + (1 - M) * F2`` in a transformed domain, rewritten as the
iteration ``F <- F + M * (F1 - F)`` started from ``F = F2`` and given a learned transformation and
a learned, iteration-dependent mask (eq. 14)::

    F(n+1) = F(n) + G(F1 - F(n), M(n)) * T(F1 - F(n)),      M(n+1) = G(F1 - F(n), M(n)), M(1) = 0

``F2 = T_theta2(visible)`` and ``F1 = T_theta1(infrared)`` (one 3x3 convolution and a residual
block each, 32 channels), five UF cells (:class:`~fusecli.models.layers.UFCell`, each with its own
weights: the global-local transformation ``T`` = conv, LayerNorm + Swin-V2 layer (window 2, 8 heads,
depth 2) + LayerNorm, conv; the multi-scale mask generator ``G``), then the decoder ``T_theta3^-1``
(residual block, 3x3 convolution 32 -> 1, no output activation; inference clamps to [0, 1]).

Faithfulness
------------
Layer by layer as the authors' ``UF_Net`` (zero-padded convolutions, ``relu(F1 - F)`` as the
residual, softmax mask channel 1, Swin-V2 as Swin2SR's ``BasicLayer``; 8 heads and MLP ratio 3 as
the code and the EFRUFN checkpoint, where the paper says 6 heads).

Deviations from the official code
---------------------------------
* Any size: inputs are reflect-padded on the bottom / right to a multiple of 8 (the mask
  generator's three pooling levels) and the output is cropped back; the official test script
  crops the image to a multiple of 8 instead.
* Shifted-window attention masks are computed for the actual feature size and cached (Swin2SR
  recomputes them on every call for sizes other than its 128 x 128 ``input_resolution``).
* Parameters are device-agnostic (the official code creates its mask with ``.cuda()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from ..tiling import pad_to_multiple
from .layers import IMPLS, ResBlock, UFCell, channels_last
from .swin_fast import scratch_buffers

__all__ = ["FRUFNConfig", "FRUFN", "convert_official", "convert_cell", "check_pair"]


@dataclass(frozen=True)
class FRUFNConfig:
    """Hyper-parameters of FRUFN; the defaults are the published model.

    Attributes:
        channels: feature channels of encoders, cells and decoder (32).
        cells: unrolled UF cells (5).
        depth: Swin-V2 blocks per layer (2).
        heads: attention heads (8, as the code; the paper text says 6).
        glt_window: window of the global-local transformation's Swin-V2 layer (2).
        mask_window: window of the mask generator's Swin-V2 layer (4).
        mlp_ratio: Swin-V2 MLP expansion (3).
        reference_size: the square size whose shifted-window masks are stored as buffers
            (Swin2SR's ``input_resolution``: 128; only matters for checkpoint compatibility).
        impl: ``"fast"`` (window attention in cache-sized channel-major chunks, channels-last
            maps: :mod:`fusecli.models.swin_fast`) or ``"reference"`` (the Swin2SR formulation as
            written; the test oracle). Same parameters and maths; outputs equal to float rounding.
    """

    channels: int = 32
    cells: int = 5
    depth: int = 2
    heads: int = 8
    glt_window: int = 2
    mask_window: int = 4
    mlp_ratio: float = 3.0
    reference_size: int = 128
    impl: str = "fast"

    def __post_init__(self) -> None:
        if self.impl not in IMPLS:
            raise ConfigError(f"FRUFN impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if self.channels < 1 or self.cells < 1 or self.depth < 1:
            raise ConfigError("FRUFN needs at least one channel, one cell and one Swin block")
        if self.channels % self.heads:
            raise ConfigError(f"FRUFN: channels {self.channels} must be divisible by heads {self.heads}")
        if min(self.glt_window, self.mask_window) < 2:
            raise ConfigError("FRUFN: Swin windows must be at least 2")

    def cell(self) -> UFCell:
        return UFCell(self.channels, self.depth, self.heads, self.glt_window, self.mask_window,
                      self.mlp_ratio, self.reference_size, self.impl)

    @property
    def pad_multiple(self) -> int:
        return math.lcm(8, self.glt_window, self.mask_window)


def check_pair(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """Raise ShapeError unless ``ir`` and ``vis`` are (B, 1, H, W) tensors of one shape."""
    for name, t in (("ir", ir), ("vis", vis)):
        if t.dim() != 4 or t.shape[1] != 1:
            raise ShapeError(f"{name} must be a (B, 1, H, W) luminance tensor, got {tuple(t.shape)}")
    if ir.shape != vis.shape:
        raise ShapeError(f"ir and vis differ in shape: {tuple(ir.shape)} vs {tuple(vis.shape)}")


def encoder(channels: int) -> nn.Sequential:
    """T_theta1 / T_theta2: 3x3 conv 1 -> C (no bias), residual block. (B, 1, H, W) -> (B, C, H, W)."""
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), ResBlock(channels))


def decoder(channels: int) -> nn.Sequential:
    """T_theta3^-1: residual block, 3x3 conv C -> 1 (no bias, no activation)."""
    return nn.Sequential(ResBlock(channels), nn.Conv2d(channels, 1, 3, padding=1, bias=False))


class FRUFN(nn.Module):
    """FRUFN fusion network: two encoders, ``cells`` UF cells with their own weights, a decoder.

    ``forward(ir, vis)`` takes two (B, 1, H, W) float32 tensors in [0, 1] (infrared, visible
    luminance), any H, W >= 1, and returns the fused (B, 1, H, W) image (unclamped: inference
    clamps to [0, 1]). ``forward_with_mask`` also returns the last cell's mask.
    """

    #: roles of the inputs, in order
    inputs = ("ir", "vis")
    #: smallest height / width (smaller images are replicate-padded to 8 anyway; 2 keeps reflect sane)
    min_size = 2
    #: Swin windows sit on a fixed grid and the mask generator pools to 1/8: tiling is not exact
    receptive_radius = None

    def __init__(self, config: FRUFNConfig | None = None):
        super().__init__()
        self.config = config or FRUFNConfig()
        c = self.config
        self.enc_vis = encoder(c.channels)
        self.enc_ir = encoder(c.channels)
        self.cells = nn.ModuleList(c.cell() for _ in range(c.cells))
        self.decoder = decoder(c.channels)
        #: inputs are padded to this multiple (inside ``forward`` too, so any size works)
        self.pad_multiple = c.pad_multiple

    def forward_with_mask(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused image and the last mask M(N+1), both (B, 1, H, W); see the class docstring."""
        if self.config.impl == "fast" and not torch.is_grad_enabled():
            with scratch_buffers():  # the cells' large scratch tensors, allocated once per forward
                return self._forward_with_mask(ir, vis)
        return self._forward_with_mask(ir, vis)

    def _forward_with_mask(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_pair(ir, vis)
        h, w = ir.shape[-2:]
        ir, vis = pad_to_multiple(ir, self.pad_multiple), pad_to_multiple(vis, self.pad_multiple)
        if self.config.impl == "fast":
            ir, vis = channels_last(ir), channels_last(vis)
        f1, f = self.enc_ir(ir), self.enc_vis(vis)  # F1 = T1(infrared), F(1) = F2 = T2(visible)
        m = f.new_zeros(f.shape[0], 1, *f.shape[-2:])
        for cell in self.cells:
            f, m = cell(f, f1, m)
        return self.decoder(f)[..., :h, :w], m[..., :h, :w]

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.forward_with_mask(ir, vis)[0]


#: official cell keys -> ours (prefix rewrites, longest first)
_CELL_PREFIXES = (
    ("gs.in_ln.", "mask.glt.in_ln."),
    ("gs.out_ln.", "mask.glt.out_ln."),
    ("gs.glo.", "mask.glt.glo."),
    ("gs.", "mask."),
    ("in_ln.", "glt.in_ln."),
    ("out_ln.", "glt.out_ln."),
    ("glo.", "glt.glo."),
    ("in_conv.", "in_conv."),
    ("out_conv.", "out_conv."),
)


def convert_cell(key: str) -> str | None:
    """Map one key of the authors' cell (``Cell_Former_4070`` / EFRUFN ``update_block``) onto
    :class:`~fusecli.models.layers.UFCell`; None if it is not a cell key."""
    for old, new in _CELL_PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _convert_common(key: str) -> str | None:
    head, _, rest = key.partition(".")
    if head == "encoder1":
        return "enc_vis." + rest
    if head == "encoder2":
        return "enc_ir." + rest
    if head == "decoder":
        return key
    return None


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the authors' ``UF_Net`` key layout onto :class:`FRUFN`'s (key renaming only).

    ``encoder1`` (visible) -> ``enc_vis``, ``encoder2`` (infrared) -> ``enc_ir``, ``u{i}`` ->
    ``cells.{i-1}`` with the cell renaming of :func:`convert_cell`. Keys already in fusecli's
    layout pass through unchanged.

    Raises:
        CheckpointError: a key belongs to neither layout (e.g. an EFRUFN checkpoint).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        new = _convert_common(key)
        if new is None and head in ("enc_vis", "enc_ir", "cells"):
            new = key
        if new is None and head[:1] == "u" and head[1:].isdigit() and int(head[1:]) >= 1:
            cell_key = convert_cell(rest)
            new = None if cell_key is None else f"cells.{int(head[1:]) - 1}.{cell_key}"
        if new is None:
            raise CheckpointError(
                f"key {key!r} is not an FRUFN key (expected encoder1/encoder2/decoder/u1..u5 from the "
                "official UF_Net, or fusecli's enc_vis/enc_ir/cells/decoder); an EFRUFN checkpoint "
                "(update_block.*) belongs to --model efrufn")
        out[new] = value
    return out
