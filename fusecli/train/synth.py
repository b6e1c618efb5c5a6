"""Synthetic multi-focus and multi-exposure training triplets from sharp, well-exposed images.

FRUFN / EFRUFN train their first two stages supervised (§3.1 of Wang et al., TPAMI 2026): a
multi-focus stage on (near, far, all-in-focus) triplets and a multi-exposure stage on (under, over,
well-exposed) triplets. The authors used RealMFF + MFI-WHU and SICE; so that no such set with ground truth is needed, the
triplets are synthesised here from sharp, well-exposed images (e.g. RoadScene's visible images),
whose pixels are the ground truth.

Both functions are pure: same input, same ``torch.Generator`` state -> same output. They take and
return ``(B, C, H, W)`` float32 tensors in ``[0, 1]`` (any ``C``; every channel of one image gets
the same degradation, so colour images stay consistent for ColorNet).

Multi-focus (:func:`multi_focus`)
    1. Focus mask: uniform noise on a coarse grid of ``cells`` x ``cells`` (``cells`` drawn from
       ``mask_cells``; the short side gets that many cells), bicubic upsampling to ``H x W``,
       thresholded at the sample's own ``q``-quantile (``q`` from ``mask_fraction``), so a fraction
       ``1 - q`` of the image is "near"; the binary map is then softened with a Gaussian of
       ``edge_sigma`` pixels (depth-of-field transition). ``m`` in ``[0, 1]``, smooth, one or a
       few blobs.
    2. Defocus: the sharp image blurred with a Gaussian of standard deviation ``sigma_near`` and,
       independently, ``sigma_far`` (both drawn from ``blur_sigma``; reflect borders).
    3. ``near = m * sharp + (1 - m) * blur_far_part``, ``far = (1 - m) * sharp + m * blur_near_part``:
       the near image is in focus where ``m = 1``, the far image where ``m = 0``; ``gt = sharp``.

Multi-exposure (:func:`multi_exposure`)
    1. The well-exposed image is taken to irradiance with a gamma ``g`` (drawn from ``gamma``):
       ``E = gt ** g``.
    2. Exposure: ``E_under = E * 2 ** -s_u`` and ``E_over = E * 2 ** s_o`` (stops ``s_u``, ``s_o``
       from ``under_stops`` / ``over_stops``).
    3. Sensor noise in the irradiance domain, signal-dependent (shot) plus constant (read):
       ``E + N(0, a * E + b**2)`` with ``a = shot`` and ``b`` drawn from ``read_noise``.
    4. Clipping to ``[0, 1]`` (saturated highlights in ``over``, crushed shadows after
       quantisation in ``under``), the camera curve ``x ** (1 / g)`` and 8-bit quantisation.
    ``under`` is darker than ``gt``, ``over`` brighter, and ``gt`` is the sharp input.

Every random number comes from the ``generator`` argument, in a fixed order; the parameters drawn
for each sample are returned with the images (``params``) so a run can record them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from ..metrics._filters import gauss1d

__all__ = ["FocusTriplet", "ExposureTriplet", "focus_masks", "gaussian_blur", "multi_focus", "multi_exposure"]


@dataclass(frozen=True)
class FocusTriplet:
    """A synthetic multi-focus batch: ``near``, ``far``, ``gt`` ``(B, C, H, W)`` and the focus mask
    ``mask`` ``(B, 1, H, W)`` (1 where ``near`` is in focus, 0 where ``far`` is); ``params`` holds the
    drawn ``sigma_near``, ``sigma_far``, ``cells``, ``fraction`` and ``edge_sigma`` per sample."""

    near: torch.Tensor
    far: torch.Tensor
    gt: torch.Tensor
    mask: torch.Tensor
    params: dict[str, list[float]]


@dataclass(frozen=True)
class ExposureTriplet:
    """A synthetic multi-exposure batch: ``under``, ``over``, ``gt`` ``(B, C, H, W)`` in ``[0, 1]``;
    ``params`` holds the drawn ``gamma``, ``under_stops``, ``over_stops`` and ``read_noise`` per sample."""

    under: torch.Tensor
    over: torch.Tensor
    gt: torch.Tensor
    params: dict[str, list[float]]


def _check_batch(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(f"{name} needs a (B, C, H, W) float tensor in [0, 1], got {got}")
    if min(x.shape[-2:]) < 8:
        raise ShapeError(f"{name} needs images of at least 8x8 pixels, got {tuple(x.shape[-2:])}")


def _check_range(name: str, lo_hi: tuple[float, float], minimum: float) -> None:
    lo, hi = lo_hi
    if not (minimum <= lo <= hi):
        raise ConfigError(f"{name} must be a range (lo, hi) with {minimum} <= lo <= hi, got {lo_hi}")


def _uniform(generator: torch.Generator, n: int, lo_hi: tuple[float, float]) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect borders (radius ``ceil(3 sigma)``, clipped to the image).

    Args:
        x: ``(B, C, H, W)`` float tensor.
        sigma: standard deviation in pixels; ``<= 0`` returns ``x`` unchanged.

    Returns:
        ``(B, C, H, W)``, same dtype and device; values stay within ``[min(x), max(x)]``.
    """
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    r = min(math.ceil(3 * sigma), h - 1, w - 1)
    k = gauss1d(2 * r + 1, sigma, dtype=x.dtype, device=x.device)
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def focus_masks(shape: tuple[int, int, int], generator: torch.Generator, *,
                mask_cells: tuple[int, int] = (2, 5), mask_fraction: tuple[float, float] = (0.3, 0.7),
                edge_sigma: tuple[float, float] = (1.0, 3.0)) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Random smooth focus masks (see the module docstring, step 1 of multi-focus).

    Args:
        shape: ``(B, H, W)``.
        generator: the random stream.
        mask_cells: range of the coarse noise grid's cells along the short side (integers >= 1;
            more cells = more, smaller in-focus blobs).
        mask_fraction: range of the threshold quantile ``q`` (about ``1 - q`` of the pixels are near).
        edge_sigma: range of the Gaussian softening of the in-focus boundary, in pixels.

    Returns:
        ``(masks, params)``: masks ``(B, 1, H, W)`` float32 in ``[0, 1]``; params the drawn
        ``cells``, ``fraction`` (``q``) and ``edge_sigma`` per sample.
    """
    b, h, w = shape
    _check_range("mask_cells", mask_cells, 1)
    _check_range("mask_fraction", mask_fraction, 0.0)
    _check_range("edge_sigma", edge_sigma, 0.0)
    if mask_fraction[1] >= 1:
        raise ConfigError(f"mask_fraction must stay below 1, got {mask_fraction}")
    masks, params = [], {"cells": [], "fraction": [], "edge_sigma": []}
    for _ in range(b):
        cells = int(torch.randint(mask_cells[0], mask_cells[1] + 1, (), generator=generator))
        q = float(_uniform(generator, 1, mask_fraction))
        soft = float(_uniform(generator, 1, edge_sigma))
        gh = max(1, round(cells * h / min(h, w)))
        gw = max(1, round(cells * w / min(h, w)))
        # one extra cell on each side, so the bicubic surface does not flatten at the borders
        noise = torch.rand(1, 1, gh + 2, gw + 2, generator=generator)
        cell_h, cell_w = h / gh, w / gw
        big = F.interpolate(noise, size=(round(cell_h * (gh + 2)), round(cell_w * (gw + 2))), mode="bicubic",
                            align_corners=False)
        top, left = round(cell_h), round(cell_w)
        surface = big[..., top:top + h, left:left + w]
        binary = (surface > torch.quantile(surface.flatten(), q)).float()
        masks.append(gaussian_blur(binary, soft).clamp(0, 1))
        params["cells"].append(cells)
        params["fraction"].append(q)
        params["edge_sigma"].append(soft)
    return torch.cat(masks), params


def multi_focus(sharp: torch.Tensor, generator: torch.Generator, *, blur_sigma: tuple[float, float] = (1.0, 4.0),
                mask_cells: tuple[int, int] = (2, 5), mask_fraction: tuple[float, float] = (0.3, 0.7),
                edge_sigma: tuple[float, float] = (1.0, 3.0)) -> FocusTriplet:
    """Synthesise (near-focus, far-focus, all-in-focus) triplets from sharp images.

    Args:
        sharp: ``(B, C, H, W)`` float tensor in ``[0, 1]``, all in focus; H, W >= 8.
        generator: the random stream (CPU ``torch.Generator``).
        blur_sigma: range of the Gaussian defocus standard deviation (pixels), drawn independently
            for the near and the far image.
        mask_cells, mask_fraction, edge_sigma: see :func:`focus_masks`.

    Returns:
        :class:`FocusTriplet` with ``gt`` equal to ``sharp`` (the same tensor values) and
        ``near`` / ``far`` in ``[0, 1]``.

    Raises:
        ShapeError: ``sharp`` is not a ``(B, C, H, W)`` float tensor of at least 8x8.
        ConfigError: a range is empty or negative.
    """
    _check_batch(sharp, "multi_focus")
    _check_range("blur_sigma", blur_sigma, 0.0)
    b, _, h, w = sharp.shape
    masks, params = focus_masks((b, h, w), generator, mask_cells=mask_cells, mask_fraction=mask_fraction,
                                edge_sigma=edge_sigma)
    masks = masks.to(sharp)
    sig_near = _uniform(generator, b, blur_sigma).tolist()
    sig_far = _uniform(generator, b, blur_sigma).tolist()
    near, far = [], []
    for i in range(b):
        x, m = sharp[i:i + 1], masks[i:i + 1]
        near.append(m * x + (1 - m) * gaussian_blur(x, sig_near[i]))  # far part defocused
        far.append((1 - m) * x + m * gaussian_blur(x, sig_far[i]))    # near part defocused
    params = {"sigma_near": sig_near, "sigma_far": sig_far, **params}
    return FocusTriplet(near=torch.cat(near).clamp(0, 1), far=torch.cat(far).clamp(0, 1), gt=sharp.clone(),
                        mask=masks, params=params)


def multi_exposure(image: torch.Tensor, generator: torch.Generator, *, under_stops: tuple[float, float] = (1.0, 3.0),
                   over_stops: tuple[float, float] = (0.5, 2.0), gamma: tuple[float, float] = (1.8, 2.6),
                   read_noise: tuple[float, float] = (0.0, 0.01), shot: float = 1e-3,
                   quantize: bool = True) -> ExposureTriplet:
    """Synthesise (under-exposed, over-exposed, well-exposed) triplets from well-exposed images.

    Args:
        image: ``(B, C, H, W)`` float tensor in ``[0, 1]``, well exposed; H, W >= 8.
        generator: the random stream (CPU ``torch.Generator``).
        under_stops, over_stops: ranges of the exposure change in stops (``2 ** stops``), > 0.
        gamma: range of the camera-curve exponent ``g`` (``x ** g`` to irradiance, ``x ** (1/g)`` back).
        read_noise: range of the read-noise standard deviation ``b`` (irradiance units).
        shot: shot-noise variance factor ``a`` (variance ``a * E``).
        quantize: round the results to 8-bit levels (``k / 255``).

    Returns:
        :class:`ExposureTriplet` with ``gt`` equal to ``image``, ``under`` / ``over`` in ``[0, 1]``.

    Raises:
        ShapeError: ``image`` is not a ``(B, C, H, W)`` float tensor of at least 8x8.
        ConfigError: a range is empty or out of bounds, or ``shot`` is negative.
    """
    _check_batch(image, "multi_exposure")
    _check_range("under_stops", under_stops, 0.0)
    _check_range("over_stops", over_stops, 0.0)
    _check_range("gamma", gamma, 0.1)
    _check_range("read_noise", read_noise, 0.0)
    if shot < 0:
        raise ConfigError(f"shot must be >= 0, got {shot}")
    b = image.shape[0]
    g = _uniform(generator, b, gamma)
    s_u = _uniform(generator, b, under_stops)
    s_o = _uniform(generator, b, over_stops)
    rn = _uniform(generator, b, read_noise)

    def per_sample(v: torch.Tensor) -> torch.Tensor:
        return v.to(image).view(b, 1, 1, 1)

    irradiance = image.clamp(0, 1) ** per_sample(g)
    outs = []
    for stops in (-s_u, s_o):
        e = irradiance * per_sample(2.0 ** stops)
        std = torch.sqrt(shot * e.clamp(min=0) + per_sample(rn) ** 2)
        e = e + std * torch.randn(e.shape, generator=generator).to(e)
        x = e.clamp(0, 1) ** (1 / per_sample(g))
        outs.append(torch.round(x * 255) / 255 if quantize else x)
    params = {"gamma": g.tolist(), "under_stops": s_u.tolist(), "over_stops": s_o.tolist(),
              "read_noise": rn.tolist()}
    return ExposureTriplet(under=outs[0], over=outs[1], gt=image.clone(), params=params)
