"""Q_P, Zhao, Laganière & Liu's phase-congruency fusion metric, as Liu's toolbox computes it.

Reference followed: Z. Liu's ``metricZhao.m`` with ``myphasecong3.m`` (``zhengliu6699/imageFusionMetrics``,
identical in MEFB ``metrics/metricsQp.m`` + ``metrics/myphasecong3.m``): J. Zhao, R. Laganière, Z. Liu,
Int. J. Innovative Comput. Inf. Control 3(6A), 2007; phase congruency by Kovesi's ``phasecong2/3``
(P. Kovesi, Videre 1(3), 1999; DICTA 2003) with Liu's edits; see docs/metrics.md.

``myphasecong3`` is computed in the frequency domain exactly as the MATLAB code does it (log-Gabor
filters built on MATLAB's own frequency grids, ``ifftshift``/``fftshift`` included, 4 scales × 6
orientations, noise threshold from the median of the smallest scale's energy, frequency-spread
weighting, PC_2 energy ``E·MeanE + O·MeanO − |E·MeanO − O·MeanE|``), batched in torch (complex128).
The image-independent parts (filters and their noise statistics) are cached per image size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ShapeError
from . import register
from ._checks import warn_nan
from ._filters import gauss1d, sep_same
from .similarity import two_sources

_EPSILON = 1e-4  # myphasecong3's epsilon


@functools.lru_cache(maxsize=8)
def _filters(rows: int, cols: int, device: str, nscale: int = 4, norient: int = 6, min_wavelength: float = 3.0,
             mult: float = 2.1, sigma_onf: float = 0.55, dtheta_on_sigma: float = 1.2):
    """The log-Gabor filters of ``myphasecong3`` for a ``rows × cols`` image and their per-
    orientation noise statistics. Returns ``(filters (norient, nscale, rows, cols) float64,
    em_n (norient,), sum_an2 (norient,), sum_aiaj (norient,))``."""
    f64 = torch.float64
    if cols % 2:
        xr = torch.arange(-(cols - 1) / 2, (cols - 1) / 2 + 0.5, dtype=f64) / (cols - 1)
    else:
        xr = torch.arange(-cols / 2, cols / 2 - 0.5, dtype=f64) / cols
    if rows % 2:
        yr = torch.arange(-(rows - 1) / 2, (rows - 1) / 2 + 0.5, dtype=f64) / (rows - 1)
    else:
        yr = torch.arange(-rows / 2, rows / 2 - 0.5, dtype=f64) / rows
    y, x = torch.meshgrid(yr, xr, indexing="ij")
    radius = torch.sqrt(x * x + y * y)
    radius[rows // 2, cols // 2] = 1.0
    theta = torch.atan2(-y, x)
    radius = torch.fft.ifftshift(radius)
    theta = torch.fft.ifftshift(theta)
    sintheta, costheta = torch.sin(theta), torch.cos(theta)

    # lowpassfilter([rows, cols], .45, 15)
    lx = (torch.arange(1, cols + 1, dtype=f64) - (cols // 2 + 1)) / cols
    ly = (torch.arange(1, rows + 1, dtype=f64) - (rows // 2 + 1)) / rows
    lyy, lxx = torch.meshgrid(ly, lx, indexing="ij")
    lp = torch.fft.fftshift(1.0 / (1.0 + (torch.sqrt(lxx * lxx + lyy * lyy) / 0.45) ** 30))

    log_gabor = []
    for s in range(nscale):
        fo = 1.0 / (min_wavelength * mult**s)
        lg = torch.exp(-(torch.log(radius / fo) ** 2) / (2 * math.log(sigma_onf) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor.append(lg)
    theta_sigma = math.pi / norient / dtheta_on_sigma
    filters, em_n, sum_an2, sum_aiaj = [], [], [], []
    for o in range(norient):
        angl = o * math.pi / norient
        ds = sintheta * math.cos(angl) - costheta * math.sin(angl)
        dc = costheta * math.cos(angl) + sintheta * math.sin(angl)
        dtheta = torch.abs(torch.atan2(ds, dc))
        spread = torch.exp(-(dtheta**2) / (2 * theta_sigma**2))
        fo_list = [lg * spread for lg in log_gabor]
        ifft_f = [torch.fft.ifft2(f).real * math.sqrt(rows * cols) for f in fo_list]
        em_n.append(float((fo_list[0] ** 2).sum()))
        sum_an2.append(float(sum(t**2 for t in ifft_f).sum()))
        aiaj = torch.zeros(rows, cols, dtype=f64)
        for si in range(nscale - 1):
            for sj in range(si + 1, nscale):
                aiaj = aiaj + ifft_f[si] * ifft_f[sj]
        sum_aiaj.append(float(aiaj.sum()))
        filters.append(torch.stack(fo_list))
    return (torch.stack(filters).to(device), torch.tensor(em_n, dtype=f64), torch.tensor(sum_an2, dtype=f64),
            torch.tensor(sum_aiaj, dtype=f64))


def phase_congruency(img: torch.Tensor, *, nscale: int = 4, norient: int = 6, k: float = 2.0,
                     cut_off: float = 0.5, g: float = 10.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Liu's ``myphasecong3`` (Kovesi's phase congruency) with its default parameters.

    Args:
        img: ``(B, 1, H, W)`` float64 images (any scale; the toolboxes pass 0–255).

    Returns:
        ``(pc, M, m)``, each ``(B, 1, H, W)`` float64: phase congruency in ``[0, 1]`` and the maximum
        and minimum moments of the phase-congruency covariance. NaN where MATLAB's code divides
        0 by 0 (a constant image: every filter response is zero).
    """
    b, _, rows, cols = img.shape
    filt, em_n, sum_an2, sum_aiaj = _filters(rows, cols, str(img.device), nscale, norient)
    imagefft = torch.fft.fft2(img[:, 0])  # (B, rows, cols)
    fft_ri = torch.view_as_real(imagefft)  # (B, rows, cols, 2)
    npix = rows * cols
    zero = torch.zeros(b, rows, cols, dtype=torch.float64, device=img.device)
    total_energy, total_sum_an = zero.clone(), zero.clone()
    covx2, covy2, covxy = zero.clone(), zero.clone(), zero.clone()
    for o in range(norient):
        angl = o * math.pi / norient
        # complex image spectrum times the real filters, without promoting the filters to complex
        prod = torch.view_as_complex((fft_ri[:, None] * filt[o][None, :, :, :, None]).contiguous())
        eo = torch.fft.ifft2(prod)  # (B, nscale, rows, cols)
        e_re, e_im = eo.real.contiguous(), eo.imag.contiguous()
        an = torch.sqrt(e_re * e_re + e_im * e_im)
        sum_an = an.sum(1)
        sum_e = e_re.sum(1)
        sum_o = e_im.sum(1)
        max_an = an.amax(1)
        x_energy = torch.sqrt(sum_e**2 + sum_o**2) + _EPSILON
        mean_e = sum_e / x_energy
        mean_o = sum_o / x_energy
        # sum over scales of E·MeanE + O·MeanO − |E·MeanO − O·MeanE|; the first two terms summed
        # over the scales are sumE·MeanE + sumO·MeanO
        energy = (sum_e * mean_e + sum_o * mean_o
                  - torch.abs(e_re * mean_o[:, None] - e_im * mean_e[:, None]).sum(1))

        # noise compensation from the smallest scale (MATLAB median: mean of the two middle values)
        a2 = (an[:, 0] ** 2).flatten(1)
        lo_mid = torch.kthvalue(a2, (npix + 1) // 2, dim=1).values
        median_e2n = lo_mid if npix % 2 else (lo_mid + torch.kthvalue(a2, npix // 2 + 1, dim=1).values) / 2
        mean_e2n = -median_e2n / math.log(0.5)
        noise_power = mean_e2n / float(em_n[o])
        est_noise_energy2 = 2 * noise_power * float(sum_an2[o]) + 4 * noise_power * float(sum_aiaj[o])
        tau = torch.sqrt(est_noise_energy2 / 2)
        est_noise_energy = tau * math.sqrt(math.pi / 2)
        est_noise_sigma = torch.sqrt((2 - math.pi / 2) * tau**2)
        t = ((est_noise_energy + k * est_noise_sigma) / 1.7).view(b, 1, 1)
        energy = torch.maximum(energy - t, zero)

        width = sum_an / (max_an + _EPSILON) / nscale
        weight = 1.0 / (1 + torch.exp((cut_off - width) * g))
        energy_o = weight * energy
        total_sum_an = total_sum_an + sum_an
        total_energy = total_energy + energy_o
        pc_o = weight * energy / sum_an  # no epsilon here in myphasecong3 (0/0 = NaN on flat images)
        covx = pc_o * math.cos(angl)
        covy = pc_o * math.sin(angl)
        covx2 = covx2 + covx**2
        covy2 = covy2 + covy**2
        covxy = covxy + covx * covy

    pc = total_energy / (total_sum_an + _EPSILON)
    covx2 = covx2 / (norient / 2)
    covy2 = covy2 / (norient / 2)
    covxy = covxy / norient
    denom = torch.sqrt(covxy**2 + (covx2 - covy2) ** 2) + _EPSILON
    big_m = (covy2 + covx2 + denom) / 2
    small_m = (covy2 + covx2 - denom) / 2
    return pc[:, None], big_m[:, None], small_m[:, None]


def _corr_score(f1, f2, fmax, ff, mask1, mask2, mask3) -> torch.Tensor:
    """``correlation_coeffcient`` of metricZhao.m: per pixel max over k in (A, B, max) of
    ``(σ_kF + C) / (sqrt(|σ_k² σ_F²|) + C)`` on mask_k (0 elsewhere), 11×11 Gaussian σ = 1.5
    ``filter2 'same'`` statistics of the masked feature maps, summed and divided by count(mask3)."""
    c = 1e-4
    win = gauss1d(11, 1.5, device=ff.device)

    def filt(t):
        return sep_same(t, win, "constant")

    m1, m2, m3 = mask1.to(ff.dtype), mask2.to(ff.dtype), mask3.to(ff.dtype)
    f1, f2, fmax = m1 * f1, m2 * f2, m3 * fmax  # MATLAB mask .* map (NaN * 0 stays NaN)
    mu_f = filt(ff)
    sf2 = filt(ff * ff) - mu_f * mu_f
    res = []
    for fk, mk in ((f1, mask1), (f2, mask2), (fmax, mask3)):
        mu = filt(fk)
        sk2 = filt(fk * fk) - mu * mu
        skf = filt(fk * ff) - mu * mu_f
        r = (skf + c) / (torch.sqrt(torch.abs(sk2 * sf2)) + c)
        res.append(torch.where(mk, r, torch.zeros_like(r)))
    best = torch.fmax(torch.fmax(res[0], res[1]), res[2])  # MATLAB max ignores NaN
    return best.flatten(1).sum(1) / m3.flatten(1).sum(1)


@register(
    "Q_P",
    higher_is_better=True,
    needs="pair",
    description="Zhao–Laganière–Liu phase-congruency metric: product of the masked local correlations of "
                "phase congruency and of its maximum and minimum moments with the fused image's.",
    reference="Zhao, Laganière & Liu, Int. J. Innov. Comput. Inf. Control 3(6A), 2007 (Liu's metricZhao.m + "
              "myphasecong3.m = MEFB metricsQp.m)",
    conventions={"cddfuse": "metricZhao.m: myphasecong3 (4 scales, 6 orientations, λ_min 3, mult 2.1, σ/f 0.55, "
                            "k 2, cutOff 0.5, g 10) of A, B, F; PC/M/m of the source with the larger PC; masks "
                            "PC > 0.1; 11×11 Gaussian σ 1.5 'same' correlations (C = 1e-4), max over A, B, max; "
                            "Σ/count(mask_max); Q_P = P·M·m"},
)
def q_p(fused: Any, sources: Sequence[Any]) -> torch.Tensor:
    """Q_P of ``fused`` against ``sources = [A, B]``, ``(B,)``, at most ~1 (1 for F = A = B).

    NaN (with a :class:`~fusecli.metrics._checks.MetricWarning`) where MATLAB gives NaN: a constant
    image (phase congruency 0/0) or no pixel of either source with phase congruency above 0.1.

    Raises:
        ShapeError: images smaller than 11×11 (the correlation window) or of different sizes.
    """
    x, a, b = two_sources(fused, sources, "Q_P")
    h, w = x.shape[-2:]
    if h < 11 or w < 11:
        raise ShapeError(f"Q_P needs images of at least 11×11 pixels (its correlation window), got {h}×{w}.")
    pc, big_m, small_m = phase_congruency(torch.cat([a, b, x]))
    n = x.shape[0]
    pc1, pc2, pcf = pc[:n], pc[n:2 * n], pc[2 * n:]
    m_1, m_2, m_f = big_m[:n], big_m[n:2 * n], big_m[2 * n:]
    s_1, s_2, s_f = small_m[:n], small_m[n:2 * n], small_m[2 * n:]
    sel = (pc1 > pc2).to(pc.dtype)
    pc_max = sel * pc1 + (1 - sel) * pc2
    m_max = sel * m_1 + (1 - sel) * m_2
    s_max = sel * s_1 + (1 - sel) * s_2
    mask1, mask2, mask3 = pc1 > 0.1, pc2 > 0.1, pc_max > 0.1
    q = (_corr_score(pc1, pc2, pc_max, pcf, mask1, mask2, mask3)
         * _corr_score(m_1, m_2, m_max, m_f, mask1, mask2, mask3)
         * _corr_score(s_1, s_2, s_max, s_f, mask1, mask2, mask3))
    return warn_nan(q, "Q_P", "a constant image (phase congruency 0/0) or no source pixel with phase congruency > 0.1")
