"""Layers shared by more than one model (a layer moves here only once two models use it).

* :func:`box_blur`: the kornia ``BoxBlur`` with reflect border; AUIF initialises its base encoder
  with it, CSC-IVF splits its input into base (blur) and detail (input - blur) with it.
* :class:`SoftThreshold` and :class:`DCU` (the dictionary convolution unit, one learned ISTA step):
  the building blocks of the three CSCFuse networks (CSC-IVF, CSC-MEF, CSC-MSF).
* :func:`box_mean`, :func:`guided_filter_coefficients`, :func:`guided_filter`: He et al.'s guided
  filter, batched over channels; CSC-IVF refines its saliency weights with it (r = 45, as
  ``cv2.ximgproc.guidedFilter``), CSC-MSF super-resolves its codes with the fast variant (r = 1,
  coefficients at low resolution, upsampled). :func:`guided_filter_plane`: one NumPy plane, by
  ``ximgproc`` when the OpenCV contrib wheel is installed, else by plain OpenCV box filters.
* :func:`channels_last`: a map in channels-last memory format without a needless copy (AUIF-fusion,
  DeRUN, FRUFN, EFRUFN).

Published blocks with a family of their own live in their own modules:
:mod:`fusecli.models.swin_v2` (Swin-V2 layer, with its fast path :mod:`fusecli.models.swin_fast`) and
:mod:`fusecli.models.convnext_v2` (ConvNeXt-V2 block); FRUFN's unfolding cell is in
:mod:`fusecli.models.frufn`.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError

__all__ = ["box_blur", "SoftThreshold", "DCU", "box_mean", "guided_filter_coefficients", "guided_filter",
           "guided_filter_plane", "box_guided_filter_plane", "channels_last"]


def box_blur(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean filter of ``size x size`` with reflect border (kornia ``BoxBlur``).

    Computed as running sums (a column mean, then a row mean: ``2 * size`` instead of ``size**2``
    additions per pixel); equal to the dense kernel up to float rounding.

    Args:
        x: (B, C, H, W) tensor; H and W must exceed ``size // 2``.
        size: odd filter size.

    Returns:
        (B, C, H, W) tensor, same dtype and device.
    """
    r = size // 2
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    return F.avg_pool2d(F.avg_pool2d(padded, (size, 1), stride=1), (1, size), stride=1)


# --- convolutional sparse coding -------------------------------------------------------------------

class SoftThreshold(nn.Module):
    """SST, the proximal operator of the L1 norm: ``sign(x) * relu(|x| - theta)``, learned ``theta``.

    Args:
        channels: number of thresholds; ``theta`` has shape (1, channels, 1, 1) (1: one shared).
        init: initial threshold.
        clamp: use ``max(theta, 0)`` (CSC-MSF's code) instead of ``theta`` as it is (CSC-IVF,
            CSC-MEF: a negative learned threshold then widens instead of shrinking).

    Shape: (B, C, H, W) -> (B, C, H, W), C = channels (or any C when channels = 1).
    """

    def __init__(self, channels: int, init: float = 1e-2, clamp: bool = False):
        super().__init__()
        self.clamp = clamp
        self.theta = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta.clamp_min(0) if self.clamp else self.theta
        if torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad):
            return x.sign() * F.relu(x.abs() - theta)
        # inference: the same operations in place on one temporary (3x faster on 64-channel codes)
        sign = x.sign()
        return x.abs().sub_(theta).relu_().mul_(sign)


class DCU(nn.Module):
    """Dictionary convolution unit: one learned ISTA step of convolutional sparse coding,
    ``z <- act(BN(z + E(x - D z)))`` (paper eq. 3).

    ``D`` (``dec``: C -> image_channels) and ``E`` (``enc``: image_channels -> C) are 3x3
    convolutions with reflect padding and no bias, ``act`` is PReLU(C) (init 0.25) or a
    :class:`SoftThreshold` (``"sst"``). Called with ``code=None`` the unit starts from ``z = 0``
    (then ``D z = 0`` and ``dec`` is not evaluated).

    Args:
        channels: code channels C.
        activation: ``"prelu"`` or ``"sst"``.
        image_channels: channels of the data ``x`` (1 for a gray image, 3 for RGB, 31 for a cube).
        sst_init: initial SST threshold.
        sst_clamp: clamp the SST threshold at 0 (see :class:`SoftThreshold`).
    """

    def __init__(self, channels: int = 64, activation: str = "prelu", image_channels: int = 1,
                 sst_init: float = 1e-2, sst_clamp: bool = False):
        super().__init__()
        if activation not in ("prelu", "sst"):
            raise ConfigError(f"DCU activation must be 'prelu' or 'sst', got {activation!r}")
        self.dec = nn.Conv2d(channels, image_channels, 3, padding=1, padding_mode="reflect", bias=False)
        self.enc = nn.Conv2d(image_channels, channels, 3, padding=1, padding_mode="reflect", bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.act = (nn.PReLU(channels, 0.25) if activation == "prelu"
                    else SoftThreshold(channels, sst_init, clamp=sst_clamp))

    def forward(self, data: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """data: (B, image_channels, H, W); code: (B, C, H, W) or None (zeros). Returns the new (B, C, H, W) code."""
        update = self.enc(data if code is None else data - self.dec(code))
        if code is not None:
            update = update.add_(code)  # the fresh convolution output: in place is autograd-safe
        return self.act(self.norm(update))


# --- guided filter ---------------------------------------------------------------------------------

def _symmetric_index(n: int, r: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``r`` on both sides with OpenCV's BORDER_REFLECT
    (``cba|abc|cba``, edge repeated), for any ``r`` (reflected again as often as needed)."""
    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _use_opencv(impl: str, *tensors: torch.Tensor) -> bool:
    """Whether to run a filter with OpenCV: ``impl="opencv"``, or ``"auto"`` for float32 CPU tensors
    that need no gradient (there OpenCV's single-pass running sums beat torch's several passes)."""
    if impl not in ("auto", "torch", "opencv"):
        raise ConfigError(f"filter implementation must be auto, torch or opencv, got {impl!r}")
    if impl != "auto":
        return impl == "opencv"
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return not grad and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _planes(x: torch.Tensor) -> np.ndarray:
    h, w = x.shape[-2:]
    return x.detach().float().cpu().contiguous().reshape(-1, h, w).numpy()


def box_guided_filter_plane(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """:func:`guided_filter_plane` from six ``cv2.boxFilter`` passes (OpenCV's main modules only).

    Running sums, so the cost does not grow with the radius; it equals ``cv2.ximgproc.guidedFilter``
    to float rounding (~1e-6) and takes about as long (6 box filters, as ximgproc's own).
    """
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, normalize=True, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    a = box(guide * src)
    a -= mean_i * mean_p  # cov(I, p)
    var = box(guide * guide)
    var -= mean_i * mean_i
    var += np.float32(eps)
    a /= var
    mean_p -= a * mean_i  # b
    out = box(a)
    out *= guide
    out += box(mean_p)
    return out


def guided_filter_plane(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of one (H, W) float32 plane, OpenCV's ``BORDER_REFLECT`` border.

    ``cv2.ximgproc.guidedFilter(guide, src, radius, eps)`` when the contrib modules are installed
    (``opencv-contrib-python-headless``), else :func:`box_guided_filter_plane` (plain OpenCV):
    the same values to float rounding at about the same speed.
    """
    if hasattr(cv2, "ximgproc"):
        return cv2.ximgproc.guidedFilter(guide, src, radius, eps)
    return box_guided_filter_plane(guide, src, radius, eps)


def box_mean(x: torch.Tensor, radius: int, border: str = "symmetric", impl: str = "auto") -> torch.Tensor:
    """Mean over the ``(2 radius + 1)^2`` window around every pixel, per channel.

    Running sums (cumsum): the cost does not grow with the radius.

    Args:
        x: (B, C, H, W) float tensor.
        radius: window radius r >= 0.
        border: ``"symmetric"``: the image is extended by mirroring with the edge repeated
            (OpenCV ``BORDER_REFLECT``, as ``cv2.ximgproc.guidedFilter``), for any r;
            ``"clip"``: the mean over the window's pixels inside the image (the fast guided
            filter's box filter divided by its count map ``N``).
        impl: ``"torch"`` (cumulative sums, any device, differentiable), ``"opencv"``
            (``cv2.boxFilter`` plane by plane, symmetric border only) or ``"auto"`` (OpenCV for
            float32 CPU tensors without gradient, where it is 5-10x faster; torch otherwise).

    Returns:
        (B, C, H, W) tensor, dtype of ``x``.
    """
    if x.dim() != 4:
        raise ShapeError(f"box_mean expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if radius < 0:
        raise ConfigError(f"box_mean radius must be >= 0, got {radius}")
    if radius == 0:
        return x
    if border == "clip":
        return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    if border != "symmetric":
        raise ConfigError(f"box_mean border must be 'symmetric' or 'clip', got {border!r}")
    h, w = x.shape[-2:]
    k = 2 * radius + 1
    if _use_opencv(impl, x):  # same border, same result to float rounding
        out = np.stack([cv2.boxFilter(p, -1, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT)
                        for p in _planes(x)])
        return torch.from_numpy(out).reshape(x.shape).to(device=x.device, dtype=x.dtype)
    padded = x.index_select(2, _symmetric_index(h, radius, x.device))
    padded = padded.index_select(3, _symmetric_index(w, radius, x.device))
    # window sums along H, then W, from one cumulative sum each (a leading zero row/column)
    c = F.pad(padded.cumsum(2), (0, 0, 1, 0))
    rows = c[..., k:, :] - c[..., :-k, :]
    c = F.pad(rows.cumsum(3), (1, 0))
    return (c[..., k:] - c[..., :-k]) / (k * k)


def guided_filter_coefficients(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                               border: str = "symmetric", impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The local linear model ``src ~ a * guide + b`` of He et al.'s guided filter, per channel.

    ``a = cov(guide, src) / (var(guide) + eps)`` and ``b = mean(src) - a * mean(guide)`` over the
    window of radius ``radius`` (:func:`box_mean` with ``border``).

    Args:
        guide: (B, C, H, W) or (B, 1, H, W) guide.
        src: (B, C, H, W) image to filter.
        radius, eps: window radius and regularisation (> 0).

    Returns:
        ``(a, b)``, each (B, C, H, W).
    """
    if guide.dim() != 4 or src.dim() != 4 or guide.shape[-2:] != src.shape[-2:] \
            or guide.shape[1] not in (1, src.shape[1]):
        raise ShapeError(f"guided filter: guide {tuple(guide.shape)} and src {tuple(src.shape)} must be "
                         "(B, C, H, W) of one size (guide with C or 1 channels)")
    mean_i = box_mean(guide, radius, border, impl)
    mean_p = box_mean(src, radius, border, impl)
    if torch.is_grad_enabled() and (guide.requires_grad or src.requires_grad):  # training: out of place
        cov = box_mean(guide * src, radius, border, impl) - mean_i * mean_p
        var = box_mean(guide * guide, radius, border, impl) - mean_i * mean_i
        a = cov / (var + eps)
        return a, mean_p - a * mean_i
    # inference: the same arithmetic in place (fewer full-size temporaries)
    a = box_mean(guide * src, radius, border, impl).sub_(mean_i * mean_p)
    a.div_(box_mean(guide * guide, radius, border, impl).sub_(mean_i * mean_i).add_(eps))
    return a, mean_p.sub_(a * mean_i)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                  border: str = "symmetric", impl: str = "auto") -> torch.Tensor:
    """He et al.'s guided filter ``mean(a) * guide + mean(b)``, batched over channels.

    With ``border="symmetric"`` it equals ``cv2.ximgproc.guidedFilter(guide, src, radius, eps)``
    applied channel by channel to float32 images (up to float rounding, ~1e-6).

    Args:
        guide: (B, C, H, W) or (B, 1, H, W).
        src: (B, C, H, W).
        radius: window radius; eps: regularisation.
        impl: ``"torch"`` (batched over all channels, any device, differentiable), ``"opencv"``
            (:func:`guided_filter_plane` channel by channel; symmetric border) or ``"auto"``
            (OpenCV for float32 CPU tensors without gradient, where its single-pass filter is
            2-3x faster than the torch composition; torch otherwise, e.g. on CUDA).

    Returns:
        (B, C, H, W) filtered ``src``.
    """
    if border == "symmetric" and _use_opencv(impl, guide, src):
        if guide.dim() != 4 or src.dim() != 4 or guide.shape[-2:] != src.shape[-2:] \
                or guide.shape[1] not in (1, src.shape[1]) or guide.shape[0] != src.shape[0]:
            raise ShapeError(f"guided filter: guide {tuple(guide.shape)} and src {tuple(src.shape)} must be "
                             "(B, C, H, W) of one size (guide with C or 1 channels)")
        guides = _planes(guide.expand(-1, src.shape[1], -1, -1))
        out = np.stack([guided_filter_plane(g, p, radius, eps) for g, p in zip(guides, _planes(src))])
        return torch.from_numpy(out).reshape(src.shape).to(device=src.device, dtype=src.dtype)
    a, b = guided_filter_coefficients(guide, src, radius, eps, border, impl)
    return torch.addcmul(box_mean(b, radius, border, impl), box_mean(a, radius, border, impl), guide)


# --- memory format ---------------------------------------------------------------------------------


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with channels-last strides (no copy when it has them). A one-channel tensor
    counts as channels-last for ``is_contiguous`` either way, but convolutions follow its strides."""
    if x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
