"""Training losses shared by the models' recipes.

All take (B, 1, H, W) float32 tensors in [0, 1] and return a scalar tensor (mean over the batch),
except :func:`mef_msssim_lum`, which returns one score per image, (B,).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .errors import ConfigError, ShapeError


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # float64: callers cast with .to(x)


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window and reflect borders.

    Args:
        x, y: (B, 1, H, W) tensors in [0, 1] (data range 1: C1 = 0.01², C2 = 0.03²).
        window: side of the Gaussian window (kornia's training losses of AUIF/CSCFuse use 3).
        sigma: its standard deviation.

    Returns:
        Scalar tensor, the mean SSIM over pixels and batch (differentiable).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ShapeError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    c = x.shape[1]
    w = _gaussian_window(window, sigma).to(x).expand(c, 1, window, window)
    r = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (r, r, r, r), mode="reflect"), w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


def ssim_loss(x: torch.Tensor, y: torch.Tensor, *, window: int = 11) -> torch.Tensor:
    """kornia's (old) SSIM loss, ``(1 - SSIM) / 2``, in [0, 1]."""
    return (1 - ssim(x, y, window=window)) / 2


def lgde_loss(x: torch.Tensor, v: torch.Tensor, *, softness: float = 0.1) -> torch.Tensor:
    """DeRUN's LGDE loss (He et al., ICCV 2023, Eq. 14): ``MSE(E(D(x)), E(D(v)))``.

    ``E(D(·))`` is the multi-scale local gradient direction entropy map of
    :func:`fusecli.metrics.lgde.lgde_map` (8 Sobel direction bins, 3×3 and dilated 5×5 blocks,
    reflection padding, flat pixels left out, bits) with soft binning so that it is differentiable.

    Args:
        x: (B, 1, H, W) tensor in [0, 1], the fused image (gradients flow into it).
        v: (B, 1, H, W) tensor in [0, 1], the target (DeRUN: the visible image); H, W >= 3.
        softness: soft-binning temperature (> 0 for a useful gradient; 0 = hard bins, whose
            gradient is zero almost everywhere).

    Returns:
        Scalar tensor, the mean squared difference of the two entropy maps (bits²).

    Raises:
        ShapeError: x and v differ in shape or are not (B, 1, H, W) floating tensors of at least 3×3.
    """
    from .metrics.lgde import lgde_map

    if x.shape != v.shape:
        raise ShapeError(f"lgde_loss needs two tensors of one shape, got {tuple(x.shape)} and {tuple(v.shape)}")
    return F.mse_loss(lgde_map(x, softness=softness), lgde_map(v, softness=softness))


# --- FRUFN / EFRUFN: sequential gradient transfer (Wang et al., TPAMI 2026, §3.1) ----------------

def _check_same(name: str, *tensors: torch.Tensor) -> None:
    first = tensors[0]
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape != first.shape:
            shapes = ", ".join(str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
                               for x in tensors)
            raise ShapeError(f"{name} needs (B, C, H, W) tensors of one shape, got {shapes}")


def sobel_gradient(x: torch.Tensor) -> torch.Tensor:
    """``|Sobel_x * x| + |Sobel_y * x|`` per channel, zero-padded borders (the FRUFN code's ``Sobelxy``).

    Args:
        x: (B, C, H, W) float tensor.

    Returns:
        (B, C, H, W) tensor >= 0 (up to 8 for images in [0, 1]); differentiable.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ShapeError(f"sobel_gradient needs a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    w = torch.tensor([[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],   # gx
                      [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]],  # gy
                     dtype=x.dtype, device=x.device)
    c = x.shape[1]
    g = F.conv2d(x, w[:, None].repeat(c, 1, 1, 1), padding=1, groups=c)
    return g[:, 0::2].abs() + g[:, 1::2].abs()


def gradient_transfer_loss(student: torch.Tensor, teacher: torch.Tensor, *, mode: str = "paper") -> torch.Tensor:
    """FRUFN's gradient-transfer loss from a frozen teacher's output to the student's.

    ``mode="paper"`` is eq. 3 of the paper, ``mean(max(∇T - ∇S, 0))`` with ``∇`` the Sobel
    gradient of :func:`sobel_gradient`: only pixels where the teacher's gradient is larger than the
    student's are transferred, so the loss is 0 wherever the student already has the larger gradient.
    ``mode="official"`` is the authors' code (``loss_vif.L_GT_Grad``): with
    ``M = max(∇T, ∇S)``, ``mean(|∇T·M - ∇S·M|)`` -- a symmetric, gradient-weighted L1 that also
    pulls larger student gradients down to the teacher's.

    Args:
        student: (B, C, H, W) output of the model being trained (gradients flow into it).
        teacher: (B, C, H, W) output of the frozen previous-stage model (detached here).
        mode: ``"paper"`` or ``"official"``.

    Returns:
        Scalar tensor >= 0.

    Raises:
        ShapeError: the shapes differ; ConfigError: unknown ``mode``.
    """
    _check_same("gradient_transfer_loss", student, teacher)
    g_s, g_t = sobel_gradient(student), sobel_gradient(teacher.detach())
    if mode == "paper":
        return torch.relu(g_t - g_s).mean()
    if mode == "official":
        m = torch.maximum(g_t, g_s)
        return (g_t * m - g_s * m).abs().mean()
    raise ConfigError(f"gradient_transfer_loss mode must be 'paper' or 'official', got {mode!r}")


def gradient_weighted_ssim(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``w_a SSIM(a, F) + w_b SSIM(b, F)`` with ``w_a = mean ∇a / (mean ∇a + mean ∇b)`` (Sobel
    gradients, means over the whole batch), as the FRUFN / SwinFusion code's ``L_SSIM``.

    Args:
        fused, a, b: (B, C, H, W) tensors in [0, 1].

    Returns:
        Scalar tensor, at most 1 (:func:`ssim`, Gaussian window 11, sigma 1.5).
    """
    _check_same("gradient_weighted_ssim", fused, a, b)
    ga, gb = sobel_gradient(a).mean(), sobel_gradient(b).mean()
    total = (ga + gb).clamp(min=1e-12)
    return ga / total * ssim(a, fused) + gb / total * ssim(b, fused)


#: weights of the FRUFN code's ``fusion_loss_med`` (used for its IVF stage): intensity, texture,
#: structure, contrast (standard deviation, subtracted)
IVF_LOSS_WEIGHTS = {"intensity": 20.0, "texture": 100.0, "structure": 50.0, "std": 50.0}


def ivf_unsupervised_loss(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *,
                          weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """FRUFN's unsupervised stage-3 loss, eqs. 4-7 as the authors' ``fusion_loss_med`` computes them.

    ``20 L_int + 100 L_text + 50 (1 - SSIM_w) - 50 std(|F|)`` with ``L_int = |F - max(a, b)|``
    (eq. 5), ``L_text = |∇F - max(∇a, ∇b)|`` (eq. 6, Sobel), ``SSIM_w`` the gradient-weighted SSIM of
    :func:`gradient_weighted_ssim` (the code's form of eq. 7) and ``std`` the per-image standard
    deviation of ``|F|``, averaged over the batch (a contrast term the code adds; the paper omits it).

    Args:
        fused: (B, 1, H, W) fused image (gradients flow into it).
        a, b: (B, 1, H, W) sources in [0, 1] (visible luminance and infrared; the loss is symmetric).
        weights: override of :data:`IVF_LOSS_WEIGHTS` (same keys).

    Returns:
        ``(loss, logs)``: the scalar loss and the unweighted terms as floats.

    Raises:
        ShapeError: the shapes differ.
    """
    _check_same("ivf_unsupervised_loss", fused, a, b)
    w = {**IVF_LOSS_WEIGHTS, **(weights or {})}
    intensity = F.l1_loss(fused, torch.maximum(a, b))
    texture = F.l1_loss(sobel_gradient(fused), torch.maximum(sobel_gradient(a), sobel_gradient(b)))
    structure = 1 - gradient_weighted_ssim(fused, a, b)
    std = fused.abs().std(dim=(2, 3), unbiased=False).mean()
    loss = w["intensity"] * intensity + w["texture"] * texture + w["structure"] * structure - w["std"] * std
    return loss, {"intensity": intensity.item(), "texture": texture.item(), "structure": structure.item(),
                  "std": std.item()}


# --- CSC-MEF: MEF-MS-SSIM (MEF-Net's differentiable form) and the halo loss -------------------------

#: scale weights of MEF-Net's ``mef_msssim`` (3 scales; each next scale a 2x2 average pool)
MEF_MSSSIM_BETAS = (0.0710, 0.4530, 0.4760)


def _mef_ssim_lcs(x: torch.Tensor, ys: torch.Tensor, window: torch.Tensor, sigma_g: float, sigma_l: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image means of the luminance and contrast-structure maps, ``(B,)`` each."""
    b, k, h, w = ys.shape
    r = window.shape[-1] // 2

    def blur(t: torch.Tensor) -> torch.Tensor:  # zero padding ("same"), as MEF-Net's F.conv2d(padding=ws//2)
        n = t.shape[1]
        return F.conv2d(t.reshape(-1, 1, h, w), window, padding=r).reshape(b, n, h, w)

    mu_y = blur(ys)
    var_y = blur(ys * ys) - mu_y * mu_y
    mu_x = blur(x)
    var_x = blur(x * x) - mu_x * mu_x
    cov = blur(x * ys) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    cs_seq = (2 * cov + c2) / (var_x + var_y + c2)  # (B, K, H, W)
    # structure of the exposure with the largest local contrast (the "desired" patch)
    cs = cs_seq.gather(1, var_y.argmax(1, keepdim=True))
    # desired mean luminance: exposures weighted by global and local well-exposedness
    l_global = torch.exp(-((mu_y.mean((2, 3), keepdim=True) - 0.5) ** 2) / (2 * sigma_g**2))
    l_local = torch.exp(-((mu_y - 0.5) ** 2) / (2 * sigma_l**2))
    weight = l_global * l_local
    mu_d = (weight * mu_y).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp(min=1e-12)
    lum = (2 * mu_x * mu_d + c1) / (mu_x * mu_x + mu_d * mu_d + c1)
    return lum.mean((1, 2, 3)), cs.mean((1, 2, 3))


def mef_msssim_lum(fused: torch.Tensor, exposures: torch.Tensor, *, window: int = 11,
                   sigma: float = 11 / 6, sigma_g: float = 0.2, sigma_l: float = 0.2,
                   betas: tuple[float, ...] = MEF_MSSSIM_BETAS) -> torch.Tensor:
    """Differentiable MEF-MS-SSIM with the luminance term (MEF-Net's ``MEF_MSSSIM(is_lum=True)``),
    the training objective of CSC-MEF's official code.

    This is the fast training form (Ma et al., MEF-Net, TIP 2020), not the evaluation metric of
    :func:`fusecli.metrics.mef_ssim.mef_ssim`: the desired local structure is that of the exposure with
    the largest local variance (not the weighted, rescaled mix), statistics use an 11x11 Gaussian
    window (sigma 11/6, zero padding, every pixel), and a luminance term compares the fused local
    mean with the exposures' local means weighted by global and local well-exposedness
    ``exp(-(mu - 0.5)^2 / (2 sigma^2))``. Score = ``l_S^beta_S * prod_s cs_s^beta_s`` over ``S =
    len(betas)`` scales (2x2 average pooling between them); ``cs`` is clamped at 1e-6 before the
    fractional powers so that a bad initial output gives a finite (small) score.

    Args:
        fused: (B, 1, H, W) fused luminance in [0, 1] (gradients flow into it).
        exposures: (B, K, H, W) the K >= 1 source luminances in [0, 1] (no gradient needed).
        window, sigma: Gaussian window. sigma_g, sigma_l: well-exposedness widths.
        betas: scale weights (default MEF-Net's three).

    Returns:
        (B,) scores, at most 1; ``fused`` equal to the single exposure of a K = 1 stack gives 1.

    Raises:
        ShapeError: shapes disagree, or the image is too small for the scales (the coarsest scale
            needs at least ``window`` pixels).
    """
    if fused.dim() != 4 or fused.shape[1] != 1 or exposures.dim() != 4 or \
            fused.shape[0] != exposures.shape[0] or fused.shape[-2:] != exposures.shape[-2:]:
        raise ShapeError(f"mef_msssim_lum needs fused (B, 1, H, W) and exposures (B, K, H, W) of one size, got "
                         f"{tuple(fused.shape)} and {tuple(exposures.shape)}")
    if min(fused.shape[-2:]) // 2 ** (len(betas) - 1) < window:
        raise ShapeError(f"mef_msssim_lum with {len(betas)} scales needs images of at least "
                         f"{window * 2 ** (len(betas) - 1)} px, got {fused.shape[-1]}x{fused.shape[-2]}")
    kernel = _gaussian_window(window, sigma).to(fused)  # (1, 1, window, window), sums to 1
    ls, css = [], []
    x, ys = fused, exposures.to(fused)
    for level in range(len(betas)):
        if level:
            x, ys = F.avg_pool2d(x, 2), F.avg_pool2d(ys, 2)
        lum, cs = _mef_ssim_lcs(x, ys, kernel, sigma_g, sigma_l)
        ls.append(lum)
        css.append(cs)
    beta = torch.tensor(betas, dtype=fused.dtype, device=fused.device)
    cs_all = torch.stack(css, 1).clamp(min=1e-6)
    return ls[-1].clamp(min=1e-6) ** beta[-1] * torch.prod(cs_all ** beta, dim=1)


def halo_loss(y: torch.Tensor) -> torch.Tensor:
    """CSC-MEF's halo loss: the mean L1 norm of the horizontal and vertical Sobel gradients of the
    fused luminance, ``mean(|S_x * y| + |S_y * y|)`` over the interior pixels (no padding, so the
    image border adds no artificial edge).

    Args:
        y: (B, 1, H, W) fused luminance, H, W >= 3.

    Returns:
        Scalar tensor >= 0 (0 for a constant image).
    """
    if y.dim() != 4 or min(y.shape[-2:]) < 3:
        raise ShapeError(f"halo_loss needs a (B, C, H, W) tensor with H, W >= 3, got {tuple(y.shape)}")
    return sobel_gradient(y)[..., 1:-1, 1:-1].mean()
