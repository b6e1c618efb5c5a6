"""EFRUFN: FRUFN's UF cell as a deep-equilibrium (DEQ) fixed-point map (Wang et al., TPAMI 2026).

Paper: as :mod:`fusecli.models.frufn` (section 3.2.2, eqs. 16-20). Official weights:
``ufnet_deq_deeper_ivf.pth`` from github.com/wwhappylife/FRUFN @ 8bbc1eeb (the IVF model); its
model source (``ufformer_deq.py``) is not public.

What is solved
--------------
One UF cell (:class:`~fusecli.models.layers.UFCell`) with shared weights ``(theta, phi)`` defines
the map on the state ``z = (F, M)`` (features and mask, 33 channels)::

    H(F, M) = (F2 + M' * T(relu(F1 - F)),  M'),    M' = G(relu(F1 - F), M)

with ``F1 = T_theta1(infrared)``, ``F2 = T_theta2(visible)``; the fused features are its fixed point
``F* = F2 + M* T(F1 - F*)`` -- the fusion rule of eq. (10), ``F = F2 + M (F1 - F2)``, made implicit --
and the fused image is ``T_theta3^-1(F*)``. The fixed point is found by Anderson acceleration
(:func:`anderson`, the authors' test settings: 5 map evaluations, tolerance 1e-3 on the absolute
residual ``||H(z) - z||``, history 6), falling back to plain fixed-point iteration
(:func:`fixed_point`) when the Anderson mixing system is singular or non-finite. The solve starts at
``F(0) = F2``, ``M(0) = 0``. Its iterations and residual are returned by
:meth:`EFRUFN.forward_with_info` and kept in ``model.last_solver_info``.

Training uses the 1-step ("Jacobian-free" / phantom) gradient of eq. 20: the fixed point is found
without autograd, then ``H`` is applied once more with autograd, so the gradient is
``dL/dF* . dH(F*)/dtheta`` and training memory does not grow with the number of solver iterations.

Wiring of the official checkpoint (not public; worked out from the weights)
----------------------------------------------------------------------------
* The update adds to the injected visible features ``F2`` (``update="inject"``), not to ``F``
  (``update="residual"``, eq. 17 as printed and FRUFN's cell). With the official weights the
  injected map is a contraction: 5 Anderson evaluations reach ~1 % relative residual on TNO images
  and 20 evaluations do not change the image, and the fused image follows the IVF training target
  ``max(ir, vis)``; the residual form diverges under plain iteration, stays at 35-50 % relative
  residual after 5 Anderson steps and washes bright scenes out to white. The 1-step gradient also
  only trains the visible encoder if ``F2`` enters the map, and the checkpoint's visible encoder
  is trained.
* The extra convolution ``update_block.trans.0`` (64 -> 32, no bias) is exactly at PyTorch's
  default initialisation (std 0.0241 = 1/sqrt(3 * 576), max |w| 0.0417 = 1/sqrt(576)): it never
  received a gradient, so it can only have computed the solver's starting point (which runs without
  autograd) or nothing. Because the map is contractive the start hardly matters (the images from
  ``init`` = ``"vis"``, ``"zeros"``, ``"conv-vis-ir"``, ``"conv-ir-vis"`` differ by < 0.002 in mean);
  the default ``"vis"`` (eq. 11's ``F(1) = F2``) does not depend on an untrained layer. The layer is
  kept as ``init_conv`` so the checkpoint loads strict.
docs/frufn.md has the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..tiling import pad_to_multiple
from .frufn import FRUFNConfig, _convert_common, check_pair, convert_cell, decoder, encoder
from .layers import channels_last
from .swin_fast import scratch_buffers

__all__ = ["EFRUFNConfig", "EFRUFN", "SolverInfo", "anderson", "fixed_point", "convert_official"]

INITS = ("vis", "zeros", "conv-vis-ir", "conv-ir-vis")
UPDATES = ("inject", "residual")
SOLVERS = ("anderson", "fixed-point")


@dataclass(frozen=True)
class SolverInfo:
    """What a fixed-point solve did.

    Attributes:
        method: ``"anderson"``, ``"fixed-point"`` or ``"anderson+fixed-point"`` (fell back).
        iterations: evaluations of the map.
        residual: ``max_b ||H(z_b) - z_b||_2`` of the returned iterate's pre-image (absolute).
        relative_residual: the same divided by ``||H(z_b)||_2``.
        converged: the stopping residual went below the tolerance.
        trace: the stopping residual after each evaluation.
    """

    method: str
    iterations: int
    residual: float
    relative_residual: float
    converged: bool
    trace: tuple[float, ...] = field(default_factory=tuple)


def _residuals(fx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample absolute and relative residuals of flattened (B, D) iterates."""
    abs_res = (fx - x).norm(dim=1)
    return abs_res, abs_res / (fx.norm(dim=1) + 1e-8)


def _check_solver_args(x0: torch.Tensor, max_iter: int, tol: float, stop_mode: str) -> None:
    if x0.dim() < 1 or x0.shape[0] < 1:
        raise ConfigError(f"solver: x0 must be a batched tensor (B, ...), got shape {tuple(x0.shape)}")
    if max_iter < 1:
        raise ConfigError(f"solver: max_iter must be at least 1, got {max_iter}")
    if not tol >= 0:
        raise ConfigError(f"solver: tol must be >= 0, got {tol}")
    if stop_mode not in ("abs", "rel"):
        raise ConfigError(f"solver: stop_mode must be 'abs' or 'rel', got {stop_mode!r}")


def fixed_point(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    max_iter: int = 50,
    tol: float = 1e-3,
    stop_mode: str = "abs",
) -> tuple[torch.Tensor, SolverInfo]:
    """Plain fixed-point iteration ``x <- f(x)``.

    Args:
        f: the map; takes and returns tensors shaped like ``x0``.
        x0: (B, ...) starting point.
        max_iter: evaluations of ``f`` at most.
        tol: stop when ``max_b`` of the residual (``stop_mode`` ``"abs"``: ``||f(x) - x||``,
            ``"rel"``: that over ``||f(x)||``) is below it.

    Returns:
        The last ``f(x)`` (shaped like ``x0``) and a :class:`SolverInfo`.
    """
    _check_solver_args(x0, max_iter, tol, stop_mode)
    x, trace = x0, []
    for k in range(1, max_iter + 1):
        fx = f(x)
        a, r = _residuals(fx.flatten(1), x.flatten(1))
        trace.append(float((a if stop_mode == "abs" else r).max()))
        x = fx
        if trace[-1] < tol:
            break
    return x, SolverInfo("fixed-point", k, float(a.max()), float(r.max()), trace[-1] < tol, tuple(trace))


def anderson(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    max_iter: int = 5,
    tol: float = 1e-3,
    stop_mode: str = "abs",
    m: int = 6,
    lam: float = 1e-4,
    beta: float = 1.0,
    lean: bool = True,
) -> tuple[torch.Tensor, SolverInfo]:
    """Anderson acceleration (type II, Walker & Ni 2011) of the fixed-point iteration ``x = f(x)``.

    Per sample, the next iterate mixes the last ``m`` map outputs with the weights ``alpha`` that
    minimise ``||sum_i alpha_i (f(x_i) - x_i)||`` subject to ``sum alpha = 1`` (Tikhonov ``lam``,
    relative to the residuals' size),
    as in the DEQ reference solvers (``x1 = f(x0)``, then mixing). It returns, per sample, the map
    output ``f(x_k)`` whose iterate had the lowest stopping residual. When the mixing system is
    singular or gives non-finite values, it continues with plain iteration from the best point
    (``info.method == "anderson+fixed-point"``); ``max_iter < 3`` is plain iteration.

    Args:
        f: the map; takes and returns tensors shaped like ``x0``.
        x0: (B, ...) starting point.
        max_iter: evaluations of ``f`` at most (default 5, the EFRUFN authors' ``f_thres``).
        tol: stop when ``max_b`` of the residual is below it (``stop_mode`` as :func:`fixed_point`).
        m: history length. lam: Tikhonov regularisation of the mixing system, relative to the mean
            squared residual of the history. beta: mixing damping.
        lean: keep the residuals ``f(x_i) - x_i`` from one step to the next, only
            ``min(m, max_iter)`` history slots and the iterates only when ``beta != 1``; False
            recomputes the residuals from the stored iterates every step (the original
            formulation). The arithmetic is the same operation for operation (the Gram matrix is
            still one batched product of the residuals): the results are equal.

    Returns:
        The solution (shaped like ``x0``) and a :class:`SolverInfo`.
    """
    _check_solver_args(x0, max_iter, tol, stop_mode)
    if m < 2:
        raise ConfigError(f"anderson: history m must be at least 2, got {m}")
    if max_iter < 3:
        out, info = fixed_point(f, x0, max_iter, tol, stop_mode)
        return out, info
    if lean:
        return _anderson_lean(f, x0, max_iter, tol, stop_mode, m, lam, beta)
    bsz = x0.shape[0]
    flat = lambda t: t.reshape(bsz, -1)  # noqa: E731
    dim = x0[0].numel()
    X = x0.new_zeros(bsz, m, dim)
    Fx = x0.new_zeros(bsz, m, dim)
    X[:, 0] = flat(x0)
    Fx[:, 0] = flat(f(x0))
    X[:, 1] = Fx[:, 0]
    Fx[:, 1] = flat(f(Fx[:, 0].view_as(x0)))
    trace: list[float] = []
    best = Fx[:, 1].clone()
    a, r = _residuals(Fx[:, 1], X[:, 1])
    best_abs, best_rel = a.clone(), r.clone()
    trace.append(float((a if stop_mode == "abs" else r).max()))
    H = x0.new_zeros(bsz, m + 1, m + 1)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = x0.new_zeros(bsz, m + 1, 1)
    y[:, 0] = 1
    evals, fell_back = 2, False
    while evals < max_iter and trace[-1] >= tol:
        k = evals
        n = min(k, m)
        G = Fx[:, :n] - X[:, :n]
        gram = G @ G.transpose(1, 2)
        # Tikhonov term relative to the residuals' size (scale-invariant; the DEQ reference solvers
        # add an absolute lam, which stalls Anderson once residuals fall below sqrt(lam))
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(x0.dtype).tiny)
        H[:, 1:n + 1, 1:n + 1] = gram + (lam * scale)[:, None, None] * torch.eye(n, dtype=x0.dtype, device=x0.device)
        try:
            alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]
        except RuntimeError:  # singular system (torch.linalg.LinAlgError is a RuntimeError)
            alpha = None
        if alpha is None or not torch.isfinite(alpha).all():
            fell_back = True
            break
        x_new = beta * (alpha[:, None] @ Fx[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        X[:, k % m] = x_new
        Fx[:, k % m] = flat(f(x_new.view_as(x0)))
        evals += 1
        a, r = _residuals(Fx[:, k % m], X[:, k % m])
        stop = a if stop_mode == "abs" else r
        trace.append(float(stop.max()))
        better = stop < (best_abs if stop_mode == "abs" else best_rel)
        best[better] = Fx[better, k % m]
        best_abs = torch.where(better, a, best_abs)
        best_rel = torch.where(better, r, best_rel)
    out = best.view_as(x0)
    if fell_back:
        rest, info = fixed_point(f, out, max_iter - evals, tol, stop_mode) if evals < max_iter else (out, None)
        if info is not None:
            return rest, SolverInfo("anderson+fixed-point", evals + info.iterations, info.residual,
                                    info.relative_residual, info.converged, tuple(trace) + info.trace)
    stop_best = float((best_abs if stop_mode == "abs" else best_rel).max())
    return out, SolverInfo("anderson+fixed-point" if fell_back else "anderson", evals, float(best_abs.max()),
                           float(best_rel.max()), stop_best < tol, tuple(trace))


def _anderson_lean(f, x0, max_iter, tol, stop_mode, m, lam, beta) -> tuple[torch.Tensor, SolverInfo]:
    """:func:`anderson` with ``lean=True``: the residuals G_i = f(x_i) - x_i are kept (not
    recomputed from the iterates each step), the iterates only when ``beta != 1``."""
    bsz = x0.shape[0]
    flat = lambda t: t.reshape(bsz, -1)  # noqa: E731
    slots = min(m, max_iter)  # the history never holds more than the evaluations
    Fx = x0.new_empty(bsz, slots, x0[0].numel())
    G = torch.empty_like(Fx)
    X = torch.empty_like(Fx) if beta != 1 else None

    def store(slot: int, x: torch.Tensor, fx: torch.Tensor) -> None:
        Fx[:, slot] = fx
        torch.sub(fx, x, out=G[:, slot])
        if X is not None:
            X[:, slot] = x

    x = flat(x0)
    store(0, x, flat(f(x0)))
    store(1, Fx[:, 0], flat(f(Fx[:, 0].view_as(x0))))
    trace: list[float] = []
    best = Fx[:, 1].clone()
    a = G[:, 1].norm(dim=1)
    r = a / (Fx[:, 1].norm(dim=1) + 1e-8)
    best_abs, best_rel = a.clone(), r.clone()
    trace.append(float((a if stop_mode == "abs" else r).max()))
    H = x0.new_zeros(bsz, m + 1, m + 1)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = x0.new_zeros(bsz, m + 1, 1)
    y[:, 0] = 1
    evals, fell_back = 2, False
    while evals < max_iter and trace[-1] >= tol:
        k = evals
        n = min(k, m)
        gram = G[:, :n] @ G[:, :n].transpose(1, 2)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(x0.dtype).tiny)
        H[:, 1:n + 1, 1:n + 1] = gram + (lam * scale)[:, None, None] * torch.eye(n, dtype=x0.dtype, device=x0.device)
        try:
            alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]
        except RuntimeError:  # singular system (torch.linalg.LinAlgError is a RuntimeError)
            alpha = None
        if alpha is None or not torch.isfinite(alpha).all():
            fell_back = True
            break
        x_new = (alpha[:, None] @ Fx[:, :n])[:, 0]
        if X is not None:
            x_new = beta * x_new + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        slot = k % m
        store(slot, x_new, flat(f(x_new.view_as(x0))))
        evals += 1
        a = G[:, slot].norm(dim=1)
        r = a / (Fx[:, slot].norm(dim=1) + 1e-8)
        stop = a if stop_mode == "abs" else r
        trace.append(float(stop.max()))
        better = stop < (best_abs if stop_mode == "abs" else best_rel)
        best[better] = Fx[better, slot]
        best_abs = torch.where(better, a, best_abs)
        best_rel = torch.where(better, r, best_rel)
    out = best.view_as(x0)
    if fell_back:
        rest, info = fixed_point(f, out, max_iter - evals, tol, stop_mode) if evals < max_iter else (out, None)
        if info is not None:
            return rest, SolverInfo("anderson+fixed-point", evals + info.iterations, info.residual,
                                    info.relative_residual, info.converged, tuple(trace) + info.trace)
    stop_best = float((best_abs if stop_mode == "abs" else best_rel).max())
    return out, SolverInfo("anderson+fixed-point" if fell_back else "anderson", evals, float(best_abs.max()),
                           float(best_rel.max()), stop_best < tol, tuple(trace))


@dataclass(frozen=True)
class EFRUFNConfig:
    """Hyper-parameters of EFRUFN; the defaults are the published model and the authors' solver.

    Attributes:
        channels, depth, heads, glt_window, mask_window, mlp_ratio, reference_size: as
            :class:`~fusecli.models.frufn.FRUFNConfig` (one cell instead of five).
        update: the fixed-point map: ``"inject"`` (``F' = F2 + M' * T(relu(F1 - F))``, the
            visible features injected at every step; what the official weights were trained
            with, see the module docstring) or ``"residual"`` (``F' = F + M' * T(relu(F1 - F))``,
            eq. 17 as printed, FRUFN's cell update).
        init: the solver's starting point F(0): ``"vis"`` (the visible features F2), ``"zeros"``,
            or ``"conv-vis-ir"`` / ``"conv-ir-vis"`` (``init_conv`` on the concatenated features).
        solver: ``"anderson"`` or ``"fixed-point"``.
        solver_iters: map evaluations at most (5, the authors' ``f_thres``).
        tol: stopping tolerance (1e-3, the authors' ``f_eps``), on the ``stop_mode`` residual.
        stop_mode: ``"abs"`` (the authors') or ``"rel"``.
        anderson_m: Anderson history (6). anderson_lam: its regularisation (1e-4).
        phantom_steps: differentiable applications of the map after the solve in training (1:
            the 1-step gradient of eq. 20). phantom_tau: their damping (1.0).
        impl: ``"fast"`` (the cell's fast path, :mod:`fusecli.models.swin_fast`; the solver keeps
            the state channels-last and its history lean, :func:`anderson` ``lean=True``) or
            ``"reference"`` (the original formulation of both; the test oracle). Same solver
            settings and maths; outputs equal to float rounding.
    """

    channels: int = 32
    depth: int = 2
    heads: int = 8
    glt_window: int = 2
    mask_window: int = 4
    mlp_ratio: float = 3.0
    reference_size: int = 128
    update: str = "inject"
    init: str = "vis"
    solver: str = "anderson"
    solver_iters: int = 5
    tol: float = 1e-3
    stop_mode: str = "abs"
    anderson_m: int = 6
    anderson_lam: float = 1e-4
    phantom_steps: int = 1
    phantom_tau: float = 1.0
    impl: str = "fast"

    def __post_init__(self) -> None:
        if self.update not in UPDATES:
            raise ConfigError(f"EFRUFN update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        if self.init not in INITS:
            raise ConfigError(f"EFRUFN init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"EFRUFN solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.solver_iters < 1 or self.phantom_steps < 1:
            raise ConfigError("EFRUFN needs solver_iters >= 1 and phantom_steps >= 1")
        if self.stop_mode not in ("abs", "rel"):
            raise ConfigError(f"EFRUFN stop_mode must be 'abs' or 'rel', got {self.stop_mode!r}")
        if not 0 < self.phantom_tau <= 1:
            raise ConfigError(f"EFRUFN phantom_tau must be in (0, 1], got {self.phantom_tau}")
        self.frufn()  # validates the shared fields

    def frufn(self) -> FRUFNConfig:
        """The FRUFN config of the shared cell."""
        return FRUFNConfig(self.channels, 1, self.depth, self.heads, self.glt_window, self.mask_window,
                           self.mlp_ratio, self.reference_size, self.impl)


class EFRUFN(nn.Module):
    """EFRUFN fusion network: two encoders, one UF cell solved to its fixed point, a decoder.

    ``forward(ir, vis)`` takes two (B, 1, H, W) float32 tensors in [0, 1] (infrared, visible
    luminance), any H, W >= 1, and returns the fused (B, 1, H, W) image (unclamped; inference
    clamps). :meth:`forward_with_info` also returns the mask and the :class:`SolverInfo`; the last
    solve's info is kept in ``last_solver_info``.

    In training mode with autograd on, the solve runs without autograd and the map is applied
    ``phantom_steps`` more times with it (the 1-step gradient), so memory does not depend on
    ``solver_iters``.
    """

    #: roles of the inputs, in order
    inputs = ("ir", "vis")
    #: smallest height / width
    min_size = 2
    #: Swin windows sit on a fixed grid and the mask generator pools to 1/8: tiling is not exact
    receptive_radius = None

    def __init__(self, config: EFRUFNConfig | None = None):
        super().__init__()
        self.config = config or EFRUFNConfig()
        c = self.config
        self.enc_vis = encoder(c.channels)
        self.enc_ir = encoder(c.channels)
        #: starting-point projection (the official ``update_block.trans.0``), used by the conv inits
        self.init_conv = nn.Conv2d(2 * c.channels, c.channels, 3, padding=1, bias=False)
        self.cell = c.frufn().cell()
        self.decoder = decoder(c.channels)
        self.pad_multiple = c.frufn().pad_multiple
        self.last_solver_info: SolverInfo | None = None

    def fixed_point_map(self, z: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """H on the stacked state ``z = cat(F, M)`` (B, C+1, H, W), given the infrared features
        ``F1`` and the visible features ``F2`` (B, C, H, W each); returns cat(F', M')."""
        base = f2 if self.config.update == "inject" else None
        f, m = self.cell(z[:, :-1], f1, z[:, -1:], base=base)
        if self.config.impl == "fast":
            return torch.cat([f, channels_last(m)], dim=1)  # channels-last in, channels-last out
        return torch.cat([f, m], dim=1)

    def initial_state(self, f_vis: torch.Tensor, f_ir: torch.Tensor) -> torch.Tensor:
        """z(0) = cat(F(0), 0) from the encoded sources (B, C, H, W) each; (B, C+1, H, W)."""
        init = self.config.init
        if init == "vis":
            f0 = f_vis
        elif init == "zeros":
            f0 = torch.zeros_like(f_vis)
        elif init == "conv-vis-ir":
            f0 = self.init_conv(torch.cat([f_vis, f_ir], dim=1))
        else:
            f0 = self.init_conv(torch.cat([f_ir, f_vis], dim=1))
        return torch.cat([f0, f0.new_zeros(f0.shape[0], 1, *f0.shape[-2:])], dim=1)

    def solve(self, z0: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor,
              iters: int | None = None) -> tuple[torch.Tensor, SolverInfo]:
        """Fixed point of :meth:`fixed_point_map` from ``z0`` (no autograd); returns (z*, info)."""
        c = self.config
        iters = c.solver_iters if iters is None else iters
        fast = c.impl == "fast"
        # the solver's vectors stay in (B, C+1, H, W) order on both paths: its norms and Gram
        # matrices are then the same sums, and the solve (only 5 steps from a rough start, so
        # sensitive to them) follows the reference path's
        fn = lambda z: self.fixed_point_map(z, f1, f2).contiguous()  # noqa: E731
        with torch.no_grad():
            if c.solver == "anderson":
                return anderson(fn, z0.contiguous(), iters, c.tol, c.stop_mode, c.anderson_m, c.anderson_lam,
                                lean=fast)
            return fixed_point(fn, z0, iters, c.tol, c.stop_mode)

    def forward_with_info(
        self, ir: torch.Tensor, vis: torch.Tensor, solver_iters: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, SolverInfo]:
        """Fused image (B, 1, H, W), final mask (B, 1, H, W) in (0, 1) and the solver's info.

        Args:
            ir, vis: (B, 1, H, W) float32 tensors in [0, 1].
            solver_iters: override of ``config.solver_iters`` for this call (e.g. in training).
        """
        if self.config.impl == "fast" and not torch.is_grad_enabled():
            with scratch_buffers():  # the cell's large scratch tensors, allocated once per forward
                return self._forward_with_info(ir, vis, solver_iters)
        return self._forward_with_info(ir, vis, solver_iters)

    def _forward_with_info(self, ir: torch.Tensor, vis: torch.Tensor, solver_iters: int | None
                           ) -> tuple[torch.Tensor, torch.Tensor, SolverInfo]:
        check_pair(ir, vis)
        if solver_iters is not None and solver_iters < 1:
            raise ConfigError(f"solver_iters must be at least 1, got {solver_iters}")
        h, w = ir.shape[-2:]
        ir, vis = pad_to_multiple(ir, self.pad_multiple), pad_to_multiple(vis, self.pad_multiple)
        if self.config.impl == "fast":
            ir, vis = channels_last(ir), channels_last(vis)
        f1, f_vis = self.enc_ir(ir), self.enc_vis(vis)
        with torch.no_grad():
            z0 = self.initial_state(f_vis, f1)
        z, info = self.solve(z0, f1, f_vis, solver_iters)
        if self.training and torch.is_grad_enabled():
            tau = self.config.phantom_tau
            for _ in range(self.config.phantom_steps):  # the 1-step (phantom) gradient, eq. 20
                step = self.fixed_point_map(z, f1, f_vis)
                z = (1 - tau) * z + tau * step if tau < 1 else step
        self.last_solver_info = info
        return self.decoder(z[:, :-1])[..., :h, :w], z[:, -1:, :h, :w], info

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.forward_with_info(ir, vis)[0]


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the authors' ``UFormer_DEQ`` key layout (``ufnet_deq_deeper_ivf.pth``) onto :class:`EFRUFN`'s.

    Key renaming only: ``encoder1`` (visible) -> ``enc_vis``, ``encoder2`` (infrared) -> ``enc_ir``,
    ``update_block.trans.0`` -> ``init_conv``, ``update_block.*`` -> ``cell.*`` (renamed as
    :func:`~fusecli.models.frufn.convert_cell`), ``decoder`` unchanged. fusecli's own keys pass through.

    Raises:
        CheckpointError: a key belongs to neither layout (e.g. an FRUFN checkpoint with ``u1..u5``).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        new = _convert_common(key)
        if new is None and head in ("enc_vis", "enc_ir", "init_conv", "cell"):
            new = key
        if new is None and key == "update_block.trans.0.weight":
            new = "init_conv.weight"
        elif new is None and head == "update_block":
            cell_key = convert_cell(rest)
            new = None if cell_key is None else "cell." + cell_key
        if new is None:
            raise CheckpointError(
                f"key {key!r} is not an EFRUFN key (expected encoder1/encoder2/decoder/update_block from "
                "the official ufnet_deq_deeper_ivf.pth, or fusecli's enc_vis/enc_ir/init_conv/cell/decoder); "
                "an FRUFN checkpoint (u1..u5) belongs to --model frufn")
        out[new] = value
    return out


# The std of PyTorch's default conv initialisation, used by docs/tests to recognise an untrained layer.
def default_init_std(fan_in: int) -> float:
    """Standard deviation of ``kaiming_uniform_(a=sqrt(5))`` (PyTorch's Conv/Linear default)."""
    return 1 / math.sqrt(3 * fan_in)
