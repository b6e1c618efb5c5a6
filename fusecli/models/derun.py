"""DeRUN: the degradation-resistant unfolding network for heterogeneous image fusion.

Paper: C. He, K. Li, G. Xu, Y. Zhang, R. Hu, Z. Guo, X. Li, "Degradation-Resistant Unfolding Network
for Heterogeneous Image Fusion", ICCV 2023, pp. 12611-12621 (and its
supplementary material). The authors published no code and no weights (github.com/ChunmingHe/DeRUN holds
a README only), so this module is built from the paper; where the paper is silent the choice is
marked *decision* below.

The fusion model (HIFM, eq. 3)
------------------------------
U is the intensity source (infrared, PET, SPECT), V the texture source (visible, MRI). With the
residual variable ``Y = X - V`` and the residual map ``M = U - V``::

    min_Y  1/2 ||Y - M||^2 + sum_l lambda_l ||T_l Y||_1 + sum_k mu_k phi(T_k (Y - M)),
    phi(a) = sum_i log(1 + theta a_i^2)

and the fused image is ``X = Y + V`` (clipped to [0, 1]). ``T_l`` (L filters) and ``T_k`` (K
filters) are Sobel operators in the classical model and learned feature extractors in DeRUN.

ADMM (eq. 5 and supplement A.1), with splittings ``E_l = T_l Y``, ``H_k = T_k (Y - M)`` and scaled
duals ``F_l``, ``G_k``; one iteration ``n`` is::

    DFM  Y = Q_a^-1 (M + Q_b),   Q_a = I + sum_l rho_l T_l^T T_l + sum_k tau_k T_k^T T_k
                                 Q_b = sum_l rho_l T_l^T (E_l - F_l) + sum_k tau_k T_k^T (T_k M + H_k - G_k)
    VFM  E_l = S(T_l Y + F_l)                    (shrinkage; soft threshold at lambda_l / rho_l)
         F_l = F_l + phi_l (T_l Y - E_l)
    SPM  H_k = H_k - sigma_k dH                  (one gradient step: phi is non-convex)
         G_k = G_k + omega_k (T_k (Y - M) - H_k)

with ``dH`` the gradient of ``mu_k phi(H) + tau_k / 2 ||T_k(Y - M) - H + G||^2``::

    dH = 2 mu_k theta H / (1 + theta H^2) + tau_k (H - T_k(Y - M) - G)

The paper's printed ``Q_c`` (eq. 5) has the signs of the quadratic term flipped and drops the
``theta`` of the derivative of ``log(1 + theta a^2)``; the gradient above is the derivative of the
sub-problem the supplement (eq. 10-11) states, which is what "gradient descent on H" means.

DeRUN (section 3.2): N = 9 stages, each one iteration with its own learned parameters
---------------------------------------------------------------------------------------------------
* **DFM** (:meth:`Stage.dfm`): the Y update with learned ``rho``, ``tau``, ``T`` and ``T^T``.
* **VFM**: the learned piecewise-linear shrinkage :class:`Shrinkage` (supplement eq. 8, after
  ADMM-Net): 101 control points at step 0.02 on [-1, 1], one learned value per point and filter,
  linear interpolation inside, slope 1 outside; initialised to the soft threshold. *Decision*:
  the values pass through a running maximum (``cummax``) so the map stays monotone whatever
  training does (at initialisation, and whenever the values are already monotone, it changes
  nothing). Eq. 8 puts the grid on [-lambda/rho, lambda/rho] with 101 points at step 0.02, i.e.
  it fixes that interval to [-1, 1]: the learned threshold lives in the values. Then the dual
  update with learned ``phi``.
* **SPM** with the joint constraint strategy (eq. 11-12): an auxiliary
  ``H~ = eta1 H + eta2 T_k(Y - M) + eta3 T_k(T_l^T E / L - M)`` (physical and denoising constraints)
  enters the H gradient step as ``lambda_H / 2 ||H~ - H||^2``; learned ``sigma, mu, theta, eta1-3,
  lambda_H, omega``. *Decision*: eq. 12 writes the quadratic terms without the 1/2 of the
  Lagrangian (supplement eq. 2); the 1/2 is used throughout so that with ``lambda_H = 0`` a stage is
  exactly an ADMM iteration (a factor 2 in a learned weight changes nothing else).
* **PWSM** (section 3.2.3, :class:`PWSM`): ``T_l`` and ``T_k`` each have a weight-specific branch
  and share a weight-sharing branch; their outputs are concatenated (``L = K = specific +
  shared`` channels). Every branch is ``conv3x3 -> PReLU -> conv3x3`` without bias. The transposes
  ``T_l^T``, ``T_k^T`` (:class:`PWSMTranspose`) have the same structure in reverse (``conv3x3 ->
  PReLU -> conv3x3``, channels to one image) with their own weights: own specific branches and
  one sharing branch shared by ``T_l^T`` and ``T_k^T``. They are initialised as the exact
  adjoints of ``T_l``, ``T_k``. *Decisions* (the paper gives no widths and its Fig. 3 is not in the
  text we hold): 4 specific + 4 shared channels, sharing within a stage (not across stages: the
  paper contrasts PWSM with pipeline-wide weight sharing), concatenation of the two branches.
  All convolutions use circular padding (see "Borders").

The DFM inverse (``DeRUNConfig.dfm_inverse``)
---------------------------------------------
``Q_a^-1`` is exact only for linear shift-invariant ``T`` (then it is diagonal in the Fourier
domain). PWSM is non-linear, so its ``Q_a`` is not a matrix and has no inverse to compute. Two
realisations, both exact in the classical setting (linear ``T``, ``T^T`` its adjoint):

* ``"cg"`` (default): ``cg_steps`` conjugate-gradient steps on ``Q_a Y = M + Q_b`` with the paper's
  operator ``Q_a Y = Y + T_l^T(rho T_l Y) + T_k^T(tau T_k Y)`` applied *as written*, with the
  learned non-linear ``T`` and ``T^T`` (the paper's relaxation "the operators are learnable"),
  warm-started from the previous stage's Y (M before the first stage). CG is the natural solver of
  this symmetric positive-definite system in the linear case (it converges in a few steps from a
  warm start, and to machine precision with enough steps: the oracle test runs 200 steps). With
  learned transposes ``Q_a`` need not be symmetric or positive; for stability the CG curvature
  ``p'Q_a p`` is floored at ``p'p``, a bound that holds for every linear ``Q_a = I + PSD`` and
  so never acts in the classical case, but keeps every step bounded otherwise. The result is a
  fixed, differentiable, learned function of (M, E, F, H, G) whose form is the paper's.
* ``"fft"``: the exact inverse in the Fourier domain, ``1 / (1 + sum rho |T_l(w)|^2 + sum tau
  |T_k(w)|^2)``, with the symbols ``T(w)`` read off the extractors by probing them with an
  impulse. It needs linear extractors (``activation="none"``; a ConfigError otherwise) and it uses
  the exact adjoint of ``T`` in ``Q_a`` (the learned ``T^T`` still forms ``Q_b``), so ``Q_a`` is
  symmetric with eigenvalues >= 1 and the division is always safe.

Borders
-------
Circular convolutions make ``T^T`` the exact adjoint of ``T`` when its kernels are the flipped
ones, and make the Fourier inverse exact. To keep the image's left and right (top and bottom)
edges from meeting, the sources are extended before the stages and the result cropped:
``boundary="reflect"`` pads ``margin`` pixels by reflection (DeRUN's default, cheap);
``"mirror"`` mirrors the whole image to 2H x 2W (the symmetric extension: circular convolution
of it is the symmetric-boundary convolution of the image; exact symmetric borders for the
classical solver; 4x the work); ``"circular"`` adds nothing. Both models default to
``"reflect"`` with 16 pixels. The DFM inverse couples
all pixels, so one output pixel depends on the whole image: ``receptive_radius`` is ``None`` and
``--tile`` blends overlapping tiles (approximate, not exact).

Roles
-----
``inputs = ("ir", "vis")``: U first, V second. Medical fusion: U = PET / SPECT (the functional,
colour scan), V = MRI, so ``fusecli fuse --model derun pet.png mri.png`` (folders ``pet/`` +
``mri/`` and ``spect/`` + ``mri/`` are detected in that order by :mod:`fusecli.pairs`). The colour
pipeline keeps the chroma of the visible image, or of the PET / SPECT image when the MRI is gray.

Also here: :class:`DeRUNADMM` (model ``derun-admm``), the same HIFM solved by plain ADMM with Sobel
operators, exact soft threshold and fixed parameters (the paper's Table 3a "PM+OS"), no training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from ..solvers import conjugate_gradient
from . import _derun_fast as _fast
from . import _tasks
from ._contract import FusionModel, ModelSpec

__all__ = ["DeRUNConfig", "DeRUNADMMConfig", "Shrinkage", "Branch", "PWSM", "PWSMTranspose", "State", "Stage",
           "DeRUN", "DeRUNADMM", "soft_threshold", "sobel_kernels", "conjugate_gradient", "convert_official"]

BOUNDARIES = ("reflect", "mirror", "circular")


@dataclass(frozen=True)
class DeRUNADMMConfig:
    """Fixed parameters of the classical HIFM solver (model ``derun-admm``).

    Operators: the two Sobel filters (L = K = 2), circular convolution on the extended image.
    The paper gives no values for its PM+OS solver. The defaults were chosen by eye on one TNO pair
    (01, half size): ``lam`` <= 0.01 returns U unchanged (VIF/Qabf then look high because they
    reward copying a source), ``lam`` >= 0.2 loses U's warm targets; 0.05 keeps the targets and
    takes V's texture. 9 iterations, as DeRUN's 9 stages: an untrained DeRUN (classical
    initialisation, :class:`DeRUNConfig`) is this solver, iteration for stage. (Run longer, ADMM
    moves on: 30 iterations differ from 9 by 2.9 grey levels on average on TNO pair 01, at most 15.)

    Attributes:
        iterations: ADMM iterations.
        lam: l1 weight lambda (same for both filters); the soft threshold is ``lam / rho``.
        mu: weight of the log penalty on the texture residual.
        theta: its sparsity parameter.
        rho, tau: ADMM penalty weights.
        sigma: step size of the H gradient step (stable for sigma < 1 / (tau + 2 mu theta)).
        phi, omega: dual step sizes (1: standard ADMM).
        boundary: ``"reflect"`` (default), ``"mirror"`` (symmetric extension: exact symmetric
            borders, 4x the work) or ``"circular"``. On TNO pair 01 (768x576) ``"reflect"`` is 5x
            faster than ``"mirror"`` and differs from it by 0.08 grey levels on average (99 % of
            pixels within 1.9 grey levels; the largest differences at the image border).
        margin: pixels of reflection for ``boundary="reflect"``.
    """

    iterations: int = 9
    lam: float = 0.05
    mu: float = 0.005
    theta: float = 50.0
    rho: float = 0.2
    tau: float = 0.2
    sigma: float = 0.2
    phi: float = 1.0
    omega: float = 1.0
    boundary: str = "reflect"
    margin: int = 16

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"derun-admm needs at least one iteration, got {self.iterations}")
        for name in ("lam", "mu", "theta", "rho", "tau"):
            if getattr(self, name) < 0:
                raise ConfigError(f"derun-admm {name} must be >= 0, got {getattr(self, name)}")
        if self.rho <= 0:
            raise ConfigError("derun-admm rho must be > 0 (the threshold is lam / rho)")
        _check_boundary(self.boundary, self.margin)


@dataclass(frozen=True)
class DeRUNConfig:
    """Hyper-parameters of DeRUN; the defaults are the paper's where it gives them.

    Attributes:
        stages: unrolled ADMM iterations N (paper: 9).
        specific_channels: channels of each weight-specific PWSM branch (T_l's and T_k's own).
        shared_channels: channels of the weight-sharing PWSM branch (common to T_l and T_k);
            L = K = specific_channels + shared_channels filters.
        activation: ``"prelu"`` (non-linear PWSM) or ``"none"`` (linear extractors).
        dfm_inverse: ``"cg"`` or ``"fft"`` (see the module docstring).
        cg_steps: conjugate-gradient steps per stage for ``"cg"`` (6: from the classical start the
            untrained network is within 0.61 grey levels of ``derun-admm``'s exact Fourier solve on
            TNO pairs 01, 05 and 14; 3 steps: 3.2).
        knots: control points of the shrinkage (paper: I_t = 101, odd).
        knot_step: their spacing (paper: 0.02).
        threshold: initial soft threshold lambda/rho of the shrinkage.
        rho, tau, mu, theta, sigma: initial penalty weights, log-penalty weight and sparsity, and
            H step size of every stage.
        eta: initial (eta1, eta2, eta3) of the joint constraint strategy.
        lambda_h: initial weight of the JCS term (0: the stage is a plain ADMM iteration).
        init: ``"classical"`` (default): every stage starts as one iteration of the classical solver
            ``derun-admm`` (:meth:`Stage.init_classical`: Sobel extractors, exact adjoints, identity
            activations, the soft threshold); the scalar defaults above are that solver's
            (:class:`DeRUNADMMConfig`), so the untrained network is ``derun-admm``, as LISTA starts
            at ISTA. ``"random"``: Kaiming-initialised extractors, PReLU slopes 0.25 (the paper's
            ablation of a network trained from scratch).
        boundary: ``"reflect"``, ``"mirror"`` or ``"circular"`` (see "Borders").
        margin: pixels of reflection for ``boundary="reflect"``.
        path: ``"fast"`` (each stage's operators as a few fused convolution chains,
            :mod:`fusecli.models._derun_fast`, in training and inference; with ``dfm_inverse="cg"``)
            or ``"reference"`` (branch by branch, the test oracle).
    """

    stages: int = 9
    specific_channels: int = 4
    shared_channels: int = 4
    activation: str = "prelu"
    dfm_inverse: str = "cg"
    cg_steps: int = 6
    knots: int = 101
    knot_step: float = 0.02
    threshold: float = DeRUNADMMConfig.lam / DeRUNADMMConfig.rho
    rho: float = DeRUNADMMConfig.rho
    tau: float = DeRUNADMMConfig.tau
    mu: float = DeRUNADMMConfig.mu
    theta: float = DeRUNADMMConfig.theta
    sigma: float = DeRUNADMMConfig.sigma
    eta: tuple[float, float, float] = (0.5, 0.5, 0.0)
    lambda_h: float = 0.0
    boundary: str = DeRUNADMMConfig.boundary
    margin: int = DeRUNADMMConfig.margin
    path: str = "fast"
    init: str = "classical"

    def __post_init__(self) -> None:
        if self.init not in ("classical", "random"):
            raise ConfigError(f"DeRUN init must be classical or random, got {self.init!r}")
        if self.init == "classical" and self.specific_channels + self.shared_channels < 2:
            raise ConfigError("DeRUN's classical initialisation needs two filters (the Sobel pair): "
                              "specific_channels + shared_channels >= 2")
        if self.path not in ("fast", "reference"):
            raise ConfigError(f"DeRUN path must be fast or reference, got {self.path!r}")
        if self.stages < 1:
            raise ConfigError(f"DeRUN needs at least one stage, got stages={self.stages}")
        if self.specific_channels < 0 or self.shared_channels < 0 or self.specific_channels + self.shared_channels < 1:
            raise ConfigError("DeRUN needs specific_channels >= 0, shared_channels >= 0 and at least one of them > 0")
        if self.activation not in ("prelu", "none"):
            raise ConfigError(f"DeRUN activation must be 'prelu' or 'none', got {self.activation!r}")
        if self.dfm_inverse not in ("cg", "fft"):
            raise ConfigError(f"DeRUN dfm_inverse must be 'cg' or 'fft', got {self.dfm_inverse!r}")
        if self.dfm_inverse == "fft" and self.activation != "none":
            raise ConfigError("DeRUN dfm_inverse='fft' needs linear extractors: set activation='none' "
                              "(or use dfm_inverse='cg')")
        if self.cg_steps < 1:
            raise ConfigError(f"DeRUN cg_steps must be >= 1, got {self.cg_steps}")
        if self.knots < 3 or self.knots % 2 == 0 or self.knot_step <= 0:
            raise ConfigError("DeRUN knots must be odd and >= 3, knot_step > 0")
        if len(self.eta) != 3:
            raise ConfigError(f"DeRUN eta must be three numbers (eta1, eta2, eta3), got {self.eta!r}")
        _check_boundary(self.boundary, self.margin)


def _check_boundary(boundary: str, margin: int) -> None:
    if boundary not in BOUNDARIES:
        raise ConfigError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    if margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")


# --- operators ---------------------------------------------------------------------------------------

def sobel_kernels(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The horizontal and vertical Sobel kernels as a (2, 1, 3, 3) correlation weight."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=dtype, device=device)
    return torch.stack([gx, gx.t()])[:, None]


def _circ_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Circular ('same') correlation of (B, Cin, H, W) with a (Cout, Cin, k, k) weight, k odd."""
    r = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (r, r, r, r), mode="circular"), weight)


def _adjoint_weight(weight: torch.Tensor) -> torch.Tensor:
    """Weight of the adjoint of a circular correlation: kernels flipped, in/out channels swapped."""
    return weight.flip(-1, -2).transpose(0, 1)


def soft_threshold(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``sign(x) * max(|x| - t, 0)``, the proximal map of ``t * |.|``; any shape."""
    return x.sign() * F.relu(x.abs() - t)


def _shift_correlate(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Circular correlation of (B, Cin, H, W) with a (Cout, Cin, 3, 3) weight as a sum of shifted
    copies (``torch.roll``): the same values as :func:`_circ_conv`, several times faster on a CPU for
    a few channels. Used by the classical solver, so the oracle test compares two implementations."""
    out = None
    for u in range(3):
        for v in range(3):
            tap = weight[:, :, u, v]
            if not bool(tap.any()):
                continue
            term = torch.einsum("oi,bihw->bohw", tap, x.roll((1 - u, 1 - v), (-2, -1)))
            out = term if out is None else out + term
    return out if out is not None else x.new_zeros(x.shape[0], weight.shape[0], *x.shape[-2:])


def _extend(x: torch.Tensor, boundary: str, margin: int) -> torch.Tensor:
    """Extend (B, C, H, W) for circular processing (see "Borders" in the module docstring)."""
    if boundary == "mirror":
        x = torch.cat([x, x.flip(-2)], dim=-2)
        return torch.cat([x, x.flip(-1)], dim=-1)
    if boundary == "reflect" and margin > 0:
        h, w = x.shape[-2:]
        mh, mw = min(margin, h - 1), min(margin, w - 1)
        return F.pad(x, (mw, mw, mh, mh), mode="reflect")
    return x


def _crop(x: torch.Tensor, h: int, w: int, boundary: str, margin: int) -> torch.Tensor:
    if boundary == "reflect" and margin > 0:
        mh, mw = min(margin, h - 1), min(margin, w - 1)
        return x[..., mh:mh + h, mw:mw + w]
    return x[..., :h, :w]


def _check_sources(u: torch.Tensor, v: torch.Tensor, min_size: int) -> None:
    if u.dim() != 4 or u.shape[1] != 1 or u.shape != v.shape:
        raise ShapeError(f"DeRUN takes two (B, 1, H, W) tensors of one shape, got {tuple(u.shape)} and "
                         f"{tuple(v.shape)}")
    if min(u.shape[-2:]) < min_size:
        raise ShapeError(f"image is {u.shape[-1]}x{u.shape[-2]} pixels; DeRUN needs at least {min_size}x{min_size}")


# --- learned parts -------------------------------------------------------------------------------------

class Shrinkage(nn.Module):
    """Learned piecewise-linear shrinkage (supplement eq. 8, after ADMM-Net), one map per channel.

    Control points ``p_i = -R + (i - 1) * step``, ``i = 1 .. knots`` (R = step * (knots - 1) / 2: 101
    points at 0.02 cover [-1, 1]); learned values ``q_{c,i}`` (initialised to the soft threshold
    ``S(p_i; threshold)``). ``S(a) = `` linear interpolation of ``q`` for ``|a| <= R``,
    ``a + q_1 - p_1`` below and ``a + q_N - p_N`` above (slope 1, continuous). The values are made
    monotone by a running maximum before use, so ``S`` is always non-decreasing.

    Args:
        channels: number of maps (one per filter l).
        knots, step: control points and spacing.
        threshold: initial soft threshold. If it is a multiple of ``step`` the map equals the soft
            threshold exactly; otherwise it differs by at most ``step / 2`` near ``+-threshold``.
    """

    def __init__(self, channels: int, knots: int = 101, step: float = 0.02, threshold: float = 0.02):
        super().__init__()
        self.knots, self.step = knots, step
        self.radius = step * (knots - 1) / 2
        points = torch.linspace(-self.radius, self.radius, knots, dtype=torch.float64)
        self.register_buffer("points", points.float(), persistent=False)
        self.values = nn.Parameter(soft_threshold(points, threshold).float().repeat(channels, 1))

    def set_soft_threshold(self, threshold: float | torch.Tensor) -> None:
        """Reset the values to the soft threshold at ``threshold`` (a float or one per channel)."""
        t = torch.as_tensor(threshold, dtype=torch.float64).reshape(-1, 1)
        points = torch.linspace(-self.radius, self.radius, self.knots, dtype=torch.float64)
        with torch.no_grad():
            self.values.copy_(soft_threshold(points[None], t).expand(self.values.shape))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """a: (B, C, H, W) with C = channels. Returns S(a), same shape."""
        b, c, h, w = a.shape
        q = torch.cummax(self.values, dim=1).values.to(a.dtype)  # (C, knots), non-decreasing
        pos = (a + self.radius) / self.step
        idx = pos.detach().floor().clamp(0, self.knots - 2)
        frac = pos - idx
        flat = idx.long().reshape(b, c, h * w)
        table = q[None].expand(b, c, self.knots)
        left = torch.gather(table, 2, flat).view(b, c, h, w)
        right = torch.gather(table, 2, flat + 1).view(b, c, h, w)
        inside = left + (right - left) * frac
        below = a + (q[:, :1] + self.radius).view(1, c, 1, 1)
        above = a + (q[:, -1:] - self.radius).view(1, c, 1, 1)
        return torch.where(a < -self.radius, below, torch.where(a > self.radius, above, inside))

    def forward_clamped(self, a: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` in fewer passes, for any memory layout of ``a`` (B, C, H, W).

        The grid position is clamped to the grid instead of choosing between three branches:
        ``S(a) = q_l + (q_r - q_l) frac + (a - clamp(a, -R, R))``; outside the grid the first two
        terms are ``q_1`` (``q_N``) and the last one carries the slope 1. Same values (to float
        rounding), same gradients.
        """
        c = a.shape[1]
        q = torch.cummax(self.values, dim=1).values.to(a.dtype)
        table = torch.stack([q[:, :-1], q[:, 1:] - q[:, :-1]], -1).reshape(-1)  # per (channel, cell): q_l, slope
        pos = ((a + self.radius) / self.step).clamp(0, self.knots - 1)
        idx = pos.detach().floor().clamp_(max=self.knots - 2)
        frac = pos - idx
        cell = 2 * (idx.long() + (torch.arange(c, device=a.device) * (self.knots - 1)).view(1, c, 1, 1))
        return torch.take(table, cell) + torch.take(table, cell + 1) * frac + (a - a.clamp(-self.radius, self.radius))

    def forward_sampled(self, a: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward_clamped` for inference: the interpolation inside the grid as one bilinear
        ``grid_sample`` of each channel's values (a 1 x knots image per (sample, channel); ``align_corners``
        puts its ends on the first and last control points, ``border`` padding holds ``q_1`` / ``q_N``
        outside): fewer passes over the maps than the two gathers (the CPU inference path's speed-up over
        the reference went from 2.1x to 2.9x with it; ``benchmarks/bench_paths.py``). Same values to
        float rounding.

        a: (B, C, H, W) in any memory layout (``channels``: which of the maps its C channels are;
        all if None); returns (B, C, H, W), contiguous."""
        b, c, h, w = a.shape
        q = torch.cummax(self.values if channels is None else self.values[channels], dim=1).values.to(a.dtype)
        table = q.view(1, c, 1, 1, self.knots).expand(b, -1, -1, -1, -1).reshape(b * c, 1, 1, self.knots)
        grid = a.new_empty(b * c, h, w, 2)  # (x, y): y = 0, the table's one row
        grid[..., 1].zero_()
        torch.div(a.reshape(b * c, h, w), self.radius, out=grid[..., 0])
        inside = F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return inside.view(b, c, h, w) + (a - a.clamp(-self.radius, self.radius))


class Branch(nn.Module):
    """One PWSM branch: ``conv3x3(cin -> mid) -> PReLU -> conv3x3(mid -> cout)``, circular, no bias.

    With ``activation="none"`` (or a PReLU slope of 1) the branch is linear.
    """

    def __init__(self, cin: int, mid: int, cout: int, activation: str = "prelu"):
        super().__init__()
        self.conv1 = nn.Parameter(torch.empty(mid, cin, 3, 3))
        self.conv2 = nn.Parameter(torch.empty(cout, mid, 3, 3))
        nn.init.kaiming_uniform_(self.conv1, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.conv2, a=math.sqrt(5))
        self.act = nn.PReLU(mid, 0.25) if activation == "prelu" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, cin, H, W). Returns (B, cout, H, W)."""
        return _circ_conv(self.act(_circ_conv(x, self.conv1)), self.conv2)

    @torch.no_grad()
    def copy_adjoint_of(self, other: Branch) -> None:
        """Set this branch to the structural adjoint of ``other`` (exact for linear branches)."""
        self.conv1.copy_(_adjoint_weight(other.conv2))
        self.conv2.copy_(_adjoint_weight(other.conv1))
        if isinstance(self.act, nn.PReLU) and isinstance(other.act, nn.PReLU):
            self.act.weight.copy_(other.act.weight)


def _run_branches(branches: list[Branch], x: torch.Tensor, same_input: bool = False) -> torch.Tensor:
    """Apply ``branches`` side by side and concatenate their outputs along channels.

    ``x`` holds their inputs concatenated along channels, or, with ``same_input``, the one
    (B, 1, H, W) input they all read. Branches of one shape run as two convolutions (a dense one
    for a common input, grouped ones otherwise) instead of two per branch; others one by one."""
    shapes = {(b.conv1.shape[1], b.conv1.shape[0], b.conv2.shape[0]) for b in branches}
    if len(branches) == 1 or len(shapes) > 1:
        outs, start = [], 0
        for b in branches:
            cin = b.conv1.shape[1]
            outs.append(b(x if same_input else x[:, start:start + cin]))
            start += cin
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
    groups = len(branches)
    hidden = _circ_conv_grouped(x, torch.cat([b.conv1 for b in branches]), 1 if same_input else groups)
    if isinstance(branches[0].act, nn.PReLU):
        hidden = F.prelu(hidden, torch.cat([b.act.weight for b in branches]))
    return _circ_conv_grouped(hidden, torch.cat([b.conv2 for b in branches]), groups)


def _circ_conv_grouped(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    r = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (r, r, r, r), mode="circular"), weight, groups=groups)


class PWSM(nn.Module):
    """Partial weight sharing module: the extractors ``T_l`` and ``T_k`` of one stage.

    ``T_l x = [A_l x, S x]`` and ``T_k x = [A_k x, S x]`` (channel concatenation): weight-specific
    branches ``A_l``, ``A_k`` and one weight-sharing branch ``S``. Input (B, 1, H, W); outputs
    (B, L, H, W) and (B, K, H, W), L = K = specific + shared.
    """

    def __init__(self, specific: int, shared: int, activation: str = "prelu"):
        super().__init__()
        self.specific, self.shared = specific, shared
        self.spec_l = Branch(1, specific, specific, activation) if specific else None
        self.spec_k = Branch(1, specific, specific, activation) if specific else None
        self.share = Branch(1, shared, shared, activation) if shared else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T_l x, T_k x) for x (B, 1, H, W); the sharing branch is computed once."""
        branches = [b for b in (self.spec_l, self.spec_k, self.share) if b is not None]
        out = _run_branches(branches, x, same_input=True)
        s, h = self.specific, self.shared
        shared = out[:, 2 * s:] if h else out[:, :0]
        return torch.cat([out[:, :s], shared], 1), torch.cat([out[:, s:2 * s], shared], 1)

    def _one(self, own: Branch | None, x: torch.Tensor) -> torch.Tensor:
        branches = [b for b in (own, self.share) if b is not None]
        return _run_branches(branches, x, same_input=True)

    def l(self, x: torch.Tensor) -> torch.Tensor:  # noqa: E743 - the paper's index name
        """T_l x: (B, 1, H, W) -> (B, L, H, W)."""
        return self._one(self.spec_l, x)

    def k(self, x: torch.Tensor) -> torch.Tensor:
        """T_k x: (B, 1, H, W) -> (B, K, H, W)."""
        return self._one(self.spec_k, x)


class PWSMTranspose(nn.Module):
    """The transposes ``T_l^T``, ``T_k^T``: same structure, own weights, reversed (channels -> image).

    ``T_l^T z = A_l^T z_spec + S^T z_shared`` (the transpose of a concatenation is a sum), with own
    specific branches and one sharing branch ``S^T`` common to ``T_l^T`` and ``T_k^T``.
    """

    def __init__(self, specific: int, shared: int, activation: str = "prelu"):
        super().__init__()
        self.specific, self.shared = specific, shared
        self.spec_l = Branch(specific, specific, 1, activation) if specific else None
        self.spec_k = Branch(specific, specific, 1, activation) if specific else None
        self.share = Branch(shared, shared, 1, activation) if shared else None

    def _one(self, own: Branch | None, z: torch.Tensor) -> torch.Tensor:
        branches = [b for b in (own, self.share) if b is not None]
        return _run_branches(branches, z).sum(1, keepdim=True)

    def l(self, z: torch.Tensor) -> torch.Tensor:  # noqa: E743
        """T_l^T z: (B, L, H, W) -> (B, 1, H, W)."""
        return self._one(self.spec_l, z)

    def k(self, z: torch.Tensor) -> torch.Tensor:
        """T_k^T z: (B, K, H, W) -> (B, 1, H, W)."""
        return self._one(self.spec_k, z)

    def sum_lk(self, zl: torch.Tensor, zk: torch.Tensor) -> torch.Tensor:
        """``T_l^T zl + T_k^T zk`` (B, 1, H, W), all four branch applications in one pass."""
        branches = [b for b in (self.spec_l, self.share, self.spec_k, self.share) if b is not None]
        return _run_branches(branches, torch.cat([zl, zk], 1)).sum(1, keepdim=True)

    @torch.no_grad()
    def copy_adjoint_of(self, forward: PWSM) -> None:
        """Make every branch the structural adjoint of the matching branch of ``forward``."""
        for mine, theirs in ((self.spec_l, forward.spec_l), (self.spec_k, forward.spec_k),
                             (self.share, forward.share)):
            if mine is not None and theirs is not None:
                mine.copy_adjoint_of(theirs)


class State(NamedTuple):
    """The ADMM variables between stages: Y (B, 1, H, W); E, F (B, L, H, W); H, G (B, K, H, W)."""

    y: torch.Tensor
    e: torch.Tensor
    f: torch.Tensor
    h: torch.Tensor
    g: torch.Tensor


class Stage(nn.Module):
    """One unrolled ADMM iteration of DeRUN: DFM (Y), VFM (E, F), SPM with JCS (H, G).

    Learned: the extractors ``T`` (:class:`PWSM`) and transposes ``T^T`` (:class:`PWSMTranspose`),
    per-filter ``rho`` (L), ``phi`` (L), shrinkage values (L x knots), per-filter ``tau``, ``mu``,
    ``theta``, ``sigma``, ``omega`` (K), and scalars ``eta`` (3) and ``lambda_h``.

    Args:
        config: the model's :class:`DeRUNConfig`.
    """

    def __init__(self, config: DeRUNConfig):
        super().__init__()
        c = config
        self.config = c
        n = c.specific_channels + c.shared_channels
        self.filters = n
        self.T = PWSM(c.specific_channels, c.shared_channels, c.activation)
        self.Tt = PWSMTranspose(c.specific_channels, c.shared_channels, c.activation)
        self.Tt.copy_adjoint_of(self.T)
        self.shrink = Shrinkage(n, c.knots, c.knot_step, c.threshold)

        def vec(value: float) -> nn.Parameter:
            return nn.Parameter(torch.full((1, n, 1, 1), float(value)))

        self.rho, self.tau = vec(c.rho), vec(c.tau)
        self.phi, self.omega = vec(1.0), vec(1.0)
        self.mu, self.theta, self.sigma = vec(c.mu), vec(c.theta), vec(c.sigma)
        self.eta = nn.Parameter(torch.tensor([float(v) for v in c.eta]))
        self.lambda_h = nn.Parameter(torch.tensor(float(c.lambda_h)))
        if c.init == "classical":
            self.init_classical()

    @torch.no_grad()
    def init_classical(self) -> None:
        """Make the extractors the classical solver's: ``T_l = T_k =`` the two Sobel operators (x, y;
        the other filters' outputs zero), ``T^T`` their exact adjoints, every PReLU slope 1 (the
        identity). With the scalars at :class:`DeRUNADMMConfig`'s values (the config defaults) and
        ``lambda_h = 0`` the stage is one iteration of ``derun-admm``.

        The Sobel pair goes into the sharing branch (both extractors read it) when it has two
        channels, else one kernel each into the sharing and the specific branches, else into the
        specific branches. A Sobel output ``o`` reads hidden channel ``o``, which passes the image
        through (a centred impulse); the other hidden channels keep their random first layer and
        get zero second-layer weights. The filters other than the Sobel pair start silent, and stay
        so: their outputs are read by ``T^T`` with zero weights and their maps (E, F, H, G) are zero,
        so the gradients of those zero weights are exactly zero (``tests/test_derun.py``), and
        training keeps them at zero (the shipped weights: 2 live filters of 8 in every stage).
        Inference skips them (:func:`~fusecli.models._derun_fast.inference_stages`).
        """
        sob = sobel_kernels(self.rho.dtype, self.rho.device)
        branches = [b for b in (self.T.spec_l, self.T.spec_k, self.T.share) if b is not None]
        for branch in branches + [b for b in (self.Tt.spec_l, self.Tt.spec_k, self.Tt.share) if b is not None]:
            if isinstance(branch.act, nn.PReLU):
                branch.act.weight.fill_(1.0)
        for branch in branches:
            branch.conv2.zero_()
        c = self.config
        if c.shared_channels >= 2:
            plan = [(self.T.share, 0, sob[0]), (self.T.share, 1, sob[1])]
        elif c.shared_channels == 1:
            plan = [(self.T.spec_l, 0, sob[0]), (self.T.spec_k, 0, sob[0]), (self.T.share, 0, sob[1])]
        else:
            plan = [(b, i, sob[i]) for b in (self.T.spec_l, self.T.spec_k) for i in (0, 1)]
        for branch, o, kernel in plan:
            branch.conv1[o].zero_()
            branch.conv1[o, 0, 1, 1] = 1.0
            branch.conv2[o, o] = kernel[0]
        self.Tt.copy_adjoint_of(self.T)

    # -- DFM -----------------------------------------------------------------------------------------
    def apply_qa(self, y: torch.Tensor) -> torch.Tensor:
        """``Q_a y = y + T_l^T(rho T_l y) + T_k^T(tau T_k y)`` (learned operators). y: (B, 1, H, W)."""
        tl, tk = self.T(y)
        return y + self.Tt.sum_lk(self.rho * tl, self.tau * tk)

    def symbols(self, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fourier symbols (rfft2) of the linear extractors on an h x w grid: (L, h, w//2+1), (K, ...)."""
        delta = torch.zeros(1, 1, h, w, dtype=like.dtype, device=like.device)
        delta[..., 0, 0] = 1
        tl, tk = self.T(delta)
        # For a linear, circular, shift-invariant T, T(delta) is its impulse response h and
        # T x = h (circular convolution) x, so rfft2(h) is T's symbol.
        return torch.fft.rfft2(tl[0]), torch.fft.rfft2(tk[0])

    def dfm(self, m: torch.Tensor, state: State, tm_k: torch.Tensor) -> torch.Tensor:
        """The Y update ``Q_a^-1 (M + Q_b)``. m: (B, 1, H, W); tm_k = T_k M."""
        rhs = m + self.Tt.sum_lk(self.rho * (state.e - state.f), self.tau * (tm_k + state.h - state.g))
        if self.config.dfm_inverse == "fft":
            hh, ww = m.shape[-2:]
            sl, sk = self.symbols(hh, ww, m)
            rho, tau = self.rho.clamp_min(0).view(-1, 1, 1), self.tau.clamp_min(0).view(-1, 1, 1)
            qa = 1 + (rho * sl.abs() ** 2).sum(0) + (tau * sk.abs() ** 2).sum(0)
            return torch.fft.irfft2(torch.fft.rfft2(rhs) / qa, s=(hh, ww))
        return conjugate_gradient(self.apply_qa, rhs, state.y, self.config.cg_steps)

    def forward(self, m: torch.Tensor, state: State) -> State:
        """One iteration. m: (B, 1, H, W) the residual map U - V; state: the previous :class:`State`."""
        tm_k = self.T.k(m)
        # DFM
        y = self.dfm(m, state, tm_k)
        # VFM
        ty_l = self.T.l(y)
        e = self.shrink(ty_l + state.f)
        f = state.f + self.phi * (ty_l - e)
        # SPM with the joint constraint strategy (eqs. 11-12)
        d = self.T.k(y - m)
        h_prev, g_prev = state.h, state.g
        h_tilde = (self.eta[0] * h_prev + self.eta[1] * d
                   + self.eta[2] * self.T.k(self.Tt.l(e) / self.filters - m))
        theta = self.theta.clamp_min(0)
        grad = (2 * self.mu * theta * h_prev / (1 + theta * h_prev ** 2)
                + self.lambda_h * (h_prev - h_tilde)
                + self.tau * (h_prev - d - g_prev))
        h = h_prev - self.sigma * grad
        g = g_prev + self.omega * (d - h)
        return State(y, e, f, h, g)

    def forward_fused(self, m: torch.Tensor, state: State, ops: _fast.FusedStage) -> State:
        """:meth:`forward` with the fused operators ``ops`` (:func:`fusecli.models._derun_fast.fuse_stage`;
        ``dfm_inverse="cg"``): the same arithmetic, fewer and larger convolutions."""
        run = _fast.run_chain
        tm_k = run(m, ops.t_k)
        rhs = m + run(torch.cat([state.e - state.f, tm_k + state.h - state.g], 1), ops.tt)
        y = conjugate_gradient(lambda p: p + run(p, ops.qa), rhs, state.y, self.config.cg_steps)
        ty_l = run(y, ops.t_l)
        e = self.shrink.forward_clamped(ty_l + state.f)
        f = torch.addcmul(state.f, ty_l - e, self.phi)
        d = run(y - m, ops.t_k)
        jcs = run(run(e, ops.tt_l) / self.filters - m, ops.t_k)
        h_prev, g_prev = state.h, state.g
        # grad = 2 mu theta H / (1 + theta H^2) + lambda_h (H - H~) + tau (H - D - G) with
        # H~ = eta1 H + eta2 D + eta3 jcs, its per-filter coefficients collected (fewer passes)
        theta = self.theta.clamp_min(0)
        grad = h_prev / torch.addcmul(torch.ones_like(theta), h_prev * h_prev, theta) * (2 * self.mu * theta)
        grad = torch.addcmul(grad, h_prev, self.lambda_h * (1 - self.eta[0]) + self.tau)
        grad = torch.addcmul(grad, d, self.lambda_h * self.eta[1] + self.tau, value=-1)
        grad = torch.addcmul(grad, jcs, self.lambda_h * self.eta[2] * torch.ones_like(theta), value=-1)
        grad = torch.addcmul(grad, g_prev, self.tau, value=-1)
        h = torch.addcmul(h_prev, grad, self.sigma, value=-1)
        g = torch.addcmul(g_prev, d - h, self.omega)
        return State(y, e, f, h, g)

    @torch.no_grad()
    def forward_inference(self, m: torch.Tensor, state: State, ops: _fast.FusedStage, live: torch.Tensor) -> State:
        """:meth:`forward_fused` without autograd: the pointwise updates in place, in bands of rows
        side by side (:func:`~fusecli.models._tasks.run_bands`); the SPM step with its per-filter
        coefficients collected first. The same arithmetic (to float rounding).

        ``live``: the filters whose maps ``state`` holds and ``ops`` reads and writes
        (:func:`~fusecli.models._derun_fast.inference_stages`)."""
        run, bands = _fast.run_chain, _tasks.run_bands
        height, n = m.shape[-2], live.numel()

        def own(p: torch.Tensor) -> torch.Tensor:  # (1, filters, 1, 1) -> the live filters'
            return p[:, live]

        e0, f0, h0, g0 = state.e, state.f, state.h, state.g
        tm_k = run(m, ops.t_k)
        z = _fast.empty_channels_last(m, 2 * n)

        def rhs_input(r: slice) -> None:  # [E - F, T_k M + H - G]
            torch.sub(e0[:, :, r], f0[:, :, r], out=z[:, :n, r])
            torch.add(tm_k[:, :, r], h0[:, :, r], out=z[:, n:, r]).sub_(g0[:, :, r])

        bands(rhs_input, height)
        rhs = run(z, ops.tt).add_(m)
        y = conjugate_gradient(lambda p: run(p, ops.qa).add_(p), rhs, state.y, self.config.cg_steps)
        ty_l = run(y, ops.t_l)
        e, f = _fast.empty_channels_last(m, n), _fast.empty_channels_last(m, n)

        def vfm(r: slice) -> None:  # E = S(T_l Y + F), F += phi (T_l Y - E)
            t = ty_l[:, :, r]
            band = self.shrink.forward_sampled(t + f0[:, :, r], live)
            e[:, :, r] = band
            torch.addcmul(f0[:, :, r], t - band, phi, out=f[:, :, r])

        phi, tau, sigma, omega = own(self.phi), own(self.tau), own(self.sigma), own(self.omega)
        bands(vfm, height)
        d = run(y - m, ops.t_k)
        jcs = run(run(e, ops.tt_l).div_(self.filters).sub_(m), ops.t_k)
        # grad = 2 mu theta H / (1 + theta H^2) + lambda_h (H - H~) + tau (H - D - G), H~ = eta . (H, D, jcs)
        theta = own(self.theta).clamp_min(0)
        scale = 2 * own(self.mu) * theta
        c_h = self.lambda_h * (1 - self.eta[0]) + tau
        c_d = self.lambda_h * self.eta[1] + tau
        c_j = self.lambda_h * self.eta[2]
        h, g = _fast.empty_channels_last(m, n), _fast.empty_channels_last(m, n)

        def spm(r: slice) -> None:
            hb, db, gb = h0[:, :, r], d[:, :, r], g0[:, :, r]
            grad = (hb * hb).mul_(theta).add_(1)
            torch.div(hb, grad, out=grad).mul_(scale)
            grad.addcmul_(hb, c_h).addcmul_(db, c_d, value=-1).addcmul_(jcs[:, :, r], c_j, value=-1)
            grad.addcmul_(gb, tau, value=-1)
            hn = torch.addcmul(hb, grad, sigma, value=-1, out=h[:, :, r])
            torch.addcmul(gb, torch.sub(db, hn, out=grad), omega, out=g[:, :, r])

        bands(spm, height)
        return State(y, e, f, h, g)


class DeRUN(FusionModel):
    """DeRUN: N unrolled ADMM stages on the HIFM residual ``Y = X - V``.

    ``forward(u, v)`` takes the intensity source U (infrared / PET / SPECT luminance) and the
    texture source V (visible / MRI luminance), each (B, 1, H, W) float32 in [0, 1], and returns
    the fused ``X = Y^(N) + V`` (B, 1, H, W), clipped to [0, 1].
    """

    #: U (intensity) then V (texture) (medical: pet/spect, then mri); smallest side 4 (3x3 circular
    #: convolutions and the reflect margin); the DFM inverse couples all pixels: no finite receptive
    #: field, tiling is approximate
    spec = ModelSpec(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1,
                     min_size=4, receptive_radius=None, tileable=True)

    def __init__(self, config: DeRUNConfig | None = None):
        super().__init__()
        self.config = config or DeRUNConfig()
        self.stages = nn.ModuleList(Stage(self.config) for _ in range(self.config.stages))

    def initial_state(self, m: torch.Tensor) -> State:
        """Y = M and zero E, F, H, G (the paper: zeros before the first stage; Y only starts CG)."""
        b, _, h, w = m.shape
        n = self.stages[0].filters
        zeros = m.new_zeros(b, n, h, w)
        return State(m, zeros, zeros, zeros, zeros)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _check_sources(u, v, self.min_size)
        c = self.config
        h, w = u.shape[-2:]
        ue, ve = _extend(u, c.boundary, c.margin), _extend(v, c.boundary, c.margin)
        m = ue - ve
        fused = c.path == "fast" and c.dfm_inverse == "cg"
        if fused:
            m = _fast.channels_last(m.contiguous())
        state = self.initial_state(m)
        if fused:  # channels-last zeros: the fused chains keep that memory layout
            state = State(m, *(_fast.channels_last(t) for t in state[1:]))
        if not fused:
            for stage in self.stages:
                state = stage(m, state)
        elif torch.is_grad_enabled() or m.device.type != "cpu":
            for stage in self.stages:
                state = stage.forward_fused(m, state, _fast.fuse_stage(stage))
        else:  # CPU inference: one intra-op thread per task, bands of rows side by side
            ops, live = _fast.inference_stages(list(self.stages))
            state = State(m, *(t[:, live] for t in state[1:]))
            with _tasks.task_threads():
                for stage, o in zip(self.stages, ops):
                    state = stage.forward_inference(m, state, o, live)
        return _crop(state.y + ve, h, w, c.boundary, c.margin).clamp(0, 1)


# --- the classical solver ------------------------------------------------------------------------------

class DeRUNADMM(FusionModel):
    """HIFM solved by plain ADMM (the paper's "PM+OS", Table 3a): Sobel operators, exact soft
    threshold, exact Fourier-domain Y update, one gradient step per iteration on H, fixed
    parameters (:class:`DeRUNADMMConfig`), no training.

    ``forward(u, v)``: U, V (B, 1, H, W) in [0, 1] (U intensity, V texture) -> X (B, 1, H, W) in [0, 1].
    :meth:`iterate` is one ADMM iteration on extended tensors (the test oracle of :class:`Stage`).

    The Sobel kernels are a (non-persistent) buffer: they move with the model and are no parameter
    (``fusecli models`` counts 0); callers find the device with :func:`~fusecli.models.device_of`.
    """

    spec = DeRUN.spec

    def __init__(self, config: DeRUNADMMConfig | None = None):
        super().__init__()
        self.config = config or DeRUNADMMConfig()
        self.register_buffer("sobel", sobel_kernels(), persistent=False)

    def _grad(self, x: torch.Tensor) -> torch.Tensor:
        """Circular Sobel responses (B, 2, H, W) of (B, 1, H, W)."""
        return _shift_correlate(x, self.sobel.to(x.dtype))

    def _grad_t(self, z: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`_grad`: (B, 2, H, W) -> (B, 1, H, W)."""
        return _shift_correlate(z, _adjoint_weight(self.sobel.to(z.dtype)))

    def _qa(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Fourier symbol of ``I + rho grad^T grad + tau grad^T grad`` on an h x w grid."""
        kernel = torch.zeros(2, h, w, dtype=like.dtype, device=like.device)
        k = self.sobel.to(like)[:, 0]
        for i in range(3):
            for j in range(3):
                kernel[:, (i - 1) % h, (j - 1) % w] += k[:, i, j]
        power = torch.fft.rfft2(kernel).abs().pow(2).sum(0)
        c = self.config
        return 1 + (c.rho + c.tau) * power

    def iterate(self, m: torch.Tensor, state: State, qa: torch.Tensor | None = None,
                gm: torch.Tensor | None = None) -> State:
        """One ADMM iteration (eq. 5 with the corrected H gradient).

        Args:
            m: (B, 1, H, W) residual map U - V (circular borders).
            state: E, F, H, G (B, 2, H, W) and Y (unused: the Y update is exact).
            qa, gm: the Fourier symbol of Q_a and the Sobel responses of m, when precomputed.
        """
        c = self.config
        hh, ww = m.shape[-2:]
        qa = self._qa(hh, ww, m) if qa is None else qa
        gm = self._grad(m) if gm is None else gm
        rhs = m + self._grad_t(c.rho * (state.e - state.f) + c.tau * (gm + state.h - state.g))
        y = torch.fft.irfft2(torch.fft.rfft2(rhs) / qa, s=(hh, ww))
        gy = self._grad(y)
        e = soft_threshold(gy + state.f, c.lam / c.rho)
        f = state.f + c.phi * (gy - e)
        d = gy - gm
        grad = 2 * c.mu * c.theta * state.h / (1 + c.theta * state.h ** 2) + c.tau * (state.h - d - state.g)
        h = state.h - c.sigma * grad
        g = state.g + c.omega * (d - h)
        return State(y, e, f, h, g)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _check_sources(u, v, self.min_size)
        c = self.config
        h, w = u.shape[-2:]
        ue, ve = _extend(u, c.boundary, c.margin), _extend(v, c.boundary, c.margin)
        m = ue - ve
        zeros = m.new_zeros(m.shape[0], 2, *m.shape[-2:])
        state = State(m, zeros, zeros, zeros, zeros)
        qa, gm = self._qa(*m.shape[-2:], m), self._grad(m)
        for _ in range(c.iterations):
            state = self.iterate(m, state, qa, gm)
        return _crop(state.y + ve, h, w, c.boundary, c.margin).clamp(0, 1)


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The identity on fusecli's own DeRUN / derun-admm keys.

    The authors released no code and no checkpoint, so there is no official key layout to map; a
    checkpoint written by fusecli (``fusecli train derun``, ``torch.save(model.state_dict())``) loads
    as it is.

    Raises:
        CheckpointError: if ``state`` is not a mapping of names to tensors.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("a DeRUN checkpoint must be a state dict (a mapping of names to tensors)")
    return dict(state)
