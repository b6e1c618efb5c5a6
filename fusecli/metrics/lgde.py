"""LGDE: local gradient direction entropy (He et al., DeRUN, ICCV 2023, Sec. 3.4 and Eq. 13).

The gradient direction of every pixel is quantised into ``I`` bins of width ``2π / I``; the LGDE of
a pixel is the Shannon entropy of the bin histogram over the ``B × B`` block around it, averaged over
two blocks: ``B = 3`` and the dilated ``B = 5`` block (3×3 taps at dilation 2, the paper's "dilated
operation with r = 1": nine pixels, like the 3×3 block, over a 5×5 field). Borders are padded by
reflection (``nn.ReflectionPad2d``, as the paper says).

The paper leaves some details open; this module fixes them as follows (and the tests pin them):

* **Gradient**: the 3×3 Sobel operator (``gx = [-1 0 1; -2 0 2; -1 0 1]``, ``gy`` its transpose,
  y pointing down), on the reflection-padded image; direction ``θ = atan2(gy, gx)`` in ``(-π, π]``.
* **Bins**: bin ``i`` is centred on ``2π i / I`` (for ``I = 8``: the eight neighbour directions
  0°, 45°, ... as the supplement motivates), i.e. ``i = round(θ I / 2π) mod I``. With Sobel on
  8-bit data ``gx, gy`` are integers (/255), so a direction never falls exactly on a bin border
  for ``I = 8`` (``tan 22.5°`` is irrational): hard binning has no ties to break.
* **Zero-gradient (flat) pixels**: a pixel whose Sobel magnitude is below ``flat`` (default half
  an 8-bit grey level, ``0.5 / 255``: any non-flat 8-bit neighbourhood has magnitude >= 1/255)
  has no direction; it is **left out of the histogram** instead of being put in bin 0 (which
  ``atan2(0, 0) = 0`` would do, making flat areas look like a consistent horizontal texture and
  mixing them with real 0° edges). The probabilities are taken over the directed pixels of the
  block; a block without any directed pixel has entropy 0 (perfectly consistent: nothing varies).
  The flat mask is a hard threshold also under soft binning (it has no useful gradient), and
  ``θ`` is computed from a safe stand-in on flat pixels so no NaN gradient comes from
  ``atan2(0, 0)``.
* **Entropy** in bits (``log2``): 0 ... ``log2(min(I, 9))`` (3 bits for I = 8 on 9-pixel blocks).
* **Soft binning** (``softness > 0``, for training): bin weights
  ``a_i = softmax_i(-d_i² / softness)`` where ``d_i`` is the wrapped angular distance from ``θ``
  to centre ``i`` in units of the bin width (so ``softness`` is dimensionless; at ``d = 0.5``, a
  bin border, the two neighbouring bins get equal weight). As ``softness → 0`` the weights tend to
  the one-hot hard bins and the soft map to the hard one (shrinking monotonically; see the tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from . import register
from ._checks import as_gray_255

#: Sobel magnitude (images in [0, 1]) below which a pixel counts as flat (no direction).
FLAT = 0.5 / 255.0


def _check(img: torch.Tensor, bins: int, softness: float) -> None:
    if not isinstance(img, torch.Tensor):
        raise ShapeError(f"lgde_map needs a torch.Tensor, got {type(img).__name__}.")
    if img.dim() != 4 or img.shape[1] != 1:
        raise ShapeError(f"lgde_map needs a (B, 1, H, W) tensor, got shape {tuple(img.shape)}.")
    h, w = img.shape[-2:]
    if h < 3 or w < 3:  # reflection padding by 2 needs at least 3 pixels per side
        raise ShapeError(f"lgde_map needs images of at least 3×3 pixels (its 5×5 dilated block), got {h}×{w}.")
    if not img.is_floating_point():
        raise ShapeError(f"lgde_map needs a floating-point tensor in [0, 1], got dtype {img.dtype}.")
    if int(bins) != bins or bins < 2:
        raise ConfigError(f"bins must be an integer >= 2, got {bins!r}.")
    if not (softness >= 0 and math.isfinite(softness)):
        raise ConfigError(f"softness must be a finite number >= 0 (0 = hard binning), got {softness!r}.")


def _sobel(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=img.dtype, device=img.device)
    w = torch.stack([k, k.t()])[:, None]  # (2, 1, 3, 3): gx, gy (cross-correlation)
    g = F.conv2d(F.pad(img, (1, 1, 1, 1), mode="reflect"), w)
    return g[:, :1], g[:, 1:]


def _bin_weights(gx: torch.Tensor, gy: torch.Tensor, bins: int, softness: float, flat: float) -> torch.Tensor:
    """(B, I, H, W) bin weights of each pixel (one-hot or soft), zero on flat pixels."""
    directed = (gx * gx + gy * gy) > flat * flat
    # safe stand-in on flat pixels: atan2's gradient at (0, 0) is 0/0
    theta = torch.atan2(torch.where(directed, gy, torch.zeros_like(gy)),
                        torch.where(directed, gx, torch.ones_like(gx)))
    u = theta * (bins / (2 * math.pi))  # direction in bin widths, in (-I/2, I/2]
    if softness == 0:
        idx = torch.remainder(torch.round(u), bins).long()
        a = F.one_hot(idx[:, 0], bins).permute(0, 3, 1, 2).to(gx.dtype)
    else:
        centres = torch.arange(bins, dtype=gx.dtype, device=gx.device).view(1, bins, 1, 1)
        d = torch.remainder(u - centres + bins / 2, bins) - bins / 2  # wrapped, in [-I/2, I/2)
        a = torch.softmax(-(d * d) / softness, dim=1)
    return a * directed.to(gx.dtype)


def _block_entropy(a: torch.Tensor, dilation: int) -> torch.Tensor:
    """Entropy (bits) of the 3×3 block histogram at ``dilation``, reflection-padded: (B, 1, H, W)."""
    bins = a.shape[1]
    p = dilation
    ones = torch.ones(bins, 1, 3, 3, dtype=a.dtype, device=a.device)
    counts = F.conv2d(F.pad(a, (p, p, p, p), mode="reflect"), ones, dilation=dilation, groups=bins)
    total = counts.sum(dim=1, keepdim=True)
    prob = counts / total.clamp_min(1e-12)
    # 0 log 0 = 0, without a NaN gradient at 0
    plogp = torch.where(prob > 0, prob * torch.log2(prob.clamp_min(1e-30)), torch.zeros_like(prob))
    return -plogp.sum(dim=1, keepdim=True)


def lgde_map(img: torch.Tensor, *, bins: int = 8, softness: float = 0.0, flat: float = FLAT) -> torch.Tensor:
    """Multi-scale local gradient direction entropy map (DeRUN Eq. 13), differentiable for soft bins.

    Args:
        img: ``(B, 1, H, W)`` float tensor in ``[0, 1]``, ``H, W >= 3``.
        bins: number ``I`` of direction bins (paper: 8).
        softness: 0 = hard binning (the metric); ``> 0`` = soft binning for training losses
            (softmax of ``-d² / softness`` over the angular distance ``d``, in bin widths, to the
            bin centres). With 0.1 a direction on a bin centre puts > 99.9 % of its weight
            there, one halfway between two centres splits evenly between them.
        flat: Sobel magnitude (in the ``[0, 1]`` units of ``img``) below which a pixel has no
            direction and is left out of the histograms (see the module docstring).

    Returns:
        ``(B, 1, H, W)`` tensor, same dtype/device as ``img``: ``(E_3 + E_5) / 2`` in bits, in
        ``[0, log2(min(bins, 9))]``.

    Raises:
        ShapeError: not a ``(B, 1, H, W)`` floating tensor, or smaller than 3×3.
        ConfigError: ``bins < 2`` or ``softness`` negative / not finite.
    """
    _check(img, bins, softness)
    gx, gy = _sobel(img)
    a = _bin_weights(gx, gy, int(bins), float(softness), float(flat))
    return 0.5 * (_block_entropy(a, 1) + _block_entropy(a, 2))


@register(
    "LGDE",
    higher_is_better=False,
    needs="fused",
    description="local gradient direction entropy: mean over pixels of the multi-scale (3×3 and dilated "
                "5×5) Shannon entropy of the 8-bin Sobel direction histogram, in bits; lower = more "
                "locally consistent edge directions (less noise)",
    reference="He et al., Degradation-Resistant Unfolding Network for Heterogeneous Image Fusion "
              "(DeRUN), ICCV 2023, Eq. 13 (no public toolbox; details fixed in fusecli/metrics/lgde.py)",
    conventions={"cddfuse": "fusecli's definition (no toolbox has it): hard 8-bin Sobel directions, flat "
                            "pixels left out, reflection padding, bits; same under every convention"},
    variants=("bins",),
)
def lgde(fused, *, bins: int = 8) -> torch.Tensor:
    """Mean LGDE of the fused image (DeRUN's loss term as a no-reference score), ``(B,)`` float64.

    ``fused``: ``(H, W)`` / ``(1, H, W)`` / ``(B, 1, H, W)`` gray on 0–255 (divided by 255 here),
    at least 3×3. Lower is better in the paper's sense (consistent directions along textures,
    cluttered ones around noise), but a flat, detail-less image also scores low: read it with a
    detail metric (AG, SF, EN) next to it. The registry marks it ``higher_is_better=False``.
    """
    x = as_gray_255(fused, "fused")
    h, w = x.shape[-2:]
    if h < 3 or w < 3:
        raise ShapeError(f"LGDE needs images of at least 3×3 pixels, got {h}×{w}.")
    return lgde_map(x / 255.0, bins=bins).mean(dim=(1, 2, 3))
