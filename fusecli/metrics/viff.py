"""VIFF: Han, Cai, Cao & Xu's fusion metric based on visual information fidelity (Inf. Fusion
14(2), 2013), as the MEFB toolbox computes it (``metricsVIF.m``). Not the same metric as the
"VIF" of the CDDFuse / MATLAB tables (a sum of two VIFp values, :func:`fusecli.metrics.similarity.vif`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ShapeError
from . import register
from .similarity import _vif_scales, two_sources, vif_stats

_SIGMA_N = 0.005 * 255 * 255  # "visual noise" 325.125
_C = 1e-7
_P = (1 / 2.15, 0.0, 0.15 / 2.15, 1 / 2.15)


@register(
    "VIFF",
    higher_is_better=True,
    needs="pair",
    description="Han et al. 2013 fusion VIF: per-pixel VID/VIND of the source with the smaller gain.",
    reference="Han, Cai, Cao & Xu, Inf. Fusion 14(2) 127-135, 2013 (MEFB metricsVIF.m)",
    conventions={"mefb": "MEFB metricsVIF (Han's code); σn² = 0.005·255², p = [1,0,0.15,1]/2.15; "
                         "same under every convention"},
)
def viff(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """Han et al.'s VIFF, ``(B,)``, about 0..1.

    For each of LIVE's four VIFp scales (``sigma_n^2 = 0.005 * 255^2``) and each pixel, the
    distorted/undistorted information ``VID = log10(1 + g^2 s1 / (sv + sigma_n^2))`` and
    ``VIND = log10(1 + s1 / sigma_n^2)`` are taken from the source with the smaller gain ``g``
    (ties: the second source); ``F_i = sum(VID + 1e-7) / sum(VIND + 1e-7)`` and
    ``VIFF = sum_i p_i F_i`` with ``p = [1, 0, 0.15, 1] / 2.15``.

    Args:
        fused: ``(H, W)`` / ``(B, 1, H, W)`` gray 0–255, at least 41×41.
        sources: ``[A, B]`` as in MEFB's ``metricsVIF(A, B, F)``.
    """
    x, a, b = two_sources(fused, sources, "VIFF")
    if not _vif_scales(*x.shape[-2:]):
        raise ShapeError(f"VIFF needs images of at least 41×41 pixels (its four scales), got "
                         f"{x.shape[-2]}×{x.shape[-1]}; use larger images.")
    out = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for i, ((s1a, ga, sva), (s1b, gb, svb)) in enumerate(vif_stats([a, b], x)):
        vid_a = torch.log10(1 + ga * ga * s1a / (sva + _SIGMA_N))
        vid_b = torch.log10(1 + gb * gb * s1b / (svb + _SIGMA_N))
        vind_a = torch.log10(1 + s1a / _SIGMA_N)
        vind_b = torch.log10(1 + s1b / _SIGMA_N)
        take_a = ga < gb
        vid = torch.where(take_a, vid_a, vid_b)
        vind = torch.where(take_a, vind_a, vind_b)
        f_i = (vid + _C).flatten(1).sum(1) / (vind + _C).flatten(1).sum(1)
        out = out + _P[i] * f_i
    return out
