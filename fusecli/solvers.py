"""Iterative solvers, apart from the models that use them (as torchdeq keeps ``solver/`` apart from
its DEQ layers): each takes the map or operator as a function and knows nothing of networks.

* :func:`fixed_point` and :func:`anderson` find a fixed point ``x* = f(x*)`` of a map on batched
  tensors and return ``(x*, SolverInfo)``; EFRUFN (:mod:`fusecli.models.efrufn`) solves its UF
  cell's fixed point with them.
* :func:`conjugate_gradient` runs a fixed number of conjugate-gradient steps on ``apply(x) = b``
  per sample; DeRUN and its classical solver (:mod:`fusecli.models.derun`) invert their data term
  with it.

Every solver works per sample: the leading dimension is the batch (B) and the samples never mix.
Tensors may have any dtype (float32 in inference, float64 in the tests); nothing is assumed about
their range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .errors import ConfigError

__all__ = ["SolverInfo", "fixed_point", "anderson", "conjugate_gradient"]


# --- fixed points ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SolverInfo:
    """What a fixed-point solve did (the second value :func:`fixed_point` and :func:`anderson` return).

    Attributes:
        method: ``"anderson"``, ``"fixed-point"`` or ``"anderson+fixed-point"`` (fell back).
        iterations: evaluations of the map.
        residual: ``max_b ||f(x_b) - x_b||_2`` over the batch, ``x_b`` the iterate whose image
            ``f(x_b)`` is returned (absolute; each sample flattened).
        relative_residual: the same divided by ``||f(x_b)||_2``.
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
    """Plain fixed-point iteration ``x <- f(x)``, until the residual is below ``tol`` or ``max_iter``
    evaluations.

    Runs under whatever autograd mode the caller set (EFRUFN solves under ``torch.no_grad()`` and
    differentiates one more application of the map).

    Args:
        f: the map; takes and returns tensors shaped like ``x0``.
        x0: (B, ...) starting point.
        max_iter: evaluations of ``f`` at most.
        tol: stop when ``max_b`` of the residual (``stop_mode`` ``"abs"``: ``||f(x) - x||``,
            ``"rel"``: that over ``||f(x)||``) is below it.

    Returns:
        The last ``f(x)`` (shaped like ``x0``) and a :class:`SolverInfo`.

    Raises:
        ConfigError: ``x0`` without a batch dimension, ``max_iter < 1``, ``tol < 0`` or an unknown
            ``stop_mode``.
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

    Raises:
        ConfigError: as :func:`fixed_point`, or ``m < 2``.
    """
    _check_solver_args(x0, max_iter, tol, stop_mode)
    if m < 2:
        raise ConfigError(f"anderson: history m must be at least 2, got {m}")
    if max_iter < 3:
        return fixed_point(f, x0, max_iter, tol, stop_mode)
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
    H, y = _mixing_system(x0, m)
    evals, fell_back = 2, False
    while evals < max_iter and trace[-1] >= tol:
        k = evals
        n = min(k, m)
        alpha = _mixing_weights(Fx[:, :n] - X[:, :n], H, y, lam)
        if alpha is None:
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
    return _finish(f, best.view_as(x0), evals, max_iter, tol, stop_mode, trace, best_abs, best_rel, fell_back)


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
    H, y = _mixing_system(x0, m)
    evals, fell_back = 2, False
    while evals < max_iter and trace[-1] >= tol:
        k = evals
        n = min(k, m)
        alpha = _mixing_weights(G[:, :n], H, y, lam)
        if alpha is None:
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
    return _finish(f, best.view_as(x0), evals, max_iter, tol, stop_mode, trace, best_abs, best_rel, fell_back)


def _mixing_system(x0: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The bordered system of Anderson's constrained least squares, (B, m+1, m+1) and (B, m+1, 1):
    ``[[0, 1'], [1, G G' + reg]] [nu; alpha] = [1; 0]``; the Gram block is filled each step."""
    bsz = x0.shape[0]
    H = x0.new_zeros(bsz, m + 1, m + 1)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = x0.new_zeros(bsz, m + 1, 1)
    y[:, 0] = 1
    return H, y


def _mixing_weights(G: torch.Tensor, H: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor | None:
    """Anderson's mixing weights (B, n) from the residual history ``G`` (B, n, D); None when the
    system is singular or its solution not finite."""
    n = G.shape[1]
    gram = G @ G.transpose(1, 2)
    # Tikhonov term relative to the residuals' size (scale-invariant; the DEQ reference solvers
    # add an absolute lam, which stalls Anderson once residuals fall below sqrt(lam))
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(G.dtype).tiny)
    H[:, 1:n + 1, 1:n + 1] = gram + (lam * scale)[:, None, None] * torch.eye(n, dtype=G.dtype, device=G.device)
    try:
        alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]
    except RuntimeError:  # singular system (torch.linalg.LinAlgError is a RuntimeError)
        return None
    return alpha if torch.isfinite(alpha).all() else None


def _finish(f, out, evals, max_iter, tol, stop_mode, trace, best_abs, best_rel, fell_back
            ) -> tuple[torch.Tensor, SolverInfo]:
    """The end of both Anderson forms: after a fall-back, plain iteration from the best point with
    the evaluations left; else the best point and its info."""
    if fell_back and evals < max_iter:
        rest, info = fixed_point(f, out, max_iter - evals, tol, stop_mode)
        return rest, SolverInfo("anderson+fixed-point", evals + info.iterations, info.residual,
                                info.relative_residual, info.converged, tuple(trace) + info.trace)
    stop_best = float((best_abs if stop_mode == "abs" else best_rel).max())
    return out, SolverInfo("anderson+fixed-point" if fell_back else "anderson", evals, float(best_abs.max()),
                           float(best_rel.max()), stop_best < tol, tuple(trace))


# --- linear systems ------------------------------------------------------------------------------


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product of (B, ...) tensors, shaped (B, 1, ..., 1) to broadcast against them."""
    return (a * b).flatten(1).sum(1).view(-1, *[1] * (a.dim() - 1))


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x0: torch.Tensor,
                       steps: int) -> torch.Tensor:
    """``steps`` conjugate-gradient steps on ``apply(x) = b``, per sample, from ``x0``.

    Each sample ``x[i]`` (flattened) is its own linear system ``A x[i] = b[i]``; the inner products
    are per sample. Meant for ``apply = I + (positive semi-definite)``: the curvature ``p' A p`` is
    floored at ``p' p``, which such an operator always satisfies (so the floor never acts on it) and
    which keeps the steps bounded when ``apply`` is only approximately of that form (learned
    transposes). A fixed number of steps, no tolerance: the unrolled networks differentiate through
    every step, so the graph must not depend on the data.

    Args:
        apply: the linear operator; maps a (B, C, H, W) tensor to one of the same shape.
        b, x0: (B, C, H, W) right-hand side and start (any (B, ...) shape works alike).
        steps: number of steps (>= 1; 0 returns ``x0``).

    Returns:
        (B, C, H, W) approximate solution, differentiable in ``b``, ``x0`` and whatever ``apply``
        depends on.
    """
    x = x0
    r = b - apply(x)
    p = r
    rr = _dot(r, r)
    # Denominators are floored at sqrt(tiny), not tiny: the backward pass divides by their squares,
    # and tiny**2 is 0 in float32 (0/0 = NaN). A sample whose residual is exactly zero (a constant
    # training crop: U = V, so M = 0) then takes zero steps with finite, zero gradients.
    floor = torch.finfo(b.dtype).tiny ** 0.5
    for _ in range(steps):
        ap = apply(p)
        curvature = torch.maximum(_dot(p, ap), _dot(p, p)).clamp_min(floor)
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = _dot(r, r)
        beta = rr_new / rr.clamp_min(floor)
        p = r + beta * p
        rr = rr_new
    return x
