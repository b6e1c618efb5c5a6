"""ColorNet: the chroma network of FRUFN / EFRUFN for multi-exposure fusion (Remark 1 of Wang et al.,
TPAMI 2026; the authors' ``Color_Net(num_spectral=2, base_filter=48)`` in ``uf_former_4070_new.py``).

Multi-exposure fusion fuses luminance only. A weighted average of the sources' chroma gives strong
colour casts when the exposures differ much (saturated highlights lose their colour, dark regions
are noisy), so ColorNet predicts the fused chroma from the fused luminance and both sources' chroma:

    in_conv (3x3, 5 -> 48, no bias), 6 ConvNeXt-V2 blocks (48 channels), out_conv (3x3, 48 -> 2, no bias)

trained with ``L1(ColorNet(Y_fused, CbCr_under, CbCr_over), CbCr_reference)`` (eq. 8) in the
multi-exposure stage, with the fusion network frozen (``fusecli.train.frufn``).

Channel order (fusecli's colour standard, :mod:`fusecli.color`): input ``cat(Y, Cb_a, Cr_a, Cb_b,
Cr_b)``, output ``(Cb, Cr)`` with neutral 0.5. The authors' code uses OpenCV's ``Y, Cr, Cb`` order;
:func:`convert_official` permutes the two convolutions so a state dict of theirs gives the same
result here (their chroma scale differs from BT.601's by at most 3e-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..color import merge_luma
from ..errors import CheckpointError, ConfigError, ShapeError
from .convnext_v2 import ConvNeXtV2Block

__all__ = ["ColorNetConfig", "ColorNet", "convert_official", "load_from_card"]


@dataclass(frozen=True)
class ColorNetConfig:
    """Hyper-parameters of ColorNet; the defaults are the authors' (48 channels, 6 blocks)."""

    channels: int = 48
    blocks: int = 6

    def __post_init__(self) -> None:
        if self.channels < 1 or self.blocks < 0:
            raise ConfigError(f"ColorNet needs channels >= 1 and blocks >= 0, got {self.channels}, {self.blocks}")


class ColorNet(nn.Module):
    """Predict the fused chroma of a multi-exposure pair.

    ``forward(y, cbcr_a, cbcr_b)``: ``y`` the fused luminance (B, 1, H, W) in [0, 1]; ``cbcr_a``,
    ``cbcr_b`` the two sources' chroma (B, 2, H, W) (Cb, Cr, neutral 0.5, as
    :func:`fusecli.color.split_luma` returns). Returns the fused chroma (B, 2, H, W), unclamped.
    """

    def __init__(self, config: ColorNetConfig | None = None):
        super().__init__()
        self.config = config or ColorNetConfig()
        c = self.config.channels
        self.in_conv = nn.Conv2d(5, c, 3, padding=1, bias=False)
        self.fuse = nn.Sequential(*(ConvNeXtV2Block(c) for _ in range(self.config.blocks)))
        self.out_conv = nn.Conv2d(c, 2, 3, padding=1, bias=False)

    def forward(self, y: torch.Tensor, cbcr_a: torch.Tensor, cbcr_b: torch.Tensor) -> torch.Tensor:
        if y.dim() != 4 or y.shape[1] != 1:
            raise ShapeError(f"ColorNet: y must be (B, 1, H, W), got {tuple(y.shape)}")
        for name, t in (("cbcr_a", cbcr_a), ("cbcr_b", cbcr_b)):
            if t.dim() != 4 or t.shape[1] != 2 or t.shape[0] != y.shape[0] or t.shape[2:] != y.shape[2:]:
                raise ShapeError(f"ColorNet: {name} must be (B, 2, H, W) matching y {tuple(y.shape)}, "
                                 f"got {tuple(t.shape)}")
        return self.out_conv(self.fuse(self.in_conv(torch.cat((y, cbcr_a, cbcr_b), dim=1))))

    @torch.no_grad()
    def colorize(self, y: torch.Tensor, cbcr_a: torch.Tensor, cbcr_b: torch.Tensor) -> torch.Tensor:
        """The fused RGB image (B, 3, H, W) in [0, 1]: ``y`` with the predicted chroma (clamped to
        [0, 1]), through :func:`fusecli.color.merge_luma`."""
        return merge_luma(y.clamp(0, 1), self(y, cbcr_a, cbcr_b).clamp(0, 1))


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' ``Color_Net`` state dict (keys ``in_conv``, ``fuse.{i}.*``, ``out_conv``; input
    ``Y, Cr_u, Cb_u, Cr_o, Cb_o``, output ``Cr, Cb``) in fusecli's channel order (``Y, Cb, Cr, ...``
    in, ``Cb, Cr`` out). Apply it to the authors' files only: weights written by ``fusecli train``
    are already in fusecli's order.

    Raises:
        CheckpointError: the state dict lacks ``in_conv.weight`` / ``out_conv.weight`` or they have
            other than 5 input / 2 output channels.
    """
    try:
        w_in, w_out = state["in_conv.weight"], state["out_conv.weight"]
    except KeyError as exc:
        raise CheckpointError(f"not a ColorNet state dict: missing {exc.args[0]!r}") from exc
    if w_in.shape[1] != 5 or w_out.shape[0] != 2:
        raise CheckpointError(f"ColorNet convolutions must be 5 -> C and C -> 2, got {tuple(w_in.shape)}, "
                              f"{tuple(w_out.shape)}")
    out = dict(state)
    out["in_conv.weight"] = w_in[:, [0, 2, 1, 4, 3]].clone()
    out["out_conv.weight"] = w_out[[1, 0]].clone()
    return out


def load_from_card(entry: dict, card_path: Path) -> ColorNet:
    """The ColorNet named in a weights card's ``colornet`` section (as ``fusecli train frufn|efrufn``
    writes it for the ``meif`` stage), its file checked against the card's sha256.

    Args:
        entry: the card's ``colornet`` mapping (``file``, ``sha256``, optional ``config``).
        card_path: the card file; ``file`` is relative to its folder.

    Raises:
        CheckpointError: the section is malformed, the file is missing or corrupt, or does not fit.
    """
    from ._weights import load_state_dict, sha256_file  # here: _weights imports the registry

    if not isinstance(entry, dict) or not {"file", "sha256"} <= set(entry):
        raise CheckpointError(f"weights card {card_path}: 'colornet' must name its 'file' and 'sha256'")
    path = Path(card_path).parent / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"ColorNet file {path} named by card {card_path} is missing")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise CheckpointError(f"{path} has sha256 {digest[:12]}..., but card {card_path} says "
                              f"{str(entry['sha256'])[:12]}...: the file is corrupt or was replaced")
    try:
        net = ColorNet(ColorNetConfig(**(entry.get("config") or {})))
    except TypeError as exc:
        raise CheckpointError(f"weights card {card_path}: bad ColorNet config: {exc}") from exc
    state = load_state_dict(path)[0]
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"ColorNet file {path} does not fit ColorNet: {str(exc).splitlines()[0]}") from exc
    return net.eval()
