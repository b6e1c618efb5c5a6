"""Input checks shared by the fusion metrics.

Every metric works on **gray images on the 0–255 scale**, like the MATLAB / VIFB / CDDFuse
toolboxes whose numbers it reproduces: an 8-bit image as it is, a float image in ``[0, 255]``.
Nothing is rescaled here: a ``[0, 1]`` float image or a 16-bit image gives numbers on its own
scale (and EN clamps it to 0..255), so scale such inputs to 0–255 first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ShapeError, UnknownNameError

#: Known conventions, i.e. which toolbox's numbers to reproduce. ``"cddfuse"``: the Python
#: ``Evaluator`` of CDDFuse (copied into ~80 repositories); ``"matlab"``: the MATLAB toolbox of the
#: SeAFusion / PIAFusion family (Linfeng Tang's ``Image-Fusion``); ``"vifb"``: the VIFB benchmark;
#: ``"mefb"``: the MEFB / MFIFB toolbox (Xingchen Zhang). See docs/metrics.md.
CONVENTIONS: tuple[str, ...] = ("cddfuse", "matlab", "vifb", "mefb")

#: The convention used when none is given.
DEFAULT_CONVENTION = "cddfuse"


class MetricWarning(UserWarning):
    """A metric is undefined on this input (e.g. a correlation with a constant image) and was
    returned as NaN, as the reference toolbox would; the warning says which and why."""

_GRAY_HINT = (
    "convert it to gray first (e.g. cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), "
    "or the BT.601 luma 0.299 R + 0.587 G + 0.114 B)"
)


_checked = threading.local()  # ids of tensors this thread already checked (set by evaluate)


@contextlib.contextmanager
def checked(*tensors: torch.Tensor):
    """Within the block, :func:`as_gray_255` returns these already-checked ``(B, 1, H, W)``
    float64 tensors as they are (no second NaN scan when :func:`evaluate` runs many metrics)."""
    ids = getattr(_checked, "ids", set())
    new = {id(t) for t in tensors} - ids
    _checked.ids = ids | new
    try:
        yield
    finally:
        _checked.ids = _checked.ids - new


def as_gray_255(x: Any, name: str = "image") -> torch.Tensor:
    """Return ``x`` as a batch of gray images, shape ``(B, 1, H, W)``, dtype ``float64``.

    Args:
        x: a ``torch.Tensor`` or ``numpy.ndarray`` (any real or bool dtype) of shape ``(H, W)``,
            ``(1, H, W)`` or ``(B, 1, H, W)``, values on the 0–255 scale (not checked, not
            rescaled). A tensor keeps its device; gradients are not tracked.
        name: how the input is called in error messages (``"fused"``, ``"source 1"`` ...).

    Raises:
        ShapeError: wrong number of dimensions, a colour image (3 or 4 channels), an empty
            batch, an image smaller than 2×2, a non-numeric dtype, or NaN / infinite values.
    """
    if isinstance(x, torch.Tensor) and id(x) in getattr(_checked, "ids", ()) and x.dtype == torch.float64:
        return x
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise ShapeError(f"{name} must hold real numbers, got dtype {t.dtype}.")
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
            raise ShapeError(f"{name} must hold real numbers, got dtype {x.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    else:
        raise ShapeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")

    shape = tuple(t.shape)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3 and shape[0] == 1:
        t = t[None]
    elif t.ndim == 4 and shape[1] == 1:
        pass
    elif (t.ndim == 3 and (shape[0] in (3, 4) or shape[-1] in (3, 4))) or (
        t.ndim == 4 and (shape[1] in (3, 4) or shape[-1] in (3, 4))
    ):
        raise ShapeError(
            f"{name} has shape {shape}, which looks like a colour image; metrics work on one gray "
            f"channel: {_GRAY_HINT}."
        )
    else:
        raise ShapeError(f"{name} has shape {shape}; expected (H, W), (1, H, W) or (B, 1, H, W).")

    b, _, h, w = t.shape
    if b == 0:
        raise ShapeError(f"{name} is an empty batch (shape {shape}).")
    if h < 2 or w < 2:
        raise ShapeError(f"{name} is {h}×{w} (H×W); metrics need an image of at least 2×2 pixels.")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ShapeError(f"{name} contains NaN or infinite values.")
    return t


def as_sources_255(sources: Sequence[Any], fused: torch.Tensor) -> list[torch.Tensor]:
    """Check the source images against ``fused`` (already ``(B, 1, H, W)``); return them alike.

    Each source may be given as ``(H, W)`` / ``(1, H, W)`` (broadcast over the batch) or
    ``(B, 1, H, W)``; it is moved to ``fused``'s device.

    Raises:
        ShapeError: no sources, or a source whose size or batch does not match ``fused``.
    """
    if isinstance(sources, (torch.Tensor, np.ndarray)):
        raise ShapeError("sources must be a list of images (e.g. [ir, vis]), not a single array.")
    if len(sources) == 0:
        raise ShapeError("sources is empty; give the source images, e.g. [ir, vis].")
    b, _, h, w = fused.shape
    out = []
    for i, s in enumerate(sources, start=1):
        t = as_gray_255(s, name=f"source {i}").to(fused.device)
        if t.shape[-2:] != (h, w):
            raise ShapeError(
                f"source {i} is {t.shape[-2]}×{t.shape[-1]} (H×W) but the fused image is {h}×{w}; "
                "sources and fused image must be aligned and of the same size."
            )
        if t.shape[0] not in (1, b):
            raise ShapeError(f"source {i} has a batch of {t.shape[0]} but the fused image has {b}.")
        out.append(t if t.shape[0] == b else t.expand(b, 1, h, w))
    return out


def warn_nan(values: torch.Tensor, metric: str, why: str) -> torch.Tensor:
    """Warn with :class:`MetricWarning` when ``values`` holds NaN; return ``values`` unchanged."""
    if bool(torch.isnan(values).any()):
        import warnings

        warnings.warn(f"{metric} is undefined (NaN) for {int(torch.isnan(values).sum())} image(s): {why}",
                      MetricWarning, stacklevel=3)
    return values


def check_convention(convention: str, allowed: Sequence[str] = CONVENTIONS) -> str:
    """Return ``convention`` lower-cased; raise :class:`UnknownNameError` if not in ``allowed``."""
    c = str(convention).lower()
    if c not in allowed:
        raise UnknownNameError("convention", str(convention), allowed)
    return c
