"""Histogram metrics of the MEFB / VIFB / Liu toolboxes: NMI (Hossny's normalised MI, "Q_MI")
and CE (cross entropy).

Inputs as everywhere in :mod:`fusecli.metrics`: ``fused`` ``(H, W)`` / ``(B, 1, H, W)`` gray on
0–255, ``sources = [A, B]``; outputs ``(B,)`` float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import register
from ._checks import warn_nan
from .similarity import _levels, entropy_counts, hist256, joint_hist256, round_half_away, two_sources


def normalize1(x: torch.Tensor) -> torch.Tensor:
    """Liu's ``normalize1``: ``round(255 (x - min) / (max - min))`` per image (MATLAB rounding),
    unchanged if the image is all zero, NaN if it is a non-zero constant (MATLAB's 0/0)."""
    f = x.flatten(1)
    mn = f.min(dim=1, keepdim=True).values
    mx = f.max(dim=1, keepdim=True).values
    out = round_half_away((f - mn) / (mx - mn) * 255)
    zero = (mx == 0) & (mn == 0)
    return torch.where(zero, f, out).reshape(x.shape)


def _nmi_levels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = normalize1(x)
    bad = torch.isnan(n.flatten(1)).any(dim=1)
    return torch.nan_to_num(n, nan=0.0).round().clamp(0, 255).to(torch.int64).flatten(1), bad


@register(
    "NMI",
    higher_is_better=True,
    needs="pair",
    description="Hossny's normalised mutual information Q_MI = 2[MI(A,F)/(H(A)+H(F)) + MI(B,F)/(H(B)+H(F))].",
    reference="Hossny, Nahavandi & Creighton, Electron. Lett. 44(18), 2008 (MEFB metricsNMI, Liu metricMI sw=1)",
    conventions={"mefb": "normalize1 (min–max to 0..255, round) each image, 256 bins, log2; same under every "
                         "convention"},
)
def nmi(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``Q_MI = 2 [MI(A, F) / (H(A) + H(F)) + MI(B, F) / (H(B) + H(F))]``, ``(B,)`` in ``[0, 4]``
    (2 when F = A = B). Each image is first min–max normalised to 0..255 and rounded (Liu's
    ``normalize1``); 256 bins, log2. NaN (with a warning) when an image is a non-zero constant
    (MATLAB divides 0 by 0) or when all entropies are 0."""
    x, a, b = two_sources(fused, sources, "NMI")
    (lf, bf), (la, ba), (lb, bb) = _nmi_levels(x), _nmi_levels(a), _nmi_levels(b)
    hf = entropy_counts(hist256(lf), 2.0)
    out = torch.zeros_like(hf)
    for ls in (la, lb):
        hs = entropy_counts(hist256(ls), 2.0)
        m = hs + hf - entropy_counts(joint_hist256(ls, lf), 2.0)
        out = out + 2 * m / (hs + hf)
    out = torch.where(bf | ba | bb, torch.full_like(out, float("nan")), out)
    return warn_nan(out, "NMI", "an image is a non-zero constant (normalize1 divides 0 by 0) or all are constant")


@register(
    "CE",
    higher_is_better=False,
    needs="pair",
    description="Cross entropy: mean over the sources of KL(p_X ‖ p_F) of the gray histograms (bits).",
    reference="Bulanon, Burks & Alchanatis, Biosyst. Eng. 103(1), 2009 (VIFB/MEFB metricsCross_entropy)",
    conventions={"vifb": "(KL(p_A‖p_F) + KL(p_B‖p_F))/2, log2, bins where both are non-zero; same under "
                         "every convention"},
)
def ce(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``(KL(p_A || p_F) + KL(p_B || p_F)) / 2`` with ``KL = sum p_X log2(p_X / p_F)`` over the
    256 gray levels where both probabilities are non-zero, ``(B,)``; 0 when F has A's and B's
    histograms (lower is better; can be negative because bins are skipped, as in VIFB)."""
    x, a, b = two_sources(fused, sources, "CE")
    n = x.shape[-1] * x.shape[-2]
    pf = hist256(_levels(x)) / n
    out = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for s in (a, b):
        ps = hist256(_levels(s)) / n
        both = (ps > 0) & (pf > 0)
        term = torch.where(both, ps * torch.log2(torch.where(both, ps / torch.where(both, pf, torch.ones_like(pf)),
                                                              torch.ones_like(ps))), torch.zeros_like(ps))
        out = out + term.sum(1)
    return out / 2


def _tsallis_mefb(lx: torch.Tensor, lf: torch.Tensor, q: float) -> torch.Tensor:
    """Liu's ``tsallis(X, F, q)`` as written: ``h`` the joint distribution (rows: X's level i,
    columns: F's level j) and the denominator built from the marginals **as the code indexes
    them**, ``p_F(i) p_X(j)`` (its ``sum(h)`` / ``sum(h')`` are swapped), terms with a zero
    denominator skipped; ``(1 - sum) / (1 - q)``."""
    h = joint_hist256(lx, lf)
    h = h / h.sum(dim=(1, 2), keepdim=True)
    p_f = h.sum(dim=1)  # column sums, indexed by the row index i in the code
    p_x = h.sum(dim=2)  # row sums, indexed by the column index j
    buff = p_f[:, :, None] * p_x[:, None, :]
    ok = buff != 0
    terms = torch.where(ok, h.pow(q) / torch.where(ok, buff, torch.ones_like(buff)).pow(q - 1), torch.zeros_like(h))
    return (1 - terms.sum(dim=(1, 2))) / (1 - q)


@register(
    "TE",
    higher_is_better=True,
    needs="pair",
    description="Tsallis-entropy MI of Cvejic (q = 1.85), I_q(A,F) + I_q(B,F), as MEFB's metricsTE.",
    reference="Cvejic, Canagarajah & Bull, Electron. Lett. 42(11), 2006 (MEFB metricsTE, Liu metricMI sw=2)",
    conventions={"mefb": "normalize1 each image, q = 1.85, unnormalised, Liu's swapped marginals in the "
                         "denominator; same under every convention (not LIU's normalised Q_TE)"},
)
def te(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``I_q(A, F) + I_q(B, F)`` with ``q = 1.85`` after ``normalize1`` (see
    :func:`_tsallis_mefb` for the code's marginal indexing), ``(B,)``; unbounded (about 15 to
    2.6e4 on TNO pairs). NaN (with a warning) for a non-zero constant image."""
    x, a, b = two_sources(fused, sources, "TE")
    (lf, bf), (la, ba), (lb, bb) = _nmi_levels(x), _nmi_levels(a), _nmi_levels(b)
    out = _tsallis_mefb(la, lf, 1.85) + _tsallis_mefb(lb, lf, 1.85)
    out = torch.where(bf | ba | bb, torch.full_like(out, float("nan")), out)
    return warn_nan(out, "TE", "an image is a non-zero constant (normalize1 divides 0 by 0)")


@register(
    "Q_TE",
    higher_is_better=True,
    needs="pair",
    description="Nava's normalised Tsallis-entropy MI (q = 0.43137): (I_q(A,F) + I_q(B,F)) / (H(A)^q + H(B)^q + "
                "I_q(A,B)), Liu's toolbox Q_TE (not MEFB's unnormalised TE).",
    reference="Nava, Cristóbal & Escalante-Ramírez, SPIE Newsroom 2007 (Liu's metricMI.m sw=3, TPAMI 2012 toolbox)",
    conventions={"cddfuse": "metricMI(A, B, F, 3): normalize1 each image, tsallis() with q = 0.43137 (Liu's swapped "
                            "marginals, as in TE), Shannon entropies in bits from mutual_info(A, B); same under "
                            "every convention"},
)
def q_te(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """Liu's Q_TE, ``(I_q(A, F) + I_q(B, F)) / (H(A)^q + H(B)^q + I_q(A, B))`` with ``q = 0.43137``
    after ``normalize1`` (``I_q`` as in :func:`_tsallis_mefb`, ``H`` Shannon in bits), ``(B,)``.
    NaN (with a warning) for a non-zero constant image (``normalize1`` divides 0 by 0)."""
    q = 0.43137
    x, a, b = two_sources(fused, sources, "Q_TE")
    (lf, bf), (la, ba), (lb, bb) = _nmi_levels(x), _nmi_levels(a), _nmi_levels(b)
    ha = entropy_counts(hist256(la), 2.0)
    hb = entropy_counts(hist256(lb), 2.0)
    num = _tsallis_mefb(la, lf, q) + _tsallis_mefb(lb, lf, q)
    out = num / (ha**q + hb**q + _tsallis_mefb(la, lb, q))
    out = torch.where(bf | ba | bb, torch.full_like(out, float("nan")), out)
    return warn_nan(out, "Q_TE", "an image is a non-zero constant (normalize1 divides 0 by 0)")


def _ncc(lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    hx = entropy_counts(hist256(lx), 256.0)
    hy = entropy_counts(hist256(ly), 256.0)
    return hx + hy - entropy_counts(joint_hist256(lx, ly), 256.0)


@register(
    "Q_NCIE",
    higher_is_better=True,
    needs="pair",
    description="Wang's nonlinear correlation information entropy of (A, B, F).",
    reference="Wang, Shen & Jin, in Image Fusion: Algorithms and Applications, 2008 (MEFB metricsQncie)",
    conventions={"mefb": "normalize1, NCC = normalised-entropy MI (log base 256), eigenvalues of the 3×3 NCC "
                         "matrix; same under every convention"},
)
def q_ncie(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``1 + sum_k (r_k / 3) log_256(r_k / 3)`` with ``r`` the eigenvalues of
    ``R = [[1, NCC(A,B), NCC(A,F)], [NCC(A,B), 1, NCC(B,F)], [NCC(A,F), NCC(B,F), 1]]``, ``(B,)``
    in ``[0, 1]``. Eigenvalues ``<= 0`` (a singular R, e.g. F = A = B) contribute 0 (their limit);
    MATLAB would return NaN / complex there."""
    x, a, b = two_sources(fused, sources, "Q_NCIE")
    (lf, bf), (la, ba), (lb, bb) = _nmi_levels(x), _nmi_levels(a), _nmi_levels(b)
    nab, naf, nbf = _ncc(la, lb), _ncc(la, lf), _ncc(lb, lf)
    one = torch.ones_like(nab)
    r = torch.stack([torch.stack([one, nab, naf], -1), torch.stack([nab, one, nbf], -1),
                     torch.stack([naf, nbf, one], -1)], -2)
    ev = torch.linalg.eigvalsh(r) / 3
    terms = torch.where(ev > 0, ev * torch.log(ev.clamp_min(1e-300)) / math.log(256.0), torch.zeros_like(ev))
    out = 1 + terms.sum(-1)
    out = torch.where(bf | ba | bb, torch.full_like(out, float("nan")), out)
    return warn_nan(out, "Q_NCIE", "an image is a non-zero constant (normalize1 divides 0 by 0)")
