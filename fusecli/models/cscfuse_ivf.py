"""CSC-IVF: deep convolutional sparse coding network for infrared-visible fusion (CSCFuse).

Paper: Z. Zhao, J. Zhang, H. Bai, Y. Wang, Y. Cui, L. Deng, K. Sun, C. Zhang, J. Liu, S. Xu,
"Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion", CVPR Workshops 2023
(no DOI is printed in the paper).
Official code: github.com/Zhaozixiang1228/IF-CSCFuse @ cc50059, folder ``CSC-IVF`` (weights: three
legacy pickles ``LISTA_Base_Train.model``, ``LISTA_Detail_Train.model``, ``LISTA_Decoder.model``).
This module is the IVF network only (CSC-MEF and CSC-MSF are separate models).

What is unrolled
----------------
Convolutional sparse coding, ``min_z 1/2 ||x - D z||^2 + lambda ||z||_1`` with a convolutional
dictionary ``D``, solved by ISTA. One *dictionary convolution unit* (DCU, :class:`DCU`) is one ISTA
step with learned operators::

    z <- act(BN(z + E(x - D z)))        D: 64->1 3x3 conv ("Dec"), E: 1->64 3x3 conv ("Enc")

with reflect padding, no biases, ``act`` = PReLU(64) in the base branch and the soft threshold
``sign(y) relu(|y| - theta_c)`` (SST, learned theta per channel, not clamped) in the detail branch.
The DCU and the SST are shared with CSC-MEF and CSC-MSF (:mod:`fusecli.models.layers`).
Each branch (:class:`Branch`) is 8 DCUs: the first starts from ``z = 0`` and sees the *filtered*
image (base: 11x11 box blur, detail: image - blur), the 7 later ones see the *raw* image (as the
official code: it is what makes the auto-encoder reconstruct at ~30 dB). A shared decoder
(3 x [reflect pad, 3x3 conv, BN], 64 -> 32 -> 16 -> 1, no activations) maps the base code and the
detail code to one channel each; their sum goes through a sigmoid.

Test-time fusion (official ``Test.py`` / ``fusion_layer.py``): the 64-channel base codes of the
two sources are fused by the saliency-weighted rule (:func:`saliency_weights`), the detail codes by
L1 attention (:func:`l1_attention`), each result multiplied by 2, then decoded.

Deviations from the official code
---------------------------------
* The first DCU computes ``E(x)`` directly: its decoder acts on a zero code, so its stored
  ``de_conv0`` weight is loaded (strict) but never used.
* Constant feature channels: the official min-max normalisation divides by zero (NaN weights, NaN
  output). Here a constant channel normalises to zeros, which gives it equal weights (0.5 / 0.5).
  The L1 attention likewise gives 0.5 / 0.5 where both activities are zero (official: NaN).
* Parameters are device-agnostic (the official code calls ``.cuda()``). The saliency rule runs in
  torch on the model's device, all channels at once (the official code loops over the 64 channels
  in NumPy and ``cv2.ximgproc.guidedFilter``); its weights equal the official ones to float
  rounding (``tests/test_cscfuse_ivf.py`` keeps the NumPy/OpenCV version as the reference).
* Output: the official test script writes ``(255 x).astype(uint8)``, which truncates; fusecli
  rounds, like every model (a mean difference of half a grey level).

Tiling: the saliency rule uses whole-channel statistics (min, max, histogram), so with it one
output pixel depends on the whole image (``receptive_radius`` is ``None``: tiled output differs
from untiled). The ``"l1"``, ``"average"`` and ``"add"`` rules are local (radius 24).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from ._contract import FusionModel, ModelSpec
from . import _csc_fast as _fast
from .layers import DCU, SoftThreshold, box_blur, guided_filter, guided_filter_plane

__all__ = ["CSCIVFConfig", "SoftThreshold", "DCU", "Branch", "CSCIVF", "l1_attention", "histogram_saliency",
           "saliency_weights", "convert_official"]

FUSION_RULES = ("saliency", "l1", "average", "add")
PATHS = ("fast", "reference")


@dataclass(frozen=True)
class CSCIVFConfig:
    """Hyper-parameters of CSC-IVF; the defaults are the published model.

    Attributes:
        channels: code channels (filters of each DCU's encoder; 64).
        units: DCUs per branch, the first included (official: ``convLayer0`` + 7 ``ista_iters`` = 8).
        blur_size: box-blur size of the base / detail split (11).
        fusion: test-time fusion rule, always followed by the official factor 2:
            ``"saliency"`` (the official and paper's: saliency-weighted base, L1-attention detail),
            ``"l1"`` (L1 attention for both), ``"average"`` (mean for both, i.e. ``2 * (a + b) / 2``,
            the official ``Average`` mode) or ``"add"`` (sum for both, ``2 * (a + b)``, the official
            ``Sum`` mode).
        guided_radius: radius of the guided filter that refines the saliency weights (45).
        guided_eps: its regularisation (0.01).
        path: ``"fast"`` (inference on the CPU in eval mode without autograd runs the matrix form
            of :mod:`fusecli.models._csc_fast`: BatchNorm folded, codes updated in place in cache-sized
            blocks, sources side by side; one decoder pass) or ``"reference"`` (the module-by-module
            computation everywhere, the test oracle). Training, autograd and other devices always
            take the reference path.
    """

    channels: int = 64
    units: int = 8
    blur_size: int = 11
    fusion: str = "saliency"
    guided_radius: int = 45
    guided_eps: float = 0.01
    path: str = "fast"

    def __post_init__(self) -> None:
        if self.fusion not in FUSION_RULES:
            raise ConfigError(f"CSC-IVF fusion must be one of {', '.join(FUSION_RULES)}, got {self.fusion!r}")
        if self.path not in PATHS:
            raise ConfigError(f"CSC-IVF path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if self.channels < 1 or self.units < 1:
            raise ConfigError("CSC-IVF needs at least one channel and one unit")
        if self.blur_size < 1 or self.blur_size % 2 == 0:
            raise ConfigError("CSC-IVF blur_size must be odd and positive")
        if self.guided_radius < 1 or self.guided_eps <= 0:
            raise ConfigError("CSC-IVF guided_radius must be >= 1 and guided_eps > 0")


class Branch(nn.Module):
    """One CSC encoder (the official ``CsrNet``): ``units`` DCUs, the first fed the filtered image.

    Args:
        kind: ``"base"`` (first unit sees ``blur(img)``, PReLU) or ``"detail"`` (``img - blur(img)``, SST).
        channels, units, blur_size: see :class:`CSCIVFConfig`.
    """

    def __init__(self, kind: str, channels: int = 64, units: int = 8, blur_size: int = 11):
        super().__init__()
        self.kind = kind
        self.blur_size = blur_size
        self.units = nn.ModuleList(DCU(channels, "prelu" if kind == "base" else "sst") for _ in range(units))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img: (B, 1, H, W) in [0, 1], H, W > blur_size // 2. Returns the (B, C, H, W) code."""
        blur = box_blur(img, self.blur_size)
        code = self.units[0](blur if self.kind == "base" else img - blur)
        for unit in self.units[1:]:
            code = unit(img, code)
        return code


def l1_attention(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 attention fusion (official ``l1_addition``) of two (B, C, H, W) feature maps.

    Activity ``A = mean_3x3(sum_c |f|)`` (zero padding); weights ``A_a / (A_a + A_b)`` and
    ``A_b / (A_a + A_b)``, 0.5 each where both activities are 0 (official: NaN). Returns (B, C, H, W).
    """
    act_a = F.avg_pool2d(a.abs().sum(1, keepdim=True), 3, stride=1, padding=1, count_include_pad=True)
    act_b = F.avg_pool2d(b.abs().sum(1, keepdim=True), 3, stride=1, padding=1, count_include_pad=True)
    total = act_a + act_b
    w = torch.where(total > 0, act_a / total.clamp_min(1e-30), torch.full_like(total, 0.5))
    return w * a + (1 - w) * b


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each channel of (N, C, H, W) to [0, 1]; a constant channel becomes 0."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    span = x.amax(dim=(2, 3), keepdim=True) - lo
    ok = span > 0
    return (x - lo).div_(torch.where(ok, span, torch.ones_like(span))).mul_(ok)


def _distance_table(device: torch.device) -> torch.Tensor:
    """|i - j| for 8-bit levels i, j (the official cdist table), (256, 256) float64."""
    levels = torch.arange(256, dtype=torch.float64, device=device)
    return (levels[:, None] - levels[None, :]).abs()


def histogram_saliency(norm: torch.Tensor) -> torch.Tensor:
    """Histogram saliency per channel: ``s(v) = sum_j hist(j) |v - j|`` on ``v = int(255 x)``.

    Args:
        norm: (N, C, H, W) float32 in [0, 1] (min-max normalised channels).

    Returns:
        (N, C, H, W) float32 saliency (the level table is computed in float64), ``hist``
        normalised by the pixel count (official ``saliency_weight``: levels truncated, not rounded).
    """
    n, c, h, w = norm.shape
    q = (norm * 255).long().clamp_(0, 255).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.float64, device=norm.device)
    hist.scatter_add_(1, q, torch.ones(1, 1, dtype=torch.float64, device=norm.device).expand_as(q))
    table = (hist / (h * w)) @ _distance_table(norm.device)  # (N*C, 256): s for every level
    return table.float().gather(1, q).reshape(n, c, h, w)


#: channels per chunk of the saliency rule: bounds its memory to about 40 bytes x chunk x H x W
_SALIENCY_CHUNK = 16


def saliency_weights(
    ir: torch.Tensor, vis: torch.Tensor, radius: int = 45, eps: float = 0.01, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel saliency weights of the official ``saliency_weight`` (weights sum to 1).

    For each channel: min-max normalise both sources (a constant channel becomes zeros),
    histogram saliency on the truncated 8-bit levels (:func:`histogram_saliency`),
    ``P = (s + 1e-12) / sum``, guided filter of each ``P`` with that source's normalised channel as
    guide (:func:`~fusecli.models.layers.guided_filter`, OpenCV's ``BORDER_REFLECT`` border, as
    ``cv2.ximgproc.guidedFilter``), ``+ 1e-12`` and renormalise. All channels at once in torch,
    on the tensors' device (chunks of channels bound the memory); on the CPU the guided filter
    itself is OpenCV's (``impl="auto"``: ``ximgproc`` with the contrib wheel, else plain box
    filters, :func:`~fusecli.models.layers.guided_filter_plane`), which is faster there.

    Args:
        ir, vis: (N, C, H, W) float feature maps (any range).
        radius, eps: guided filter parameters (official: 45, 0.01).
        impl: the guided filter's implementation (see :func:`~fusecli.models.layers.guided_filter`).

    Returns:
        ``(w_ir, w_vis)``, each (N, C, H, W) float32, ``w_ir + w_vis == 1`` (to float rounding).

    Raises:
        ShapeError: ``ir`` and ``vis`` are not (N, C, H, W) tensors of one shape.
    """
    if ir.dim() != 4 or ir.shape != vis.shape:
        raise ShapeError(f"saliency_weights expects two (N, C, H, W) tensors of one shape, got "
                         f"{tuple(ir.shape)} and {tuple(vis.shape)}")
    w_ir = torch.empty(ir.shape, dtype=torch.float32, device=ir.device)
    for c0 in range(0, ir.shape[1], _SALIENCY_CHUNK):
        c1 = min(c0 + _SALIENCY_CHUNK, ir.shape[1])
        norm = _normalise(torch.cat([ir[:, c0:c1], vis[:, c0:c1]]).float())  # (2N, c, H, W): ir then vis
        n = ir.shape[0]
        p = histogram_saliency(norm).add_(1e-12)
        total = p[:n] + p[n:]
        p[:n] /= total  # P_ir = s_ir / (s_ir + s_vis)
        p[n:] /= total
        w = guided_filter(norm, p, radius, eps, impl=impl).add_(1e-12)
        w_ir[:, c0:c1] = w[:n] / (w[:n] + w[n:])
    return w_ir, 1 - w_ir


class CSCIVF(FusionModel):
    """CSC-IVF fusion network: base and detail CSC encoders, a shared decoder, a fusion rule.

    ``forward(ir, vis)`` takes two (B, 1, H, W) float32 tensors in [0, 1] (infrared, visible
    luminance) and returns the fused (B, 1, H, W) image in [0, 1].
    """

    def __init__(self, config: CSCIVFConfig | None = None):
        super().__init__()
        self.config = config or CSCIVFConfig()
        c = self.config
        self.base = Branch("base", c.channels, c.units, c.blur_size)
        self.detail = Branch("detail", c.channels, c.units, c.blur_size)
        half, quarter = c.channels // 2, c.channels // 4
        self.decoder = nn.Sequential(  # indices as the official decode_last.{1,2,4,5,7,8}
            nn.ReflectionPad2d(1), nn.Conv2d(c.channels, half, 3, bias=False), nn.BatchNorm2d(half),
            nn.ReflectionPad2d(1), nn.Conv2d(half, quarter, 3, bias=False), nn.BatchNorm2d(quarter),
            nn.ReflectionPad2d(1), nn.Conv2d(quarter, 1, 3, bias=False), nn.BatchNorm2d(1),
        )

    @property
    def spec(self) -> ModelSpec:
        """An infrared-visible pair of luminance images; smallest side: the reflect-padded box blur
        needs ``blur_size // 2 + 1`` pixels. Receptive radius: ``None`` (unbounded) for the global
        saliency rule; else blur ``blur_size // 2``, first unit 1 (encoder only), each later unit 2
        (decoder + encoder), decoder 3, and 1 for the 3x3 mean of the L1 rule."""
        c = self.config
        radius = None
        if c.fusion != "saliency":
            radius = c.blur_size // 2 + 1 + 2 * (c.units - 1) + 3 + (1 if c.fusion == "l1" else 0)
        return ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1,
                         min_size=max(c.blur_size // 2 + 1, 2), receptive_radius=radius, tileable=True)

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base and detail codes of ``img`` (B, 1, H, W); each (B, C, H, W)."""
        return self.base(img), self.detail(img)

    def decode(self, base: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) codes -> (B, 1, H, W) image in (0, 1): ``sigmoid(dec(base) + dec(detail))``."""
        return torch.sigmoid(self.decoder(base) + self.decoder(detail))

    def reconstruct(self, img: torch.Tensor) -> torch.Tensor:
        """Auto-encoder pass (the training objective): decode(encode(img)), (B, 1, H, W)."""
        return self.decode(*self.encode(img))

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` takes the fast path for input ``x``: ``path="fast"``, eval mode, no
        autograd, a float32 CPU tensor."""
        return (self.config.path == "fast" and not self.training and not torch.is_grad_enabled()
                and x.device.type == "cpu" and x.dtype == torch.float32)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        if self.uses_fast_path(ir):
            with _fast.task_threads():
                return self._forward_fast(ir, vis)
        # Both sources through the encoders in one batch (BatchNorm is per-sample in eval mode).
        base, detail = self.encode(torch.cat([ir, vis], dim=0))
        b = ir.shape[0]
        rule = self.config.fusion
        if rule == "saliency":
            fused_base, fused_detail = self._saliency(base[:b], base[b:]), l1_attention(detail[:b], detail[b:])
        elif rule == "l1":
            fused_base, fused_detail = l1_attention(base[:b], base[b:]), l1_attention(detail[:b], detail[b:])
        elif rule == "average":
            fused_base, fused_detail = (base[:b] + base[b:]) / 2, (detail[:b] + detail[b:]) / 2
        else:  # add
            fused_base, fused_detail = base[:b] + base[b:], detail[:b] + detail[b:]
        return self.decode(2 * fused_base, 2 * fused_detail)

    def _saliency(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Saliency-weighted fusion of (B, C, H, W) codes (:func:`saliency_weights`)."""
        w = saliency_weights(ir, vis, self.config.guided_radius, self.config.guided_eps)[0].to(ir.dtype)
        return w * ir + (1 - w) * vis

    # --- the fast path (inference) ------------------------------------------------------------------

    def _forward_fast(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """``forward`` at inference in matrix form (see ``path`` in :class:`CSCIVFConfig`).

        Codes: base channels first (B2, C, H, W) for the saliency rule, detail channels last
        (B2 H W, C) for the L1 rule (B2 = 2 B: the infrared images, then the visible ones). The
        decoder is affine (reflect padding, convolutions, eval BatchNorm), so
        ``dec(2 a) + dec(2 b) = dec(2 (a + b)) + dec(0)``: one decoder pass instead of two.
        """
        c = self.config
        b, _, h, w = ir.shape
        x = torch.cat([ir, vis]).contiguous()
        blur = box_blur(x, c.blur_size)
        base = x.new_empty(2 * b, c.channels, h, w)
        detail = x.new_empty(2 * b * h * w, c.channels)
        base_units = [_fast.fold_dcu(u) for u in self.base.units[1:]]
        detail_units = [_fast.fold_dcu(u) for u in self.detail.units[1:]]
        base_first, detail_first = (_fast.fold_first(br.units[0].enc.weight, br.units[0].act, br.units[0].norm)
                                    for br in (self.base, self.detail))

        def encode_one(i: int) -> None:  # base code through the detail slot as work space, then the detail code
            rows = detail[i * h * w:(i + 1) * h * w]
            _fast.run_chain(blur[i], x[i], base_first, base_units, out=rows, planar=base[i])
            _fast.run_chain(x[i] - blur[i], x[i], detail_first, detail_units, out=rows)

        _fast.run_parallel([lambda i=i: encode_one(i) for i in range(2 * b)])
        fused_base = self._fuse_base_fast(base[:b], base[b:])  # in place in base[:b]
        fused_detail = _l1_fuse_rows_(detail[:b * h * w], detail[b * h * w:], b, h, w) \
            if c.fusion in ("saliency", "l1") else _plain_fuse_(detail[:b * h * w], detail[b * h * w:], c.fusion)
        # z = 2 (fused base + fused detail), channels first
        z = fused_base.add_(fused_detail.view(b, h, w, c.channels).permute(0, 3, 1, 2)).mul_(2)
        return torch.sigmoid(self._decode_affine(z))

    def _fuse_base_fast(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """The base rule on (B, C, H, W) codes, written into ``ir``."""
        rule = self.config.fusion
        if rule == "saliency":
            radius, eps = self.config.guided_radius, self.config.guided_eps
            ir_np, vis_np = ir.numpy(), vis.numpy()
            jobs = [lambda n=n, ch=ch: _saliency_fuse_plane(ir_np[n, ch], vis_np[n, ch], radius, eps)
                    for ch in range(ir.shape[1]) for n in range(ir.shape[0])]
            _fast.run_parallel(jobs)
            return ir
        if rule == "l1":
            return ir.copy_(l1_attention(ir, vis))
        return _plain_fuse_(ir, vis, rule)

    def _decode_affine(self, z: torch.Tensor) -> torch.Tensor:
        """``dec(z) + dec(0)`` before the sigmoid for (B, C, H, W) ``z``, BatchNorm folded.

        The decoder's linear part is one 7x7 correlation ``K`` (C -> 1) away from the border: the
        49 tap projections ``K_k . z`` are one matrix product, summed with their shifts. The three
        rows and columns at each border (where the per-layer reflect padding enters) come from the
        three layers run on 6-pixel strips along the border.
        """
        folded = []
        layers = list(self.decoder)
        for i in range(0, len(layers), 3):
            s, t = _fast.fold_bn(layers[i + 2])
            folded.append((layers[i + 1].weight * s.view(-1, 1, 1, 1), t))

        def layered(x: torch.Tensor) -> torch.Tensor:
            for weight, bias in folded:
                x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)
            return x

        offset = layered(z.new_zeros(1, z.shape[1], 2, 2))[0, 0, 0, 0]  # dec(0): a constant image
        b, c, h, w = z.shape
        r = len(folded)  # radius of the composed kernel
        if min(h, w) < 4 * r:
            return layered(z).add_(offset)
        # K from the impulse responses of the linear part, one impulse per input channel (a
        # correlation's impulse response is its kernel flipped; the first layer's is its weight)
        k = 2 * r + 1
        first = folded[0][0]
        probe = z.new_zeros(c, first.shape[0], 2 * k - 3, 2 * k - 3)
        probe[:, :, k - 3:k, k - 3:k] = first.permute(1, 0, 2, 3).flip(-1, -2)
        for weight, _ in folded[1:]:
            probe = F.conv2d(probe, weight)
        kernel = probe.flip(-1, -2).reshape(c, k * k).t().contiguous()  # (49, C): row u k + v
        out = z.new_empty(b, 1, h, w)

        def band(n: int, y0: int, y1: int) -> None:  # interior output rows y0..y1-1
            rows = z[n, :, y0 - r:y1 + r].reshape(c, -1)
            taps = torch.mm(kernel, rows).view(k * k, y1 - y0 + 2 * r, w)
            inner = out[n, 0, y0:y1, r:w - r]
            torch.add(taps[0, :y1 - y0, :w - 2 * r], 2 * offset, out=inner)  # dec(z) = L z + dec(0), + dec(0)
            for j in range(1, k * k):
                u, v = divmod(j, k)
                inner += taps[j, u:u + y1 - y0, v:v + w - 2 * r]

        step = max(16, -(-(h - 2 * r) // 4))
        _fast.run_parallel([lambda n=n, y0=y0: band(n, y0, min(y0 + step, h - r))
                            for n in range(b) for y0 in range(r, h - r, step)])
        strip = 2 * r
        out[:, :, :r] = layered(z[:, :, :strip])[:, :, :r]
        out[:, :, h - r:] = layered(z[:, :, h - strip:])[:, :, strip - r:]
        out[:, :, :, :r] = layered(z[:, :, :, :strip])[:, :, :, :r]
        out[:, :, :, w - r:] = layered(z[:, :, :, w - strip:])[:, :, :, strip - r:]
        border = torch.ones(h, w, dtype=torch.bool, device=z.device)
        border[r:h - r, r:w - r] = False
        out[:, :, border] += offset
        return out


def _saliency_fuse_plane(ir: np.ndarray, vis: np.ndarray, radius: int, eps: float) -> None:
    """:func:`saliency_weights` fusion of one channel, written into ``ir`` (H, W) float32.

    The same arithmetic as the batched torch version, on one plane with NumPy / OpenCV (the
    histogram by ``bincount``, the level table looked up by ``cv2.LUT``), so that the channels can
    run side by side (:func:`~fusecli.models._csc_fast.run_parallel`).
    """
    n_ir, n_vis = _normalise_plane(ir), _normalise_plane(vis)
    p_ir, p_vis = _plane_saliency(n_ir) + np.float32(1e-12), _plane_saliency(n_vis) + np.float32(1e-12)
    total = p_ir + p_vis
    p_ir /= total
    p_vis /= total
    w_ir = guided_filter_plane(n_ir, p_ir, radius, eps) + np.float32(1e-12)
    w_vis = guided_filter_plane(n_vis, p_vis, radius, eps) + np.float32(1e-12)
    w = w_ir / (w_ir + w_vis)
    ir[...] = w * ir + (1 - w) * vis


def _normalise_plane(x: np.ndarray) -> np.ndarray:
    """:func:`_normalise` of one (H, W) float32 plane."""
    lo = x.min()
    span = x.max() - lo
    return (x - lo) / span if span > 0 else np.zeros_like(x)


_DISTANCE_NP = np.abs(np.arange(256, dtype=np.float64)[:, None] - np.arange(256, dtype=np.float64)[None, :])


def _plane_saliency(norm: np.ndarray) -> np.ndarray:
    """:func:`histogram_saliency` of one (H, W) float32 plane in [0, 1]."""
    q = (norm * 255).astype(np.uint8)
    hist = np.bincount(q.ravel(), minlength=256)
    table = (hist / q.size) @ _DISTANCE_NP
    return cv2.LUT(q, table.astype(np.float32))


def _l1_fuse_rows_(a: torch.Tensor, b: torch.Tensor, batch: int, h: int, w: int) -> torch.Tensor:
    """:func:`l1_attention` of channels-last (B H W, C) codes, written into ``a``."""
    act_a = torch.linalg.vector_norm(a, 1, dim=1).view(batch, 1, h, w)
    act_b = torch.linalg.vector_norm(b, 1, dim=1).view(batch, 1, h, w)
    act_a = F.avg_pool2d(act_a, 3, stride=1, padding=1, count_include_pad=True)
    act_b = F.avg_pool2d(act_b, 3, stride=1, padding=1, count_include_pad=True)
    total = act_a + act_b
    weight = torch.where(total > 0, act_a / total.clamp_min(1e-30), torch.full_like(total, 0.5)).view(-1, 1)
    return a.mul_(weight).addcmul_(b, 1 - weight)


def _plain_fuse_(a: torch.Tensor, b: torch.Tensor, rule: str) -> torch.Tensor:
    """The ``"average"`` or ``"add"`` rule, written into ``a``."""
    return a.add_(b).div_(2) if rule == "average" else a.add_(b)


_UNIT_PARTS = {
    "conv.conv_decoder.de_conv0.conv2d.weight": "dec.weight",
    "conv.conv_encoder.en_conv0.conv2d.weight": "enc.weight",
    "activation.weight": "act.weight",
    "activation.theta": "act.theta",
}
_OFFICIAL_FILES = {"LISTA_Base_Train": "base", "LISTA_Detail_Train": "detail", "LISTA_Decoder": "decoder"}


def _official_unit_key(branch: str, key: str) -> str | None:
    """``convLayer0.X`` -> ``BRANCH.units.0.Y``, ``convLayer.i.X`` -> ``BRANCH.units.{i+1}.Y``."""
    if key.startswith("convLayer0."):
        index, rest = 0, key[len("convLayer0."):]
    elif key.startswith("convLayer."):
        number, _, rest = key[len("convLayer."):].partition(".")
        if not number.isdigit():
            return None
        index = int(number) + 1
    else:
        return None
    if rest.startswith("norm."):
        return f"{branch}.units.{index}.{rest}"
    part = _UNIT_PARTS.get(rest)
    return f"{branch}.units.{index}.{part}" if part else None


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the official CSC-IVF key layout onto :class:`CSCIVF`'s.

    The official checkpoint is three files whose base and detail networks share key names, so the
    folder loader returns them as ``"<file stem>/<key>"``: ``LISTA_Base_Train/convLayer0.*``,
    ``LISTA_Base_Train/convLayer.{0..6}.*``, the same under ``LISTA_Detail_Train/``, and
    ``LISTA_Decoder/decode_last.{1,2,4,5,7,8}.*``. Decoder keys without a prefix (the decoder file
    on its own) and keys already in fusecli's layout pass through.

    Raises:
        CheckpointError: if a key belongs to neither layout.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        stem, sep, rest = key.rpartition("/")
        target: str | None = None
        if not sep and key.split(".", 1)[0] in ("base", "detail", "decoder"):
            target = key
        elif not sep and key.startswith("decode_last."):
            target = "decoder." + key[len("decode_last."):]
        elif sep and _OFFICIAL_FILES.get(stem) == "decoder" and rest.startswith("decode_last."):
            target = "decoder." + rest[len("decode_last."):]
        elif sep and _OFFICIAL_FILES.get(stem) in ("base", "detail"):
            target = _official_unit_key(_OFFICIAL_FILES[stem], rest)
        if target is None:
            raise CheckpointError(
                f"key {key!r} is not a CSC-IVF key (expected LISTA_Base_Train/convLayer*, "
                "LISTA_Detail_Train/convLayer*, LISTA_Decoder/decode_last.* from the official folder, "
                "or base.*, detail.*, decoder.* from fusecli)"
            )
        out[target] = value
    return out
