"""CSC-MEF: deep convolutional sparse coding network for multi-exposure fusion (CSCFuse).

Paper: Z. Zhao et al., "Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion",
CVPR Workshops 2023, sec. 3.2. Official code:
github.com/Zhaozixiang1228/IF-CSCFuse @ 73caec7, folder ``CSC-MEF`` (``networks.py``,
``CSC_Fusion_MEF``; weights ``best_net.pth``).

What is unrolled
----------------
The weight-map network codes the luminance ``Y_k`` of each exposure with convolutional sparse
coding: a 3x3 convolution (1 -> 24, reflect padding) + BatchNorm + one shared soft threshold
gives the first code, then ``blocks - 2`` dictionary convolution units
(:class:`~fusecli.models.layers.DCU`, one learned ISTA step ``z <- SST(BN(z + E(Y - D z)))``, each
fed the exposure's ``Y`` as data), and a 1x1 convolution (24 -> 1) turns the code into a weight
logit. The official checkpoint has ``blocks = 4`` (two DCUs; the training script's default of 8
does not fit it).

Fusion (official ``train_forward``), for K >= 2 exposures in full-range BT.601 YCbCr
(:mod:`fusecli.color`):

* ``Y_f = sum_k softmax_k(logit_k) * Y_k`` (the softmax over the K exposures, per pixel);
* ``Cb_f = sum_k w_k Cb_k`` with ``w_k = (|Cb_k - 0.5| + 1e-8) / sum_j (|Cb_j - 0.5| + 1e-8)``, and
  the same for Cr (the more saturated exposure wins);
* back to RGB; at test time clamped to [0, 1] and stretched: the 0.5 % and 99.5 % quantiles of
  all values of the three channels are mapped to 0 and 1, values outside are clipped
  (official ``post_process``).

Interface
---------
Unlike the luminance models, CSC-MEF fuses colour itself: ``colour = "model"`` tells
:func:`fusecli.inference.fuse_images` to hand it the RGB images (a gray source is repeated to
three channels) and to take its RGB output as it is. ``forward(*exposures)`` takes K >= 2
(B, 3, H, W) tensors in [0, 1] and returns the fused (B, 3, H, W) image in [0, 1], clamped and
(``config.stretch``, default True) stretched: the official test output. For training use
:meth:`CSCMEF.blend`, the official train-phase output (no clamp, no stretch), and
:meth:`CSCMEF.weight_maps` for the softmax weights.

Deviations from the official code
---------------------------------
* The stretch quantiles interpolate linearly between order statistics
  (:func:`fusecli.color.stretch`); the official code takes the sorted value at index
  ``int(n * q)``: a difference of at most one order statistic (invisible after 8-bit rounding,
  except on images with very few distinct values).
* Output: rounded to 8 bits, the official code truncates.
* Parameters are device-agnostic (the official test script calls ``.cuda()``).

Tiling: the stretch uses whole-image quantiles, so ``receptive_radius`` is None (tiles would be
stretched separately); every other step is local.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..color import rgb_to_ycbcr, ycbcr_to_rgb
from ..errors import CheckpointError, ConfigError, ShapeError
from ._contract import FusionModel, ModelSpec
from ..color import stretch
from .layers import DCU, SoftThreshold

__all__ = ["CSCMEFConfig", "CSCMEF", "WeightNet", "fuse_chroma", "convert_official"]

#: the official ``EPS`` of the chroma weights
CHROMA_EPS = 1e-8


@dataclass(frozen=True)
class CSCMEFConfig:
    """Hyper-parameters of CSC-MEF; the defaults are the official checkpoint's.

    Attributes:
        channels: code channels (24).
        blocks: the official ``num_blocks``: input convolution + ``blocks - 2`` DCUs + output
            1x1 convolution (4 in the checkpoint, i.e. two DCUs).
        sst_init: initial soft thresholds (1e-3; learned, not clamped).
        stretch: apply the official 0.5 % / 99.5 % stretch to the output (test phase).
        stretch_low, stretch_high: its quantiles.
    """

    channels: int = 24
    blocks: int = 4
    sst_init: float = 1e-3
    stretch: bool = True
    stretch_low: float = 0.005
    stretch_high: float = 0.995

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ConfigError(f"CSC-MEF needs at least one channel, got {self.channels}")
        if self.blocks < 3:
            raise ConfigError(f"CSC-MEF blocks must be >= 3 (input conv, >= 1 DCU, output conv), got {self.blocks}")
        if not 0 <= self.stretch_low < self.stretch_high <= 1:
            raise ConfigError(f"CSC-MEF stretch quantiles must satisfy 0 <= low < high <= 1, got "
                              f"{self.stretch_low}, {self.stretch_high}")


class WeightNet(nn.Module):
    """The weight-logit network ``(B, 1, H, W) Y -> (B, 1, H, W) logit`` (official ``main``).

    Args:
        channels, blocks, sst_init: see :class:`CSCMEFConfig`.
    """

    def __init__(self, channels: int = 24, blocks: int = 4, sst_init: float = 1e-3):
        super().__init__()
        self.head = nn.Conv2d(1, channels, 3, padding=1, padding_mode="reflect", bias=False)
        self.head_norm = nn.BatchNorm2d(channels)
        self.head_act = SoftThreshold(1, sst_init)  # one threshold shared by all channels
        self.units = nn.ModuleList(DCU(channels, "sst", sst_init=sst_init) for _ in range(blocks - 2))
        self.tail = nn.Conv2d(channels, 1, 1, bias=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        code = self.head_act(self.head_norm(self.head(y)))
        for unit in self.units:
            code = unit(y, code)
        return self.tail(code)


def fuse_chroma(chroma: torch.Tensor) -> torch.Tensor:
    """The official chroma rule: ``sum_k w_k C_k`` with ``w_k ∝ |C_k - 0.5| + 1e-8``.

    Args:
        chroma: (B, K, H, W) one chroma channel (Cb or Cr, offset 0.5) of K exposures.

    Returns:
        (B, 1, H, W) fused channel; weights sum to 1 and are finite for any input (grey, i.e.
        all ``C_k = 0.5``, gives equal weights).
    """
    w = (chroma - 0.5).abs() + CHROMA_EPS
    return (w * chroma).sum(1, keepdim=True) / w.sum(1, keepdim=True)


class CSCMEF(FusionModel):
    """CSC-MEF multi-exposure fusion network (colour in, colour out; any K >= 2).

    ``forward(*exposures)``: K >= 2 tensors (B, 3, H, W) in [0, 1] (RGB; (B, 1, H, W) gray is
    accepted and repeated), all of one shape; returns the fused (B, 3, H, W) RGB image in [0, 1]
    (clamped, and stretched when ``config.stretch``).
    """

    #: any number (>= 2) of exposures, darkest first by convention (the order does not matter;
    #: fusecli's CLI accepts more than two files for this model); it fuses colour itself (fuse_images
    #: hands it the RGB images and keeps its RGB output); reflect padding of the 3x3 convolutions
    #: needs 2 pixels; the stretch uses whole-image quantiles (every other step has radius 1 + 2 per
    #: DCU), so tiles would be stretched separately: fusecli refuses --tile for this model
    spec = ModelSpec(inputs=("under", "over"), min_inputs=2, max_inputs=None, colour="model", pad_multiple=1,
                     min_size=2, receptive_radius=None, tileable=False)

    def __init__(self, config: CSCMEFConfig | None = None):
        super().__init__()
        self.config = config or CSCMEFConfig()
        c = self.config
        self.weight_net = WeightNet(c.channels, c.blocks, c.sst_init)

    def _check(self, exposures: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        if len(exposures) < self.spec.min_inputs:
            raise ShapeError(f"CSC-MEF fuses K >= 2 exposures, got {len(exposures)}")
        shape = exposures[0].shape
        out = []
        for x in exposures:
            if x.dim() != 4 or x.shape[1] not in (1, 3):
                raise ShapeError(f"CSC-MEF exposures must be (B, 3, H, W) RGB (or (B, 1, H, W) gray) tensors, "
                                 f"got {tuple(x.shape)}")
            if (x.shape[0], *x.shape[2:]) != (shape[0], *shape[2:]):
                raise ShapeError(f"CSC-MEF exposures differ in size: {tuple(shape)} vs {tuple(x.shape)}")
            out.append(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
        if min(shape[-2:]) < self.min_size:
            raise ShapeError(f"image is {shape[-1]}x{shape[-2]} pixels; CSC-MEF needs at least 2x2")
        return out

    def weight_maps(self, *exposures: torch.Tensor) -> torch.Tensor:
        """Softmax weight maps of the K exposures, (B, K, H, W), summing to 1 over K."""
        ycc = [rgb_to_ycbcr(x) for x in self._check(exposures)]
        return self._weights(torch.cat([t[:, :1] for t in ycc], 1))

    def _weights(self, ys: torch.Tensor) -> torch.Tensor:
        b, k, h, w = ys.shape
        # every exposure through the weight network in one batch (BatchNorm is per-sample in eval mode)
        logits = self.weight_net(ys.transpose(0, 1).reshape(k * b, 1, h, w))
        return torch.softmax(logits.reshape(k, b, h, w).transpose(0, 1), dim=1)

    def blend(self, *exposures: torch.Tensor) -> torch.Tensor:
        """The official train-phase output: fused RGB (B, 3, H, W), neither clamped nor stretched."""
        ycc = [rgb_to_ycbcr(x) for x in self._check(exposures)]
        ys = torch.cat([t[:, 0:1] for t in ycc], 1)  # (B, K, H, W)
        y = (self._weights(ys) * ys).sum(1, keepdim=True)
        cb = fuse_chroma(torch.cat([t[:, 1:2] for t in ycc], 1))
        cr = fuse_chroma(torch.cat([t[:, 2:3] for t in ycc], 1))
        return ycbcr_to_rgb(torch.cat([y, cb, cr], 1))

    def forward(self, *exposures: torch.Tensor) -> torch.Tensor:
        fused = self.blend(*exposures).clamp(0, 1)
        if self.config.stretch:
            fused = stretch(fused, self.config.stretch_low, self.config.stretch_high)
        return fused


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the official ``CSC_Fusion_MEF`` keys (``main.{i}.*``) onto :class:`CSCMEF`'s.

    ``main.0.conv2d.weight`` -> ``weight_net.head.weight``, ``main.1.*`` -> ``head_norm``,
    ``main.2.theta`` -> ``head_act.theta``, ``main.{3..n-2}.conv.conv_decoder.de_conv0.conv2d.weight`` /
    ``...conv_encoder.en_conv0.conv2d.weight`` / ``.norm.*`` / ``.activation.theta`` -> the DCUs
    ``weight_net.units.{i-3}.{dec,enc,norm,act}``, the last ``main.{n-1}.conv2d.weight`` (the 1x1
    convolution) -> ``weight_net.tail.weight``. Keys already in fusecli's layout pass through.

    Raises:
        CheckpointError: a key of neither layout (e.g. another model's checkpoint).
    """
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("main.") and k.split(".")[1].isdigit()})
    last = indices[-1] if indices else -1
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = None
        if key.startswith("weight_net."):
            target = key
        elif key.startswith("main.") and key.split(".")[1].isdigit():
            index, rest = int(key.split(".")[1]), key.split(".", 2)[2]
            if index == 0 and rest == "conv2d.weight":
                target = "weight_net.head.weight"
            elif index == 1:
                target = f"weight_net.head_norm.{rest}"
            elif index == 2 and rest == "theta":
                target = "weight_net.head_act.theta"
            elif index == last and rest == "conv2d.weight":
                target = "weight_net.tail.weight"
            elif index >= 3:
                part = {"conv.conv_decoder.de_conv0.conv2d.weight": "dec.weight",
                        "conv.conv_encoder.en_conv0.conv2d.weight": "enc.weight",
                        "activation.theta": "act.theta"}.get(rest)
                if rest.startswith("norm."):
                    part = rest
                target = f"weight_net.units.{index - 3}.{part}" if part else None
        if target is None:
            raise CheckpointError(f"key {key!r} is not a CSC-MEF key (expected main.N.* from the official "
                                  "best_net.pth, or weight_net.* from fusecli)")
        out[target] = value
    return out
