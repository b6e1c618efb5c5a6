"""AUIF: algorithm-unrolling image fusion (Zhao et al., IEEE TCSVT 2021).

Paper: Z. Zhao, S. Xu, J. Zhang, C. Liang, C. Zhang, J. Liu, "Efficient and Model-Based Infrared and
Visible Image Fusion via Algorithm Unrolling", IEEE TCSVT 32(3), 2022, doi:10.1109/TCSVT.2021.3075745.
Official code: github.com/Zhaozixiang1228/IVIF-AUIF-Net @ 8f54650 (weights: three legacy pickles).

What is unrolled
----------------
Each source image I is split into a base (low-frequency) and a detail (high-frequency) part by two
encoders. Each encoder is 10 unrolled gradient steps on

    min_x  1/2 ||K x||^2 + theta/2 ||I - x||^2            (K: a learned 1->64 3x3 convolution)

whose update is ``x <- x - eta * (act(K^T K x) - theta * (I - x))`` with ``act`` = BatchNorm + PReLU
(see :class:`Stage`). The base encoder starts from an 11x11 box blur of I, the detail encoder from a
normalised 19x19 Laplacian of I. At test time the base parts of the two sources are added, the
detail parts are added, and a small decoder (3x3 conv, BN, sigmoid) maps the sum to the fused image.

Faithfulness
------------
The module tree, the reflect borders, the normalised Laplacian and the Sum fusion follow the
official code, so the official checkpoint reproduces the authors' published fused images (the
authors write ``round(255 * x)`` as uint8). The official state lives in 1 channel: "C = 64" in the
paper is only the filter count inside each stage's operator.

Speed
-----
``K^T K`` costs 2 x 64 x 9 multiply-adds per pixel when computed as two convolutions. Away from the
border the two 3x3 convolutions compose into ONE single-channel 5x5 kernel, ``sum_c rot180(k_c) * k_c``
(25 multiply-adds per pixel). The official code reflects the 64-channel intermediate at the border,
which a 5x5 kernel on a reflect-padded input does not reproduce on the outermost row and column;
those are exact with their own single-channel 3x5 / 5x3 kernels, and the four corner pixels use the
direct operator on 3x3 patches. All these kernels are read off the direct operator by probing it
with impulses (:meth:`Stage.composed_kernels`), so they follow the learned kernel, gradients
included. ``AUIFConfig(operator="direct")`` keeps the original two-convolution path (used by tests
as the reference).

Deviations from the official code
---------------------------------
* Parameters are created device-agnostic (the official code calls ``.cuda()`` in ``__init__``).
* ``forward`` returns tensors only (the official layers return ``eta.item()`` for logging).
* The box blur and the Laplacian are computed as running sums (``avg_pool2d``) instead of dense
  11x11 / 19x19 convolutions: same values up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ._contract import FusionModel, ModelSpec
from .layers import box_blur

__all__ = ["AUIFConfig", "Stage", "AUIF", "unrolled_encode", "calibrate_sum_offset", "convert_official"]


@dataclass(frozen=True)
class AUIFConfig:
    """Hyper-parameters of AUIF; the defaults are the published model.

    Attributes:
        layers: unrolled stages per encoder (paper: 10).
        filters: filters of each stage's operator K (paper: 64).
        blur_size: box-blur size that initialises the base encoder (11).
        laplacian_size: Laplacian size that initialises the detail encoder (19).
        fusion: test-time fusion rule of the encoded features: ``"sum"`` (the paper's), ``"average"``
            or ``"l1"`` (weights from the 3x3 mean of |feature|, as the official ``l1_norm`` mode).
        operator: ``"composed"`` (fast, one 5x5 kernel with exact borders) or ``"direct"``
            (the two 3x3 convolutions of the official code).
        sum_offset: constant added to the summed base features by the ``"sum"`` rule (0 for the
            official model). See :func:`calibrate_sum_offset`.
    """

    layers: int = 10
    filters: int = 64
    blur_size: int = 11
    laplacian_size: int = 19
    fusion: str = "sum"
    operator: str = "composed"
    sum_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.fusion not in ("sum", "average", "l1"):
            raise ConfigError(f"AUIF fusion must be 'sum', 'average' or 'l1', got {self.fusion!r}")
        if self.operator not in ("composed", "direct"):
            raise ConfigError(f"AUIF operator must be 'composed' or 'direct', got {self.operator!r}")
        if self.layers < 1 or self.filters < 1:
            raise ConfigError("AUIF needs at least one layer and one filter")
        if self.blur_size % 2 == 0 or self.laplacian_size % 2 == 0:
            raise ConfigError("AUIF filter sizes must be odd")


def normalized_laplacian(x: torch.Tensor, size: int) -> torch.Tensor:
    """kornia ``Laplacian(size)`` (normalised, reflect border) of ``x``.

    The kernel is all ones with ``1 - size**2`` at the centre, divided by the sum of its absolute
    values ``2 * (size**2 - 1)``; applied as ``(box_sum - size**2 * x) / (2 * (size**2 - 1))``.

    Args:
        x: (B, C, H, W) tensor; H and W must exceed ``size // 2``.
    """
    n = size * size
    box_sum = box_blur(x, size) * n
    return (box_sum - n * x) / (2 * (n - 1))


def _correlate(padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Valid correlation of (B, 1, H, W) with one small (1, 1, kh, kw) kernel.

    On the CPU without autograd, a sum of shifted copies is about 5x faster than oneDNN's
    convolution for a single channel (same values); elsewhere ``conv2d``.
    """
    if padded.device.type != "cpu" or torch.is_grad_enabled():
        return F.conv2d(padded, kernel)
    kh, kw = kernel.shape[-2:]
    h, w = padded.shape[-2] - kh + 1, padded.shape[-1] - kw + 1
    taps = kernel.flatten().tolist()
    out = padded[..., :h, :w] * taps[0]
    for idx in range(1, kh * kw):
        i, j = divmod(idx, kw)
        out.add_(padded[..., i:i + h, j:j + w], alpha=taps[idx])
    return out


class Stage(nn.Module):
    """One unrolled gradient step of AUIF (the official ``BCL`` / ``DCL``; both are this code).

    ``x_next = x - eta * (act(K^T K x) - theta * (img - x))``, where ``K`` is a 1->F 3x3 convolution
    with reflect padding, ``K^T`` its adjoint (the kernel rotated by 180 degrees, in/out swapped,
    again with reflect padding), and ``act`` is BatchNorm2d(1) followed by PReLU. ``kernel``,
    ``eta``, ``theta`` and ``act`` are learned; each stage has its own.

    Args:
        filters: number of filters of ``K``.
        operator: ``"composed"`` or ``"direct"`` (see module docstring).
    """

    def __init__(self, filters: int = 64, operator: str = "composed"):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(filters, 1, 3, 3))
        self.eta = nn.Parameter(torch.empty(1).normal_(0.1, 0.03))
        self.theta = nn.Parameter(torch.empty(1).normal_(1e-3, 1e-4))
        self.rest = nn.Sequential(nn.BatchNorm2d(1), nn.PReLU(1))
        self.operator = operator
        #: (kernel version, kernels) of the last :meth:`composed_kernels` call without autograd
        self._kernel_cache: tuple | None = None

    def _adjoint_kernel(self) -> torch.Tensor:
        return torch.rot90(self.kernel, 2, [-1, -2]).transpose(0, 1)

    def gram_direct(self, x: torch.Tensor) -> torch.Tensor:
        """``K^T K x`` exactly as the official code computes it. x: (B, 1, H, W), H, W >= 2."""
        z = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel)
        return F.conv2d(F.pad(z, (1, 1, 1, 1), mode="reflect"), self._adjoint_kernel())

    def composed_kernels(self) -> dict[str, torch.Tensor]:
        """The single-channel kernels that make up ``K^T K``, found by probing :meth:`gram_direct`.

        Returns a dict of (1, 1, kh, kw) kernels for correlation with reflect-2-padded input:
        ``"inner"`` (5x5, every pixel not on the 1-pixel frame), ``"top"`` / ``"bottom"`` (3x5, the
        first / last row from the first / last three rows) and ``"left"`` / ``"right"`` (5x3).
        Differentiable with respect to ``kernel``. Without autograd the result is kept until the
        kernel changes (inference probes once, not on every call).
        """
        if torch.is_grad_enabled():
            return self._probe_kernels()
        key = (self.kernel._version, self.kernel.data_ptr(), self.kernel.dtype,
               torch.is_autocast_enabled(self.kernel.device.type))
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            self._kernel_cache = (key, self._probe_kernels())
        return self._kernel_cache[1]

    def _probe_kernels(self) -> dict[str, torch.Tensor]:
        # 13 impulses on a 9x9 canvas: rows 0-2 and 6-8 at column 4 (top/bottom), columns 0-2 and 6-8
        # at row 4 (left/right), and the centre (inner). The responses read off at interior columns
        # (rows) are the kernels, flipped because the probe measures convolution, not correlation.
        where = [(r, 4) for r in (0, 1, 2, 6, 7, 8)] + [(4, c) for c in (0, 1, 2, 6, 7, 8)] + [(4, 4)]
        probes = torch.zeros(len(where), 1, 9, 9, dtype=self.kernel.dtype, device=self.kernel.device)
        for i, (r, c) in enumerate(where):
            probes[i, 0, r, c] = 1
        resp = self.gram_direct(probes)[:, 0]
        return {
            "inner": resp[12, 2:7, 2:7].flip(0, 1)[None, None],
            "top": resp[0:3, 0, 2:7].flip(1)[None, None],
            "bottom": resp[3:6, 8, 2:7].flip(1)[None, None],
            "left": resp[6:9, 2:7, 0].flip(1).t()[None, None],
            "right": resp[9:12, 2:7, 8].flip(1).t()[None, None],
        }

    def gram_composed(self, x: torch.Tensor) -> torch.Tensor:
        """``K^T K x`` with single-channel kernels: 5x5 inside, 3x5 / 5x3 on the frame, exact corners.

        Equal to :meth:`gram_direct` up to float rounding. x: (B, 1, H, W), H, W >= 3.
        """
        k = self.composed_kernels()
        y = _correlate(F.pad(x, (2, 2, 2, 2), mode="reflect"), k["inner"])
        top = _correlate(F.pad(x[..., :3, :], (2, 2, 0, 0), mode="reflect"), k["top"])
        bottom = _correlate(F.pad(x[..., -3:, :], (2, 2, 0, 0), mode="reflect"), k["bottom"])
        left = _correlate(F.pad(x[..., :, :3], (0, 0, 2, 2), mode="reflect"), k["left"])
        right = _correlate(F.pad(x[..., :, -3:], (0, 0, 2, 2), mode="reflect"), k["right"])
        # The corners see the reflection in both directions: the direct operator on 3x3 patches.
        b = x.shape[0]
        corners = self.gram_direct(torch.cat([x[..., :3, :3], x[..., :3, -3:], x[..., -3:, :3], x[..., -3:, -3:]]))
        tl, tr = corners[:b, ..., :1, :1], corners[b:2 * b, ..., :1, -1:]
        bl, br = corners[2 * b:3 * b, ..., -1:, :1], corners[3 * b:, ..., -1:, -1:]
        top_row = torch.cat([tl, top[..., 1:-1], tr], dim=-1)
        bottom_row = torch.cat([bl, bottom[..., 1:-1], br], dim=-1)
        middle = torch.cat([left[..., 1:-1, :], y[..., 1:-1, 1:-1], right[..., 1:-1, :]], dim=-1)
        return torch.cat([top_row, middle, bottom_row], dim=-2)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """One step. x: current estimate, img: the source; both (B, 1, H, W)."""
        gram = self.gram_composed(x) if self.operator == "composed" else self.gram_direct(x)
        return x - self.eta * (self.rest(gram) - self.theta * (img - x))


def unrolled_encode(img: torch.Tensor, base_stages, detail_stages, blur_size: int,
                    laplacian_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AUIF's two unrolled encoders: the base encoder's stages from a box blur of ``img``, the detail
    encoder's from its normalised Laplacian. img: (B, 1, H, W); returns (base, detail), each (B, 1, H, W)."""
    base = box_blur(img, blur_size)
    for stage in base_stages:
        base = stage(base, img)
    detail = normalized_laplacian(img, laplacian_size)
    for stage in detail_stages:
        detail = stage(detail, img)
    return base, detail


class AUIF(FusionModel):
    """AUIF fusion network: two unrolled encoders, a decoder, and a fusion rule.

    ``forward(ir, vis)`` takes two (B, 1, H, W) float32 tensors in [0, 1] (infrared, visible
    luminance) and returns the fused (B, 1, H, W) image in [0, 1].
    """

    def __init__(self, config: AUIFConfig | None = None):
        super().__init__()
        self.config = config or AUIFConfig()
        c = self.config
        self.base = nn.ModuleList(Stage(c.filters, c.operator) for _ in range(c.layers))
        self.detail = nn.ModuleList(Stage(c.filters, c.operator) for _ in range(c.layers))
        self.decoder = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(1, 1, 3, bias=False), nn.BatchNorm2d(1), nn.Sigmoid()
        )

    @property
    def spec(self) -> ModelSpec:
        """An infrared-visible pair of luminance images; smallest side: the reflect-padded 19x19
        Laplacian needs 10 pixels; receptive radius (exact tiling): the initial filter, 2 per stage
        (the 5x5 ``K^T K``), 1 for the ``l1`` rule's 3x3 activity, 1 for the decoder."""
        c = self.config
        first = max(c.laplacian_size, c.blur_size) // 2
        return ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1,
                         min_size=first + 1, receptive_radius=first + 2 * c.layers + int(c.fusion == "l1") + 1,
                         tileable=True)

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base and detail features of ``img`` (B, 1, H, W); each (B, 1, H, W)."""
        return unrolled_encode(img, self.base, self.detail, self.config.blur_size, self.config.laplacian_size)

    def decode(self, base: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        return self.forward_pointwise(self._decoder_conv(base + detail))

    def _decoder_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's reflect pad + 3x3 convolution (its linear, local part). On the CPU without
        autograd as shifted adds, whose arithmetic per pixel does not depend on the image size
        (oneDNN's convolution picks its algorithm by size, which moved tiled outputs by 1 ulp)."""
        return _correlate(self.decoder[0](x), self.decoder[1].weight)  # the convolution has no bias

    def forward_pointwise(self, logits: torch.Tensor) -> torch.Tensor:
        """The decoder's pixel-wise tail, BatchNorm then sigmoid: (B, 1, H, W) -> (B, 1, H, W) in [0, 1].

        ``forward = forward_pointwise(forward_local(...))``. Tiled inference runs it once on the
        assembled image: torch's CPU sigmoid rounds the last elements of a tensor (its scalar tail)
        differently from the vectorised body, so per tile it would depend on the tile's size.
        """
        return self.decoder[3](self.decoder[2](logits))

    def reconstruct(self, img: torch.Tensor) -> torch.Tensor:
        """Auto-encoder pass used for training: decode(encode(img))."""
        return self.decode(*self.encode(img))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.forward_pointwise(self.forward_local(ir, vis))

    def forward_local(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Everything up to the decoder's convolution: (B, 1, H, W) sources -> (B, 1, H, W) pre-BatchNorm
        logits. Each output pixel depends only on the sources within :attr:`receptive_radius`, by
        arithmetic that does not depend on its position (on the CPU): what exact tiling needs."""
        # Both sources through the encoders in one batch (BatchNorm is per-sample in eval mode).
        base, detail = self.encode(torch.cat([ir, vis], dim=0))
        b = ir.shape[0]
        fused_base = self._fuse(base[:b], base[b:])
        if self.config.fusion == "sum" and self.config.sum_offset:
            fused_base = fused_base + self.config.sum_offset
        return self._decoder_conv(fused_base + self._fuse(detail[:b], detail[b:]))

    def _fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        rule = self.config.fusion
        if rule == "sum":
            return a + b
        if rule == "average":
            return (a + b) / 2
        # l1: activity = 3x3 mean of |feature| (zero padding, as the official l1_norm mode)
        act_a = F.avg_pool2d(a.abs(), 3, stride=1, padding=1, count_include_pad=True)
        act_b = F.avg_pool2d(b.abs(), 3, stride=1, padding=1, count_include_pad=True)
        w = act_a / (act_a + act_b).clamp_min(1e-12)
        return w * a + (1 - w) * b


def calibrate_sum_offset(model: AUIF) -> float:
    """The ``sum_offset`` that makes the Sum rule add the sources' decoder logits.

    The decoder is reflect-pad, a linear 3x3 convolution ``w``, BatchNorm (eval: ``g (. - mu) / s
    + beta``) and a sigmoid. Write ``L_i`` for the pre-sigmoid output of source ``i`` decoded
    alone (the auto-encoder makes ``sigmoid(L_i)`` close to the source). Decoding the summed
    features then gives exactly ``sigmoid(L_1 + L_2 + c)`` with ``c = g mu / s - beta``: the
    fusion is an addition of logits plus a constant ``c`` that the auto-encoder loss leaves free
    (shifting every encoder output by ``d`` and ``mu`` by ``sum(w) d`` changes ``c`` and no
    reconstruction). The official weights happen to have ``c = 0.03``; a new training run can end
    anywhere (this project's run: ``c = -0.83``, fused TNO images 40 % darker than the sources).
    An offset ``sum(w) * offset * g / s = -c`` on the fused base features sets ``c = 0``.

    Returns:
        The offset (0.0 when the decoder's weights make it undefined).
    """
    conv, bn = model.decoder[1], model.decoder[2]
    with torch.no_grad():
        s = torch.sqrt(bn.running_var + bn.eps)
        c = bn.weight * bn.running_mean / s - bn.bias
        gain = bn.weight * conv.weight.sum() / s
    if abs(gain.item()) < 1e-6:
        return 0.0
    return float(-c.item() / gain.item())


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the official AUIF key layout onto :class:`AUIF`'s.

    The official checkpoint is three files, ``TCSVT_Encoder_Base.model`` (keys ``conv1.{i}.*``),
    ``TCSVT_Encoder_Detail.model`` (``conv2.{i}.*``) and ``TCSVT_Decoder.model`` (``decoder.*``);
    merged into one dict they convert with this function. Keys already in fusecli's layout pass
    through unchanged.

    Raises:
        CheckpointError: if a key belongs to neither layout.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "conv1":
            out["base." + rest] = value
        elif head == "conv2":
            out["detail." + rest] = value
        elif head in ("base", "detail", "decoder"):
            out[key] = value
        else:
            raise CheckpointError(
                f"key {key!r} is not an AUIF key (expected conv1.*, conv2.*, decoder.* from the official "
                "files, or base.*, detail.*, decoder.* from fusecli)"
            )
    return out
