"""Tiled application of an image-to-image function (after Real-ESRGAN's ``tile_process``).

The image is cut into ``tile x tile`` cores on a grid whose neighbours overlap by ``overlap``
pixels. Each core is processed together with ``context`` extra pixels on every side that lies inside
the image (at the image border the function sees the true border, so its own padding applies as
it would untiled). The processed cores are blended over the overlap with linear ramps.

For a function whose output pixel depends only on inputs within ``context`` pixels, every core is
exact, so the tiled result equals the untiled one up to float rounding. For functions with a larger
receptive field the overlap blending hides the seams.

With ``overlap=0`` nothing is blended: every output pixel is copied from the one tile whose core
holds it (where the last row / column of tiles is shifted back to fit, the later tile's copy
wins). Blending two equal values with ramp weights is not exact in float arithmetic (``(c w1 +
c w2) / (w1 + w2)`` can be ``c`` ± 1 ulp), so this is the mode for functions with an exact
``context``: if ``fn`` also computes each pixel by arithmetic that does not depend on where the
tile starts, the tiled result is bit-identical to the untiled one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blending weights: rising over the first ``overlap`` pixels unless at the image start, and
    falling over the last ``overlap`` pixels unless at the image end."""
    w = torch.ones(length)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        n = min(overlap, length)
        if not at_start:
            w[:n] = torch.minimum(w[:n], ramp[:n])
        if not at_end:
            w[-n:] = torch.minimum(w[-n:], ramp[:n].flip(0))
    return w


def tiled(
    fn: Callable[[list[torch.Tensor]], torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    tile: int,
    overlap: int = 32,
    context: int = 32,
) -> torch.Tensor:
    """Apply ``fn`` to aligned ``inputs`` tile by tile.

    Args:
        fn: maps a list of (B, C_i, h, w) tensors to one (B, C_out, h, w) tensor.
        inputs: (B, C_i, H, W) tensors of one H and W.
        tile: side of a tile's core, in pixels (> overlap).
        overlap: pixels shared by neighbouring cores, blended linearly; 0: cores are copied, not blended.
        context: extra pixels fed around each core and cropped off afterwards.

    Returns:
        (B, C_out, H, W) tensor on the inputs' device.
    """
    if tile <= overlap:
        raise ConfigError(f"--tile ({tile}) must be larger than --overlap ({overlap})")
    if overlap < 0 or context < 0:
        raise ConfigError("overlap and context must be >= 0")
    height, width = inputs[0].shape[-2:]
    step = tile - overlap
    out: torch.Tensor | None = None
    weight = torch.zeros(1, 1, height, width, device=inputs[0].device) if overlap else None
    for y0 in _starts(height, tile, step):
        y1 = min(y0 + tile, height)
        for x0 in _starts(width, tile, step):
            x1 = min(x0 + tile, width)
            cy0, cy1 = max(0, y0 - context), min(height, y1 + context)
            cx0, cx1 = max(0, x0 - context), min(width, x1 + context)
            result = fn([t[..., cy0:cy1, cx0:cx1] for t in inputs])
            core = result[..., y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
            if out is None:
                out = torch.zeros(*core.shape[:2], height, width, dtype=core.dtype, device=core.device)
            if overlap == 0:
                out[..., y0:y1, x0:x1] = core
                continue
            wy = _ramp(y1 - y0, overlap, y0 == 0, y1 == height)
            wx = _ramp(x1 - x0, overlap, x0 == 0, x1 == width)
            w = (wy[:, None] * wx[None, :]).to(core.device)
            out[..., y0:y1, x0:x1] += core * w
            weight[..., y0:y1, x0:x1] += w
    assert out is not None
    return out if overlap == 0 else out / weight


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom and right so that H and W are multiples of ``multiple``
    (reflect where the image is large enough, else replicate); ``x`` itself when nothing is needed."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
