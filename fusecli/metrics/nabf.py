"""Kumar's modified fusion-artefact measure N^{AB/F} (``Nabf``), as Linfeng Tang's MATLAB toolbox
(``analysis_nabf.m``, B. K. Shreyamsha Kumar's code) computes it.

Inputs as everywhere in :mod:`fusecli.metrics`: ``(H, W)`` / ``(B, 1, H, W)`` gray on 0–255;
outputs ``(B,)`` float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import register
from ._checks import check_convention
from ._filters import filter2_valid
from .similarity import two_sources

_ORDERS = ("intended", "as_called")


def _sobel_kumar(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sobel_fn``: 3×3 Sobel correlation (kernels divided by 8) on the image mirrored by one
    pixel without repeating the edge (``per_extn_im_fn``); returns ``(strength, orientation)``
    with orientation ``atan(gv / gh)`` (``±π/2`` where ``gh = 0``, 0 where both are 0)."""
    xe = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    kv = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype) / 8
    gv = filter2_valid(xe, kv)
    gh = filter2_valid(xe, kv.t().contiguous())
    g = torch.sqrt(gh * gh + gv * gv)
    both0 = (gv == 0) & (gh == 0)
    ang = torch.where(both0, torch.zeros_like(g), torch.atan(gv / torch.where(both0, torch.ones_like(gh), gh)))
    return g, ang


def _q_kumar(g_s: torch.Tensor, a_s: torch.Tensor, g_f: torch.Tensor, a_f: torch.Tensor) -> torch.Tensor:
    """Edge-preservation ``Q_SF = sqrt(Q_g Q_α)`` with Kumar's parameters."""
    zero = (g_s == 0) | (g_f == 0)
    big = torch.maximum(g_s, g_f)
    ratio = torch.where(zero, torch.zeros_like(g_s),
                        torch.minimum(g_s, g_f) / torch.where(zero, torch.ones_like(big), big))
    a = torch.abs(torch.abs(a_s - a_f) - math.pi / 2) * 2 / math.pi
    q_g = 0.9999 / (1 + torch.exp(-19 * (ratio - 0.5)))
    q_a = 0.9995 / (1 + torch.exp(-22 * (a - 0.5)))
    return torch.sqrt(q_g * q_a)


def nabf_core(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``analysis_nabf(fused, a, b)`` on ``(B, 1, H, W)`` float64 tensors, ``(B,)``."""
    g_a, al_a = _sobel_kumar(a)
    g_b, al_b = _sobel_kumar(b)
    g_f, al_f = _sobel_kumar(fused)
    q_af = _q_kumar(g_a, al_a, g_f, al_f)
    q_bf = _q_kumar(g_b, al_b, g_f, al_f)
    w_a = torch.where(g_a >= 2, g_a ** 1.5, torch.full_like(g_a, 0.001))
    w_b = torch.where(g_b >= 2, g_b ** 1.5, torch.full_like(g_b, 0.001))
    na = ((g_f > g_a) & (g_f > g_b)).to(g_f.dtype)
    num = (na * ((1 - q_af) * w_a + (1 - q_bf) * w_b)).flatten(1).sum(1)
    return num / (w_a + w_b).flatten(1).sum(1)  # the denominator is > 0 (weights >= 0.001)


@register(
    "Nabf",
    higher_is_better=False,
    needs="pair",
    description="Kumar's modified fusion-artefact measure N^{AB/F} (gradient noise F adds).",
    reference="Shreyamsha Kumar, SIViP 7(6), 2013 (Tang's analysis_nabf.m)",
    conventions={
        "cddfuse": "analysis_nabf(F, A, B): Sobel/8 with mirror extension, Q=sqrt(Q_g Q_α) (Γ 0.9999/0.9995, "
                   "κ 19/22, σ 0.5/0.5), w = g^1.5 where g ≥ 2 else 0.001, artefact where g_F > g_A, g_B",
        "matlab": "as called by Tang's analysis_Reference.m: analysis_nabf(A, B, F), i.e. the first source "
                  "as the fused image (order='intended' for the corrected order)",
    },
    variants=_ORDERS,
)
def nabf(fused: Any, sources: Sequence[Any], convention: str = "cddfuse", order: str | None = None) -> torch.Tensor:
    """``N^{AB/F} = sum(na ((1 - Q_AF) w_A + (1 - Q_BF) w_B)) / sum(w_A + w_B)``, ``(B,)`` in
    ``[0, 1)``, lower is better; ``na = 1`` where F's gradient exceeds both sources'.

    Gradients: Sobel kernels divided by 8, correlation on the image mirrored by one pixel
    (edge not repeated); orientation ``atan(gv / gh)`` (0 where both are 0); strength ratio 0
    where either gradient is 0; orientation term ``|(|α_S − α_F| − π/2)| · 2/π``;
    ``Q_g = 0.9999 / (1 + exp(−19 (G − 0.5)))``, ``Q_α = 0.9995 / (1 + exp(−22 (A − 0.5)))``,
    ``Q_SF = sqrt(Q_g Q_α)``; weights ``g^1.5`` where ``g >= 2`` else 0.001 (so never NaN).

    ``order``: ``"intended"`` computes ``analysis_nabf(F, A, B)``; ``"as_called"`` reproduces
    Tang's ``analysis_Reference.m``, which calls ``analysis_nabf(A, B, F)`` (A = infrared treated
    as the fused image). Default: ``"as_called"`` for ``convention="matlab"`` (the published
    numbers), ``"intended"`` otherwise. Images of at least 2×2.
    """
    c = check_convention(convention)
    x, a, b = two_sources(fused, sources, "Nabf")
    o = order if order is not None else ("as_called" if c == "matlab" else "intended")
    o = check_convention(o, _ORDERS)
    return nabf_core(a, b, x) if o == "as_called" else nabf_core(x, a, b)
