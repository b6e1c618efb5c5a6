"""NumPy images in and out of the library's tensor contract, for :func:`fusecli.inference.fuse_images`.

A NumPy image is ``(H, W)`` (gray) or ``(H, W, C)`` with ``C`` = 1 or 3 (RGB order, as imageio,
PIL and matplotlib give; OpenCV's ``cv2.imread`` gives BGR: convert with ``cv2.cvtColor`` first),
with samples of type uint8 (0..255), uint16 (0..65535) or float in ``[0, 1]``. It becomes a
(1, C, H, W) float32 tensor in ``[0, 1]`` (uint8 / 255, uint16 / 65535: as
:func:`fusecli.io.read_image` reads files; no 16-bit stretch, see
:func:`fusecli.inference.prepare_16bit`), and the fused tensor comes back in the callers' type.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .errors import ConfigError, ShapeError
from .io import quantize

__all__ = ["arrays_to_tensors", "tensor_to_array"]

_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _to_tensor(array: np.ndarray, index: int) -> torch.Tensor:
    """One (H, W) / (H, W, C) array -> a (1, C, H, W) float32 tensor in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape:
        raise ShapeError(f"image {index}: a NumPy image must be (H, W) or (H, W, C) with C = 1 or 3 (RGB), "
                         f"got shape {array.shape}")
    if array.dtype in _SCALE:
        data = array.astype(np.float32) / np.float32(_SCALE[array.dtype])
    elif np.issubdtype(array.dtype, np.floating):
        data = array.astype(np.float32)
        if not np.isfinite(data).all():
            raise ConfigError(f"image {index} holds NaN or infinite values; clean it first")
        lo, hi = float(data.min()), float(data.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ConfigError(f"image {index}: float samples must lie in [0, 1], found {lo:.4g}..{hi:.4g}; "
                              "scale it (e.g. divide 8-bit values by 255) or pass uint8/uint16")
        data = np.clip(data, 0, 1)
    else:
        raise ConfigError(f"image {index}: unsupported sample type {array.dtype}; use uint8, uint16 or float "
                          "in [0, 1]")
    return torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1))).unsqueeze(0)


def arrays_to_tensors(images: Sequence[np.ndarray | torch.Tensor]) -> tuple[list[torch.Tensor], str | None]:
    """Tensors for ``images``, and the type to return the result in.

    Returns:
        ``(tensors, kind)``: ``images`` unchanged and ``kind = None`` when they are all tensors;
        else (1, C, H, W) float32 CPU tensors in [0, 1] and ``kind`` = ``"float32"`` if any source
        is float, else ``"uint16"`` if any is uint16, else ``"uint8"``.

    Raises:
        ConfigError: arrays mixed with tensors, an unsupported sample type, float values outside
            [0, 1] or not finite.
        ShapeError: an array that is not (H, W) or (H, W, 1 or 3).
    """
    is_array = [isinstance(im, np.ndarray) for im in images]
    if not any(is_array):
        return list(images), None
    if not all(is_array):
        raise ConfigError("pass every image as a NumPy array, or every image as a tensor, not a mix")
    tensors = [_to_tensor(im, i) for i, im in enumerate(images)]
    dtypes = {im.dtype for im in images}
    if any(np.issubdtype(d, np.floating) for d in dtypes):
        return tensors, "float32"
    return tensors, "uint16" if np.dtype(np.uint16) in dtypes else "uint8"


def tensor_to_array(image: torch.Tensor, kind: str) -> np.ndarray:
    """A fused (1, C, H, W) tensor in [0, 1] as an (H, W) (gray) or (H, W, 3) (RGB) array of ``kind``:
    ``"uint8"`` / ``"uint16"`` rounded as :func:`fusecli.io.write_image` stores them, ``"float32"``
    in [0, 1]."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ShapeError(f"expected one fused (1, C, H, W) image, got shape {tuple(image.shape)}")
    if kind in ("uint8", "uint16"):
        return quantize(image, 8 if kind == "uint8" else 16)
    array = image[0].detach().to("cpu", torch.float32).clamp(0, 1).numpy()
    return array[0].copy() if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
