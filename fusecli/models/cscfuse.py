"""CSC-IVF: deep convolutional sparse coding network for infrared-visible fusion (CSCFuse).

Paper: Z. Zhao, J. Zhang, H. Bai, Y. Wang, Y. Cui, L. Deng, K. Sun, C. Zhang, J. Liu, S. Xu,
"Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion", CVPR Workshops 2023
(no DOI is printed in the paper text we hold; ../shared/papers/cscfuse.txt).
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
  rounding (``tests/test_cscfuse.py`` keeps the NumPy/OpenCV version as the reference).
* Output: the official test script writes ``(255 x).astype(uint8)``, which truncates; fusecli
  rounds, like every model (a mean difference of half a grey level).

Tiling: the saliency rule uses whole-channel statistics (min, max, histogram), so with it one
output pixel depends on the whole image (``receptive_radius`` is ``None``: tiled output differs
from untiled). The ``"l1"``, ``"average"`` and ``"add"`` rules are local (radius 24).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from .layers import DCU, SoftThreshold, box_blur, guided_filter

__all__ = ["CSCIVFConfig", "SoftThreshold", "DCU", "Branch", "CSCIVF", "l1_attention", "histogram_saliency",
           "saliency_weights", "convert_official"]

FUSION_RULES = ("saliency", "l1", "average", "add")


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
    """

    channels: int = 64
    units: int = 8
    blur_size: int = 11
    fusion: str = "saliency"
    guided_radius: int = 45
    guided_eps: float = 0.01

    def __post_init__(self) -> None:
        if self.fusion not in FUSION_RULES:
            raise ConfigError(f"CSC-IVF fusion must be one of {', '.join(FUSION_RULES)}, got {self.fusion!r}")
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
    itself is OpenCV's (``impl="auto"``), which is faster there.

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


class CSCIVF(nn.Module):
    """CSC-IVF fusion network: base and detail CSC encoders, a shared decoder, a fusion rule.

    ``forward(ir, vis)`` takes two (B, 1, H, W) float32 tensors in [0, 1] (infrared, visible
    luminance) and returns the fused (B, 1, H, W) image in [0, 1].
    """

    #: roles of the inputs, in order
    inputs = ("ir", "vis")
    #: inputs need no padding to a multiple
    pad_multiple = 1

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
        #: smallest height / width: the reflect-padded box blur needs blur_size // 2 + 1 pixels
        self.min_size = max(c.blur_size // 2 + 1, 2)

    @property
    def receptive_radius(self) -> int | None:
        """Context one output pixel depends on; ``None`` (unbounded) for the global saliency rule.

        Blur ``blur_size // 2``, first unit 1 (encoder only), each later unit 2 (decoder + encoder),
        decoder 3, and 1 for the 3x3 mean of the L1 rule.
        """
        c = self.config
        if c.fusion == "saliency":
            return None
        return c.blur_size // 2 + 1 + 2 * (c.units - 1) + 3 + (1 if c.fusion == "l1" else 0)

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base and detail codes of ``img`` (B, 1, H, W); each (B, C, H, W)."""
        return self.base(img), self.detail(img)

    def decode(self, base: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) codes -> (B, 1, H, W) image in (0, 1): ``sigmoid(dec(base) + dec(detail))``."""
        return torch.sigmoid(self.decoder(base) + self.decoder(detail))

    def reconstruct(self, img: torch.Tensor) -> torch.Tensor:
        """Auto-encoder pass (the training objective): decode(encode(img)), (B, 1, H, W)."""
        return self.decode(*self.encode(img))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
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
