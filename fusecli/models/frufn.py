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
block each, 32 channels), five UF cells (:class:`UFCell`, each with its own
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
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from ..tiling import pad_to_multiple
from ._contract import FusionModel, ModelSpec
from .convnext_v2 import ConvNeXtV2Block
from .layers import channels_last
from .swin_fast import scratch, scratch_buffers, swin_layer_fast
from .swin_v2 import SwinV2Layer

__all__ = ["FRUFNConfig", "FRUFN", "UFCell", "MaskGenerator", "GlobalLocalTransform", "ResBlock", "IMPLS",
           "convert_official", "convert_cell", "check_pair"]


# --- blocks: the UF cell -------------------------------------------------------------------------
# Parameter names follow the authors' code (``ufnet_image.py``) so official checkpoints load.

#: implementations of FRUFN's cell: ``"fast"`` (:mod:`fusecli.models.swin_fast`, channels-last)
#: and ``"reference"`` (the Swin2SR formulation as written, kept as the test oracle)
IMPLS = ("fast", "reference")


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ConfigError(f"FRUFN implementation must be one of {', '.join(IMPLS)}, got {impl!r}")
    return impl


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with two 3x3 zero-padded convolutions (with bias).

    Shapes: (B, C, H, W) -> (B, C, H, W). Keys ``main.0.*`` and ``main.2.*`` as the FRUFN code.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).add_(x)  # = x + main(x); the fresh conv output is updated in place


class GlobalLocalTransform(nn.Module):
    """FRUFN's global-local transformation (GLT) core: LayerNorm, a Swin-V2 layer, LayerNorm, on
    the pixels of a (B, C, H, W) map taken as tokens (keys ``in_ln``, ``glo``, ``out_ln``).

    The convolutions around it belong to the caller (the UF cell's ``in_conv`` / ``out_conv``,
    the mask generator's ``tran`` / ``proj_out1``), so that key names match the authors' code.
    ``impl="fast"`` runs :func:`~fusecli.models.swin_fast.swin_layer_fast` (same maths, output in
    channels-last memory format), ``"reference"`` the token-tensor formulation.
    Shapes: (B, C, H, W) -> (B, C, H, W), H and W multiples of ``window``.
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, reference_size: int,
                 impl: str = "fast"):
        super().__init__()
        self.impl = _check_impl(impl)
        self.in_ln = nn.LayerNorm(dim)
        self.glo = SwinV2Layer(dim, depth, heads, window, mlp_ratio, reference_size)
        self.out_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.impl == "fast":
            self.glo.check_size((h, w))
            return swin_layer_fast(self.glo, x, self.in_ln, self.out_ln)
        t = self.out_ln(self.glo(self.in_ln(x.flatten(2).transpose(1, 2)), (h, w)))
        return t.transpose(1, 2).reshape(b, c, h, w)


def _cat_channels(name: str, maps: list[torch.Tensor], fast: bool) -> torch.Tensor:
    """``torch.cat(maps, dim=1)``; on the fast path without autograd into the channels-last
    scratch buffer ``name`` (:func:`~fusecli.models.swin_fast.scratch`: the next layer consumes it)."""
    if not fast or torch.is_grad_enabled():
        return torch.cat(maps, dim=1)
    b, _, h, w = maps[0].shape
    out = scratch(name, (b, sum(m.shape[1] for m in maps), h, w), maps[0], channels_last=True)
    return torch.cat(maps, dim=1, out=out)


def _upsample(name: str, x: torch.Tensor, size: tuple[int, int], fast: bool) -> torch.Tensor:
    """Bilinear up-sampling to ``size`` (align_corners=False); on the fast path without autograd into
    the scratch buffer ``name`` (the same kernel as ``F.interpolate``, the same values)."""
    if not fast or torch.is_grad_enabled():
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = scratch(name, (*x.shape[:2], *size), x, channels_last=True)
    return torch.ops.aten.upsample_bilinear2d.out(x, list(size), False, None, None, out=out)


class MaskGenerator(nn.Module):
    """FRUFN's multi-scale mask generator (MSMG, the authors' ``GS_S_Attention``).

    ``proj_in`` (3x3 conv, C+1 -> C) on cat(residual, previous mask); a max-pool pyramid (reflect
    pad 1 + 3x3 max-pool, stride 2; 1/2, 1/4, 1/8) with one ConvNeXt-V2 block per level (``fe2``,
    ``fe4``, ``fe8``), each level pooled from the previous level's block output (the official
    EFRUFN weights track their training target twice as closely this way than with every level
    pooled from the full-size map: docs/frufn.md); bilinear up-sampling back; ``tran`` (3x3 conv, 4C -> C) on
    cat(1/8, 1/4, 1/2, full); LayerNorm + Swin-V2 layer (window 4) + LayerNorm; ``proj_out1``
    (3x3 conv, C -> 2); softmax over the two channels; channel 1 is the mask.

    Shapes: residual (B, C, H, W) and mask (B, 1, H, W) -> mask (B, 1, H, W) in (0, 1); H and W
    multiples of 8 (and of ``window``). ``impl`` as :class:`GlobalLocalTransform` (``"fast"`` also
    keeps every map channels-last and takes the two-channel softmax as ``sigmoid(y1 - y0)``).
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, reference_size: int,
                 impl: str = "fast"):
        super().__init__()
        self.impl = _check_impl(impl)
        self.proj_in = nn.Conv2d(dim + 1, dim, 3, padding=1)
        self.fe2, self.fe4, self.fe8 = ConvNeXtV2Block(dim), ConvNeXtV2Block(dim), ConvNeXtV2Block(dim)
        self.tran = nn.Conv2d(4 * dim, dim, 3, padding=1)
        self.proj_out1 = nn.Conv2d(dim, 2, 3, padding=1)
        self.glt = GlobalLocalTransform(dim, depth, heads, window, mlp_ratio, reference_size, impl)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=2)

    def forward(self, residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = residual.shape[-2:]
        if h % 8 or w % 8:
            raise ShapeError(f"FRUFN mask generator: feature size {w}x{h} is not a multiple of 8; pad the input")
        fast = self.impl == "fast"
        if fast:
            residual, mask = channels_last(residual), channels_last(mask)
        x = self.proj_in(_cat_channels("mask_in", [residual, mask], fast))
        # each level is pooled from the previous level's block output; the fast pool skips the copy
        # of the reflect padding: a reflected border row repeats the row next to it, which the
        # 3x3 window holds anyway, so zero-cost "-inf" padding gives the same maxima exactly
        pool = (lambda t: F.max_pool2d(t, 3, stride=2, padding=1)) if fast else self._pool
        x2 = self.fe2(pool(x), fast)
        x4 = self.fe4(pool(x2), fast)
        x8 = self.fe8(pool(x4), fast)
        up = [_upsample(f"mask_up{i}", level, (h, w), fast) for i, level in enumerate((x8, x4, x2))]
        y = self.glt(self.tran(_cat_channels("mask_levels", [*up, x], fast)))
        if fast:  # softmax over two channels, channel 1 = sigmoid(y1 - y0)
            logits = self.proj_out1(y)
            return torch.sigmoid(logits[:, 1:2] - logits[:, 0:1])
        return torch.softmax(self.proj_out1(y), dim=1)[:, 1:2]


class UFCell(nn.Module):
    """One unfolding (UF) cell of FRUFN, eq. (14) of the paper::

        R = relu(F1 - F)                         (the residual, as in the authors' code)
        M' = G(R, M)                             (MaskGenerator)
        F' = F + M' * out_conv(GLT(in_conv(R)))  (the transformation T)

    FRUFN stacks five (own weights); EFRUFN uses one, weight-shared, as its fixed-point map
    (eqs. 16-18).

    Args: ``forward(f, f1, m, base=None)`` with the state ``f`` and the other source's features
    ``f1`` (B, C, H, W) and the previous mask ``m`` (B, 1, H, W); H, W multiples of 8. With
    ``base`` (B, C, H, W) the update is added to ``base`` instead of ``f`` (``F' = base + M' * T``:
    EFRUFN's input-injected map). Returns (F', M'). ``impl``: ``"fast"`` (default; maps in
    channels-last memory format, :mod:`fusecli.models.swin_fast`) or ``"reference"``; the same
    parameters and maths, results equal to float rounding.
    """

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 8, glt_window: int = 2,
                 mask_window: int = 4, mlp_ratio: float = 3.0, reference_size: int = 128, impl: str = "fast"):
        super().__init__()
        self.impl = _check_impl(impl)
        self.in_conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.glt = GlobalLocalTransform(dim, depth, heads, glt_window, mlp_ratio, reference_size, impl)
        self.out_conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.mask = MaskGenerator(dim, depth, heads, mask_window, mlp_ratio, reference_size, impl)

    def transform(self, residual: torch.Tensor) -> torch.Tensor:
        """T(R): (B, C, H, W) -> (B, C, H, W)."""
        return self.out_conv(self.glt(self.in_conv(residual)))

    def forward(self, f: torch.Tensor, f1: torch.Tensor, m: torch.Tensor,
                base: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.impl == "fast":  # channels-last maps, F' = base + M' * T(R) as one addcmul
            f, f1 = channels_last(f), channels_last(f1)
            residual = (f1 - f).relu_()
            m = self.mask(residual, m)
            return torch.addcmul(f if base is None else base, m, self.transform(residual)), m
        residual = torch.relu(f1 - f)
        m = self.mask(residual, m)
        return (f if base is None else base) + m * self.transform(residual), m


# --- the model -----------------------------------------------------------------------------------


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


def frufn_spec(pad_multiple: int) -> ModelSpec:
    """The contract of FRUFN and EFRUFN: an infrared-visible pair of luminance images, padded to
    ``pad_multiple`` (the config's: the mask generator's 1/8 pooling and the Swin windows; ``forward``
    pads too, so any size works); smallest side 2 (smaller images are padded anyway; 2 keeps the
    reflect padding sane); Swin windows sit on a fixed grid and the mask generator pools to 1/8:
    no finite receptive radius, tiling is not exact."""
    return ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=pad_multiple,
                     min_size=2, receptive_radius=None, tileable=True)


class FRUFN(FusionModel):
    """FRUFN fusion network: two encoders, ``cells`` UF cells with their own weights, a decoder.

    ``forward(ir, vis)`` takes two (B, 1, H, W) float32 tensors in [0, 1] (infrared, visible
    luminance), any H, W >= 1, and returns the fused (B, 1, H, W) image (unclamped: inference
    clamps to [0, 1]). ``forward_with_mask`` also returns the last cell's mask.
    """

    def __init__(self, config: FRUFNConfig | None = None):
        super().__init__()
        self.config = config or FRUFNConfig()
        c = self.config
        self.enc_vis = encoder(c.channels)
        self.enc_ir = encoder(c.channels)
        self.cells = nn.ModuleList(c.cell() for _ in range(c.cells))
        self.decoder = decoder(c.channels)

    @property
    def spec(self) -> ModelSpec:
        """See :func:`frufn_spec`."""
        return frufn_spec(self.config.pad_multiple)

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
    :class:`UFCell`; None if it is not a cell key."""
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
