"""Metrics of a fused image against its two source images (the CDDFuse set and its neighbours):
MI, SCD, VIF, Qabf, Q_G, SSIM, PSNR, MSE, RMSE and CC.

Every function takes ``fused`` — ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)``, torch or numpy,
gray on the 0–255 scale — and ``sources = [A, B]`` (infrared first, then visible; each
``(H, W)`` / ``(1, H, W)`` shared by the batch, or ``(B, 1, H, W)``), and returns a ``(B,)``
``float64`` tensor on ``fused``'s device. ``convention`` picks the toolbox whose definition is
reproduced, quirks included (see docs/metrics.md):
``"cddfuse"`` (default), ``"matlab"``, ``"vifb"``, ``"mefb"``.

Where a formula is undefined (a correlation with a constant image, no gradient anywhere) the
value is NaN, as in the toolbox, and a :class:`~fusecli.metrics._checks.MetricWarning` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ShapeError, UnknownNameError
from . import register
from ._checks import as_gray_255, as_sources_255, check_convention, warn_nan
from ._filters import check_window, conv2_same, filter2_same, gauss1d, pad, safe_div, sep_valid, shift_valid_1d

# ------------------------------------------------------------------ helpers


def two_sources(fused: Any, sources: Sequence[Any], what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check and return ``(F, A, B)`` as ``(B, 1, H, W)`` float64 tensors."""
    x = as_gray_255(fused, "fused")
    if isinstance(sources, (torch.Tensor, np.ndarray)):
        raise ShapeError(f"{what}: sources must be a list of two images [A, B], not a single array.")
    if len(sources) != 2:
        raise ShapeError(f"{what} needs exactly two source images [A, B] (e.g. [ir, vis]), got {len(sources)}.")
    a, b = as_sources_255(sources, x)
    return x, a, b


def _levels(x: torch.Tensor) -> torch.Tensor:
    """Integer gray levels 0..255 (round half to even, clamp) as int64, shape ``(B, H*W)``."""
    return x.round().clamp(0, 255).to(torch.int64).flatten(1)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``round`` / integer conversion: halves away from zero."""
    r = torch.round(x)
    fl = torch.floor(x)
    tie = (x - fl) == 0.5
    return torch.where(tie & (x > 0), fl + 1, torch.where(tie & (x < 0), fl, r))


def hist256(idx: torch.Tensor) -> torch.Tensor:
    """Per-row 256-bin counts of int64 levels ``(B, N)`` -> float64 ``(B, 256)``."""
    b = idx.shape[0]
    off = idx + 256 * torch.arange(b, device=idx.device)[:, None]
    return torch.bincount(off.flatten(), minlength=256 * b).reshape(b, 256).to(torch.float64)


def joint_hist256(ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """Per-row joint 256×256 counts of two int64 level arrays ``(B, N)`` -> ``(B, 256, 256)``."""
    b = ia.shape[0]
    off = ia * 256 + ib + 65536 * torch.arange(b, device=ia.device)[:, None]
    return torch.bincount(off.flatten(), minlength=65536 * b).reshape(b, 256, 256).to(torch.float64)


def entropy_counts(counts: torch.Tensor, base: float) -> torch.Tensor:
    """``-sum p log p`` over all but the first dim of a count array (empty bins skipped)."""
    c = counts.flatten(1)
    p = c / c.sum(dim=1, keepdim=True)
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    return -plogp.sum(dim=1) / math.log(base)


def minmax_levels(x: torch.Tensor) -> torch.Tensor:
    """VIFB's MI pre-processing: ``int16(255 * (x - min) / (max - min))`` per image (zeros when
    constant), as int64 ``(B, H*W)``."""
    f = x.flatten(1)
    mn = f.min(dim=1, keepdim=True).values
    mx = f.max(dim=1, keepdim=True).values
    rng = mx - mn
    norm = torch.where(rng > 0, (f - mn) / torch.where(rng > 0, rng, torch.ones_like(rng)), torch.zeros_like(f))
    return round_half_away(norm * 255).clamp(0, 255).to(torch.int64)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over all pixels of each image (MATLAB ``corr2``), ``(B,)``; NaN if
    either image is constant."""
    x = x.flatten(1)
    y = y.flatten(1)
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    num = (xc * yc).sum(dim=1)
    den = torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))
    return safe_div(num, den)


# ------------------------------------------------------------------ MI


def mutual_information(a: torch.Tensor, f: torch.Tensor, convention: str = "cddfuse") -> torch.Tensor:
    """MI(A, F) of one source and the fused image under ``convention``, ``(B,)``.

    ``"cddfuse"``: plug-in MI of the 256×256 joint histogram of the rounded gray levels in nats
    (= ``sklearn.metrics.mutual_info_score``). ``"matlab"``: ``H(A) + H(F) - H(A, F)`` in bits,
    the joint histogram indexed with ``uint8(x) + 1`` so that levels 254 and 255 share a joint
    bin (Tang's ``Hab.m``). ``"vifb"`` / ``"mefb"``: each image min–max normalised to 0..255 and
    rounded first, nats.
    """
    c = check_convention(convention)
    if c in ("vifb", "mefb"):
        ia, i_f = minmax_levels(a), minmax_levels(f)
    else:
        ia, i_f = _levels(a), _levels(f)
    ha = entropy_counts(hist256(ia), 2.0 if c == "matlab" else math.e)
    hf = entropy_counts(hist256(i_f), 2.0 if c == "matlab" else math.e)
    if c == "matlab":
        joint = joint_hist256(i_f.clamp(max=254), ia.clamp(max=254))  # uint8 + 1 saturates
        return ha + hf - entropy_counts(joint, 2.0)
    return ha + hf - entropy_counts(joint_hist256(i_f, ia), math.e)


@register(
    "MI",
    higher_is_better=True,
    needs="pair",
    description="Mutual information MI(A,F) + MI(B,F) of 256-bin gray histograms.",
    reference="Qu, Zhang & Yan, Electron. Lett. 38(7), 2002",
    conventions={
        "cddfuse": "nats, plug-in 256×256 joint histogram (sklearn mutual_info_score)",
        "matlab": "bits, H(X)+H(F)−H(X,F); joint bins of 254 and 255 merged (uint8+1 saturation)",
        "vifb": "nats, after min–max normalising each image to 0..255 and rounding",
        "mefb": "as vifb (MEFB has no plain MI; its NMI is a separate metric)",
    },
)
def mi(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """Mutual information ``MI(A, F) + MI(B, F)``, ``(B,)``; ``>= 0``, in nats (``"cddfuse"``,
    ``"vifb"``, ``"mefb"``) or bits (``"matlab"``). See :func:`mutual_information`."""
    c = check_convention(convention)
    x, a, b = two_sources(fused, sources, "MI")
    return mutual_information(torch.cat([a, b]), torch.cat([x, x]), c).view(2, -1).sum(0)


# ------------------------------------------------------------------ MSE, PSNR, CC, SCD


def _mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).square().flatten(1).mean(dim=1)


def _vifb_err(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """VIFB's ``mse`` helper (``metricsRmse.m`` / ``metricsPsnr.m``): ``sqrt(sum((x - y)^2)) / (H W)``,
    i.e. the L2 norm of the difference over the pixel count (the textbook RMSE ÷ sqrt(H W)), ``(B,)``."""
    n = x.shape[-1] * x.shape[-2]
    return (x - y).square().flatten(1).sum(1).sqrt() / n


@register(
    "MSE",
    higher_is_better=False,
    needs="pair",
    description="Mean squared error to the sources, averaged over the two.",
    reference="CDDFuse Evaluator; Tang's MSE_evaluation.m",
    conventions={
        "cddfuse": "(MSE(A,F)+MSE(B,F))/2 on 0–255",
        "matlab": "as cddfuse but on 0–1 images (÷255²)",
        "vifb": "as cddfuse (VIFB reports RMSE instead)",
        "mefb": "as cddfuse",
    },
)
def mse(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """``(MSE(A, F) + MSE(B, F)) / 2``, ``(B,)``, ``>= 0``: on the 0–255 scale, or on the 0–1
    scale (divided by 255²) for ``"matlab"``."""
    c = check_convention(convention)
    x, a, b = two_sources(fused, sources, "MSE")
    m = (_mse(x, a) + _mse(x, b)) / 2
    return m / 255.0**2 if c == "matlab" else m


@register(
    "RMSE",
    higher_is_better=False,
    needs="pair",
    description="VIFB's RMSE: (‖F−A‖₂ + ‖F−B‖₂) / (2·H·W) on 0–255 (not the textbook RMSE).",
    reference="Jagalingam & Hegde, Aquatic Procedia 4, 2015 (VIFB metricsRmse.m)",
    conventions={"vifb": "(m_A+m_B)/2, m_X = ‖F−X‖₂ / (H·W) on 0–255, i.e. the textbook RMSE ÷ √(H·W) "
                         "(VIFB's metricsRmse.m; no other toolbox has RMSE)"},
    variants=("form",),
)
def rmse(fused: Any, sources: Sequence[Any], form: str = "vifb") -> torch.Tensor:
    """RMSE of F against the two sources, ``(B,)``, ``>= 0``, on the 0–255 scale.

    ``form="vifb"`` (the registered metric): ``(m_A + m_B) / 2`` with
    ``m_X = sqrt(sum (F - X)^2) / (H W)``, as VIFB's ``metricsRmse.m`` computes it (its ``mse``
    helper divides the L2 norm by the pixel count, so the values are the textbook RMSE divided by
    ``sqrt(H W)``; the averaging is of these, not of MSEs). ``form="textbook"``:
    ``(sqrt(MSE_A) + sqrt(MSE_B)) / 2``.
    """
    if form not in ("vifb", "textbook"):
        raise UnknownNameError("RMSE form", str(form), ["vifb", "textbook"])
    x, a, b = two_sources(fused, sources, "RMSE")
    if form == "textbook":
        return (_mse(x, a).sqrt() + _mse(x, b).sqrt()) / 2
    return (_vifb_err(x, a) + _vifb_err(x, b)) / 2


@register(
    "PSNR",
    higher_is_better=True,
    needs="pair",
    description="Peak signal-to-noise ratio (dB) against the two sources.",
    reference="Jagalingam & Hegde, Aquatic Procedia 4, 2015; toolbox formulas differ",
    conventions={
        "cddfuse": "10·log10(max(F)² / MSE), MSE = mean of the two MSEs",
        "matlab": "20·log10(255 / sqrt(MSE on 0–1)) = textbook + 48.13 dB",
        "vifb": "20·log10(255 / sqrt((m_A+m_B)/2)), m_X = ‖F−X‖₂ / (H·W)",
        "mefb": "as vifb",
    },
)
def psnr(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """PSNR in dB, ``(B,)``; ``+inf`` when F equals both sources. The four toolbox formulas:

    * ``"cddfuse"``: ``10 log10(max(F)^2 / MSE)`` with ``MSE = (MSE_A + MSE_B) / 2`` (peak is
      the maximum of F, not 255);
    * ``"matlab"``: ``20 log10(255 / sqrt(MSE / 255^2))``;
    * ``"vifb"`` / ``"mefb"``: ``20 log10(255 / sqrt((m_A + m_B) / 2))`` with
      ``m_X = sqrt(sum (F - X)^2) / (H W)``.
    """
    c = check_convention(convention)
    x, a, b = two_sources(fused, sources, "PSNR")
    if c in ("vifb", "mefb"):
        m = (_vifb_err(x, a) + _vifb_err(x, b)) / 2
        return 20 * torch.log10(255.0 / torch.sqrt(m))
    m = (_mse(x, a) + _mse(x, b)) / 2
    if c == "matlab":
        return 20 * torch.log10(255.0 / torch.sqrt(m / 255.0**2))
    peak = x.flatten(1).max(dim=1).values
    return 10 * torch.log10(peak.square() / m)


@register(
    "CC",
    higher_is_better=True,
    needs="pair",
    description="Correlation coefficient: mean Pearson r of F with each source.",
    reference="CDDFuse Evaluator; Tang's CC_evaluation.m",
    conventions={"cddfuse": "(r(A,F) + r(B,F)) / 2 (all toolboxes agree)"},
)
def cc(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``(r(A, F) + r(B, F)) / 2`` with Pearson ``r`` over all pixels, ``(B,)`` in ``[-1, 1]``;
    NaN (with a warning) when an image is constant."""
    x, a, b = two_sources(fused, sources, "CC")
    return warn_nan((pearson(a, x) + pearson(b, x)) / 2, "CC", "an image is constant")


@register(
    "SCD",
    higher_is_better=True,
    needs="pair",
    description="Sum of the correlations of differences corr(F−B, A) + corr(F−A, B).",
    reference="Aslantas & Bendes, AEU 69(12), 2015",
    conventions={"cddfuse": "corr(F−B, A) + corr(F−A, B) (all toolboxes agree)"},
)
def scd(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``corr(F - B, A) + corr(F - A, B)``, ``(B,)`` in ``[-2, 2]``; NaN (with a warning) when a
    source or a difference image is constant."""
    x, a, b = two_sources(fused, sources, "SCD")
    return warn_nan(pearson(x - b, a) + pearson(x - a, b), "SCD", "a source or F − source is constant")


# ------------------------------------------------------------------ VIF (VIFp)

_VIF_SIGMA_N = 2.0
_EPS = 1e-10


def _vif_scales(h: int, w: int) -> bool:
    """Whether an ``h × w`` image is large enough for the four VIFp scales."""
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        if scale > 1:
            h, w = h - (n - 1), w - (n - 1)
            if h < 1 or w < 1:
                return False
            h, w = (h + 1) // 2, (w + 1) // 2
        if h < n or w < n:
            return False
    return True


def vif_stats(refs: Sequence[torch.Tensor], dist: torch.Tensor):
    """Yield, per scale 1..4, one cleaned ``(sigma1_sq, g, sv_sq)`` triple per reference of LIVE's
    ``vifp_mscale(ref, dist)`` (references ``refs``, distorted ``dist``; all ``(B, 1, H, W)``).
    The statistics of ``dist`` are computed once and shared by the references."""
    refs = list(refs)
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        k = gauss1d(n, n / 5.0).tolist()
        if scale > 1:
            refs = [sep_valid(r, k)[..., ::2, ::2] for r in refs]
            dist = sep_valid(dist, k)[..., ::2, ::2]
        mu2 = sep_valid(dist, k)
        s2 = sep_valid(dist * dist, k).sub_(mu2 * mu2).clamp_min_(0)
        low2 = s2 < _EPS
        out = []
        for ref in refs:
            mu1 = sep_valid(ref, k)
            s1 = sep_valid(ref * ref, k).sub_(mu1 * mu1).clamp_min_(0)
            s12 = sep_valid(ref * dist, k).sub_(mu1 * mu2)
            g = s12 / (s1 + _EPS)
            sv = s2 - g * s12
            low1 = s1 < _EPS
            g.masked_fill_(low1, 0.0)
            sv = torch.where(low1, s2, sv)
            s1.masked_fill_(low1, 0.0)
            g.masked_fill_(low2, 0.0)
            sv.masked_fill_(low2, 0.0)
            neg = g < 0
            sv = torch.where(neg, s2, sv)
            g.clamp_min_(0)
            sv.clamp_min_(_EPS)  # sv(sv <= eps) = eps
            out.append((s1, g, sv))
        yield out


def vifp(ref: Any, dist: Any) -> torch.Tensor:
    """Sheikh & Bovik's multiscale pixel-domain VIF ``VIFp(ref, dist)`` (LIVE ``vifp_mscale.m``,
    ``sigma_n^2 = 2``), ``(B,)``; NaN where no scale has any reference variance.

    Args:
        ref, dist: ``(H, W)`` / ``(B, 1, H, W)`` on 0–255, same size, at least 41×41 pixels.
    """
    r = as_gray_255(ref, "reference")
    d = as_sources_255([dist], r)[0]
    if not _vif_scales(*r.shape[-2:]):
        raise ShapeError(f"VIF needs images of at least 41×41 pixels (its four scales), got "
                         f"{r.shape[-2]}×{r.shape[-1]}; use larger images.")
    num = torch.zeros(r.shape[0], dtype=torch.float64, device=r.device)
    den = torch.zeros_like(num)
    for ((s1, g, sv),) in vif_stats([r], d):
        num = num + torch.log10(1 + g * g * s1 / (sv + _VIF_SIGMA_N)).flatten(1).sum(1)
        den = den + torch.log10(1 + s1 / _VIF_SIGMA_N).flatten(1).sum(1)
    return num / den


@register(
    "VIF",
    higher_is_better=True,
    needs="pair",
    description="Visual information fidelity: VIFp(A,F) + VIFp(B,F) (mefb: Han's VIFF).",
    reference="Sheikh & Bovik, IEEE TIP 15(2), 2006 (LIVE vifp_mscale); Han et al., Inf. Fusion 14(2), 2013",
    conventions={
        "cddfuse": "VIFp(A,F)+VIFp(B,F), σn²=2; a NaN VIFp counts as 1.0",
        "matlab": "VIFp(A,F)+VIFp(B,F), σn²=2 (NaN stays NaN)",
        "vifb": "as matlab (VIFB has no VIF)",
        "mefb": "Han et al. 2013 VIFF (see VIFF)",
    },
    variants=("vifp-sum", "viff"),
)
def vif(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """``VIFp(A, F) + VIFp(B, F)`` (``"cddfuse"``, ``"matlab"``, ``"vifb"``), ``(B,)``, ``>= 0``
    (about 0..2); ``"mefb"`` computes Han et al.'s VIFF instead (:func:`fusecli.metrics.viff.viff`).
    ``"cddfuse"`` replaces a NaN VIFp by 1.0 as the Evaluator does. Images >= 41×41."""
    c = check_convention(convention)
    x, a, b = two_sources(fused, sources, "VIF")
    if not _vif_scales(*x.shape[-2:]):
        raise ShapeError(f"VIF needs images of at least 41×41 pixels (its four scales), got "
                         f"{x.shape[-2]}×{x.shape[-1]}; use larger images.")
    if c == "mefb":
        from .viff import viff

        return viff(x, [a, b])
    nums = [torch.zeros(x.shape[0], dtype=torch.float64, device=x.device) for _ in range(4)]
    for per_ref in vif_stats([a, b], x):  # F's statistics shared by the two sources
        for i, (s1, g, sv) in enumerate(per_ref):
            nums[2 * i] += torch.log10(1 + g * g * s1 / (sv + _VIF_SIGMA_N)).flatten(1).sum(1)
            nums[2 * i + 1] += torch.log10(1 + s1 / _VIF_SIGMA_N).flatten(1).sum(1)
    va, vb = nums[0] / nums[1], nums[2] / nums[3]
    if c == "cddfuse":
        va = torch.where(torch.isnan(va), torch.ones_like(va), va)
        vb = torch.where(torch.isnan(vb), torch.ones_like(vb), vb)
    return warn_nan(va + vb, "VIF", "a source has no local variance at any scale")


# ------------------------------------------------------------------ Qabf

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
_SOBEL_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=torch.float64)


def _qabf_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx = conv2_same(x, _SOBEL_X.to(x.device))
    gy = conv2_same(x, _SOBEL_Y.to(x.device))
    g = torch.sqrt(gx * gx + gy * gy)
    # atan(gy / gx), pi/2 where gx == 0 (the inf / nan of those pixels are discarded)
    alpha = torch.where(gx == 0, math.pi / 2, torch.atan(gy / gx))
    return g, alpha


def _qabf_q(g_a, a_a, g_f, a_f):
    # min/max ratio of the strengths; the toolboxes' quirk: G = g_F where g_A == g_F
    gaf = torch.where(g_a == g_f, g_f, torch.minimum(g_a, g_f) / torch.maximum(g_a, g_f))
    aaf = 1 - torch.abs(a_a - a_f) / (math.pi / 2)
    qg = 0.9994 / (1 + torch.exp(-15 * (gaf - 0.5)))
    qa = 0.9879 / (1 + torch.exp(-22 * (aaf - 0.8)))
    return qg * qa


@register(
    "Qabf",
    higher_is_better=True,
    needs="pair",
    description="Xydeas–Petrović gradient-based edge-preservation index Q^{AB/F}.",
    reference="Xydeas & Petrović, Electron. Lett. 36(4), 2000",
    conventions={"cddfuse": "Sobel conv2 'same', Γg=0.9994 κg=15 σg=0.5, Γα=0.9879 κα=22 σα=0.8, "
                            "G=g_F when g_A=g_F (all toolboxes agree)"},
)
def qabf(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """``Q^{AB/F} = sum(Q_AF g_A + Q_BF g_B) / sum(g_A + g_B)``, ``(B,)`` in ``[0, 1)``.

    Sobel gradients by zero-padded convolution, orientation ``atan(gy / gx)`` (``pi/2`` where
    ``gx = 0``), strength ratio ``G_AF = min/max`` with the toolboxes' quirk ``G_AF = g_F`` where
    ``g_A == g_F``. NaN (with a warning) when both sources have no gradient anywhere.
    """
    x, a, b = two_sources(fused, sources, "Qabf")
    g_a, al_a = _qabf_grad(a)
    g_b, al_b = _qabf_grad(b)
    g_f, al_f = _qabf_grad(x)
    num = (_qabf_q(g_a, al_a, g_f, al_f) * g_a + _qabf_q(g_b, al_b, g_f, al_f) * g_b).flatten(1).sum(1)
    den = (g_a + g_b).flatten(1).sum(1)
    return warn_nan(safe_div(num, den), "Qabf", "both sources have no gradient")


# ------------------------------------------------------------------ Q_G (Liu's metricXydeas)

_LIU_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
_LIU_SOBEL_Y = _LIU_SOBEL_X.t().contiguous()
_LIU_EPS = 0.00001  # metricXydeas.m adds it where a gradient (component) is exactly 0


def _bump_zeros(v: torch.Tensor) -> torch.Tensor:
    """``v + (v == 0) * 1e-5`` (metricXydeas.m's ``buffer``)."""
    return v + (v == 0).to(v.dtype) * _LIU_EPS


def _liu_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel magnitude and ``atan(gy / gx)`` by ``filter2(..., 'same')`` (correlation, zero
    padding); ``gx`` is bumped by 1e-5 where it is 0 before the division, as in metricXydeas.m."""
    gx = filter2_same(x, _LIU_SOBEL_X.to(x.device))
    gy = filter2_same(x, _LIU_SOBEL_Y.to(x.device))
    g = torch.sqrt(gx * gx + gy * gy)
    return g, torch.atan(gy / _bump_zeros(gx))


def _liu_preservation(g_s: torch.Tensor, a_s: torch.Tensor, g_f: torch.Tensor, a_f: torch.Tensor):
    """One source's edge preservation map of metricXydeas.m, ``(Q_SF, g_s', g_f')``: the primed
    strengths are bumped by 1e-5 where 0 (the .m file keeps the bumped arrays and uses them as
    the weights and in the next source's comparison)."""
    larger = g_s > g_f
    g_s = _bump_zeros(g_s)
    up = g_f / g_s
    g_f = _bump_zeros(g_f)
    down = g_s / g_f
    g_rel = torch.where(larger, up, down)
    a_rel = torch.abs(torch.abs(a_s - a_f) - math.pi / 2) * 2 / math.pi
    q_g = 1 / (1 + torch.exp(-10 * (g_rel - 0.5)))
    q_a = 1 / (1 + torch.exp(-20 * (a_rel - 0.75)))
    return q_g * q_a, g_s, g_f


@register(
    "Q_G",
    higher_is_better=True,
    needs="pair",
    description="Liu's gradient-based Q_G (metricXydeas.m): Xydeas–Petrović edge preservation with Liu's "
                "parameters, averaged per pixel.",
    reference="Xydeas & Petrović, Proc. SPIE 4051, 2000; Liu et al., IEEE TPAMI 34(1), 2012 (metricXydeas.m)",
    conventions={"cddfuse": "Liu metricXydeas.m: Sobel filter2 'same', 1e-5 added to zero gx / g, "
                            "Q_g = 1/(1+e^(−10(G−0.5))), Q_α = 1/(1+e^(−20(A−0.75))), "
                            "A = abs(abs(α_X−α_F) − π/2)·2/π, mean over pixels of (Q_AF g_A + Q_BF g_B)/(g_A + g_B)"},
)
def q_g(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """Liu's ``metricXydeas(A, B, F)``, ``(B,)`` in ``[0, 1]``; **not** the same number as
    :func:`qabf` (other sigmoid parameters, orientation agreement measured against π/2, and the
    gradient-weighted average taken per pixel, then averaged over the image).

    Sobel gradients by ``filter2(..., 'same')``; orientations ``atan(gy / gx)`` with 1e-5 added
    to ``gx`` where it is 0; strength ratio ``G = min/max`` of the (1e-5-bumped) strengths;
    ``Q = Q_g Q_α`` with ``Q_g = 1 / (1 + exp(-10 (G - 0.5)))`` and
    ``Q_α = 1 / (1 + exp(-20 (A - 0.75)))``; result
    ``mean((Q_AF g_A + Q_BF g_B) / (g_A + g_B))`` (flat pixels, g = 1e-5, count fully).
    """
    x, a, b = two_sources(fused, sources, "Q_G")
    g_f, al_f = _liu_grad(x)
    g_a, al_a = _liu_grad(a)
    g_b, al_b = _liu_grad(b)
    q_af, g_a, g_f = _liu_preservation(g_a, al_a, g_f, al_f)
    q_bf, g_b, g_f = _liu_preservation(g_b, al_b, g_f, al_f)
    return ((q_af * g_a + q_bf * g_b) / (g_a + g_b)).flatten(1).mean(1)


# ------------------------------------------------------------------ SSIM


def _ssim_skimage_f32(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """skimage 0.19 ``structural_similarity(x, y)`` on float32 images: 7×7 uniform window,
    sample covariance, every step rounded to float32 as numpy does, map cropped by 3, mean."""
    ones = [1.0] * 7

    def ufilt(v32: torch.Tensor) -> torch.Tensor:  # scipy uniform_filter: per-axis, double accumulation
        t = (shift_valid_1d(v32.double(), ones, -2) / 7.0).float()
        return (shift_valid_1d(t.double(), ones, -1) / 7.0).float()

    x32, y32 = x.float(), y.float()
    ux, uy = ufilt(x32), ufilt(y32)
    uxx, uyy, uxy = ufilt(x32 * x32), ufilt(y32 * y32), ufilt(x32 * y32)
    cov_norm = torch.tensor(49.0 / 48.0, dtype=torch.float32)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = torch.tensor((0.01 * data_range) ** 2, dtype=torch.float32)
    c2 = torch.tensor((0.03 * data_range) ** 2, dtype=torch.float32)
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux * ux + uy * uy + c1
    b2 = vx + vy + c2
    s = (a1 * a2) / (b1 * b2)
    return s.double().flatten(1).mean(1)


def ssim_map_gauss(x: torch.Tensor, y: torch.Tensor, c1: float, c2: float, *, size: int = 11,
                   sigma: float = 1.5, padding: str | None = None) -> torch.Tensor:
    """Wang's SSIM map with a ``size``×``size`` Gaussian window (population statistics):
    ``'valid'`` (``padding=None``) or same-size with ``padding="replicate"``."""
    k = gauss1d(size, sigma, device=x.device)
    if padding is not None:
        lo = (size - 1) // 2
        x = pad(x, (lo, size - 1 - lo, lo, size - 1 - lo), padding)
        y = pad(y, (lo, size - 1 - lo, lo, size - 1 - lo), padding)
    mx, my = sep_valid(x, k), sep_valid(y, k)
    sxx = sep_valid(x * x, k) - mx * mx
    syy = sep_valid(y * y, k) - my * my
    sxy = sep_valid(x * y, k) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim_pair(x: Any, y: Any, convention: str = "cddfuse") -> torch.Tensor:
    """SSIM of one image pair as the toolbox of ``convention`` computes it, ``(B,)``, <= 1:

    * ``"cddfuse"``: skimage 0.19 ``structural_similarity`` on float32 0–255 images with the
      inferred ``data_range = 2`` (C1 = 4e-4, C2 = 3.6e-3), 7×7 uniform window, sample
      covariance, 3-pixel border cropped;
    * ``"matlab"``: MATLAB ``ssim`` on 0–255 doubles: 11×11 Gaussian σ = 1.5, replicate padding,
      ``DynamicRange = 1`` (C1 = 1e-4, C2 = 9e-4), mean of the full map;
    * ``"vifb"`` / ``"mefb"``: Wang's ``ssim_index``: 11×11 Gaussian σ = 1.5, ``'valid'``,
      L = 255 (C1 = 6.5025, C2 = 58.5225).
    """
    c = check_convention(convention)
    a = as_gray_255(x, "image 1")
    b = as_sources_255([y], a)[0]
    if c == "cddfuse":
        check_window(a, 7, "SSIM")
        return _ssim_skimage_f32(a, b, 2.0)
    check_window(a, 11, "SSIM")
    if c == "matlab":
        return ssim_map_gauss(a, b, 1e-4, 9e-4, padding="replicate").flatten(1).mean(1)
    return ssim_map_gauss(a, b, (0.01 * 255) ** 2, (0.03 * 255) ** 2).flatten(1).mean(1)


@register(
    "SSIM",
    higher_is_better=True,
    needs="pair",
    description="Structural similarity of F with each source, combined as the toolbox does.",
    reference="Wang et al., IEEE TIP 13(4), 2004",
    conventions={
        "cddfuse": "SSIM(F,A)+SSIM(F,B), skimage 0.19: 7×7 uniform, data_range 2, float32",
        "matlab": "(SSIM(F,A)+SSIM(F,B))/2, MATLAB ssim: Gaussian 11/1.5, replicate pad, DynamicRange 1",
        "vifb": "SSIM(A,F)+SSIM(B,F), Wang ssim_index: Gaussian 11/1.5, valid, L=255",
        "mefb": "as vifb (MEFB reports MEF-SSIM)",
    },
)
def ssim(fused: Any, sources: Sequence[Any], convention: str = "cddfuse") -> torch.Tensor:
    """SSIM of F with the two sources, ``(B,)``: the **sum** ``SSIM(F, A) + SSIM(F, B)`` (0..2)
    for ``"cddfuse"``, ``"vifb"``, ``"mefb"``, the **mean** (0..1) for ``"matlab"``. See
    :func:`ssim_pair` for each toolbox's SSIM. Images of at least 7×7 (cddfuse) / 11×11."""
    c = check_convention(convention)
    x, a, b = two_sources(fused, sources, "SSIM")
    s = ssim_pair(x, a, c) + ssim_pair(x, b, c)
    return s / 2 if c == "matlab" else s
