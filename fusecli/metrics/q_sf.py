"""Q_SF, Zheng et al.'s ratio of spatial-frequency error (rSFe), as Liu's toolbox computes it.

Reference followed: Z. Liu's ``metricZheng.m`` (``zhengliu6699/imageFusionMetrics``, the Q_SF column of
``fusionAssess.m``; Liu et al., TPAMI 34(1), 2012), which implements Y. Zheng, E. A. Essock, B. C.
Hansen, A. M. Haun, "A new metric based on extended spatial frequency and its application to DWT based
fusion algorithms", Information Fusion 8 (2007) 177–192, with Liu's modification of the paper's
Eqs. (7)–(8) (the squared differences are summed and divided by H·W, the diagonal ones weighted by
√2/2 inside the square root).

* Four first-order differences of each image: row (horizontal neighbours), column (vertical
  neighbours), main diagonal ``X(i, j) − X(i−1, j−1)`` and secondary diagonal ``X(i, j) − X(i−1, j+1)``.
* ``SF_F = sqrt(RF² + CF² + MDF² + SDF²)`` with ``RF = sqrt(Σ d_row² / (H W))``, ``CF`` alike and
  ``MDF = sqrt(√2/2 · Σ d_md² / (H W))``, ``SDF`` alike.
* The reference ``SF_R`` uses, per difference, the larger magnitude of the two sources:
  ``SF_R = sqrt(Σ max(|d_A|, |d_B|)² / (H W) over row and column + √2/2 · (same) over both diagonals)``.
* ``Q_SF = rSFe = (SF_F − SF_R) / SF_R``: 0 is ideal, < 0 an under-fused (too smooth) image,
  > 0 an over-fused one (noise, artefacts). The registry marks it with ``target = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import register
from ._checks import warn_nan
from ._filters import safe_div
from .similarity import two_sources

_WD = math.sqrt(2.0) / 2.0


def _diffs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row, column, main-diagonal and secondary-diagonal differences of ``(B, 1, H, W)``."""
    return (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
            x[..., 1:, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, 1:])


@register(
    "Q_SF",
    higher_is_better=False,
    target=0.0,
    needs="pair",
    description="Zheng's ratio of spatial-frequency error rSFe = (SF_F − SF_R)/SF_R over row, column and both "
                "diagonal differences; 0 is ideal (negative: detail lost, positive: detail/noise added).",
    reference="Zheng, Essock, Hansen & Haun, Inf. Fusion 8, 2007 (Liu's metricZheng.m, TPAMI 2012 toolbox)",
    conventions={"cddfuse": "metricZheng.m: Σd²/(H·W) per direction, diagonals weighted √2/2, reference from "
                            "max(|d_A|, |d_B|), rSFe = (SF_F − SF_R)/SF_R (signed; best = closest to 0)"},
)
def q_sf(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """Q_SF (rSFe) of ``fused`` against ``sources = [A, B]``, ``(B,)`` float64, signed, ideal 0.

    NaN (with a :class:`~fusecli.metrics._checks.MetricWarning`) when both sources are constant
    (``SF_R = 0``; MATLAB returns Inf or NaN there).
    """
    x, a, b = two_sources(fused, sources, "Q_SF")
    hw = float(x.shape[-2] * x.shape[-1])
    weights = (1.0, 1.0, _WD, _WD)
    sf_f2 = sum(w * (d * d).flatten(1).sum(1) / hw for w, d in zip(weights, _diffs(x)))
    sf_r2 = sum(w * (torch.maximum(da.abs(), db.abs()) ** 2).flatten(1).sum(1) / hw
                for w, da, db in zip(weights, _diffs(a), _diffs(b)))
    sf_f, sf_r = torch.sqrt(sf_f2), torch.sqrt(sf_r2)
    return warn_nan(safe_div(sf_f - sf_r, sf_r), "Q_SF", "both sources are constant (no reference spatial frequency)")
