"""EFRUFN: FRUFN's UF cell as a deep-equilibrium (DEQ) fixed-point map (Wang et al., TPAMI 2026).

Paper: as :mod:`fusecli.models.frufn` (section 3.2.2, eqs. 16-20). Official weights:
``ufnet_deq_deeper_ivf.pth`` from github.com/wwhappylife/FRUFN @ 8bbc1eeb (the IVF model); its
model source (``ufformer_deq.py``) is not public.

What is solved
--------------
One UF cell (:class:`~fusecli.models.frufn.UFCell`) with shared weights ``(theta, phi)`` defines
the map on the state ``z = (F, M)`` (features and mask, 33 channels)::

    H(F, M) = (F2 + M' * T(relu(F1 - F)),  M'),    M' = G(relu(F1 - F), M)

with ``F1 = T_theta1(infrared)``, ``F2 = T_theta2(visible)``; the fused features are its fixed point
``F* = F2 + M* T(F1 - F*)`` -- the fusion rule of eq. (10), ``F = F2 + M (F1 - F2)``, made implicit --
and the fused image is ``T_theta3^-1(F*)``. The fixed point is found by Anderson acceleration
(:func:`fusecli.solvers.anderson`, the authors' test settings: 5 map evaluations, tolerance 1e-3 on the absolute
residual ``||H(z) - z||``, history 6), falling back to plain fixed-point iteration
(:func:`fusecli.solvers.fixed_point`) when the Anderson mixing system is singular or non-finite. The solve starts at
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
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..solvers import SolverInfo, anderson, fixed_point
from ..tiling import pad_to_multiple
from ._contract import FusionModel, ModelSpec
from .frufn import FRUFNConfig, _convert_common, check_pair, convert_cell, decoder, encoder, frufn_spec
from .layers import channels_last
from .swin_fast import scratch_buffers

__all__ = ["EFRUFNConfig", "EFRUFN", "convert_official"]

INITS = ("vis", "zeros", "conv-vis-ir", "conv-ir-vis")
UPDATES = ("inject", "residual")
SOLVERS = ("anderson", "fixed-point")


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
            the state channels-last and its history lean, :func:`~fusecli.solvers.anderson` ``lean=True``) or
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


class EFRUFN(FusionModel):
    """EFRUFN fusion network: two encoders, one UF cell solved to its fixed point, a decoder.

    ``forward(ir, vis)`` takes two (B, 1, H, W) float32 tensors in [0, 1] (infrared, visible
    luminance), any H, W >= 1, and returns the fused (B, 1, H, W) image (unclamped; inference
    clamps). :meth:`forward_with_info` also returns the mask and the :class:`~fusecli.solvers.SolverInfo`; the last
    solve's info is kept in ``last_solver_info``.

    In training mode with autograd on, the solve runs without autograd and the map is applied
    ``phantom_steps`` more times with it (the 1-step gradient), so memory does not depend on
    ``solver_iters``.
    """

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
        self.last_solver_info: SolverInfo | None = None

    @property
    def spec(self) -> ModelSpec:
        """As FRUFN's (:func:`~fusecli.models.frufn.frufn_spec`)."""
        return frufn_spec(self.config.frufn().pad_multiple)

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
