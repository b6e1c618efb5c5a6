"""The classical fusion rules, as models with no weights: ``average``, ``max`` and ``laplacian``.

They are the floor every learned model must beat, so they are registered like the networks:
``fusecli fuse -m laplacian``, ``fusecli batch -m max``, and every comparison table can list them.
They fuse luminance like every model; colour goes through the one colour path
(:func:`fusecli.inference.fuse_images`).

* ``average``: ``F = (A + B) / 2`` per pixel.
* ``max``: ``F = max(A, B)`` per pixel.
* ``laplacian``: Burt & Adelson's Laplacian pyramid fusion (Burt & Adelson, "The Laplacian pyramid
  as a compact image code", IEEE Trans. Commun. 1983; the fusion rule of Burt & Kolczynski, ICCV
  1993, without their match measure). Each source is split into ``levels`` band-pass images
  ``L_i = G_i - expand(G_{i+1})`` and a low-pass residual ``G_levels`` (``G_0`` the image,
  ``G_{i+1} = reduce(G_i)``: the 5-tap binomial filter [1, 4, 6, 4, 1] / 16 with reflect border, then
  every second row and column). The fused pyramid takes the **average of the coarsest level** and,
  at every band-pass level and pixel, the coefficient of **larger magnitude**; collapsing it gives
  the fused image. Default 4 band-pass levels; an image too small for them (the coarsest level
  must keep at least 8 pixels per side) uses as many as fit.

Tensor contract: ``model(a, b)`` with (B, 1, H, W) float32 tensors in [0, 1]; returns (B, 1, H, W)
in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ._contract import FusionModel, ModelSpec

__all__ = ["ClassicalConfig", "LaplacianConfig", "AverageFusion", "MaxFusion", "LaplacianFusion",
           "laplacian_pyramid", "collapse_pyramid", "convert_official"]

#: the binomial filter of Burt & Adelson's pyramid (a = 0.375), separable
BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
_BINOMIAL = BINOMIAL


@dataclass(frozen=True)
class ClassicalConfig:
    """The per-pixel rules have no parameters."""


@dataclass(frozen=True)
class LaplacianConfig:
    """Laplacian-pyramid fusion.

    Attributes:
        levels: band-pass levels (4: detail at 1/1, 1/2, 1/4, 1/8 scale, the average at 1/16).
            Fewer are used when the image is too small (coarsest level >= 8 pixels per side).
    """

    levels: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= 12:
            raise ConfigError(f"laplacian levels must be 1..12, got {self.levels}")


class _Classical(FusionModel):
    """Shared plumbing: two luminance sources, no weights.

    The binomial filter is a (non-persistent) buffer: it moves with the model and is no parameter
    (``fusecli models`` counts 0); callers find the device with :func:`~fusecli.models.device_of`.
    """

    #: per pixel: no context, exact tiles
    spec = ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1,
                     min_size=1, receptive_radius=0, tileable=True)

    def __init__(self, config=None):
        super().__init__()
        self.config = config if config is not None else ClassicalConfig()
        self.register_buffer("kernel", torch.tensor(_BINOMIAL), persistent=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AverageFusion(_Classical):
    """``F = (A + B) / 2``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b) / 2


class MaxFusion(_Classical):
    """``F = max(A, B)``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a, b)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap blur with reflect border. x: (B, C, H, W), H, W >= 3."""
    c = x.shape[1]
    k = kernel.to(x.dtype)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _reduce(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur and keep every second row and column: ``_blur(x)[..., ::2, ::2]``, computed only where kept."""
    c = x.shape[1]
    k = kernel.to(x.dtype)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c, stride=(1, 2))
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c, stride=(2, 1))


def _expand_axis(x: torch.Tensor, dim: int, kernel: list[float]) -> torch.Tensor:
    """Double ``x`` along ``dim`` (-1 or -2): zeros between samples, then the 5-tap filter with reflect
    border, computed in two phases. Even outputs ``k0 x[m-1] + k2 x[m] + k4 x[m+1]``, odd outputs
    ``k1 x[m] + k3 x[m+1]``; the zero-stuffed signal's reflect border reads ``x[-1] = x[1]`` and
    ``x[n] = x[n-1]``."""
    n = x.shape[dim]
    padded = torch.cat([x.narrow(dim, 1, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
    prev, mid, nxt = (padded.narrow(dim, i, n) for i in range(3))
    even = kernel[0] * prev + kernel[2] * mid + kernel[4] * nxt
    odd = kernel[1] * mid + kernel[3] * nxt
    return torch.stack([even, odd], dim=dim).flatten(dim - 1, dim)


def _expand(x: torch.Tensor, size: tuple[int, int], kernel: torch.Tensor) -> torch.Tensor:
    """Upsample by 2 (zeros between samples, blur, x4) and crop to ``size``."""
    taps = kernel.tolist()
    up = _expand_axis(_expand_axis(x, -1, taps), -2, taps)
    return 4 * up[..., :size[0], :size[1]]


def usable_levels(height: int, width: int, levels: int) -> int:
    """Band-pass levels that fit: the coarsest level keeps >= 8 pixels per side (at least 0)."""
    n, side = 0, min(height, width)
    while n < levels and (side + 1) // 2 >= 8:
        side = (side + 1) // 2
        n += 1
    return n


def laplacian_pyramid(x: torch.Tensor, levels: int, kernel: torch.Tensor) -> list[torch.Tensor]:
    """``[L_0, ..., L_{levels-1}, G_levels]`` of (B, C, H, W) ``x``, in float32.

    Always float32, also under ``torch.autocast`` (``--precision bf16``): the band-pass levels are
    small differences of large values, and bf16's 8-bit mantissa moved collapsed pixels by up to 83
    grey levels (TNO pair 10)."""
    with torch.autocast(x.device.type, enabled=False):
        pyramid, g = [], x.float()
        for _ in range(levels):
            smaller = _reduce(g, kernel)
            pyramid.append(g - _expand(smaller, g.shape[-2:], kernel))
            g = smaller
    return pyramid + [g]


def collapse_pyramid(pyramid: list[torch.Tensor], kernel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`laplacian_pyramid` (exact up to float rounding); float32, as it."""
    with torch.autocast(pyramid[-1].device.type, enabled=False):
        g = pyramid[-1].float()
        for band in reversed(pyramid[:-1]):
            g = band.float() + _expand(g, band.shape[-2:], kernel)
    return g


class LaplacianFusion(_Classical):
    """Laplacian-pyramid fusion: average of the coarsest level, larger-magnitude band-pass coefficient."""

    #: smallest side 3 (the 5-tap reflect border); the number of levels, and so the context of a
    #: pixel, depends on the image size: tiles get the tiler's overlap as context (close to, not
    #: exactly, the untiled result)
    spec = ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1,
                     min_size=3, receptive_radius=None, tileable=True)

    def __init__(self, config: LaplacianConfig | None = None):
        super().__init__(config or LaplacianConfig())

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        levels = usable_levels(a.shape[-2], a.shape[-1], self.config.levels)
        both = laplacian_pyramid(torch.cat([a, b], dim=0), levels, self.kernel)
        n = a.shape[0]
        fused = [torch.where(p[:n].abs() >= p[n:].abs(), p[:n], p[n:]) for p in both[:-1]]
        fused.append((both[-1][:n] + both[-1][n:]) / 2)
        return collapse_pyramid(fused, self.kernel).clamp(0, 1)


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The classical rules have no weights: any checkpoint is refused.

    Raises:
        CheckpointError: always.
    """
    raise CheckpointError("the classical rules (average, max, laplacian) have no weights: leave out --checkpoint")
