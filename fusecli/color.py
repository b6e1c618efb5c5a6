"""Colour conversions: the one colour module of fusecli.

Standard:
    Full-range ITU-R BT.601 YCbCr with chroma offset 0.5, as used across the image-fusion field
    (``kornia.color.rgb_to_ycbcr``, CDDFuse, ...), on float images in ``[0, 1]``::

        Y  = 0.299 R + 0.587 G + 0.114 B
        Cb = (B - Y) / 1.772 + 0.5
        Cr = (R - Y) / 1.402 + 0.5

    The conversion is done in floating point, without rounding.

Channel order:
    Tensors hold the channels as **Y, Cb, Cr**. OpenCV's ``COLOR_RGB2YCrCb`` returns Y, Cr, Cb
    (and rounds the chroma scales to 0.713 / 0.564, so it differs by up to about 3e-4).

Fusion methods fuse the luma (Y) of a colour image with a grey image and keep the colour image's
chroma: :func:`split_luma` and :func:`merge_luma` do exactly that.
"""

from __future__ import annotations

import torch

from fusecli.errors import ShapeError

__all__ = ["merge_luma", "rgb_to_y", "rgb_to_ycbcr", "split_luma", "stretch", "ycbcr_to_rgb"]

_KR, _KG, _KB = 0.299, 0.587, 0.114
_CB_SCALE = 2.0 * (1.0 - _KB)  # 1.772
_CR_SCALE = 2.0 * (1.0 - _KR)  # 1.402
_OFFSET = 0.5


def _check_image(x: object, name: str, channels: tuple[int, ...]) -> None:
    """Raise :class:`ShapeError` unless ``x`` is a 4-D tensor with ``channels`` channels."""
    expected = f"a (B, {' or '.join(map(str, channels))}, H, W) tensor"
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name}: expected {expected}, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in channels:
        raise ShapeError(f"{name}: expected {expected}, got shape {tuple(x.shape)}")


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Luma of an RGB image (full-range ITU-R BT.601).

    Args:
        x: RGB image, ``(B, 3, H, W)``, float, values in ``[0, 1]``.

    Returns:
        ``Y = 0.299 R + 0.587 G + 0.114 B``, ``(B, 1, H, W)``, values in ``[0, 1]``.

    Raises:
        ShapeError: ``x`` is not a ``(B, 3, H, W)`` tensor.
    """
    _check_image(x, "rgb_to_y", (3,))
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _KR * r + _KG * g + _KB * b


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """Convert RGB to YCbCr (full-range ITU-R BT.601, chroma offset 0.5).

    Args:
        x: RGB image, ``(B, 3, H, W)``, float, values in ``[0, 1]``.

    Returns:
        ``(B, 3, H, W)`` with channels **Y, Cb, Cr** (not OpenCV's Y, Cr, Cb), all in ``[0, 1]``
        for inputs in ``[0, 1]``.

    Raises:
        ShapeError: ``x`` is not a ``(B, 3, H, W)`` tensor.
    """
    _check_image(x, "rgb_to_ycbcr", (3,))
    r, b = x[:, 0:1], x[:, 2:3]
    y = rgb_to_y(x)
    cb = (b - y) / _CB_SCALE + _OFFSET
    cr = (r - y) / _CR_SCALE + _OFFSET
    return torch.cat((y, cb, cr), dim=1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Convert YCbCr (full-range ITU-R BT.601, chroma offset 0.5) back to RGB.

    The exact inverse of :func:`rgb_to_ycbcr`. The result is **not** clamped: a YCbCr triple made
    by fusion may lie outside the RGB cube, and clamping is left to :func:`merge_luma` (or the
    caller).

    Args:
        x: ``(B, 3, H, W)`` float tensor with channels Y, Cb, Cr.

    Returns:
        RGB image, ``(B, 3, H, W)``; in ``[0, 1]`` when ``x`` came from an RGB image in ``[0, 1]``.

    Raises:
        ShapeError: ``x`` is not a ``(B, 3, H, W)`` tensor.
    """
    _check_image(x, "ycbcr_to_rgb", (3,))
    y, cb, cr = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    r = y + _CR_SCALE * (cr - _OFFSET)
    b = y + _CB_SCALE * (cb - _OFFSET)
    g = (y - _KR * r - _KB * b) / _KG
    return torch.cat((r, g, b), dim=1)


def split_luma(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split an image into the luma that is fused and the chroma that is kept.

    Args:
        image: ``(B, C, H, W)`` float tensor in ``[0, 1]``, ``C = 1`` (grey) or ``C = 3`` (RGB).

    Returns:
        ``(y, cbcr)``: for RGB, ``y`` is ``(B, 1, H, W)`` and ``cbcr`` is ``(B, 2, H, W)``
        (channels Cb, Cr; see :func:`rgb_to_ycbcr`); for grey, ``(image, None)``.

    Raises:
        ShapeError: ``image`` is not a ``(B, 1 or 3, H, W)`` tensor.
    """
    _check_image(image, "split_luma", (1, 3))
    if image.shape[1] == 1:
        return image, None
    ycbcr = rgb_to_ycbcr(image)
    return ycbcr[:, :1], ycbcr[:, 1:]


def merge_luma(y: torch.Tensor, cbcr: torch.Tensor | None) -> torch.Tensor:
    """Inverse of :func:`split_luma`: put a (fused) luma back together with its chroma.

    This is the one place in the colour module that clamps: fused luma with the original chroma
    can leave the RGB cube, so the RGB result is clamped to ``[0, 1]``.

    Args:
        y: Luma, ``(B, 1, H, W)`` float tensor in ``[0, 1]``.
        cbcr: Chroma from :func:`split_luma`, ``(B, 2, H, W)`` (channels Cb, Cr), or ``None`` for a
            grey image.

    Returns:
        ``y`` itself when ``cbcr`` is ``None``; otherwise the RGB image, ``(B, 3, H, W)``, clamped
        to ``[0, 1]``.

    Raises:
        ShapeError: ``y`` is not ``(B, 1, H, W)``, ``cbcr`` is not ``(B, 2, H, W)``, or their
            batch or spatial sizes differ.
    """
    _check_image(y, "merge_luma (y)", (1,))
    if cbcr is None:
        return y
    _check_image(cbcr, "merge_luma (cbcr)", (2,))
    if y.shape[0] != cbcr.shape[0] or y.shape[2:] != cbcr.shape[2:]:
        raise ShapeError(
            f"merge_luma: y {tuple(y.shape)} and cbcr {tuple(cbcr.shape)} must have the same "
            "batch size, height and width"
        )
    return ycbcr_to_rgb(torch.cat((y, cbcr), dim=1)).clamp(0.0, 1.0)


def _quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row ``q`` quantile of (B, N) with linear interpolation (as ``torch.quantile``, which
    refuses more than 2**24 values: a 2100x2700 RGB image has 17 million)."""
    n = flat.shape[1]
    pos = q * (n - 1)
    below = int(pos)
    above = min(below + 1, n - 1)
    a = flat.kthvalue(below + 1, dim=1).values
    if above == below or pos == below:
        return a
    b = flat.kthvalue(above + 1, dim=1).values
    return a + (b - a) * (pos - below)


def stretch(image: torch.Tensor, low: float = 0.005, high: float = 0.995) -> torch.Tensor:
    """Map the ``low``..``high`` quantiles of ``image`` linearly onto [0, 1] (clipping outside).

    For raw thermal frames (14/16-bit counts that fill a small part of the 16-bit range).
    Args: image (B, C, H, W) in [0, 1]. Returns the same shape; a constant image comes back unchanged.
    """
    flat = image.flatten(1).float()
    lo, hi = _quantile(flat, low).view(-1, 1, 1, 1), _quantile(flat, high).view(-1, 1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, ((image - lo) / span.clamp_min(1e-12)).clamp(0, 1), image)
