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
* :class:`ResBlock`, :class:`ConvNeXtV2Block` (with :class:`GRN`), the Swin-V2 layer
  (:class:`SwinV2Layer`, :class:`SwinV2Block`, :class:`WindowAttentionV2`,
  :func:`shifted_window_mask`) and FRUFN's unfolding cell (:class:`UFCell` with
  :class:`GlobalLocalTransform` and :class:`MaskGenerator`): FRUFN stacks five cells, EFRUFN
  solves one cell's fixed point.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from .swin_fast import scratch, swin_layer_fast

__all__ = ["box_blur", "SoftThreshold", "DCU", "box_mean", "guided_filter_coefficients", "guided_filter",
           "guided_filter_plane", "box_guided_filter_plane",
           "ResBlock", "GRN", "ConvNeXtV2Block", "shifted_window_mask", "WindowAttentionV2", "SwinV2Block",
           "SwinV2Layer", "GlobalLocalTransform", "MaskGenerator", "UFCell", "IMPLS"]



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


# --- FRUFN / EFRUFN building blocks --------------------------------------------------------------
# Swin-V2 (as in Swin2SR's ``BasicLayer``), ConvNeXt-V2 and FRUFN's UF cell, written from the papers'
# definitions; parameter and buffer names follow the reference implementations so official
# checkpoints load. Tokens are (B, H*W, C) in row-major pixel order.

#: implementations of FRUFN's cell: ``"fast"`` (:mod:`fusecli.models.swin_fast`, channels-last)
#: and ``"reference"`` (the Swin2SR formulation as written, kept as the test oracle)
IMPLS = ("fast", "reference")


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ConfigError(f"FRUFN implementation must be one of {', '.join(IMPLS)}, got {impl!r}")
    return impl


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with channels-last strides (no copy when it has them). A one-channel tensor
    counts as channels-last for ``is_contiguous`` either way, but convolutions follow its strides."""
    if x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with two 3x3 zero-padded convolutions (with bias).

    Shapes: (B, C, H, W) -> (B, C, H, W). Keys ``main.0.*`` and ``main.2.*`` as the FRUFN code.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).add_(x)  # = x + main(x); the fresh conv output is updated in place


class GRN(nn.Module):
    """Global response normalisation of ConvNeXt-V2 on channels-last (B, H, W, C) tensors."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """``fast``: the same formula as one pass, ``x * (gamma * nx + 1) + beta``, with the norm
        as a sum of squares (equal to float rounding)."""
        if fast:
            gx = x.square().sum(dim=(1, 2), keepdim=True).sqrt()
            nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
            return torch.addcmul(self.beta, x, torch.addcmul(torch.ones_like(nx), self.gamma, nx))
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """ConvNeXt-V2 block (Woo et al., CVPR 2023): depthwise 7x7 conv, LayerNorm (eps 1e-6),
    Linear C->4C, GELU, GRN, Linear 4C->C, plus the input.

    Shapes: (B, C, H, W) -> (B, C, H, W) (zero padding 3, any H, W >= 1).
    """

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expansion * dim)
        self.act = nn.GELU()
        self.grn = GRN(expansion * dim)
        self.pwconv2 = nn.Linear(expansion * dim, dim)

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """``fast``: GRN in one pass (:meth:`GRN.forward`); for channels-last ``x`` no copies."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y))), fast))
        if fast:
            return y.permute(0, 3, 1, 2).add_(x)  # = x + y, in the fresh output's (channels-last) memory
        return x + y.permute(0, 3, 1, 2)


def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Additive attention mask of shifted-window attention (Swin), (nW, ws*ws, ws*ws).

    After a cyclic shift by ``-shift``, tokens in one window that came from different image regions
    must not attend to each other: their entry is -100, all others 0. ``h`` and ``w`` must be
    multiples of ``ws``.
    """
    region = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            region[:, hs, wsl, :] = cnt
            cnt += 1
    ids = _window_partition(region, ws).squeeze(-1)  # (nW, ws*ws)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttentionV2(nn.Module):
    """Swin-V2 window attention (Liu et al., CVPR 2022): scaled cosine attention with a learned
    per-head temperature (``logit_scale``, clamped at log 100), a continuous relative position bias
    from a 2-layer MLP on log-spaced coordinates (``16 * sigmoid``), q and v biases (no k bias).

    Shapes: (B*nW, N, C) tokens of N = ws*ws pixels -> same; ``mask`` (nW, N, N) or None.
    """

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"Swin-V2: dim {dim} is not divisible by {heads} heads")
        if window < 2:
            raise ConfigError(f"Swin-V2: window must be at least 2, got {window}")
        self.dim, self.window, self.heads = dim, window, heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, heads, bias=False))
        # log-spaced relative coordinates: (1, 2w-1, 2w-1, 2), scaled to [-8, 8], sign*log2(|.|+1)/3
        rel = torch.arange(-(window - 1), window, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(rel, rel, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
        table = table / (window - 1) * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
        self.register_buffer("relative_coords_table", table)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relc = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", relc[..., 0] * (2 * window - 1) + relc[..., 1])
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) continuous relative position bias, in (0, 16)."""
        n = self.window * self.window
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
        bias = table[self.relative_position_index.reshape(-1)].view(n, n, self.heads).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias).reshape(bw, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        attn = (F.normalize(q, dim=-1) * scale) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn + self.position_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(bw, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinV2Mlp(nn.Module):
    """Linear C -> hidden, GELU, Linear hidden -> C (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinV2Block(nn.Module):
    """One Swin-V2 block with res-post-norm: ``x + norm1(attn(x))``, then ``x + norm2(mlp(x))``.

    Odd blocks shift the windows cyclically by ``window // 2``. Shifted blocks keep a persistent
    ``attn_mask`` buffer for ``reference_size`` (Swin2SR's ``input_resolution``, so checkpoints
    that store it load strict) and compute masks for other sizes on first use, cached per
    (H, W, device).

    Shapes: tokens (B, H*W, C) with ``hw = (H, W)``, H and W multiples of ``window``.
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float,
                 reference_size: int = 128):
        super().__init__()
        self.window, self.shift = window, shift
        if shift:
            self.register_buffer("attn_mask", shifted_window_mask(reference_size, reference_size, window, shift))
            self._reference = (reference_size, reference_size)
        else:
            self.attn_mask = None
        self._mask_cache: dict[tuple, torch.Tensor] = {}
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionV2(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinV2Mlp(dim, int(dim * mlp_ratio))

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        if not self.shift:
            return None
        if (h, w) == self._reference and self.attn_mask.device == device:
            return self.attn_mask
        key = (h, w, str(device))
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = shifted_window_mask(h, w, self.window, self.shift).to(device)
            self._mask_cache[key] = mask
        return mask

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        y = x.view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_window_partition(y, self.window), self._mask(h, w, x.device))
        y = _window_reverse(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.norm1(y.reshape(b, h * w, c))
        return x + self.norm2(self.mlp(x))


class SwinV2Layer(nn.Module):
    """``depth`` Swin-V2 blocks alternating plain and shifted windows (Swin2SR ``BasicLayer``
    without down-sampling). Keys ``blocks.{i}.*``.

    Shapes: tokens (B, H*W, C), ``hw = (H, W)`` multiples of ``window`` -> (B, H*W, C).
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float,
                 reference_size: int = 128):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinV2Block(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, reference_size)
            for i in range(depth))

    def check_size(self, hw: tuple[int, int]) -> None:
        """Raise ShapeError unless ``hw = (H, W)`` are multiples of the window."""
        if hw[0] % self.window or hw[1] % self.window:
            raise ShapeError(f"Swin-V2 layer: feature size {hw[1]}x{hw[0]} is not a multiple of the "
                             f"window {self.window}; pad the input first")

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        self.check_size(hw)
        for blk in self.blocks:
            x = blk(x, hw)
        return x


class GlobalLocalTransform(nn.Module):
    """FRUFN's global-local transformation (GLT) core: LayerNorm, a Swin-V2 layer, LayerNorm, on
    the pixels of a (B, C, H, W) map taken as tokens (keys ``in_ln``, ``glo``, ``out_ln``).

    The convolutions around it belong to the caller (the UF cell's ``in_conv`` / ``out_conv``,
    the mask generator's ``tran`` / ``proj_out1``), so that key names match the authors' code.
    ``impl="fast"`` runs :func:`~fusecli.models.swin_fast.swin_layer_fast` (same maths, output in
    channels-last memory format), ``"reference"`` the token-tensor formulation.
    Shapes: (B, C, H, W) -> (B, C, H, W), H and W multiples of ``window``.
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, reference_size: int,
                 impl: str = "fast"):
        super().__init__()
        self.impl = _check_impl(impl)
        self.in_ln = nn.LayerNorm(dim)
        self.glo = SwinV2Layer(dim, depth, heads, window, mlp_ratio, reference_size)
        self.out_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.impl == "fast":
            self.glo.check_size((h, w))
            return swin_layer_fast(self.glo, x, self.in_ln, self.out_ln)
        t = self.out_ln(self.glo(self.in_ln(x.flatten(2).transpose(1, 2)), (h, w)))
        return t.transpose(1, 2).reshape(b, c, h, w)


def _cat_channels(name: str, maps: list[torch.Tensor], fast: bool) -> torch.Tensor:
    """``torch.cat(maps, dim=1)``; on the fast path without autograd into the channels-last
    scratch buffer ``name`` (:func:`~fusecli.models.swin_fast.scratch`: the next layer consumes it)."""
    if not fast or torch.is_grad_enabled():
        return torch.cat(maps, dim=1)
    b, _, h, w = maps[0].shape
    out = scratch(name, (b, sum(m.shape[1] for m in maps), h, w), maps[0], channels_last=True)
    return torch.cat(maps, dim=1, out=out)


def _upsample(name: str, x: torch.Tensor, size: tuple[int, int], fast: bool) -> torch.Tensor:
    """Bilinear up-sampling to ``size`` (align_corners=False); on the fast path without autograd into
    the scratch buffer ``name`` (the same kernel as ``F.interpolate``, the same values)."""
    if not fast or torch.is_grad_enabled():
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = scratch(name, (*x.shape[:2], *size), x, channels_last=True)
    return torch.ops.aten.upsample_bilinear2d.out(x, list(size), False, None, None, out=out)


class MaskGenerator(nn.Module):
    """FRUFN's multi-scale mask generator (MSMG, the authors' ``GS_S_Attention``).

    ``proj_in`` (3x3 conv, C+1 -> C) on cat(residual, previous mask); a max-pool pyramid (reflect
    pad 1 + 3x3 max-pool, stride 2; 1/2, 1/4, 1/8) with one ConvNeXt-V2 block per level (``fe2``,
    ``fe4``, ``fe8``), each level pooled from the previous level's block output (the official
    EFRUFN weights track their training target twice as closely this way than with every level
    pooled from the full-size map: docs/frufn.md); bilinear up-sampling back; ``tran`` (3x3 conv, 4C -> C) on
    cat(1/8, 1/4, 1/2, full); LayerNorm + Swin-V2 layer (window 4) + LayerNorm; ``proj_out1``
    (3x3 conv, C -> 2); softmax over the two channels; channel 1 is the mask.

    Shapes: residual (B, C, H, W) and mask (B, 1, H, W) -> mask (B, 1, H, W) in (0, 1); H and W
    multiples of 8 (and of ``window``). ``impl`` as :class:`GlobalLocalTransform` (``"fast"`` also
    keeps every map channels-last and takes the two-channel softmax as ``sigmoid(y1 - y0)``).
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, reference_size: int,
                 impl: str = "fast"):
        super().__init__()
        self.impl = _check_impl(impl)
        self.proj_in = nn.Conv2d(dim + 1, dim, 3, padding=1)
        self.fe2, self.fe4, self.fe8 = ConvNeXtV2Block(dim), ConvNeXtV2Block(dim), ConvNeXtV2Block(dim)
        self.tran = nn.Conv2d(4 * dim, dim, 3, padding=1)
        self.proj_out1 = nn.Conv2d(dim, 2, 3, padding=1)
        self.glt = GlobalLocalTransform(dim, depth, heads, window, mlp_ratio, reference_size, impl)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=2)

    def forward(self, residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = residual.shape[-2:]
        if h % 8 or w % 8:
            raise ShapeError(f"FRUFN mask generator: feature size {w}x{h} is not a multiple of 8; pad the input")
        fast = self.impl == "fast"
        if fast:
            residual, mask = channels_last(residual), channels_last(mask)
        x = self.proj_in(_cat_channels("mask_in", [residual, mask], fast))
        # each level is pooled from the previous level's block output; the fast pool skips the copy
        # of the reflect padding: a reflected border row repeats the row next to it, which the
        # 3x3 window holds anyway, so zero-cost "-inf" padding gives the same maxima exactly
        pool = (lambda t: F.max_pool2d(t, 3, stride=2, padding=1)) if fast else self._pool
        x2 = self.fe2(pool(x), fast)
        x4 = self.fe4(pool(x2), fast)
        x8 = self.fe8(pool(x4), fast)
        up = [_upsample(f"mask_up{i}", level, (h, w), fast) for i, level in enumerate((x8, x4, x2))]
        y = self.glt(self.tran(_cat_channels("mask_levels", [*up, x], fast)))
        if fast:  # softmax over two channels, channel 1 = sigmoid(y1 - y0)
            logits = self.proj_out1(y)
            return torch.sigmoid(logits[:, 1:2] - logits[:, 0:1])
        return torch.softmax(self.proj_out1(y), dim=1)[:, 1:2]


class UFCell(nn.Module):
    """One unfolding (UF) cell of FRUFN, eq. (14) of the paper::

        R = relu(F1 - F)                         (the residual, as in the authors' code)
        M' = G(R, M)                             (MaskGenerator)
        F' = F + M' * out_conv(GLT(in_conv(R)))  (the transformation T)

    FRUFN stacks five (own weights); EFRUFN uses one, weight-shared, as its fixed-point map
    (eqs. 16-18).

    Args: ``forward(f, f1, m, base=None)`` with the state ``f`` and the other source's features
    ``f1`` (B, C, H, W) and the previous mask ``m`` (B, 1, H, W); H, W multiples of 8. With
    ``base`` (B, C, H, W) the update is added to ``base`` instead of ``f`` (``F' = base + M' * T``:
    EFRUFN's input-injected map). Returns (F', M'). ``impl``: ``"fast"`` (default; maps in
    channels-last memory format, :mod:`fusecli.models.swin_fast`) or ``"reference"``; the same
    parameters and maths, results equal to float rounding.
    """

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 8, glt_window: int = 2,
                 mask_window: int = 4, mlp_ratio: float = 3.0, reference_size: int = 128, impl: str = "fast"):
        super().__init__()
        self.impl = _check_impl(impl)
        self.in_conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.glt = GlobalLocalTransform(dim, depth, heads, glt_window, mlp_ratio, reference_size, impl)
        self.out_conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.mask = MaskGenerator(dim, depth, heads, mask_window, mlp_ratio, reference_size, impl)

    def transform(self, residual: torch.Tensor) -> torch.Tensor:
        """T(R): (B, C, H, W) -> (B, C, H, W)."""
        return self.out_conv(self.glt(self.in_conv(residual)))

    def forward(self, f: torch.Tensor, f1: torch.Tensor, m: torch.Tensor,
                base: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.impl == "fast":  # channels-last maps, F' = base + M' * T(R) as one addcmul
            f, f1 = channels_last(f), channels_last(f1)
            residual = (f1 - f).relu_()
            m = self.mask(residual, m)
            return torch.addcmul(f if base is None else base, m, self.transform(residual)), m
        residual = torch.relu(f1 - f)
        m = self.mask(residual, m)
        return (f if base is None else base) + m * self.transform(residual), m
