"""AUIF-Fusion: AUIF's unrolled encoders trained end to end as a fusion network (fusecli's ir-vis default).

Why
---
AUIF (:mod:`fusecli.models.auif`) is trained as an auto-encoder and fuses at test time with a fixed
rule: the Sum rule adds the two sources' encodings before the decoder's sigmoid, which amounts to
``sigmoid(logit a + logit b + c)``. Two dark sources (a night scene: visible near black, infrared
dim) then give an output darker than both. This model keeps AUIF's fast unrolled encoders and its
decoder, replaces the fixed rule by a small learned fusion step, and trains the whole network on
the source pairs with a fusion loss (``fusecli train auif-fusion``: intensity + gradient, with
darkened visible images in the training distribution), so the rule is learned where the
auto-encoder could not learn it.

What is unrolled
----------------
Each source ``I`` is encoded by AUIF's two unrolled encoders (10 gradient steps each on
``1/2 ||K x||^2 + theta/2 ||I - x||^2``; :class:`fusecli.models.auif.Stage`) into a base ``b`` and
a detail ``d`` part. One fusion step, :class:`FusionStep`, looks at the four encodings and the two
sources and returns per-pixel weights: the fused base is the convex combination
``w b_ir + (1 - w) b_vis`` (``w`` in [0, 1]) and the fused detail the non-negative combination
``g_ir d_ir + g_vis d_vis`` (``g`` >= 0, so detail can be kept or amplified, never inverted). AUIF's
decoder (3x3 conv, BatchNorm, sigmoid) maps ``base + detail`` to the fused image in [0, 1]. The
untrained fusion step (last layer zero) is the rule "average the bases, add the details".

BatchNorm
---------
The encoders' and decoder's BatchNorm layers keep their running statistics in training too (they act
as learned per-stage affine maps): the statistics come from the auto-encoder the network is
warm-started from (``fusecli train auif`` on the same training split), and fine-tuning on a few
hundred fusion crops must not re-estimate them.

Tensor contract: ``model(ir, vis)`` with (B, 1, H, W) float32 tensors in [0, 1]; returns (B, 1, H, W)
in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ._contract import FusionModel, ModelSpec
from .auif import Stage, unrolled_encode
from .classical import BINOMIAL, collapse_pyramid, laplacian_pyramid, usable_levels

__all__ = ["AUIFFusionConfig", "FusionStep", "AUIFFusion", "transfer_detail", "convert_official",
           "warm_start_from_auif"]


@dataclass(frozen=True)
class AUIFFusionConfig:
    """Hyper-parameters of AUIF-Fusion.

    Attributes:
        layers, filters, blur_size, laplacian_size, operator: AUIF's encoders (see
            :class:`fusecli.models.auif.AUIFConfig`).
        head_channels: channels of the fusion step's hidden layers.
        output: ``"sources"`` (default): the fused image is ``w ir + (1 - w) vis`` plus the two
            detail encodings with learned per-pixel gains (no decoder: source pixels pass through
            unchanged where one source is chosen); ``"decoder"``: AUIF's decoder maps the fused base
            plus fused detail encodings to the image.
        detail_levels: the finest N levels of the output's Laplacian pyramid are replaced by the
            larger-magnitude coefficient of the two sources (:func:`transfer_detail`; the ``laplacian``
            rule's detail selection); 0 returns the network's output as it is. The network decides
            intensities (which source, how bright); the fine detail comes from whichever source has
            more. With noisy sources (a dark, grainy visible frame) this also transfers the noise:
            ``detail_levels=0`` (weights card ``auif-fusion.roadscene-smooth``) keeps the network's
            own, cleaner detail.
    """

    layers: int = 10
    filters: int = 64
    blur_size: int = 11
    laplacian_size: int = 19
    operator: str = "composed"
    head_channels: int = 16
    output: str = "sources"
    detail_levels: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.detail_levels <= 8:
            raise ConfigError(f"auif-fusion detail_levels must be 0..8, got {self.detail_levels}")
        if self.output not in ("sources", "decoder"):
            raise ConfigError(f"auif-fusion output must be 'sources' or 'decoder', got {self.output!r}")
        if self.operator not in ("composed", "direct"):
            raise ConfigError(f"auif-fusion operator must be 'composed' or 'direct', got {self.operator!r}")
        if self.layers < 1 or self.filters < 1 or self.head_channels < 1:
            raise ConfigError("auif-fusion needs at least one layer, filter and head channel")
        if self.blur_size % 2 == 0 or self.laplacian_size % 2 == 0:
            raise ConfigError("auif-fusion filter sizes must be odd")


#: softplus(x) = 1 at x = log(e - 1): the untrained step adds the details with gain 1
_UNIT_GAIN = math.log(math.e - 1)


class FusionStep(nn.Module):
    """The learned fusion rule: per-pixel weights from the encodings and the sources.

    Input: the six (B, 1, H, W) maps ``b_ir, b_vis, d_ir, d_vis, ir, vis``. Three 3x3 convolutions
    (reflect border; the middle one dilated by 2; PReLU between) give three maps: the weight
    ``w = sigmoid(.)`` in [0, 1] and two detail gains ``g``. Radius of context: 4 pixels.

    Args:
        channels: hidden channels.
        output: ``"sources"``: :meth:`forward` returns ``w ir + (1 - w) vis + g_ir d_ir + g_vis d_vis``
            (gains unconstrained, 0 at the start: the untrained step is the per-pixel average);
            ``"decoder"``: it returns the fused encodings ``(w b_ir + (1 - w) b_vis, g_ir d_ir + g_vis
            d_vis)`` with gains ``softplus(.) >= 0``, 1 at the start (average the bases, add the details).
    """

    radius = 4

    def __init__(self, channels: int = 16, output: str = "sources"):
        super().__init__()
        self.output = output
        self.net = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(6, channels, 3), nn.PReLU(channels),
            nn.ReflectionPad2d(2), nn.Conv2d(channels, channels, 3, dilation=2), nn.PReLU(channels),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, 3, 3),
        )
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        gain = _UNIT_GAIN if output == "decoder" else 0.0
        with torch.no_grad():
            last.bias.copy_(torch.tensor([0.0, gain, gain]))

    def forward(self, b_ir: torch.Tensor, b_vis: torch.Tensor, d_ir: torch.Tensor, d_vis: torch.Tensor,
                ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The fused image (``"sources"``), or the fused (base, detail) encodings (``"decoder"``)."""
        x = torch.cat([b_ir, b_vis, d_ir, d_vis, ir, vis], dim=1)
        if x.device.type == "cpu":  # oneDNN's convolutions with few channels: ~2.5x faster channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.net(x).contiguous()
        w = torch.sigmoid(h[:, 0:1])
        if self.output == "decoder":
            g = F.softplus(h[:, 1:3])
            return w * b_ir + (1 - w) * b_vis, g[:, 0:1] * d_ir + g[:, 1:2] * d_vis
        return w * ir + (1 - w) * vis + h[:, 1:2] * d_ir + h[:, 2:3] * d_vis


class AUIFFusion(FusionModel):
    """AUIF's unrolled encoders with a learned fusion step, trained as a fusion network.

    ``forward(ir, vis)``: two (B, 1, H, W) float32 tensors in [0, 1] -> fused (B, 1, H, W) in [0, 1].
    """

    def __init__(self, config: AUIFFusionConfig | None = None):
        super().__init__()
        self.config = config or AUIFFusionConfig()
        c = self.config
        self.base = nn.ModuleList(Stage(c.filters, c.operator) for _ in range(c.layers))
        self.detail = nn.ModuleList(Stage(c.filters, c.operator) for _ in range(c.layers))
        self.fusion = FusionStep(c.head_channels, c.output)
        if c.output == "decoder":
            self.decoder = nn.Sequential(
                nn.ReflectionPad2d(1), nn.Conv2d(1, 1, 3, bias=False), nn.BatchNorm2d(1), nn.Sigmoid()
            )
        #: the pyramid's binomial filter (a buffer: not trained, moves with the model)
        self.register_buffer("kernel", torch.tensor(BINOMIAL), persistent=False)

    @property
    def spec(self) -> ModelSpec:
        """An infrared-visible pair of luminance images; smallest side: the reflect-padded 19x19
        Laplacian needs 10 pixels; receptive radius (exact tiling): the encoders' as AUIF's, then the
        fusion step's; None with the pyramid detail step, whose levels depend on the image size (tiles
        then overlap and blend)."""
        c = self.config
        first = max(c.laplacian_size, c.blur_size) // 2
        radius = None if c.detail_levels else first + 2 * c.layers + 1 + FusionStep.radius
        return ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1,
                         min_size=first + 1, receptive_radius=radius, tileable=True)

    def train(self, mode: bool = True) -> AUIFFusion:
        """Train mode everywhere except BatchNorm, which keeps its running statistics (module docstring)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base and detail encodings of ``img`` (B, 1, H, W); each (B, 1, H, W). As AUIF's."""
        c = self.config
        return unrolled_encode(img, self.base, self.detail, c.blur_size, c.laplacian_size)

    def network(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """The trained part: encoders, fusion step (and decoder). (B, 1, H, W) in, (B, 1, H, W) in [0, 1] out."""
        b = ir.shape[0]
        base, detail = self.encode(torch.cat([ir, vis], dim=0))  # both sources in one batch
        fused = self.fusion(base[:b], base[b:], detail[:b], detail[b:], ir, vis)
        if self.config.output == "decoder":
            return self.decoder(fused[0] + fused[1])
        return fused.clamp(0, 1)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        fused = self.network(ir, vis)
        if self.config.detail_levels:
            fused = transfer_detail(fused, ir, vis, self.config.detail_levels, self.kernel)
        return fused


def transfer_detail(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, levels: int,
                    kernel: torch.Tensor) -> torch.Tensor:
    """Replace the finest ``levels`` Laplacian-pyramid levels of ``fused`` by the larger-magnitude
    coefficient of ``a`` and ``b`` (fewer levels on small images: :func:`usable_levels`).

    All (B, 1, H, W) in [0, 1]; returns (B, 1, H, W) clamped to [0, 1]. Parameter-free.
    """
    n = usable_levels(fused.shape[-2], fused.shape[-1], levels)
    if n == 0:
        return fused
    pf = laplacian_pyramid(fused, n, kernel)
    ps = laplacian_pyramid(torch.cat([a, b], dim=0), n, kernel)
    k = a.shape[0]
    bands = [torch.where(p[:k].abs() >= p[k:].abs(), p[:k], p[k:]) for p in ps[:-1]]
    return collapse_pyramid(bands + [pf[-1]], kernel).clamp(0, 1)


def warm_start_from_auif(model: AUIFFusion, state: dict[str, torch.Tensor]) -> list[str]:
    """Load an AUIF auto-encoder's encoders and decoder (fusecli's or the official key layout) into
    ``model``; the fusion step keeps its initial state.

    Returns:
        The keys left at their initial values (the fusion step's).

    Raises:
        CheckpointError: ``state`` is not an AUIF state dict or does not fit the encoders.
    """
    from .auif import convert_official as auif_keys
    own = model.state_dict()
    try:
        mapped = auif_keys(state)
    except CheckpointError as exc:
        raise CheckpointError(f"warm start: {exc}") from None
    if model.config.output != "decoder":  # the sources are fused directly: AUIF's decoder is not used
        mapped = {k: v for k, v in mapped.items() if not k.startswith("decoder.")}
    missing = sorted(k for k in own if not k.startswith("fusion.") and k not in mapped)
    wrong = sorted(k for k in mapped if k in own and own[k].shape != mapped[k].shape)
    if missing or wrong or any(k not in own for k in mapped):
        raise CheckpointError(f"warm start: not an AUIF auto-encoder of this size (missing {missing[:3]}, "
                              f"wrong shape {wrong[:3]})")
    model.load_state_dict(mapped, strict=False)
    return sorted(k for k in own if k.startswith("fusion."))


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The identity on fusecli's own AUIF-Fusion keys (the model is fusecli's: no official layout).

    Raises:
        CheckpointError: a key of another model (for an official AUIF checkpoint use ``--model auif``).
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("an auif-fusion checkpoint must be a state dict (a mapping of names to tensors)")
    foreign = sorted(k for k in state if k.split(".")[0] not in ("base", "detail", "fusion", "decoder"))
    if foreign:
        raise CheckpointError(f"key {foreign[0]!r} is not an auif-fusion key; an official AUIF checkpoint "
                              "loads with --model auif")
    return dict(state)
