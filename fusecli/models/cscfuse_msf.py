"""CSC-MSF: deep convolutional sparse coding network for RGB-guided spectral super-resolution (CSCFuse).

Paper: Z. Zhao et al., "Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion",
CVPR Workshops 2023, sec. 3.3. Official code:
github.com/Zhaozixiang1228/IF-CSCFuse @ cc50059, folder ``CSC-MSF`` (``networks.py``, ``ModelA``;
weights ``best_net.pth``: 256 channels, trained on CAVE at scale 2).

What is unrolled
----------------
A low-resolution 31-band cube ``x_LR`` and a high-resolution RGB guide ``x_G`` are each coded by
convolutional sparse coding (:class:`Backbone`): a 3x3 convolution (reflect padding) + soft
threshold, then three dictionary convolution units (:class:`~fusecli.models.layers.DCU`,
``z <- SST(BN(z + E(x - D z)))``, each fed the branch's own image as data; SST thresholds clamped
at 0). The code of the cube is super-resolved with a fast guided filter (r = 1, eps = 1e-4) whose
guide is the RGB code: the guide code is resized to low resolution (bilinear, align_corners), the
per-channel linear model ``z_LR ~ A * z_G + b`` is fitted there (box means over the window's pixels
inside the image), ``A`` and ``b`` are upsampled bilinearly and applied to the full-resolution guide
code. A 3x3 convolution (256 -> 31) decodes it, and the bilinear upsampling of ``x_LR`` is added
(the network learns the residual): paper eq. 8, ``x_F = d_F * (z_LR)^``.

Deviations from the official code
---------------------------------
* Non-square images: the official code upsamples the cube to ``(H_guide, H_guide)`` (it only
  works for square images); here to ``(H_guide, W_guide)``.
* Parameters are device-agnostic; the official ``test.py`` builds the model with 64 channels,
  which does not fit its own 256-channel checkpoint (the config default here is 256).

Interface: ``forward(cube, guide)`` with ``cube`` (B, 31, h, w) and ``guide`` (B, 3, H, W), both in
[0, 1], ``h, w = H // scale, W // scale`` (scale 2 for the checkpoint, which was trained at 2);
returns the (B, 31, H, W) cube (unclamped; inference clamps to
[0, 1]). Files: :func:`fusecli.io.read_cube` / :func:`fusecli.io.write_cube`, and
:func:`fusecli.inference.fuse_cube_files`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from .layers import DCU, SoftThreshold, guided_filter_coefficients

__all__ = ["CSCMSFConfig", "CSCMSF", "Backbone", "fast_guided_upsample", "convert_official"]


@dataclass(frozen=True)
class CSCMSFConfig:
    """Hyper-parameters of CSC-MSF; the defaults are the official checkpoint's.

    Attributes:
        bands: spectral bands of the cube (31: CAVE, 400-700 nm in 10 nm steps).
        guide_channels: channels of the guide (3: RGB).
        channels: code channels (256 in the checkpoint).
        units: DCUs per backbone after the input convolution (official ``num_csc - 1`` = 3).
        radius, eps: the fast guided filter's window radius and regularisation (1, 1e-4).
        scale: resolution ratio guide / cube the weights were trained for (2); checked on input.
    """

    bands: int = 31
    guide_channels: int = 3
    channels: int = 256
    units: int = 3
    radius: int = 1
    eps: float = 1e-4
    scale: int = 2

    def __post_init__(self) -> None:
        if min(self.bands, self.guide_channels, self.channels) < 1 or self.units < 0:
            raise ConfigError("CSC-MSF needs at least one band, guide channel and code channel")
        if self.radius < 1 or self.eps <= 0 or self.scale < 1:
            raise ConfigError("CSC-MSF radius and scale must be >= 1 and eps > 0")


class Backbone(nn.Module):
    """One CSC encoder (official ``set_backbone``): conv + SST, then ``units`` DCUs fed the image.

    ``(B, image_channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(self, image_channels: int, channels: int = 256, units: int = 3):
        super().__init__()
        self.conv0 = nn.Conv2d(image_channels, channels, 3, padding=1, padding_mode="reflect", bias=False)
        self.act0 = SoftThreshold(channels, 1e-3, clamp=True)
        self.units = nn.ModuleList(DCU(channels, "sst", image_channels, sst_init=1e-3, sst_clamp=True)
                                   for _ in range(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.act0(self.conv0(x))
        for unit in self.units:
            code = unit(x, code)
        return code


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def fast_guided_upsample(lr_guide: torch.Tensor, lr_src: torch.Tensor, hr_guide: torch.Tensor,
                         radius: int = 1, eps: float = 1e-4) -> torch.Tensor:
    """Fast guided filter (Wu et al., official ``FastGuidedFilter``): fit ``src ~ A * guide + b`` at
    low resolution, upsample ``A``, ``b`` bilinearly (align_corners) and apply them to ``hr_guide``.

    Args:
        lr_guide: (B, C, h, w) guide at low resolution.
        lr_src: (B, C, h, w) image to upsample.
        hr_guide: (B, C, H, W) guide at high resolution.
        radius, eps: window radius (means over the window's pixels inside the image) and
            regularisation.

    Returns:
        (B, C, H, W).
    """
    a, b = guided_filter_coefficients(lr_guide, lr_src, radius, eps, border="clip")
    size = hr_guide.shape[-2:]
    return _resize(a, size) * hr_guide + _resize(b, size)


class CSCMSF(nn.Module):
    """CSC-MSF: RGB-guided spectral super-resolution of a cube (see the module docstring).

    ``forward(cube, guide)``: cube (B, bands, h, w), guide (B, guide_channels, H, W) in [0, 1]
    with ``(h, w) == (H // scale, W // scale)``; returns (B, bands, H, W).
    """

    #: roles of the inputs, in order
    inputs = ("cube", "guide")
    #: a cube in, a cube out: fusecli.inference.fuse_cube_files, not the image pipeline
    colour = "cube"
    #: the guided filter at low resolution needs 2r + 2 pixels per side; reflect padding 2
    min_size = 4
    pad_multiple = 1
    #: bilinear resizing and the global shape of the problem: no finite radius (no tiling)
    receptive_radius = None

    def __init__(self, config: CSCMSFConfig | None = None):
        super().__init__()
        self.config = config or CSCMSFConfig()
        c = self.config
        self.guide_backbone = Backbone(c.guide_channels, c.channels, c.units)
        self.cube_backbone = Backbone(c.bands, c.channels, c.units)
        self.decoder = nn.Conv2d(c.channels, c.bands, 3, padding=1, padding_mode="reflect", bias=False)

    def check_inputs(self, cube: torch.Tensor, guide: torch.Tensor) -> None:
        """Raise ShapeError unless ``cube`` and ``guide`` fit the model and each other."""
        c = self.config
        if cube.dim() != 4 or cube.shape[1] != c.bands:
            raise ShapeError(f"CSC-MSF takes a (B, {c.bands}, h, w) cube, got {tuple(cube.shape)}")
        if guide.dim() != 4 or guide.shape[1] != c.guide_channels:
            raise ShapeError(f"CSC-MSF takes a (B, {c.guide_channels}, H, W) guide (RGB), got {tuple(guide.shape)}"
                             + ("; the guide is gray: pass an RGB image" if guide.dim() == 4 and guide.shape[1] == 1
                                else ""))
        if cube.shape[0] != guide.shape[0]:
            raise ShapeError(f"cube and guide batch sizes differ: {cube.shape[0]} vs {guide.shape[0]}")
        h, w = cube.shape[-2:]
        gh, gw = guide.shape[-2:]
        if (gh // c.scale, gw // c.scale) != (h, w):
            raise ShapeError(f"the guide must be {c.scale}x the cube's size: cube {w}x{h} needs a "
                             f"{c.scale * w}x{c.scale * h} guide, got {gw}x{gh}")
        if min(h, w) < self.min_size:
            raise ShapeError(f"cube is {w}x{h} pixels; CSC-MSF needs at least {self.min_size}x{self.min_size}")

    def forward(self, cube: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        self.check_inputs(cube, guide)
        code_guide = self.guide_backbone(guide)
        code_cube = self.cube_backbone(cube)
        code_guide_lr = _resize(code_guide, tuple(code_cube.shape[-2:]))
        code = fast_guided_upsample(code_guide_lr, code_cube, code_guide, self.config.radius, self.config.eps)
        return self.decoder(code) + _resize(cube, tuple(guide.shape[-2:]))


_UNIT_PARTS = {
    "conv.conv_decoder.de_conv0.conv2d.weight": "dec.weight",
    "conv.conv_encoder.en_conv0.conv2d.weight": "enc.weight",
    "activation.theta": "act.theta",
}
_BRANCHES = {"backbone_guide": "guide_backbone", "backbone_lr": "cube_backbone"}


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the official ``ModelA`` keys onto :class:`CSCMSF`'s.

    ``backbone_{guide,lr}.conv0.weight`` -> ``{guide,cube}_backbone.conv0.weight``,
    ``.relu0.theta`` -> ``.act0.theta``, ``.csc{i}.conv.conv_{de,en}coder.*`` / ``.norm.*`` /
    ``.activation.theta`` -> ``.units.{i-1}.{dec,enc,norm,act}``, ``decoder.conv0.weight`` ->
    ``decoder.weight``. Keys already in fusecli's layout pass through.

    Raises:
        CheckpointError: a key of neither layout (e.g. another model's checkpoint).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = None
        head, _, rest = key.partition(".")
        if head in ("guide_backbone", "cube_backbone") or key == "decoder.weight":
            target = key
        elif key == "decoder.conv0.weight":
            target = "decoder.weight"
        elif head in _BRANCHES:
            branch = _BRANCHES[head]
            if rest == "conv0.weight":
                target = f"{branch}.conv0.weight"
            elif rest == "relu0.theta":
                target = f"{branch}.act0.theta"
            elif rest.startswith("csc"):
                unit, _, part = rest.partition(".")
                number = unit[3:]
                if number.isdigit() and int(number) >= 1:
                    mapped = part if part.startswith("norm.") else _UNIT_PARTS.get(part)
                    target = f"{branch}.units.{int(number) - 1}.{mapped}" if mapped else None
        if target is None:
            raise CheckpointError(f"key {key!r} is not a CSC-MSF key (expected backbone_guide.*, backbone_lr.*, "
                                  "decoder.conv0.weight from the official best_net.pth, or guide_backbone.*, "
                                  "cube_backbone.*, decoder.weight from fusecli)")
        out[target] = value
    return out
